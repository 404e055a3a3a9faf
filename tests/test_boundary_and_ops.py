"""The torch boundary mask against OpenCV (test-only oracle), and the chunked upsampled cross-entropy/Dice against
plain `F.interpolate` + losses."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from ssa_reference import opencv_boundary

from ssa_hf import boundary_mask, label_edges, upsampled_segmentation_statistics
from ssa_hf.ops_ssa import downsample_labels


def random_label_maps(count, seed):
    rng = np.random.default_rng(seed)
    for index in range(count):
        height, width = (int(v) for v in rng.integers(1, 48, size=2))
        num_classes = int(rng.integers(2, 9))
        block = int(rng.integers(1, 6))
        coarse = rng.integers(0, num_classes, size=(height // block + 1, width // block + 1))
        labels = np.kron(coarse, np.ones((block, block), dtype=np.int64))[:height, :width]
        noise = rng.random((height, width)) < 0.05
        labels[noise] = rng.integers(0, num_classes, size=int(noise.sum()))
        if index % 3 == 0:
            labels[rng.random((height, width)) < 0.2] = 255
        if index % 7 == 0:
            labels = rng.integers(0, 256, size=(height, width))
        yield labels.astype(np.uint8)


def test_label_edges_equal_opencv_canny_on_random_maps():
    mismatched = []
    for index, labels in enumerate(random_label_maps(400, seed=0)):
        expected = cv2.Canny(labels, 0.1, 0.2) > 0
        got = label_edges(torch.from_numpy(labels.astype(np.int64))[None])[0].numpy()
        if not np.array_equal(expected, got):
            mismatched.append(index)
    assert not mismatched


def test_boundary_mask_equals_the_opencv_recipe_on_random_maps():
    for labels in random_label_maps(200, seed=1):
        expected = opencv_boundary(labels)
        got = boundary_mask(torch.from_numpy(labels.astype(np.int64))[None])[0].numpy()
        assert np.array_equal(expected > 0, got)


def test_boundary_mask_is_batched_per_image():
    rng = np.random.default_rng(4)
    batch = np.stack([np.kron(rng.integers(0, 5, size=(5, 5)), np.ones((4, 4), np.int64)) for _ in range(4)])
    got = boundary_mask(torch.from_numpy(batch))
    for b in range(4):
        assert np.array_equal(got[b].numpy(), opencv_boundary(batch[b].astype(np.uint8)) > 0)


def _real_label_maps(shared_data):
    camvid = sorted((shared_data / "camvid" / "train" / "labels").glob("*.png"))[::12]
    ade = sorted((shared_data / "ade20k_samples" / "annotations").glob("*.png"))
    assert camvid and ade, "expected CamVid and ADE20K label maps in the shared data"
    for path in camvid:
        labels = np.array(Image.open(path), dtype=np.int64)
        yield path.name, np.where(labels == 11, 255, labels)  # CamVid: 11 = unlabelled -> ignore
    for path in ade:
        labels = np.array(Image.open(path), dtype=np.int64)
        yield path.name, np.where(labels == 0, 255, labels - 1)  # ADE20K: reduce labels


def test_boundary_on_real_label_maps_equals_opencv(shared_data):
    checked = 0
    for name, labels in _real_label_maps(shared_data):
        full = torch.from_numpy(labels)[None]
        # The training path: legacy-nearest labels at stride 4, then the boundary recipe.
        small = downsample_labels(full, (labels.shape[0] // 4, labels.shape[1] // 4))
        for label_map in (full, small):
            array = label_map[0].numpy().astype(np.uint8)
            assert np.array_equal(label_edges(label_map)[0].numpy(), cv2.Canny(array, 0.1, 0.2) > 0), name
            assert np.array_equal(boundary_mask(label_map)[0].numpy(), opencv_boundary(array) > 0), name
        checked += 1
    assert checked >= 30


def _plain_statistics(logits, labels, ignore_index=255):
    num_classes = logits.shape[1]
    upsampled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=True)
    valid = labels != ignore_index
    target = torch.where(valid, labels, 0)
    nll = -(upsampled.log_softmax(1).gather(1, target[:, None])[:, 0] * valid).flatten(1).sum(1)
    probs = upsampled.sigmoid()
    one_hot = F.one_hot(torch.where(valid, labels, num_classes), num_classes + 1)[..., :num_classes]
    return nll, probs.sum((2, 3)), (probs * one_hot.permute(0, 3, 1, 2)).sum((2, 3))


@pytest.mark.parametrize("shape", [(2, 5, 3, 4, 11, 13), (1, 3, 4, 4, 4, 4), (2, 4, 5, 3, 1, 7), (3, 6, 8, 6, 32, 24)])
def test_upsampled_statistics_match_interpolate_and_gradcheck(shape):
    batch, num_classes, height, width, full_h, full_w = shape
    logits = torch.randn(batch, num_classes, height, width, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, num_classes, (batch, full_h, full_w))
    labels[torch.rand(batch, full_h, full_w) < 0.3] = 255
    all_classes = torch.arange(num_classes).expand(batch, -1)
    got = upsampled_segmentation_statistics(logits, labels, 255, all_classes)
    expected = _plain_statistics(logits, labels)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    grads_out = [torch.randn_like(t) for t in got]
    torch.testing.assert_close(
        torch.autograd.grad(got, logits, grads_out)[0], torch.autograd.grad(expected, logits, grads_out)[0],
        atol=1e-10, rtol=0,
    )
    assert torch.autograd.gradcheck(lambda x: upsampled_segmentation_statistics(x, labels, 255, all_classes), (logits,))
    # A subset of classes per image (with a repeated index, as the padding of the Dice selection).
    subset = torch.stack([torch.randperm(num_classes)[:2] for _ in range(batch)])
    subset[:, 1] = subset[:, 0]
    partial = upsampled_segmentation_statistics(logits, labels, 255, subset)
    torch.testing.assert_close(partial[1], expected[1].gather(1, subset), atol=1e-10, rtol=0)
    torch.testing.assert_close(partial[2], expected[2], atol=1e-10, rtol=0)
    assert torch.autograd.gradcheck(lambda x: upsampled_segmentation_statistics(x, labels, 255, subset), (logits,))
    only_nll = upsampled_segmentation_statistics(logits, labels, 255)
    torch.testing.assert_close(only_nll[0], expected[0], atol=1e-10, rtol=0)
    assert only_nll[1].numel() == 0 and only_nll[2].abs().sum() == 0
    # The plain reference (what runs under torch.compile) is the same function.
    from ssa_hf.ops_ssa import upsampled_segmentation_statistics_reference

    for a, b in zip(upsampled_segmentation_statistics_reference(logits, labels, 255, all_classes), expected):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_upsampled_statistics_float32_over_several_chunks(monkeypatch):
    import ssa_hf.ops_ssa as ops_module

    monkeypatch.setattr(ops_module, "_CHUNK_ELEMENTS", 500)  # forces one or two rows per chunk
    logits = torch.randn(2, 7, 9, 10, requires_grad=True)
    labels = torch.randint(0, 7, (2, 36, 40))
    got = upsampled_segmentation_statistics(logits, labels, 255, torch.arange(7).expand(2, -1))
    expected = _plain_statistics(logits, labels)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-5)
    grads_out = [torch.randn_like(t) for t in got]
    torch.testing.assert_close(
        torch.autograd.grad(got, logits, grads_out)[0], torch.autograd.grad(expected, logits, grads_out)[0],
        atol=1e-5, rtol=1e-4,
    )
