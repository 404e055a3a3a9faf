"""Streaming semantic-segmentation metrics: a running confusion matrix on the model's device.

Memory is constant in the number of images (one K x K matrix), accumulation never reads values on the host, and the
results follow the definitions of the `evaluate` "mean_iou" metric: per-class IoU = intersection / union and accuracy
= intersection / label area (NaN for classes with no union / no label pixels), mean IoU and mean accuracy as NaN-means
over classes, overall accuracy (aAcc) = correctly labelled pixels / labelled pixels.
"""

import torch


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

    def __init__(self, num_labels: int, ignore_index: int = 255, device: torch.device | str | None = None):
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
    """Class probabilities (B, K, *output_size) the way mmseg tests: `mode` "whole" or "slide" (sliding window); with
    several `scales` and/or `flip`, the softmax outputs of every rescaled (and mirrored) view are averaged (aug_test).
    `output_size` defaults to the input size (pass the original image size to score against full-size labels)."""
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
