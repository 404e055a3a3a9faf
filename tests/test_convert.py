"""Checkpoint conversion: original NVlabs SegFormer / MiT files and official (mmseg 0.30) SSA checkpoints.

The source files are written here from random models with inverse key maps written independently of
`ssa_hf.convert` (the original layouts: NVlabs `mix_transformer.py`/`segformer_head.py`, mmseg 0.30 `mit.py`,
`segformer_head.py` and the official SSA head), so a wrong rename, split or reshape shows up as different logits.
"""

import pickle
import re

import pytest
import torch
import torch.nn.functional as F
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from ssa_hf import SSAConfig, SSAForSemanticSegmentation
from ssa_hf.convert import ConversionError, convert_checkpoint, detect_format, load_torch_checkpoint
from ssa_hf_cli import main as cli_main

# MiT sizes that fit the fixed head counts (1, 2, 5, 8) of every released MiT.
TINY_MIT = {"hidden_sizes": [8, 16, 40, 64], "depths": [1, 2, 1, 1], "num_attention_heads": [1, 2, 5, 8],
            "sr_ratios": [8, 4, 2, 1], "decoder_hidden_size": 16}


def _randomise_batch_norms(model):
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)


# --- inverse maps: our / transformers names -> the original layouts -------------------------------------------------

_NVLABS_BLOCK_NAMES = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.q_proj": "attn.q",
                       "attention.o_proj": "attn.proj", "attention.sequence_reduction.sequence_reduction": "attn.sr",
                       "attention.sequence_reduction.layer_norm": "attn.norm", "mlp.fc1": "mlp.fc1",
                       "mlp.dwconv.dwconv": "mlp.dwconv.dwconv", "mlp.fc2": "mlp.fc2"}


def to_nvlabs(state: dict) -> dict:
    """transformers SegFormer state dict -> NVlabs `segformer.b*.pth` keys (q separate, k/v stacked as `kv`)."""
    out = {}
    for key, value in state.items():
        if match := re.fullmatch(r"segformer\.stages\.(\d)\.patch_embeddings\.(proj|layer_norm)\.(\w+)", key):
            part = "proj" if match[2] == "proj" else "norm"
            out[f"backbone.patch_embed{int(match[1]) + 1}.{part}.{match[3]}"] = value
        elif match := re.fullmatch(r"segformer\.stages\.(\d)\.layer_norm\.(\w+)", key):
            out[f"backbone.norm{int(match[1]) + 1}.{match[2]}"] = value
        elif match := re.fullmatch(r"segformer\.stages\.(\d)\.blocks\.(\d+)\.(.+)\.(weight|bias)", key):
            prefix = f"backbone.block{int(match[1]) + 1}.{match[2]}"
            module, kind = match[3], match[4]
            if module == "attention.k_proj":
                value_key = key.replace("k_proj", "v_proj")
                out[f"{prefix}.attn.kv.{kind}"] = torch.cat([value, state[value_key]], dim=0)
            elif module != "attention.v_proj":
                out[f"{prefix}.{_NVLABS_BLOCK_NAMES[module]}.{kind}"] = value
        elif match := re.fullmatch(r"decode_head\.linear_projections\.(\d)\.proj\.(\w+)", key):
            out[f"decode_head.linear_c{int(match[1]) + 1}.proj.{match[2]}"] = value
        elif key == "decode_head.linear_fuse.weight":
            out["decode_head.linear_fuse.conv.weight"] = value
        elif key.startswith("decode_head.batch_norm."):
            out[key.replace("decode_head.batch_norm.", "decode_head.linear_fuse.bn.")] = value
        elif key.startswith("decode_head.classifier."):
            out[key.replace("decode_head.classifier.", "decode_head.linear_pred.")] = value
        else:
            raise AssertionError(f"test inverse map misses {key}")
    return out


_MMSEG_BLOCK_NAMES = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.o_proj": "attn.attn.out_proj",
                      "attention.sequence_reduction.sequence_reduction": "attn.sr",
                      "attention.sequence_reduction.layer_norm": "attn.norm", "mlp.fc1": "ffn.layers.0",
                      "mlp.dwconv.dwconv": "ffn.layers.1", "mlp.fc2": "ffn.layers.4"}
_OFFICIAL_SSA_NAMES = {"position_encoder": "get_feat_pos", "class_position_basis": "center_pos",
                       "semantic_fusion.reduce": "center_content_proj.0", "semantic_fusion.expand": "center_content_proj.2",
                       "spatial_fusion.reduce": "center_pos_proj.0", "spatial_fusion.expand": "center_pos_proj.2",
                       "prototype_projection": "center_proj",
                       "teacher_semantic_fusion.reduce": "gt_center_content_proj.0",
                       "teacher_semantic_fusion.expand": "gt_center_content_proj.2",
                       "teacher_spatial_fusion.reduce": "gt_center_pos_proj.0",
                       "teacher_spatial_fusion.expand": "gt_center_pos_proj.2",
                       "teacher_prototype_projection": "gt_center_proj"}


def to_official_ssa(state: dict) -> dict:
    """Our segformer_mmseg SSA state dict -> an official SSA (mmseg 0.30) checkpoint's `state_dict`: MiT with
    nn.MultiheadAttention in_proj (q, k, v stacked) and 1x1-conv FFNs, mmseg head, official SSA layer names."""
    out = {}
    for key, value in state.items():
        if match := re.fullmatch(r"encoder\.stages\.(\d)\.patch_embeddings\.(proj|layer_norm)\.(\w+)", key):
            part = "projection" if match[2] == "proj" else "norm"
            out[f"backbone.layers.{match[1]}.0.{part}.{match[3]}"] = value
        elif match := re.fullmatch(r"encoder\.stages\.(\d)\.layer_norm\.(\w+)", key):
            out[f"backbone.layers.{match[1]}.2.{match[2]}"] = value
        elif match := re.fullmatch(r"encoder\.stages\.(\d)\.blocks\.(\d+)\.(.+)\.(weight|bias)", key):
            prefix = f"backbone.layers.{match[1]}.1.{match[2]}"
            module, kind = match[3], match[4]
            if module == "attention.q_proj":
                k, v = state[key.replace("q_proj", "k_proj")], state[key.replace("q_proj", "v_proj")]
                out[f"{prefix}.attn.attn.in_proj_{kind}"] = torch.cat([value, k, v], dim=0)
            elif module not in ("attention.k_proj", "attention.v_proj"):
                if module in ("mlp.fc1", "mlp.fc2") and kind == "weight":
                    value = value[:, :, None, None]
                out[f"{prefix}.{_MMSEG_BLOCK_NAMES[module]}.{kind}"] = value
        elif match := re.fullmatch(r"decode_head\.classifier\.(weight|bias)", key):
            out[f"decode_head.conv_seg.{match[1]}"] = value
        elif match := re.fullmatch(r"decode_head\.classifier\.(.+)\.(weight|bias)", key):
            out[f"decode_head.{_OFFICIAL_SSA_NAMES[match[1]]}.{match[2]}"] = value
        elif key.startswith(("decode_head.convs.", "decode_head.fusion_conv.")):
            out[key] = value
        else:
            raise AssertionError(f"test inverse map misses {key}")
    out["decode_head.ssa_loss.criterion.empty_weight"] = torch.ones(6)
    return out


def mmseg_segformer_head(features, state, num_stages=4):
    """mmseg 0.30 SegformerHead written out with functional ops: per stage conv1x1 -> BN -> ReLU, resize to stage 1,
    concat in stage order, fusion conv -> BN -> ReLU (eval-mode BN)."""

    def conv_module(x, prefix):
        x = F.conv2d(x, state[f"{prefix}.conv.weight"])
        x = F.batch_norm(x, state[f"{prefix}.bn.running_mean"], state[f"{prefix}.bn.running_var"],
                         state[f"{prefix}.bn.weight"], state[f"{prefix}.bn.bias"], False, 0.0, 1e-5)
        return F.relu(x)

    outs = [F.interpolate(conv_module(features[i], f"decode_head.convs.{i}"), size=features[0].shape[2:],
                          mode="bilinear", align_corners=False) for i in range(num_stages)]
    return conv_module(torch.cat(outs, dim=1), "decode_head.fusion_conv")


# --- tests ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def segformer():
    torch.manual_seed(0)
    model = SegformerForSemanticSegmentation(SegformerConfig(**TINY_MIT, num_labels=5)).eval()
    _randomise_batch_norms(model)
    return model


def test_nvlabs_segformer_checkpoint_gives_the_source_logits(tmp_path, segformer):
    path = tmp_path / "segformer.b0.512x512.ade.160k.pth"
    torch.save({"meta": {"CLASSES": ["a", "b", "c", "d", "e"]}, "state_dict": to_nvlabs(segformer.state_dict())},
               path)
    assert detect_format(load_torch_checkpoint(path)) == "nvlabs_segformer"
    model, report = convert_checkpoint(path)
    assert model.config.decoder_type == "segformer"
    assert model.config.backbone_config.hidden_sizes == TINY_MIT["hidden_sizes"]
    assert model.config.backbone_config.depths == TINY_MIT["depths"]
    assert not report.unexpected and not report.missing
    assert report.fresh and all(k.startswith("decode_head.classifier.") for k in report.fresh)
    pixel_values = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = segformer(pixel_values=pixel_values).logits
        coarse = model(pixel_values=pixel_values).coarse_logits  # SSA bypassed: the SegFormer's own classifier
    torch.testing.assert_close(coarse, expected, rtol=1e-5, atol=1e-5)


def test_official_ssa_checkpoint_converts_every_key_and_keeps_the_logits(tmp_path):
    torch.manual_seed(0)
    source = SSAForSemanticSegmentation(SSAConfig.from_segformer_config(
        dict(TINY_MIT), num_labels=6, decoder_type="segformer_mmseg")).eval()
    _randomise_batch_norms(source)
    official = to_official_ssa(source.state_dict())
    path = tmp_path / "ssa_segformer_official.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": official, "optimizer": {}}, path)

    model, report = convert_checkpoint(path)
    assert report.source_format == "ssa_official"
    assert set(report.mapped) | set(report.ignored) == set(official)
    assert report.ignored == {"decode_head.ssa_loss.criterion.empty_weight": report.ignored[
        "decode_head.ssa_loss.criterion.empty_weight"]}
    assert not report.unexpected and not report.missing and not report.fresh
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, actual = source(pixel_values=pixel_values), model(pixel_values=pixel_values)
    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=0)
    torch.testing.assert_close(actual.coarse_logits, expected.coarse_logits, rtol=0, atol=0)
    # The teacher converted too: same loss terms with labels.
    labels = torch.randint(0, 6, (2, 64, 64))
    model.train(), source.train()
    torch.manual_seed(3)
    expected_loss = source(pixel_values=pixel_values, labels=labels).loss
    torch.manual_seed(3)
    torch.testing.assert_close(model(pixel_values=pixel_values, labels=labels).loss, expected_loss)


def test_the_papers_segformer_b5_is_a_variant_name_and_its_official_checkpoint_converts_into_it(tmp_path):
    """The paper's SegFormer-B5 is mmseg's (a 256-wide head, not NVlabs' 768): 82.0 M parameters as the baseline and
    82.3 M with SSA's deployable student (the paper's Table 1); an official B5 SSA checkpoint lands in exactly it."""
    from ssa_hf.model.configuration_ssa import MMSEG_SEGFORMER_DECODER_WIDTH

    def millions(model, student_only=False):
        return round(sum(p.numel() for name, p in model.named_parameters()
                         if not (student_only and "teacher" in name)) / 1e6, 1)

    assert SSAConfig.from_segformer_config("b5", num_labels=150).decoder_hidden_size == 768  # NVlabs' release
    config = SSAConfig.from_segformer_config("b5", num_labels=150, decoder_type="segformer_mmseg")
    assert config.decoder_hidden_size == MMSEG_SEGFORMER_DECODER_WIDTH == 256
    assert config.backbone_config.depths == [3, 6, 40, 3]
    baseline = SSAForSemanticSegmentation(SSAConfig.from_segformer_config(
        "b5", num_labels=150, decoder_type="segformer_mmseg", classifier_type="plain"))
    assert millions(baseline) == 82.0
    del baseline
    torch.manual_seed(0)
    source = SSAForSemanticSegmentation(config).eval()
    assert millions(source, student_only=True) == 82.3
    official = to_official_ssa(source.state_dict())
    path = tmp_path / "ssa_segformer_b5_official.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": official}, path)
    model, report = convert_checkpoint(path)
    assert not report.unexpected and not report.missing and not report.fresh
    assert (model.config.decoder_type, model.config.decoder_hidden_size) == ("segformer_mmseg", 256)
    assert model.config.backbone_config.depths == [3, 6, 40, 3]
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixel_values).logits, source(pixel_values=pixel_values).logits,
                                   rtol=0, atol=0)


def test_mmseg_decoder_layout_matches_the_mmseg_head():
    torch.manual_seed(0)
    model = SSAForSemanticSegmentation(SSAConfig.from_segformer_config(
        dict(TINY_MIT), num_labels=4, decoder_type="segformer_mmseg")).eval()
    _randomise_batch_norms(model)
    pixel_values = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        hidden_states = model.encoder(pixel_values, output_hidden_states=True).hidden_states
        expected = mmseg_segformer_head(hidden_states, model.state_dict())
        features = model.decode_head.fuse(hidden_states)
    torch.testing.assert_close(features, expected, rtol=1e-6, atol=1e-6)


def test_encoder_only_mit_checkpoint(tmp_path, segformer):
    encoder = {k.removeprefix("backbone."): v for k, v in to_nvlabs(segformer.state_dict()).items()
               if k.startswith("backbone.")}
    encoder["head.weight"], encoder["head.bias"] = torch.randn(1000, 64), torch.zeros(1000)
    path = tmp_path / "mit_b0.pth"
    torch.save(encoder, path)
    with pytest.raises(ConversionError, match="num_labels"):
        convert_checkpoint(path)
    model, report = convert_checkpoint(path, num_labels=3)
    assert set(report.ignored) == {"head.weight", "head.bias"}
    assert report.fresh and all(k.startswith("decode_head.") for k in report.fresh)
    ours = model.state_dict()
    for key, value in segformer.state_dict().items():
        if key.startswith("segformer."):
            torch.testing.assert_close(ours["encoder." + key.removeprefix("segformer.")], value, rtol=0, atol=0)


def test_unexpected_and_missing_keys_are_named(tmp_path, segformer):
    state = to_nvlabs(segformer.state_dict())
    state["decode_head.extra_branch.weight"] = torch.zeros(3)
    del state["backbone.block2.1.attn.proj.weight"]
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(ConversionError) as error:
        convert_checkpoint(path)
    assert "decode_head.extra_branch.weight" in str(error.value)
    assert "encoder.stages.1.blocks.1.attention.o_proj.weight" in str(error.value)
    _, report = convert_checkpoint(path, allow_mismatch=True)
    assert report.unexpected == ["decode_head.extra_branch.weight"]


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_that_run_code_are_refused_and_bad_files_named(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": _RunsCodeWhenUnpickled(str(marker))}}, f, protocol=2)
    with pytest.raises(ConversionError, match="weights_only"):
        load_torch_checkpoint(path)
    assert not marker.exists()
    truncated = tmp_path / "truncated.pth"
    torch.save({"a": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ConversionError, match="truncated.pth"):
        load_torch_checkpoint(truncated)
    with pytest.raises(ConversionError, match="not found"):
        load_torch_checkpoint(tmp_path / "missing.pth")
    torch.save({"x.y": torch.zeros(1)}, tmp_path / "unknown.pth")
    with pytest.raises(ConversionError, match="unrecognised checkpoint layout"):
        convert_checkpoint(tmp_path / "unknown.pth")


def test_cli_convert_writes_a_reloadable_folder_and_report(tmp_path, segformer, capsys):
    path = tmp_path / "segformer.pth"
    torch.save({"state_dict": to_nvlabs(segformer.state_dict())}, path)
    output = tmp_path / "converted"
    assert cli_main(["convert", str(path), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "nvlabs_segformer" in printed and "parity" in printed
    assert (output / "model.safetensors").exists() and (output / "preprocessor_config.json").exists()
    assert (output / "conversion_report.json").exists()
    reloaded = SSAForSemanticSegmentation.from_pretrained(output).eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=pixel_values).coarse_logits,
                                   segformer(pixel_values=pixel_values).logits, rtol=1e-5, atol=1e-5)
    # The folder now holds a model: converting again into it is refused, not overwritten.
    assert cli_main(["convert", str(path), "--output", str(output)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_convert_from_a_transformers_segformer_folder(tmp_path, segformer):
    segformer.save_pretrained(tmp_path / "segformer")
    assert cli_main(["convert", str(tmp_path / "segformer"), "--output", str(tmp_path / "ssa")]) == 0
    model = SSAForSemanticSegmentation.from_pretrained(tmp_path / "ssa")
    torch.testing.assert_close(model.decode_head.classifier.weight, segformer.decode_head.classifier.weight)


def test_convert_keeps_the_source_processor_settings_in_an_ssa_processor(tmp_path, segformer, capsys):
    import json

    from transformers import SegformerImageProcessor

    segformer.save_pretrained(tmp_path / "segformer")
    SegformerImageProcessor(do_reduce_labels=True, image_mean=[0.5, 0.5, 0.5],
                            size={"height": 256, "width": 320}).save_pretrained(tmp_path / "segformer")
    assert cli_main(["convert", str(tmp_path / "segformer"), "--output", str(tmp_path / "ssa")]) == 0
    saved = json.loads((tmp_path / "ssa" / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "SSAImageProcessor"
    assert saved["do_reduce_labels"] is True and saved["image_mean"] == [0.5, 0.5, 0.5]
    assert saved["size"] == {"height": 256, "width": 320}  # the source model's own protocol
    # A raw checkpoint has no processor: the paper's defaults, with the convention asked for.
    path = tmp_path / "nvlabs.pth"
    torch.save(to_nvlabs(segformer.state_dict()), path)
    assert cli_main(["convert", str(path), "--output", str(tmp_path / "raw"), "--convention", "camvid"]) == 0
    saved = json.loads((tmp_path / "raw" / "preprocessor_config.json").read_text())
    assert saved["label_remap"] == {"11": 255} and saved["do_reduce_labels"] is False
    assert saved["size"] == {"shortest_edge": 512, "longest_edge": 2048}
