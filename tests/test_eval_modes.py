"""Whole, sliding-window and multi-scale/flip inference (mmseg semantics), and the evaluation command."""

import json

import pytest
import torch
from helpers import TINY_SEGFORMER
from transformers.modeling_outputs import SemanticSegmenterOutput

from ssa_hf.evaluation import predict_probabilities, sliding_window_logits


class PointwiseModel(torch.nn.Module):
    """Logits = a 1x1 convolution of the input at full resolution: every inference mode must agree with it."""

    def __init__(self, num_labels=4):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, num_labels, 1)
        self.windows = []

    def forward(self, pixel_values):
        self.windows.append(tuple(pixel_values.shape[-2:]))
        return SemanticSegmenterOutput(logits=self.conv(pixel_values))


def test_sliding_window_grid_follows_mmseg():
    model = PointwiseModel()
    pixel_values = torch.randn(1, 3, 10, 13)
    sliding_window_logits(model, pixel_values, crop_size=(4, 5), stride=(3, 4))
    # rows: max(10 - 4 + 3 - 1, 0) // 3 + 1 = 3; cols: max(13 - 5 + 4 - 1, 0) // 4 + 1 = 3; all windows full-size
    assert model.windows == [(4, 5)] * 9
    model.windows.clear()
    sliding_window_logits(model, pixel_values, crop_size=(16, 16), stride=(8, 8))
    assert model.windows == [(10, 13)]  # a crop larger than the image is one window


def test_all_modes_agree_for_a_pointwise_model():
    torch.manual_seed(0)
    model = PointwiseModel()
    pixel_values = torch.randn(2, 3, 17, 23)
    whole = predict_probabilities(model, pixel_values)
    expected = model.conv(pixel_values).softmax(1)
    torch.testing.assert_close(whole, expected)
    slide = predict_probabilities(model, pixel_values, mode="slide", crop_size=(8, 8), stride=(5, 6))
    torch.testing.assert_close(slide, expected)  # overlapping windows average identical values
    flipped = predict_probabilities(model, pixel_values, flip=True)
    torch.testing.assert_close(flipped, expected)  # a pointwise model is mirror-equivariant
    resized = predict_probabilities(model, pixel_values, output_size=(34, 46))
    assert resized.shape == (2, 4, 34, 46)
    with pytest.raises(ValueError, match="mode must be"):
        predict_probabilities(model, pixel_values, mode="tiles")


def test_multi_scale_averages_the_views():
    torch.manual_seed(1)
    model = PointwiseModel()
    pixel_values = torch.randn(1, 3, 16, 16)
    half = torch.nn.functional.interpolate(pixel_values, scale_factor=0.5, mode="bilinear", align_corners=False)
    expected_half = torch.nn.functional.interpolate(model.conv(half), size=(16, 16), mode="bilinear",
                                                    align_corners=False).softmax(1)
    both = predict_probabilities(model, pixel_values, scales=(0.5, 1.0))
    torch.testing.assert_close(both, (expected_half + model.conv(pixel_values).softmax(1)) / 2)


def test_evaluation_command_prints_a_table_and_writes_json(tmp_path, capsys):
    from ssa_hf import SSAConfig, SSAForSemanticSegmentation, SSAImageProcessor
    from ssa_hf.synthetic import CLASSES, generate
    from ssa_hf_cli import main

    data = generate(tmp_path / "scenes", num_train=1, num_val=3, size=(64, 80), seed=2)
    config = SSAConfig.from_segformer_config(dict(TINY_SEGFORMER), id2label=dict(enumerate(CLASSES)))
    SSAForSemanticSegmentation(config).save_pretrained(tmp_path / "model")
    # The folder's processor names the convention (raw scene labels are already classes) and the test scale.
    SSAImageProcessor(size={"shortest_edge": 64, "longest_edge": 80}).save_pretrained(tmp_path / "model")
    command = ["evaluate", "--model", str(tmp_path / "model"), "--data", str(data), "--mode", "slide", "--crop", "32",
               "32", "--stride", "24", "24", "--scales", "0.75", "1.0", "--flip"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "| sky" in printed and "mIoU" in printed and "slide" in printed and "keep ratio to fit 80x64" in printed
    saved = json.loads((tmp_path / "model" / "eval_validation.json").read_text())
    assert saved["images"] == 3 and saved["protocol"]["flip"] is True and set(saved["per_category"]) == set(CLASSES)
    assert saved["protocol"]["scale"] == [80, 64] and saved["limit"] is None
    assert 0 <= saved["mean_iou"] <= 1
    assert main(command) == 2  # the evaluation JSON exists: not overwritten
    assert "--overwrite" in capsys.readouterr().err
    assert main(command + ["--overwrite", "--convention", "ade20k"]) == 2  # 150 classes vs the model's 6
    assert "mismatched num_labels" in capsys.readouterr().err
