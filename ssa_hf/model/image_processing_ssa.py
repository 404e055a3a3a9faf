"""Image processor and label convention of SSA models: the one preprocessing contract saved beside the weights.

`SSAImageProcessor` is `SegformerImageProcessor` (PIL backend) with the evaluation protocol of the paper's configs
(mmsegmentation 0.30, see docs/method.md, "Evaluation protocol"): images are resized keeping their aspect ratio
(`size={"shortest_edge": 512, "longest_edge": 2048}`, mmcv's `imrescale` rounding), optionally to a multiple of
`size_divisor` (the authors' `ResizeToMultiple(32)` for ADE20K), and predictions are resized back to the network input
size and then to the original image size, as mmseg's `EncoderDecoder` does. It also holds the label convention of the
training data (`do_reduce_labels`, `label_remap`, `ignore_index`), so whoever loads a saved folder, through
`pipeline("image-segmentation")` or `ssa-seg evaluate`, preprocesses exactly as the reported numbers were measured.

Images of different sizes in one call are padded (bottom and right) to the largest and marked in `pixel_mask`; SSA
models segment each image on its own pixels, so a padded batch gives the masks of one image at a time.

This file is remote code: it depends on numpy, torch and transformers only.
"""

from dataclasses import dataclass, field

import numpy as np
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import ChannelDimension, PILImageResampling, SizeDict
from transformers.models.segformer.image_processing_pil_segformer import (
    SegformerImageProcessorKwargs,
    SegformerImageProcessorPil,
)

IGNORE_INDEX = 255


@dataclass(frozen=True)
class LabelConvention:
    """How raw mask values become training labels: classes 0..num_labels-1, everything ignored set to ignore_index.

    Args:
        num_labels: number of classes after conversion; None skips the range check (the processor does not know
            the class count; the model checks its labels).
        reduce_zero_label: 0 (unlabelled / "other") -> ignore, k -> k - 1 (ADE20K, COCO-Stuff-10K, PASCAL-Context).
        remap: raw value -> label, applied first (e.g. CamVid's 11 "Unlabelled" -> 255); other values are kept.
        ignore_index: the ignore value of the converted labels (also kept when already present in the raw mask).
    """

    num_labels: int | None = None
    reduce_zero_label: bool = False
    remap: dict[int, int] = field(default_factory=dict)
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self):
        object.__setattr__(self, "remap", {int(k): int(v) for k, v in (self.remap or {}).items()})
        if self.num_labels is not None and self.num_labels > self.ignore_index >= 0:
            raise ValueError(f"num_labels {self.num_labels} reaches the ignore index {self.ignore_index}: class "
                             f"{self.ignore_index} could never be learned or scored; use an ignore index >= num_labels.")

    def apply(self, raw: np.ndarray, source: str = "mask") -> np.ndarray:
        """Convert one raw mask to int64 labels; values that are neither a class nor ignored raise, naming `source`."""
        raw = np.asarray(raw)
        if raw.ndim != 2:
            raise ValueError(f"{source}: a label mask must be single-channel (H, W), got shape {raw.shape}.")
        if raw.dtype.kind == "f" and not np.array_equal(raw, np.round(raw)):
            raise ValueError(f"{source}: a label mask must hold integers, got fractional values ({raw.dtype}).")
        if raw.dtype.kind not in "iufb":
            raise ValueError(f"{source}: a label mask must hold integers, got dtype {raw.dtype}.")
        if raw.size == 0:
            return raw.astype(np.int64)
        # Convert each distinct raw value once, then look the pixels up: a table for non-negative masks (uint8 and
        # uint16 PNGs, .mat label maps), the sorted distinct values otherwise.
        if raw.dtype.kind in "ub" and int(raw.max()) < 2**16:
            values, index = np.arange(int(raw.max()) + 1), raw.astype(np.intp)
        else:
            values, index = np.unique(raw, return_inverse=True)
            index = index.reshape(raw.shape)
        converted = self.convert_values(values.astype(np.int64))
        if self.num_labels is not None:
            invalid = (converted != self.ignore_index) & ((converted < 0) | (converted >= self.num_labels))
            if invalid.any():  # a table value may be absent from the mask: only present ones count
                invalid &= np.bincount(index.ravel(), minlength=len(values)) > 0
            if invalid.any():
                raise ValueError(
                    f"{source}: label values {values.astype(np.int64)[invalid][:20].tolist()} do not map to a class in "
                    f"[0, {self.num_labels}) or to the ignore index {self.ignore_index} "
                    f"(reduce_zero_label={self.reduce_zero_label}, remap={_short(self.remap)})."
                )
        return converted[index]

    def convert_values(self, values: np.ndarray) -> np.ndarray:
        """The conversion of raw values (any shape, int64): `remap` first, then `reduce_zero_label`; no checks."""
        labels = values
        if self.remap:
            keys = np.array(sorted(self.remap), dtype=np.int64)
            targets = np.array([self.remap[k] for k in keys.tolist()], dtype=np.int64)
            slot = np.clip(np.searchsorted(keys, labels), 0, len(keys) - 1)
            labels = np.where(keys[slot] == labels, targets[slot], labels)
        if self.reduce_zero_label:
            labels = np.where(labels == self.ignore_index, self.ignore_index,
                              np.where(labels == 0, self.ignore_index, labels - 1))
        return labels


def _short(mapping: dict) -> str:
    items = list(mapping.items())
    return str(dict(items)) if len(items) <= 12 else f"{dict(items[:12])} ... ({len(items)} entries)"


def keep_ratio_size(height: int, width: int, shortest_edge: int, longest_edge: int,
                    size_divisor: int | None = None) -> tuple[int, int]:
    """mmcv `imrescale` (height, width): the largest size with the image's aspect ratio whose long edge fits
    `longest_edge` and short edge fits `shortest_edge` (rounded half up), then rounded up to multiples of
    `size_divisor` (mmseg `ResizeToMultiple`)."""
    factor = min(longest_edge / max(height, width), shortest_edge / min(height, width))
    new_height, new_width = int(height * factor + 0.5), int(width * factor + 0.5)
    if size_divisor:
        new_height = -(-new_height // size_divisor) * size_divisor
        new_width = -(-new_width // size_divisor) * size_divisor
    return new_height, new_width


class SSAImageProcessorKwargs(SegformerImageProcessorKwargs, total=False):
    r"""
    size_divisor (`int`, *optional*, defaults to `self.size_divisor`):
        After the resize, round height and width up to multiples of this value (resizing, not padding).
    label_remap (`dict[int, int]`, *optional*, defaults to `self.label_remap`):
        Raw segmentation-map value -> label, applied before `do_reduce_labels` (e.g. `{11: 255}` for CamVid).
    ignore_index (`int`, *optional*, defaults to `self.ignore_index`):
        The label value that is ignored in training and evaluation.
    """

    size_divisor: int | None
    label_remap: dict | None
    ignore_index: int


class SSAImageProcessor(SegformerImageProcessorPil):
    r"""SegFormer's image processor with the keep-ratio evaluation resize and the label convention of SSA models.

    Args:
        size (`dict`, *optional*, defaults to shortest edge 512, longest edge 2048):
            `{"shortest_edge", "longest_edge"}`: resize keeping the aspect ratio so that both edges fit (mmcv
            `imrescale`); `{"height", "width"}`: resize to that fixed size, as `SegformerImageProcessor`.
        size_divisor (`int`, *optional*, defaults to `None`):
            Round the resized height and width up to multiples of this value.
        do_reduce_labels (`bool`, *optional*, defaults to `False`):
            Raw label 0 -> `ignore_index`, k -> k - 1 (ADE20K, COCO-Stuff-10K, PASCAL-Context).
        label_remap (`dict[int, int]`, *optional*, defaults to `None`):
            Raw label -> label, applied first.
        ignore_index (`int`, *optional*, defaults to 255):
            The ignored label value.
        do_pad (`bool`, *optional*, defaults to `True`):
            When the images of one call differ in size after resizing, pad them (bottom and right, zeros after
            normalisation; labels with `ignore_index`) to the largest and return `pixel_mask` (1 on image pixels).
            Images of one size are returned as they are, without a mask.
        pad_size (`dict`, *optional*, defaults to `None`):
            `{"height", "width"}`: pad every image to this size (and return `pixel_mask`) instead.

    Other arguments (normalisation, `do_resize`, ...) are `SegformerImageProcessor`'s.

    Example:

    ```python
    >>> import numpy as np
    >>> from PIL import Image
    >>> from ssa_hf import SSAImageProcessor
    >>> processor = SSAImageProcessor(size={"shortest_edge": 512, "longest_edge": 2048}, size_divisor=32)
    >>> processor(Image.new("RGB", (683, 512)), return_tensors="pt").pixel_values.shape  # 683x512 kept, then x32
    torch.Size([1, 3, 512, 704])
    >>> batch = processor([Image.new("RGB", (640, 480)), Image.new("RGB", (480, 640))], return_tensors="pt")
    >>> batch.pixel_values.shape, batch.pixel_mask.shape  # padded to the largest, the padding marked
    (torch.Size([2, 3, 704, 704]), torch.Size([2, 704, 704]))

    ```
    """

    valid_kwargs = SSAImageProcessorKwargs
    size = {"shortest_edge": 512, "longest_edge": 2048}
    default_to_square = False
    do_convert_rgb = True  # greyscale, palette and RGBA images are read as RGB, as the training data
    size_divisor = None
    label_remap = None
    ignore_index = IGNORE_INDEX
    do_pad = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    # The settings of a source model's processor that carry over to SSA on that model.
    SOURCE_SETTINGS = ("do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean",
                       "image_std", "do_reduce_labels", "size_divisor", "label_remap", "ignore_index")

    @classmethod
    def from_source(cls, source, **overrides) -> "SSAImageProcessor":
        """The processor to save beside SSA put on a transformers model (`SSAForSemanticSegmentation.from_segformer`
        or `from_upernet`): the source's image processor settings (normalisation, resize, `do_reduce_labels`) are
        kept; a source without one (or a model instance) gives the defaults. `overrides` are applied last.

        ```python
        >>> model = SSAForSemanticSegmentation.from_segformer("nvidia/segformer-b0-finetuned-ade-512-512")
        >>> processor = SSAImageProcessor.from_source("nvidia/segformer-b0-finetuned-ade-512-512")
        >>> model.save_pretrained("ssa-b0"); processor.save_pretrained("ssa-b0")
        ```
        """
        settings = {}
        if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
            try:
                found, _ = cls.get_image_processor_dict(str(source))
            except OSError:  # no preprocessor_config.json: the model's own defaults
                found = {}
            settings = {key: value for key, value in found.items() if key in cls.SOURCE_SETTINGS and value is not None}
        return cls(**(settings | overrides))

    @property
    def label_convention(self) -> LabelConvention:
        """The convention applied to raw segmentation maps (class count unchecked here)."""
        return LabelConvention(None, reduce_zero_label=bool(self.do_reduce_labels), remap=self.label_remap or {},
                               ignore_index=self.ignore_index)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The network input size (height, width) for an image of `height` x `width`."""
        if not self.do_resize:
            return height, width
        size = self.size
        if size.shortest_edge and size.longest_edge:
            return keep_ratio_size(height, width, size.shortest_edge, size.longest_edge, self.size_divisor)
        if size.height and size.width:
            return size.height, size.width
        raise ValueError(f"size must be {{'shortest_edge', 'longest_edge'}} or {{'height', 'width'}}, got {dict(size)}")

    def resize(self, image: np.ndarray, size: SizeDict, resample=None, size_divisor: int | None = None,
               **kwargs) -> np.ndarray:
        """Resize a channels-first array: keep-ratio (mmcv rounding) for `shortest_edge` + `longest_edge` sizes."""
        height, width = image.shape[-2:]
        if size.shortest_edge and size.longest_edge:
            new_height, new_width = keep_ratio_size(height, width, size.shortest_edge, size.longest_edge, size_divisor)
            size = SizeDict(height=new_height, width=new_width)
        return super().resize(image, size, resample, **kwargs)

    def _preprocess_image_like_inputs(self, images, segmentation_maps, do_convert_rgb, input_data_format,
                                      return_tensors=None, **kwargs) -> BatchFeature:
        images = self._prepare_image_like_inputs(images=images, do_convert_rgb=do_convert_rgb,
                                                 input_data_format=input_data_format)
        data = {"pixel_values": self._preprocess(images, **kwargs)}
        pad_size = kwargs.get("pad_size")
        padded = kwargs.get("do_pad") and (pad_size is not None or len({p.shape for p in data["pixel_values"]}) > 1)
        if padded:
            data["pixel_values"], data["pixel_mask"] = self.pad(data["pixel_values"], pad_size=pad_size,
                                                                return_mask=True)
        if segmentation_maps is not None:
            maps = self._prepare_image_like_inputs(images=segmentation_maps, expected_ndims=2, do_convert_rgb=False,
                                                   input_data_format=ChannelDimension.FIRST)
            convention = LabelConvention(None, reduce_zero_label=bool(kwargs["do_reduce_labels"]),
                                         remap=kwargs.get("label_remap") or {}, ignore_index=kwargs["ignore_index"])
            maps = [convention.apply(m[0], source=f"segmentation map {i}")[None] for i, m in enumerate(maps)]
            resized = self._preprocess(maps, **(kwargs | {"do_normalize": False, "do_rescale": False,
                                                          "resample": PILImageResampling.NEAREST}))
            if padded:
                resized = self.pad(resized, pad_size=pad_size, fill_value=kwargs["ignore_index"])
            data["labels"] = [m[0].astype(np.int64) for m in resized]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _preprocess(self, images: list[np.ndarray], resample, do_resize: bool, do_rescale: bool, do_normalize: bool,
                    size: SizeDict, rescale_factor: float, image_mean, image_std, size_divisor: int | None = None,
                    **kwargs) -> list[np.ndarray]:
        processed = []
        for image in images:
            if do_resize:
                # Labels are int64 here; PIL resizes 32-bit integer images, whose nearest resize keeps every value.
                image = image.astype(np.int32) if image.dtype == np.int64 else image
                image = self.resize(image, size, resample, size_divisor=size_divisor)
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            processed.append(image)
        return processed

    def post_process_semantic_segmentation(self, outputs, target_sizes: list[tuple] | None = None,
                                           input_sizes: list[tuple] | None = None):
        """Class-index maps (one (H, W) tensor per image), as mmseg post-processes: the logits are resized
        (bilinear, `align_corners=False`) to the network input size, then to the target size, and the argmax taken.

        Args:
            outputs: the model output (its `logits`, (B, K, h, w)); for a padded batch also `logits_sizes`, the
                size of each image's own logits inside the padded ones.
            target_sizes: one (height, width) per image, usually the original image size; None keeps the logits'
                own resolution.
            input_sizes: the network input size of each image; by default computed from its target size with this
                processor's resize (exact when the target size is the original image size, as in `pipeline`).

        Returns:
            `list[torch.Tensor]`: one (height, width) map of class indices per image.
        """
        import torch

        logits = outputs.logits
        logits_sizes = getattr(outputs, "logits_sizes", None)
        own_logits = [logits[i : i + 1] if logits_sizes is None else
                      logits[i : i + 1, :, : int(logits_sizes[i][0]), : int(logits_sizes[i][1])]
                      for i in range(len(logits))]
        if target_sizes is None:
            return [image_logits[0].argmax(0) for image_logits in own_logits]
        if isinstance(target_sizes, torch.Tensor):
            target_sizes = target_sizes.tolist()
        if len(target_sizes) != len(logits):
            raise ValueError(f"{len(target_sizes)} target sizes for a batch of {len(logits)} logits")
        maps = []
        for index, target in enumerate(target_sizes):
            target = tuple(int(v) for v in target)
            input_size = tuple(input_sizes[index]) if input_sizes is not None else self.resized_size(*target)
            image_logits = own_logits[index].float()
            for size in (input_size, target):
                if tuple(image_logits.shape[-2:]) != size:
                    image_logits = torch.nn.functional.interpolate(image_logits, size=size, mode="bilinear",
                                                                   align_corners=False)
            maps.append(image_logits[0].argmax(0))
        return maps


__all__ = ["IGNORE_INDEX", "LabelConvention", "SSAImageProcessor", "keep_ratio_size"]
