"""Training and evaluation transforms of the paper's mmsegmentation 0.30 pipelines (the official code's configs), with PIL,
numpy and torch only: random rescale keeping the aspect ratio, random crop with a category ratio limit, horizontal
flip, photometric distortion, normalisation and padding. Evaluation preprocessing is the model folder's
`SSAImageProcessor` (keep-ratio resize), so that evaluation and `pipeline` see the same inputs.

Images are bilinear, labels always nearest. Randomness comes from torch's generator, which DataLoader seeds per
worker, so forked workers do not repeat each other's augmentations.
"""

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .model.image_processing_ssa import IGNORE_INDEX, keep_ratio_size

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def _randint(low: int, high: int) -> int:
    """Integer in [low, high]."""
    return int(torch.randint(low, high + 1, ()).item())


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv `imrescale`: the largest size with the image's aspect ratio whose long edge fits max(scale) and short
    edge fits min(scale). Returns (width, height)."""
    new_height, new_width = keep_ratio_size(height, width, shortest_edge=min(scale), longest_edge=max(scale))
    return new_width, new_height


def _check_pair(image: Image.Image, label: np.ndarray) -> None:
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode!r}; convert with image.convert('RGB')")
    if label.shape != (image.height, image.width):
        raise ValueError(f"label shape {label.shape} does not match the image size {(image.height, image.width)}")


@dataclass
class TrainTransform:
    """Random training view of an (RGB image, label map) pair -> {"pixel_values": (3, crop_h, crop_w) float,
    "labels": (crop_h, crop_w) long}. Defaults are the ADE20K / COCO-Stuff-10K recipe (PASCAL-Context: scale
    (520, 520), crop (480, 480))."""

    crop_size: tuple[int, int] = (512, 512)  # (height, width)
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric_distortion: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    ignore_index: int = IGNORE_INDEX

    def __call__(self, image: Image.Image, label: np.ndarray) -> dict:
        label = np.asarray(label)
        _check_pair(image, label)
        ratio = _uniform(*self.ratio_range)
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        size = rescale_size(image.width, image.height, target)
        image = image.resize(size, Image.BILINEAR)
        label = np.asarray(Image.fromarray(label.astype(np.int32)).resize(size, Image.NEAREST)).astype(np.int64)
        image, label = self.random_crop(np.asarray(image), label)
        if torch.rand(()).item() < self.flip_prob:
            image, label = image[:, ::-1], label[:, ::-1]
        image = image.astype(np.float32)
        if self.photometric_distortion:
            image = photometric_distortion(image)
        return self.normalise_and_pad(image, label)

    def random_crop(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """mmseg RandomCrop: up to 10 tries for a crop where no single class covers more than `cat_max_ratio` of
        the labelled pixels (and at least two classes occur); the last try is kept otherwise."""
        crop_h, crop_w = self.crop_size
        margin_h, margin_w = max(label.shape[0] - crop_h, 0), max(label.shape[1] - crop_w, 0)

        def crop_box():
            top, left = _randint(0, margin_h), _randint(0, margin_w)
            return top, min(top + crop_h, label.shape[0]), left, min(left + crop_w, label.shape[1])

        box = crop_box()
        if self.cat_max_ratio < 1:
            for _ in range(10):
                crop = label[box[0] : box[1], box[2] : box[3]]
                _, counts = np.unique(crop[crop != self.ignore_index], return_counts=True)
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                box = crop_box()
        top, bottom, left, right = box
        return image[top:bottom, left:right], label[top:bottom, left:right]

    def normalise_and_pad(self, image: np.ndarray, label: np.ndarray) -> dict:
        image = (image - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        crop_h, crop_w = self.crop_size
        height, width = label.shape
        pixel_values = torch.zeros(3, max(crop_h, height), max(crop_w, width))  # image padding: 0 after normalising
        pixel_values[:, :height, :width] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        labels = torch.full(pixel_values.shape[1:], self.ignore_index, dtype=torch.long)
        labels[:height, :width] = torch.from_numpy(np.ascontiguousarray(label))
        return {"pixel_values": pixel_values, "labels": labels}


def photometric_distortion(image: np.ndarray, brightness_delta: int = 32, contrast_range=(0.5, 1.5),
                           saturation_range=(0.5, 1.5), hue_delta: int = 18) -> np.ndarray:
    """mmseg PhotoMetricDistortion on an RGB float image in [0, 255]: brightness, contrast (before or after the HSV
    steps, at random), saturation and hue, each applied with probability 1/2. Hue uses OpenCV's 180-degree scale."""

    def clip(x):
        return np.clip(x, 0, 255).astype(np.uint8).astype(np.float32)

    if _randint(0, 1):
        image = clip(image + _uniform(-brightness_delta, brightness_delta))
    contrast_first = _randint(0, 1)
    if contrast_first and _randint(0, 1):
        image = clip(image * _uniform(*contrast_range))
    do_saturation, do_hue = _randint(0, 1), _randint(0, 1)
    if do_saturation or do_hue:
        hsv = np.asarray(Image.fromarray(image.astype(np.uint8)).convert("HSV")).astype(np.float32)
        if do_saturation:
            hsv[..., 1] = np.clip(hsv[..., 1] * _uniform(*saturation_range), 0, 255)
        if do_hue:  # PIL's hue spans 0..255 for 360 degrees; OpenCV's delta is in units of 2 degrees
            hsv[..., 0] = (hsv[..., 0] + _randint(-hue_delta, hue_delta) * 256 / 180) % 256
        image = np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")).astype(np.float32)
    if not contrast_first and _randint(0, 1):
        image = clip(image * _uniform(*contrast_range))
    return image
