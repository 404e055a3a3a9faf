"""`pipeline("image-segmentation", batch_size=N)` on images of different sizes.

transformers' pipeline preprocesses one image at a time and concatenates the results, which needs images of one size:
SSA's processor keeps each image's aspect ratio (the paper's evaluation protocol), so a batch of a landscape and a
portrait photo fails in `torch.cat`. Importing `ssa_hf` therefore makes the image-segmentation task use
`SSASegmentationPipeline`, which is transformers' pipeline with one change: for a model that takes padded batches
(`accepts_padded_batches`, SSA), a batch of different sizes is padded at the bottom and right and marked in
`pixel_mask`; the model segments each image on its own pixels, so the masks equal those of one image at a time.
Every other model, and every batch of one size, is collated exactly as transformers does.
"""

import torch
import torch.nn.functional as F
from transformers.pipelines import SUPPORTED_TASKS
from transformers.pipelines.image_segmentation import ImageSegmentationPipeline

TASK = "image-segmentation"


def pad_images(pixel_values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, h_i, w_i) tensors -> a (B, C, H, W) batch padded with zeros at the bottom and right, and its (B, H, W)
    `pixel_mask` (1 on image pixels), as `SSAImageProcessor` pads images of different sizes."""
    height = max(p.shape[-2] for p in pixel_values)
    width = max(p.shape[-1] for p in pixel_values)
    batch = torch.cat([F.pad(p, (0, width - p.shape[-1], 0, height - p.shape[-2])) for p in pixel_values])
    mask = torch.zeros(len(pixel_values), height, width, dtype=torch.long)
    for index, p in enumerate(pixel_values):
        mask[index, : p.shape[-2], : p.shape[-1]] = 1
    return batch, mask


class SSASegmentationPipeline(ImageSegmentationPipeline):
    """transformers' `ImageSegmentationPipeline`; batches of images of different sizes work for SSA models."""

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        """transformers' iterator, with the padding collate for models that take padded batches."""
        iterator = super().get_iterator(inputs, num_workers, batch_size, preprocess_params, forward_params,
                                        postprocess_params)
        if batch_size > 1 and getattr(self.model, "accepts_padded_batches", False):
            loader = iterator.loader.loader  # postprocess <- forward <- the DataLoader of preprocessed images
            loader.collate_fn = _padding_collate(loader.collate_fn)
        return iterator


def _padding_collate(collate):
    """transformers' collate for batches of one size; for several sizes, `pad_images` and the others as it does."""

    def inner(items):
        sizes = {tuple(item["pixel_values"].shape[-2:]) for item in items}
        if len(sizes) == 1:
            return collate(items)
        pixel_values, pixel_mask = pad_images([item["pixel_values"] for item in items])
        rest = collate([{k: v for k, v in item.items() if k != "pixel_values"} for item in items])
        return {**rest, "pixel_values": pixel_values, "pixel_mask": pixel_mask}

    return inner


def register() -> None:
    """Make `pipeline("image-segmentation")` build `SSASegmentationPipeline` (the task's models and defaults kept);
    a pipeline class someone else registered for the task is left alone."""
    impl = SUPPORTED_TASKS[TASK]["impl"]  # a class, or its dotted path (resolved lazily by transformers)
    if impl is ImageSegmentationPipeline or impl == f"{ImageSegmentationPipeline.__module__}.ImageSegmentationPipeline":
        SUPPORTED_TASKS[TASK]["impl"] = SSASegmentationPipeline


__all__ = ["SSASegmentationPipeline", "pad_images", "register"]
