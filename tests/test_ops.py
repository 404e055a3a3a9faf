"""Each op of ssa_hf/ops_ssa.py against its plain reference (or a loop written here), in every layout it takes:
eager, and inside an ONNX export (simulated by making `torch.onnx.is_in_onnx_export` true)."""

import pytest
import torch
import torch.nn.functional as F

from ssa_hf import ops_ssa


@pytest.fixture
def in_onnx_export(monkeypatch):
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)


def test_cosine_logits_equal_the_normalised_product_by_loop():
    torch.manual_seed(0)
    pixels, prototypes = torch.randn(2, 5, 7, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)
    expected = torch.empty(2, 3, 7, dtype=torch.float64)
    for b in range(2):
        for k in range(3):
            for n in range(7):
                u, v = pixels[b, :, n], prototypes[b, k]
                expected[b, k, n] = 15.0 * (u @ v) / ((u.norm() + 1e-12) * (v.norm() + 1e-12))
    torch.testing.assert_close(ops_ssa.cosine_logits(pixels, prototypes, 15.0), expected, atol=1e-12, rtol=0)


def test_class_softmax_means_by_loop():
    torch.manual_seed(1)
    coarse, features = torch.randn(2, 4, 10, dtype=torch.float64), torch.randn(2, 3, 10, dtype=torch.float64)
    probs = coarse.softmax(dim=1)
    expected = torch.empty(2, 4, 3, dtype=torch.float64)
    for b in range(2):
        for k in range(4):
            expected[b, k] = sum(probs[b, k, n] * features[b, :, n] for n in range(10)) / (probs[b, k].sum() + 1e-12)
    torch.testing.assert_close(ops_ssa.class_softmax_means(coarse, features), expected, atol=1e-12, rtol=0)


def test_class_logits_are_the_1x1_convolution():
    features, weight, bias = torch.randn(2, 5, 4, 6), torch.randn(3, 5), torch.randn(3)
    expected = F.conv2d(features, weight[:, :, None, None], bias).flatten(2)
    torch.testing.assert_close(ops_ssa.class_logits(features.flatten(2), weight, bias), expected)


@pytest.mark.parametrize("onnx_layout", [False, True])
@pytest.mark.parametrize("mode", ["linear", "conv"])
def test_fused_feature_equals_upsample_then_sum(mode, onnx_layout, monkeypatch):
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: onnx_layout)
    torch.manual_seed(2)
    norm = torch.nn.BatchNorm2d(4).eval().double()
    with torch.no_grad():
        norm.running_mean.normal_(), norm.running_var.uniform_(0.5, 2), norm.weight.normal_(), norm.bias.normal_()
    stages = [(torch.randn(2, c, s, s + 1, dtype=torch.float64), torch.randn(4, c, dtype=torch.float64),
               torch.randn(4, dtype=torch.float64) if mode == "linear" else None)
              for c, s in ((3, 8), (5, 4), (6, 2))]
    expected = 0
    for x, weight, bias in stages:  # project each stage, upsample it, add
        mapped = torch.einsum("oc,bchw->bohw", weight, x) + (0 if bias is None else bias[None, :, None, None])
        expected = expected + F.interpolate(mapped, size=(8, 9), mode="bilinear", align_corners=False)
    expected = torch.relu(norm(expected))
    actual = ops_ssa.fused_feature(stages, mode, norm, torch.nn.ReLU())
    torch.testing.assert_close(actual, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("size", [(6, 6), (7, 11), (3, 2)])
def test_adaptive_pooling_in_the_onnx_layout(size, in_onnx_export):
    x = torch.randn(1, 2, *size, dtype=torch.float64)
    for output_size in (1, 2, 3):
        torch.testing.assert_close(ops_ssa.adaptive_avg_pool(x, output_size), F.adaptive_avg_pool2d(x, output_size),
                                   atol=1e-12, rtol=0)


def test_per_class_and_group_sums_by_loop():
    torch.manual_seed(3)
    values, labels = torch.randn(3, 2, 12, dtype=torch.float64), torch.randint(0, 4, (3, 12))
    labels[0, :3] = 255
    sums = ops_ssa.per_class_sums(values, labels, 3, 255)
    for b in range(3):
        for k in range(3):
            torch.testing.assert_close(sums[b, k], values[b][:, labels[b] == k].sum(-1), atol=1e-12, rtol=0)
    grouped = ops_ssa.group_sum(sums, 2)
    torch.testing.assert_close(grouped, torch.stack([sums[0] + sums[1], sums[2]]), atol=1e-12, rtol=0)
