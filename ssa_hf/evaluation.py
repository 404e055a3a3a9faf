"""Streaming semantic-segmentation metrics: a running confusion matrix on the model's device.

Memory is constant in the number of images (one K x K matrix), accumulation never reads values on the host, and the
results follow the definitions of the `evaluate` "mean_iou" metric: per-class IoU = intersection / union and accuracy
= intersection / label area (NaN for classes with no union / no label pixels), mean IoU and mean accuracy as NaN-means
over classes, overall accuracy (aAcc) = correctly labelled pixels / labelled pixels.

`evaluate_dataset` is the one evaluation loop (training, `ssa-seg evaluate`, the demo and the examples): each image is
preprocessed by the model folder's image processor and, in the paper's whole-image single-scale protocol, scored through
the processor's own `post_process_semantic_segmentation`, exactly as `pipeline("image-segmentation")` predicts.
"""

import inspect
from dataclasses import asdict, dataclass
from itertools import islice

import numpy as np
import torch

from .model.image_processing_ssa import IGNORE_INDEX


class StreamingMeanIoU:
    """Accumulates a confusion matrix over batches of predicted and reference label maps.

    Example:

    ```python
    >>> import torch
    >>> from ssa_hf.evaluation import StreamingMeanIoU
    >>> metric = StreamingMeanIoU(num_labels=3)
    >>> metric.update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [1, 255]]))
    >>> metric.compute()["mean_iou"]  # IoU 1, 1/2 and 0 for classes 0, 1, 2
    0.5

    ```
    """

    def __init__(self, num_labels: int, ignore_index: int = IGNORE_INDEX, device: torch.device | str | None = None):
        if num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {num_labels}.")
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        # rows: reference class, columns: predicted class; one spare slot collects ignored pixels.
        self.confusion = torch.zeros(num_labels * num_labels + 1, dtype=torch.int64, device=device)
        self.out_of_range = torch.zeros((), dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.confusion.zero_()
        self.out_of_range.zero_()

    @torch.no_grad()
    def update(self, predictions: torch.Tensor, references: torch.Tensor) -> None:
        """Add a batch: predicted class maps and references of the same shape, e.g. (B, H, W).

        Reference pixels equal to `ignore_index` are skipped. Any other value outside [0, num_labels), in either map,
        is an error: raised here, naming the values, for CPU tensors (reading them costs no synchronisation); counted on
        the device and raised by `compute()` otherwise.
        """
        if predictions.shape != references.shape:
            raise ValueError(
                f"predictions {tuple(predictions.shape)} and references {tuple(references.shape)} differ in shape; "
                "resize predictions to the label size first (e.g. post_process_semantic_segmentation)."
            )
        if predictions.is_floating_point() or references.is_floating_point():
            raise ValueError("predictions and references must be integer label maps (take the argmax of logits).")
        device = self.confusion.device
        predictions = predictions.to(device).flatten().long()
        references = references.to(device).flatten().long()
        valid = references != self.ignore_index
        bad_reference = valid & ((references < 0) | (references >= self.num_labels))
        bad_prediction = valid & ((predictions < 0) | (predictions >= self.num_labels))
        out_of_range = bad_reference | bad_prediction
        if device.type == "cpu" and out_of_range.any():
            bad = torch.cat([references[bad_reference], predictions[bad_prediction]]).unique().tolist()
            raise ValueError(
                f"label values {bad[:20]} are outside [0, {self.num_labels}) and not the ignore index "
                f"{self.ignore_index}."
            )
        spare = self.num_labels * self.num_labels
        slots = torch.where(valid & ~out_of_range, references * self.num_labels + predictions, spare)
        self.confusion.index_add_(0, slots, torch.ones_like(slots))
        self.out_of_range += out_of_range.sum()

    def all_reduce(self) -> None:
        """Sum the confusion matrices of all processes (torch.distributed), so each image counts once."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.confusion)
            torch.distributed.all_reduce(self.out_of_range)

    @property
    def confusion_matrix(self) -> torch.Tensor:
        """(K, K) counts: rows are reference classes, columns predicted classes."""
        return self.confusion[:-1].view(self.num_labels, self.num_labels)

    def compute(self) -> dict:
        """mean_iou, mean_accuracy, overall_accuracy (floats) and per_category_iou / per_category_accuracy (lists)."""
        if self.out_of_range > 0:
            raise ValueError(
                f"{int(self.out_of_range)} pixels had label values outside [0, {self.num_labels}) that were not the "
                f"ignore index {self.ignore_index}; check num_labels and the label convention."
            )
        matrix = self.confusion_matrix.double().cpu()
        intersection = matrix.diagonal()
        label_area = matrix.sum(1)
        prediction_area = matrix.sum(0)
        union = label_area + prediction_area - intersection
        iou = intersection / union  # NaN where the class is absent from both
        accuracy = intersection / label_area
        total = label_area.sum()
        return {
            "mean_iou": float(iou.nanmean()),
            "mean_accuracy": float(accuracy.nanmean()),
            "overall_accuracy": float(intersection.sum() / total) if total > 0 else float("nan"),
            "per_category_iou": iou.tolist(),
            "per_category_accuracy": accuracy.tolist(),
            "labelled_pixels": int(total),
        }


def _logits_at_input_size(model, pixel_values: torch.Tensor) -> torch.Tensor:
    logits = model(pixel_values=pixel_values).logits
    return torch.nn.functional.interpolate(logits.float(), size=pixel_values.shape[-2:], mode="bilinear",
                                           align_corners=False)


def sliding_window_logits(model, pixel_values: torch.Tensor, crop_size: tuple[int, int],
                          stride: tuple[int, int]) -> torch.Tensor:
    """mmseg `slide_inference`: windows of `crop_size` every `stride` (the last one aligned to the border), each
    window's logits resized to the window, overlaps averaged. (B, 3, H, W) -> (B, K, H, W)."""
    batch, _, height, width = pixel_values.shape
    crop_h, crop_w = crop_size
    stride_h, stride_w = stride
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    total, count = None, pixel_values.new_zeros(1, 1, height, width)
    for row in range(rows):
        for col in range(cols):
            bottom, right = min(row * stride_h + crop_h, height), min(col * stride_w + crop_w, width)
            top, left = max(bottom - crop_h, 0), max(right - crop_w, 0)
            window = _logits_at_input_size(model, pixel_values[:, :, top:bottom, left:right])
            if total is None:
                total = window.new_zeros(batch, window.shape[1], height, width)
            total[:, :, top:bottom, left:right] += window
            count[:, :, top:bottom, left:right] += 1
    return total / count


@torch.no_grad()
def predict_probabilities(model, pixel_values: torch.Tensor, output_size: tuple[int, int] | None = None,
                          mode: str = "whole", crop_size: tuple[int, int] = (512, 512),
                          stride: tuple[int, int] = (341, 341), scales: tuple[float, ...] = (1.0,),
                          flip: bool = False) -> torch.Tensor:
    """Class probabilities the way mmseg tests: the whole image or sliding windows; with several `scales` and/or
    `flip`, the softmax outputs of every rescaled (and mirrored) view are averaged (mmseg's aug_test).

    Args:
        model: a segmentation model returning `logits` (eval mode).
        pixel_values: (B, 3, H, W) preprocessed images.
        output_size: (height, width) of the probabilities; the input size by default (pass the original image
            size to score against full-size labels).
        mode: `"whole"` or `"slide"`.
        crop_size: (height, width) of the sliding windows.
        stride: (height, width) step of the sliding windows.
        scales: factors of the input size, one view each.
        flip: also average the horizontally mirrored views.

    Returns:
        `torch.Tensor`: (B, K, *output_size) class probabilities.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    output_size = tuple(output_size or pixel_values.shape[-2:])
    views = [(scale, flipped) for scale in scales for flipped in ((False, True) if flip else (False,))]
    probabilities = None
    for scale, flipped in views:
        view = pixel_values if scale == 1 else torch.nn.functional.interpolate(
            pixel_values, scale_factor=scale, mode="bilinear", align_corners=False)
        view = view.flip(-1) if flipped else view
        logits = sliding_window_logits(model, view, crop_size, stride) if mode == "slide" else \
            _logits_at_input_size(model, view)
        logits = logits.flip(-1) if flipped else logits
        view_probabilities = torch.nn.functional.interpolate(
            logits, size=output_size, mode="bilinear", align_corners=False).softmax(1)
        probabilities = view_probabilities if probabilities is None else probabilities + view_probabilities
    return probabilities / len(views)


@dataclass(frozen=True)
class EvaluationProtocol:
    """How each image is predicted (mmseg test modes). The default, whole image at one scale without flip, is the
    paper's protocol and exactly what `pipeline("image-segmentation")` computes with the same image processor."""

    mode: str = "whole"  # "whole" or "slide"
    crop_size: tuple[int, int] = (512, 512)  # sliding window (height, width)
    stride: tuple[int, int] = (341, 341)
    scales: tuple[float, ...] = (1.0,)  # multi-scale: factors of the processor's resize
    flip: bool = False

    def __post_init__(self):
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"mode must be 'whole' or 'slide', got {self.mode!r}")

    @property
    def is_pipeline_protocol(self) -> bool:
        return self.mode == "whole" and tuple(self.scales) == (1.0,) and not self.flip

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@torch.no_grad()
def predict_label_map(model, processor, image, protocol: EvaluationProtocol = EvaluationProtocol()) -> torch.Tensor:
    """(H, W) class indices for one RGB PIL image at its own size, preprocessed by `processor`."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"].to(device, dtype)
    target_size = (image.height, image.width)
    if protocol.is_pipeline_protocol:
        outputs = model(pixel_values=pixel_values)
        extra = {}  # SSAImageProcessor resizes back through the input size, as mmseg; other processors do not
        if "input_sizes" in inspect.signature(processor.post_process_semantic_segmentation).parameters:
            extra["input_sizes"] = [tuple(pixel_values.shape[-2:])]
        return processor.post_process_semantic_segmentation(outputs, target_sizes=[target_size], **extra)[0]
    probabilities = predict_probabilities(model, pixel_values, output_size=target_size, mode=protocol.mode,
                                          crop_size=tuple(protocol.crop_size), stride=tuple(protocol.stride),
                                          scales=tuple(protocol.scales), flip=protocol.flip)
    return probabilities.argmax(1)[0]


def evaluate_dataset(model, processor, rows, convention, protocol: EvaluationProtocol = EvaluationProtocol(),
                     limit: int | None = None, accelerator=None, progress: bool = True,
                     description: str = "evaluating") -> dict:
    """mIoU of `model` on (image, annotation) `rows` (a `datasets.Dataset` or a streamed `IterableDataset`).

    Annotations are converted with `convention` at their original size; predictions are made at the original size
    (`predict_label_map`), so the numbers are those `pipeline("image-segmentation")` gives.

    Args:
        model: the segmentation model (eval mode).
        processor: its image processor (the folder's `SSAImageProcessor`).
        rows: (image, annotation) rows.
        convention: the `LabelConvention` of the annotations, with the model's class count.
        protocol: whole image or sliding window, scales, flip (`EvaluationProtocol`).
        limit: score only the first `limit` images.
        accelerator: with several processes, each image is scored by one process and the confusion matrices are
            summed.
        progress: show a progress bar.
        description: the progress bar's label.

    Returns:
        `dict`: `StreamingMeanIoU.compute()`'s results plus `images` (the number scored) and `protocol`.
    """
    from tqdm.auto import tqdm

    from .data import decode_pair, undecoded

    rank = accelerator.process_index if accelerator is not None else 0
    world_size = accelerator.num_processes if accelerator is not None else 1
    device = next(model.parameters()).device
    metric = StreamingMeanIoU(convention.num_labels, ignore_index=convention.ignore_index, device=device)
    total = None
    rows = undecoded(rows)  # decode_pair decodes, naming any file that fails
    if hasattr(rows, "__len__"):
        total = min(len(rows), limit) if limit else len(rows)
        rows = rows.select(range(rank, total, world_size))  # each image once, decoded by its process only
    else:  # streamed: read in order, keep this process's share
        rows = (row for index, row in enumerate(islice(rows, limit)) if index % world_size == rank)
    was_training = model.training
    model.eval()
    scored = torch.zeros((), dtype=torch.int64, device=device)
    shown = progress and (accelerator is None or accelerator.is_main_process)
    bar = tqdm(rows, total=None if total is None else len(rows), desc=description, disable=not shown, leave=False,
               unit="image")
    for index, row in enumerate(bar):
        image, labels = decode_pair(row, convention, index)
        prediction = predict_label_map(model, processor, image, protocol)
        metric.update(prediction, torch.from_numpy(labels).to(device))
        scored += 1
    bar.close()
    if accelerator is not None and world_size > 1:
        metric.all_reduce()
        torch.distributed.all_reduce(scored)
    model.train(was_training)
    return {**metric.compute(), "images": int(scored), "protocol": protocol.to_dict()}


def results_table(result: dict, names: list[str], max_rows: int | None = None) -> str:
    """A Markdown table of per-class IoU and accuracy (in %) and a summary line; `max_rows` keeps the classes with the
    lowest IoU (the ones worth looking at) when there are more."""
    rows = [(name, iou, accuracy) for name, iou, accuracy in
            zip(names, result["per_category_iou"], result["per_category_accuracy"])]
    if max_rows is not None and len(rows) > max_rows:
        rows = sorted((r for r in rows if not np.isnan(r[1])), key=lambda r: r[1])[:max_rows]
    width = max([len("class")] + [len(name) for name, *_ in rows])
    lines = [f"| {'class'.ljust(width)} |   IoU |   Acc |", f"|{'-' * (width + 2)}|-------|-------|"]
    for name, iou, accuracy in rows:
        lines.append(f"| {name.ljust(width)} | {100 * iou:5.2f} | {100 * accuracy:5.2f} |" if not np.isnan(iou) else
                     f"| {name.ljust(width)} |     - |     - |")
    lines.append(f"mIoU {100 * result['mean_iou']:.2f}  mAcc {100 * result['mean_accuracy']:.2f}  "
                 f"aAcc {100 * result['overall_accuracy']:.2f}  ({result.get('images', '?')} images)")
    return "\n".join(lines)
