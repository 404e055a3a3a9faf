"""Training and evaluation transforms (the official configs): sizes by hand, labels only ever nearest, padding values, the
category-ratio crop, exact flips, bad input, and independent randomness in DataLoader workers."""

import numpy as np
import pytest
import torch
from PIL import Image

from ssa_hf.data import CONVENTIONS, load_folder
from ssa_hf.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform, rescale_size


def make_pair(width=64, height=48, seed=0):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    label = np.kron(rng.integers(0, 5, (height // 8, width // 8)), np.ones((8, 8), np.int64))
    return image, label


def normalised(array):
    return (array.astype(np.float32) - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)


def test_rescale_size_by_hand():
    assert rescale_size(683, 512, (2048, 512)) == (683, 512)
    assert rescale_size(500, 364, (1024, 256)) == (352, 256)  # factor min(1024/500, 256/364) = 0.7033
    assert rescale_size(480, 360, (520, 520)) == (520, 390)


def test_train_view_shapes_labels_and_padding():
    torch.manual_seed(0)
    image, label = make_pair(64, 48)
    transform = TrainTransform(crop_size=(40, 40), scale=(64, 48), ratio_range=(0.5, 0.5))  # image shrinks to 32x24
    out = transform(image, label)
    assert out["pixel_values"].shape == (3, 40, 40) and out["labels"].shape == (40, 40)
    assert out["labels"].dtype == torch.long and out["pixel_values"].dtype == torch.float32
    assert (out["labels"][24:] == 255).all() and (out["labels"][:, 32:] == 255).all()
    assert (out["pixel_values"][:, 24:] == 0).all() and (out["pixel_values"][:, :, 32:] == 0).all()
    for seed in range(20):
        torch.manual_seed(seed)
        values = set(TrainTransform(crop_size=(32, 32), scale=(64, 48))(image, label)["labels"].unique().tolist())
        assert values <= set(np.unique(label).tolist()) | {255}  # nearest resizing never invents labels


def test_category_ratio_crop_avoids_single_class_crops():
    image = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
    label = np.zeros((64, 64), np.int64)
    label[:, 56:] = 1  # class 1 only in a thin strip on the right

    def mixed_fraction(cat_max_ratio):
        mixed = 0
        for seed in range(40):
            torch.manual_seed(seed)
            transform = TrainTransform(crop_size=(16, 16), scale=(64, 64), ratio_range=(1.0, 1.0),
                                       cat_max_ratio=cat_max_ratio, flip_prob=0, photometric_distortion=False)
            labels = transform(image, label)["labels"]
            counts = torch.bincount(labels.flatten(), minlength=2)[:2]
            mixed += int(counts.min() > 0 and counts.max() / counts.sum() < 0.75)
        return mixed / 40

    assert mixed_fraction(0.75) > mixed_fraction(1.0) + 0.3


def test_flip_and_whole_image_crop_are_exact():
    image, label = make_pair(32, 24)
    transform = TrainTransform(crop_size=(24, 32), scale=(32, 24), ratio_range=(1.0, 1.0), flip_prob=1.0,
                               photometric_distortion=False)
    out = transform(image, label)
    np.testing.assert_allclose(out["pixel_values"].numpy().transpose(1, 2, 0), normalised(np.asarray(image))[:, ::-1],
                               rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out["labels"].numpy(), label[:, ::-1])


def test_photometric_distortion_changes_colours_within_range():
    image, label = make_pair(32, 32)
    changed = 0
    for seed in range(10):
        torch.manual_seed(seed)
        transform = TrainTransform(crop_size=(32, 32), scale=(32, 32), ratio_range=(1.0, 1.0), flip_prob=0)
        pixels = transform(image, label)["pixel_values"].numpy().transpose(1, 2, 0)
        restored = pixels * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
        assert restored.min() >= -1e-3 and restored.max() <= 255 + 1e-3
        changed += not np.allclose(restored, np.asarray(image), atol=1e-3)
    assert changed >= 5


def test_bad_input_is_a_clear_error():
    image, label = make_pair()
    with pytest.raises(ValueError, match="expected an RGB image, got mode 'L'"):
        TrainTransform()(image.convert("L"), label)
    with pytest.raises(ValueError, match="does not match the image size"):
        TrainTransform()(image, label[:10])


class _SameItem(torch.utils.data.Dataset):
    def __init__(self):
        self.image, self.label = make_pair(64, 64)

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return TrainTransform(crop_size=(32, 32), scale=(64, 64))(self.image, self.label)["pixel_values"]


def test_dataloader_workers_draw_different_augmentations():
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(_SameItem(), batch_size=1, num_workers=2)
    views = [batch[0] for batch in loader]  # items 0, 2 from worker 0; items 1, 3 from worker 1
    assert not torch.equal(views[0], views[1])


def test_real_camvid_pair_through_the_training_view(shared_data):
    dataset = load_folder(shared_data / "camvid", split="validation", check_sizes=False).select(range(2))
    torch.manual_seed(0)
    transform = TrainTransform(crop_size=(256, 256), scale=(480, 360))
    for item in dataset:
        labels = CONVENTIONS["camvid"].apply(np.array(item["annotation"]))
        out = transform(item["image"], labels)
        assert out["labels"].shape == (256, 256)
        assert set(out["labels"].unique().tolist()) <= set(range(11)) | {255}
