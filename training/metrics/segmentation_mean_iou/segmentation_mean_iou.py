"""Mean IoU for semantic segmentation as an `evaluate` metric that loads offline from this folder:

    metric = evaluate.load("training/metrics/segmentation_mean_iou")
    metric.add_batch(predictions=[pred_map, ...], references=[label_map, ...])
    metric.compute(num_labels=150, ignore_index=255, reduce_labels=False)

Same inputs, options and definitions as the hub's `mean_iou` (which cannot load offline): per-class IoU =
intersection / union and accuracy = intersection / label area, NaN-means over classes, overall accuracy over all
labelled pixels; `reduce_labels` maps 0 to 255 and k to k - 1; `label_map` remaps references; `nan_to_num` replaces
NaN entries. Areas are accumulated one image at a time through a confusion matrix (numpy only, self-contained).
For constant memory inside a training loop use `ssa_hf.StreamingMeanIoU`, which this metric matches.
"""

import datasets
import evaluate
import numpy as np

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
    reduce_labels (bool): map 0 to 255 and every other value k to k - 1 in the references.
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
        confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            prediction, reference = np.asarray(prediction, np.int64), np.asarray(reference, np.int64)
            if prediction.shape != reference.shape:
                raise ValueError(f"image {index}: prediction {prediction.shape} and reference {reference.shape} differ.")
            if label_map is not None:
                remapped = reference.copy()
                for old_id, new_id in label_map.items():
                    remapped[reference == old_id] = new_id
                reference = remapped
            if reduce_labels:
                reference = np.where(reference == 0, 255, reference - 1)
                reference[reference == 254] = 255
            valid = reference != ignore_index
            prediction, reference = prediction[valid], reference[valid]
            out_of_range = (reference < 0) | (reference >= num_labels) | (prediction < 0) | (prediction >= num_labels)
            if out_of_range.any():
                values = np.unique(np.concatenate([reference[out_of_range], prediction[out_of_range]]))
                raise ValueError(f"image {index}: values {values[:20].tolist()} are outside [0, {num_labels}).")
            confusion += np.bincount(reference * num_labels + prediction, minlength=num_labels**2).reshape(
                num_labels, num_labels
            )
        intersection = np.diag(confusion).astype(np.float64)
        label_area = confusion.sum(1)
        union = label_area + confusion.sum(0) - intersection
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = intersection / union
            accuracy = intersection / label_area
        result = {
            "mean_iou": float(np.nanmean(iou)),
            "mean_accuracy": float(np.nanmean(accuracy)),
            "overall_accuracy": float(intersection.sum() / label_area.sum()),
            "per_category_iou": iou,
            "per_category_accuracy": accuracy,
        }
        if nan_to_num is not None:
            result = {k: np.nan_to_num(v, nan=nan_to_num) if isinstance(v, np.ndarray) else v for k, v in result.items()}
        return result
