"""Mean IoU for semantic segmentation as an `evaluate` metric that loads offline from this folder:

    metric = evaluate.load("training/metrics/segmentation_mean_iou")
    metric.add_batch(predictions=[pred_map, ...], references=[label_map, ...])
    metric.compute(num_labels=150, ignore_index=255, reduce_labels=False)

Same inputs and options as the hub's `mean_iou` (which cannot load offline). It is a thin wrapper: references are
converted with `ssa_hf.LabelConvention` (`label_map` first, then `reduce_labels`: 0 -> ignored, k -> k - 1) and
scored with `ssa_hf.StreamingMeanIoU`, the metric that training and `ssa-seg evaluate` use, so all three agree by
construction. `nan_to_num` replaces NaN entries (classes absent from both maps).
"""

import datasets
import evaluate
import numpy as np
import torch

from ssa_hf import LabelConvention, StreamingMeanIoU

_DESCRIPTION = "Mean Intersection-over-Union, mean accuracy and overall accuracy of semantic segmentation maps."
_CITATION = "The mean_iou definitions of mmsegmentation and the Hugging Face evaluate library."
_INPUTS = """
Args:
    predictions: list of 2-D integer label maps (H, W) predicted by the model.
    references: list of 2-D integer ground-truth maps of the same shapes.
    num_labels (int): number of classes.
    ignore_index (int): reference value that is ignored (after reduce_labels / label_map).
    nan_to_num (float, optional): value for classes absent from both maps, instead of NaN.
    label_map (dict, optional): old -> new reference ids, applied first.
    reduce_labels (bool): map 0 to the ignore index and every other value k to k - 1 in the references.
Returns:
    mean_iou, mean_accuracy, overall_accuracy (floats); per_category_iou, per_category_accuracy (arrays).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class SegmentationMeanIoU(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
                }
            ),
        )

    def _compute(self, predictions, references, num_labels, ignore_index, nan_to_num=None, label_map=None,
                 reduce_labels=False):
        # Range checks stay with the metric (it names the values); the convention only converts.
        convention = LabelConvention(None, reduce_zero_label=reduce_labels, remap=label_map or {},
                                     ignore_index=ignore_index)
        metric = StreamingMeanIoU(num_labels, ignore_index=ignore_index)
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            prediction, reference = np.asarray(prediction, np.int64), np.asarray(reference, np.int64)
            if prediction.shape != reference.shape:
                raise ValueError(f"image {index}: prediction {prediction.shape} and reference {reference.shape} differ.")
            reference = convention.apply(reference, source=f"image {index}")
            try:
                metric.update(torch.from_numpy(prediction), torch.from_numpy(reference))
            except ValueError as error:
                raise ValueError(f"image {index}: {error}") from error
        result = metric.compute()
        result = {key: np.asarray(value) if isinstance(value, list) else value for key, value in result.items()
                  if key != "labelled_pixels"}
        if nan_to_num is not None:
            result = {k: np.nan_to_num(v, nan=nan_to_num) if isinstance(v, np.ndarray) else v for k, v in result.items()}
        return result
