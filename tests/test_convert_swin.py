"""mmseg 0.30 UperNet-Swin checkpoints (official SSA, plain with the auxiliary head, ImageNet Swin) into transformers'
Swin under SSA's UperNet decoder. The mmseg files are written here from random models by an inverse map written
independently of `ssa_hf.convert_swin` (mmseg's `qkv`, the unfolded patch-merging layout, `norm0..3`, ConvModule's
`bn`, `conv_seg`), so a wrong rename, split or permutation shows up as different logits. The official Swin-T itself
is checked against the official outputs in test_zoo_parity.py."""

import re

import pytest
import torch
from test_convert import _randomise_batch_norms
from transformers import SwinConfig

from ssa_hf import SSAConfig, SSAForSemanticSegmentation
from ssa_hf.convert import convert_checkpoint

_SSA_OFFICIAL = {  # ours under decode_head.classifier. -> the official SSA head's names
    "weight": "conv_seg.weight", "bias": "conv_seg.bias", "position_encoder": "get_feat_pos",
    "class_position_basis": "center_pos", "semantic_fusion.reduce": "center_content_proj.0",
    "semantic_fusion.expand": "center_content_proj.2", "spatial_fusion.reduce": "center_pos_proj.0",
    "spatial_fusion.expand": "center_pos_proj.2", "prototype_projection": "center_proj",
    "teacher_semantic_fusion.reduce": "gt_center_content_proj.0",
    "teacher_semantic_fusion.expand": "gt_center_content_proj.2",
    "teacher_spatial_fusion.reduce": "gt_center_pos_proj.0", "teacher_spatial_fusion.expand": "gt_center_pos_proj.2",
    "teacher_prototype_projection": "gt_center_proj",
}
_BLOCK = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.o_proj": "attn.w_msa.proj",
          "attention.relative_position_bias.relative_position_bias_table": "attn.w_msa.relative_position_bias_table",
          "mlp.fc1": "ffn.layers.0.0", "mlp.fc2": "ffn.layers.1"}


def unfolded(value: torch.Tensor) -> torch.Tensor:
    """transformers' merged-patch channels (offsets (0,0), (1,0), (0,1), (1,1), C each) in nn.Unfold's order."""
    channels = value.shape[-1] // 4
    by_offset = value.reshape(*value.shape[:-1], 4, channels)  # [..., k, c]
    row_major = by_offset[..., [0, 2, 1, 3], :]  # k -> 2i + j
    return row_major.transpose(-1, -2).reshape(value.shape)  # [..., c, 2i + j] -> 4c + 2i + j


def to_mmseg(state: dict) -> dict:
    """Our UperNet-Swin SSA (or plain) state dict -> an mmseg 0.30 checkpoint's `state_dict`."""
    out = {}
    for key, value in state.items():
        if key.startswith("encoder.swin.layernorm.") or key.endswith("num_batches_tracked") and "encoder" in key:
            continue
        if m := re.fullmatch(r"encoder\.swin\.embeddings\.(patch_embeddings\.projection|norm)\.(\w+)", key):
            out[f"backbone.patch_embed.{'projection' if 'projection' in m[1] else 'norm'}.{m[2]}"] = value
        elif m := re.fullmatch(r"encoder\.hidden_states_norms\.stage(\d)\.(\w+)", key):
            out[f"backbone.norm{int(m[1]) - 1}.{m[2]}"] = value
        elif m := re.fullmatch(r"encoder\.swin\.encoder\.layers\.(\d)\.downsample\.(norm|reduction)\.(\w+)", key):
            out[f"backbone.stages.{m[1]}.downsample.{m[2]}.{m[3]}"] = unfolded(value)
        elif m := re.fullmatch(r"encoder\.swin\.encoder\.layers\.(\d)\.blocks\.(\d+)\.(.+)\.(weight|bias)", key):
            prefix = f"backbone.stages.{m[1]}.blocks.{m[2]}"
            if m[3] == "attention.q_proj":
                parts = [state[key.replace("q_proj", name)] for name in ("q_proj", "k_proj", "v_proj")]
                out[f"{prefix}.attn.w_msa.qkv.{m[4]}"] = torch.cat(parts)
            elif m[3] in _BLOCK:
                out[f"{prefix}.{_BLOCK[m[3]]}.{m[4]}"] = value
        elif m := re.fullmatch(r"encoder\.swin\.encoder\.layers\.(\d)\.blocks\.(\d+)\.attention\.relative_position_bias\."
                               r"relative_position_bias_table", key):
            out[f"backbone.stages.{m[1]}.blocks.{m[2]}.attn.w_msa.relative_position_bias_table"] = value
        elif m := re.fullmatch(r"(decode_head|auxiliary_head)\.classifier\.(weight|bias)", key):
            out[f"{m[1]}.conv_seg.{m[2]}"] = value
        elif m := re.fullmatch(r"decode_head\.classifier\.(.+)\.(weight|bias)", key):
            out[f"decode_head.{_SSA_OFFICIAL[m[1]]}.{m[2]}"] = value
        elif m := re.fullmatch(r"(decode_head|auxiliary_head)\.(.+)\.(conv|batch_norm)\.(\w+)", key):
            out[f"{m[1]}.{m[2]}.{'conv' if m[3] == 'conv' else 'bn'}.{m[4]}"] = value
    return out


def swin(embed_dim=16, depths=(1, 1, 2, 1), heads=(1, 2, 2, 4), window=4) -> SwinConfig:
    return SwinConfig(embed_dim=embed_dim, depths=list(depths), num_heads=list(heads), window_size=window,
                      out_features=["stage1", "stage2", "stage3", "stage4"])


def source(classifier_type="ssa", auxiliary=True) -> SSAForSemanticSegmentation:
    torch.manual_seed(0)
    model = SSAForSemanticSegmentation(SSAConfig(
        backbone_config=swin(), decoder_type="upernet", decoder_hidden_size=16, num_labels=5, auxiliary_channels=8,
        use_auxiliary_head=auxiliary, classifier_type=classifier_type)).eval()
    _randomise_batch_norms(model)
    with torch.no_grad():  # non-zero position tables and norms, so a misplaced one changes the logits
        for name, parameter in model.named_parameters():
            if "relative_position_bias_table" in name or "norm" in name:
                parameter.normal_(1.0 if name.endswith("weight") and "table" not in name else 0.0, 0.2)
    return model


@pytest.mark.parametrize("kind", ["ssa", "plain"])
def test_mmseg_upernet_swin_converts_with_the_source_logits(tmp_path, kind):
    model = source("ssa" if kind == "ssa" else "plain")
    state = to_mmseg(model.state_dict())
    if kind == "ssa":
        state["decode_head.ssa_loss.criterion.empty_weight"] = torch.ones(6)
    state["backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"] = torch.zeros(16, 16)  # mmseg stores it
    path = tmp_path / "upernet_swin.pth"
    torch.save({"meta": {"mmseg_version": "0.30.0"}, "state_dict": state}, path)
    options = {} if kind == "ssa" else {"classifier_type": "plain"}  # --baseline: the published model itself
    converted, report = convert_checkpoint(path, **options)
    assert report.source_format == f"upernet_swin_{kind}"
    assert not report.unexpected and not report.missing
    assert report.fresh == ["encoder.swin.layernorm.weight", "encoder.swin.layernorm.bias"]
    assert set(report.ignored) <= {"decode_head.ssa_loss.criterion.empty_weight",
                                   "backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"}
    config = converted.config
    assert (config.backbone_config.embed_dim, config.backbone_config.depths, config.backbone_config.num_heads,
            config.backbone_config.window_size) == (16, [1, 1, 2, 1], [1, 2, 2, 4], 4)
    assert config.use_auxiliary_head and config.auxiliary_channels == 8
    pixel_values = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        expected, actual = model(pixel_values=pixel_values), converted(pixel_values=pixel_values)
        features = model.encoder(pixel_values).feature_maps
        auxiliary = model.auxiliary_head(features)
        torch.testing.assert_close(converted.auxiliary_head(features), auxiliary, rtol=0, atol=0)
    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=0)


def test_swin_imagenet_encoder_and_the_official_sizes(tmp_path):
    """An mmseg-layout ImageNet Swin becomes the encoder under a fresh UperNet (512) and auxiliary head (256), as the
    official configs build it; and the T, B and L sizes are read back from their weights' shapes."""
    from ssa_hf.convert_swin import swin_config

    model = source()
    encoder = {k.removeprefix("backbone."): v for k, v in to_mmseg(model.state_dict()).items()
               if k.startswith("backbone.")}
    encoder |= {"head.fc.weight": torch.zeros(3, 128), "head.fc.bias": torch.zeros(3), "norm.weight": torch.ones(128),
                "norm.bias": torch.zeros(128)}
    torch.save(encoder, tmp_path / "swin_imagenet.pth")
    converted, report = convert_checkpoint(tmp_path / "swin_imagenet.pth", num_labels=150)
    assert report.source_format == "swin_imagenet" and not report.unexpected and not report.missing
    assert (converted.config.decoder_hidden_size, converted.config.auxiliary_channels) == (512, 256)
    torch.testing.assert_close(converted.encoder.swin.embeddings.patch_embeddings.projection.weight,
                               model.encoder.swin.embeddings.patch_embeddings.projection.weight, rtol=0, atol=0)
    for embed_dim, depths, heads in [(96, [2, 2, 6, 2], [3, 6, 12, 24]), (128, [2, 2, 18, 2], [4, 8, 16, 32]),
                                     (192, [2, 2, 18, 2], [6, 12, 24, 48])]:
        with torch.device("meta"):
            big = SSAForSemanticSegmentation(SSAConfig(
                backbone_config=swin(embed_dim, depths, heads, window=7), decoder_type="upernet", num_labels=150))
        inferred = swin_config(big.state_dict())
        assert (inferred.embed_dim, inferred.depths, inferred.num_heads, inferred.window_size) == (
            embed_dim, depths, heads, 7)
