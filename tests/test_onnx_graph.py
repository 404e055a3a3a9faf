"""The layout the model takes inside an ONNX export (channels-last decoder with batch norm folded in) computes the
same function as the eager path, and the exported graph matches PyTorch."""

import numpy as np
import pytest
import torch
from helpers import TINY_SEGFORMER

from ssa_hf import SSAConfig, SSAForSemanticSegmentation, ops_ssa


def _model(decoder_type: str) -> SSAForSemanticSegmentation:
    torch.manual_seed(0)
    config = SSAConfig.from_segformer_config(dict(TINY_SEGFORMER), num_labels=5, decoder_type=decoder_type)
    model = SSAForSemanticSegmentation(config).eval()
    with torch.no_grad():  # batch norms far from the identity, so folding them into the weights is exercised
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
                module.bias.normal_()
        model.decode_head.classifier.bias.normal_()
    return model


@pytest.mark.parametrize("decoder_type", ["segformer", "segformer_mmseg"])
def test_onnx_layout_computes_the_eager_function(decoder_type, monkeypatch):
    model = _model(decoder_type)
    pixel_values = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values)

    calls = {"decoder": 0}
    fused = ops_ssa._fused_feature_channels_last

    def counted_fused(*args):
        calls["decoder"] += 1
        return fused(*args)

    monkeypatch.setattr(ops_ssa, "_fused_feature_channels_last", counted_fused)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    with torch.no_grad():
        actual = model(pixel_values=pixel_values)
    assert calls == {"decoder": 1}  # the export layout really ran
    assert torch.allclose(actual.coarse_logits, expected.coarse_logits, atol=1e-5)
    assert torch.allclose(actual.logits, expected.logits, atol=1e-4)
    assert (actual.logits - expected.logits).abs().max() < 1e-3 * expected.logits.abs().max()


def test_onnx_layout_is_not_used_while_training(monkeypatch):
    model = _model("segformer").train()
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    monkeypatch.setattr(ops_ssa, "_fused_feature_channels_last", lambda *_: pytest.fail("folded batch norm"))
    labels = torch.randint(0, 5, (2, 64, 64))
    output = model(pixel_values=torch.randn(2, 3, 64, 64), labels=labels)
    assert torch.isfinite(output.loss)


def test_exported_graph_matches_pytorch_with_folded_batch_norm(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from ssa_hf.onnx_export import check_onnx, export_onnx

    model = _model("segformer")
    result = export_onnx(model, tmp_path / "model.onnx", example_size=(64, 96))
    assert max(result["checks"].values()) <= 1e-4
    assert check_onnx(model, tmp_path / "model.onnx", (96, 64), batch=3) <= 1e-4
    operators = {node.op_type for node in onnx.load(tmp_path / "model.onnx").graph.node}
    assert "Gelu" in operators and "Erf" not in operators  # opset 20: one node per GELU
    assert "BatchNormalization" not in operators  # folded into the decoder weights
    assert np.isfinite(list(result["checks"].values())).all()
