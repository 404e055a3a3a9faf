"""Parity with the official modules: each official model's state dict, rebuilt by the fixtures' deterministic weight
generator, is converted with `ssa-seg convert` (format detected, every key accounted for), loaded and run in eval; its
encoder features and SSA head logits must equal the outputs the official code computed
(`../shared/fixtures/official_zoo`; skipped with a reason when that folder is absent).

Measured here (float32, 2 threads, 256x256 input): features within 8e-6 of values up to |7.3| (AFFormer-B's last
map: 5.5e-5 of values up to |23.6|; HRNet-W48's: 5.0e-5 of values up to |84|; both the official float32 error),
logits within 6e-6 (UperNet-Swin-T 2.3e-6, OCRNet-HRNet-W48 3.0e-6).
"""

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ssa_hf import SSAForSemanticSegmentation
from ssa_hf_cli import main as cli_main

ZOO = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official_zoo"


@pytest.fixture(scope="module")
def zoo():
    if not (ZOO / "weights.py").is_file():
        pytest.skip(f"the official-zoo fixtures are absent ({ZOO}); they live in the project's shared folder")
    sys.path.insert(0, str(ZOO))
    from weights import fixture_state_dict

    return fixture_state_dict, load_file(ZOO / "inputs.safetensors")["pixel_values"]


# Official keys that carry nothing our model uses, beyond the SSA loss's constant buffer: EfficientFormerV2's
# ImageNet-size attention biases (kept by the segmentation backbone, never read), AFFormer's per-layer second names
# of its shared modules (checked equal on the way) and its head's never-called `align` conv; Swin's constant
# relative-position index tables (transformers' Swin builds its own).
DROPPED = {
    "cgrseg": r"backbone\.network\.\d+\.(\d+\.token_mixer|attn)\.attention_bias(es|_idxs)",
    "upernet": r"backbone\.stages\.\d+\.blocks\.\d+\.attn\.w_msa\.relative_position_index",
    "afformer": r"backbone\.mhca_stages\.\d\.mhca_blks\.0\.MHCA_layers\.\d+\.(factoratt_crpe\.)?c(rpe\.conv_list\.\d|pe\.proj)"
                r"\.(weight|bias)|decode_head\.align\..+",
}


@pytest.mark.parametrize("name, source_format, decoder_type", [
    ("seaformer_b", "seaformer_ssa", "seaformer"),
    ("seaformer_l", "seaformer_ssa", "seaformer"),
    ("segnext_t", "segnext_ssa", "ham"),
    ("cgrseg_b", "cgrseg_ssa", "cgr"),
    ("cgrseg_l", "cgrseg_ssa", "cgr"),
    ("afformer_b", "afformer_ssa", "afformer"),
    ("upernet_swin_t", "upernet_swin_ssa", "upernet"),
    ("ocrnet_hrnet_w48", "ocrnet_hrnet_ssa", "ocr"),
])
def test_converted_official_model_reproduces_the_official_outputs(name, source_format, decoder_type, zoo, tmp_path,
                                                                   capsys):
    fixture_state_dict, pixel_values = zoo
    state = fixture_state_dict(ZOO / name / "keys.json")
    expected = load_file(ZOO / name / "expected.safetensors")
    checkpoint = tmp_path / f"{name}_ssa_ade20k.pth"
    torch.save({"meta": {"mmseg_version": "0.30.0"}, "state_dict": state}, checkpoint)  # as mmcv saves it
    assert cli_main(["convert", str(checkpoint), "--output", str(tmp_path / "model")]) == 0
    report = json.loads((tmp_path / "model" / "conversion_report.json").read_text())
    assert report["source_format"] == source_format
    assert not report["unexpected"] and not report["missing"]
    # Only transformers' final Swin norm, which its backbone never applies, has no official value.
    assert report["fresh"] == (["encoder.swin.layernorm.weight", "encoder.swin.layernorm.bias"]
                               if name.startswith("upernet_swin") else [])
    assert len(report["mapped"]) + len(report["ignored"]) == len(state)  # every official key accounted for
    dropped = DROPPED.get(name.split("_")[0])
    cascade = "1." if name.startswith("ocrnet") else ""  # OCRNet's SSA head is the second of two cascade heads
    assert {k for k in report["ignored"] if not (dropped and re.fullmatch(dropped, k))} == {
        f"decode_head.{cascade}ssa_loss.criterion.empty_weight"}

    model = SSAForSemanticSegmentation.from_pretrained(tmp_path / "model").eval()
    assert model.config.decoder_type == decoder_type
    if "ham_bases" in expected:  # the random NMF bases the official run drew
        model.set_ham_bases(expected["ham_bases"])
    with torch.no_grad():
        features = model.encoder(pixel_values).feature_maps
        logits = model(pixel_values=pixel_values).logits
    consumed = sorted(int(key.rsplit("_", 1)[1]) for key in expected if key.startswith("backbone_features_"))
    assert len(features) == len(consumed)
    for feature, index in zip(features, consumed):
        official = expected[f"backbone_features_{index}"]
        assert feature.shape == official.shape
        assert (feature - official).abs().max() <= 1e-5 * official.abs().max() + 1e-5, index
    official = expected["head_logits"]
    assert logits.shape == official.shape  # at the feature stride, before any resize
    torch.testing.assert_close(logits, official, rtol=0, atol=1e-4)
    assert (logits - official).abs().max() < 2e-5  # what float32 rounding allows, measured ~5e-6
    if "ham_bases" in expected:  # without the official bases, the fixed seeded ones: other logits, the same every time
        model.set_ham_bases(None)
        with torch.no_grad():
            first, second = model(pixel_values=pixel_values).logits, model(pixel_values=pixel_values).logits
        assert torch.equal(first, second) and not torch.allclose(first, official, atol=1e-3)


def _official_groups(names: list[str], custom_keys: dict) -> dict[str, tuple[float, float]]:
    """mmcv's DefaultOptimizerConstructor on the official names: the first custom key (longest first, ties
    alphabetical) contained in a name gives its (lr_mult, decay_mult)."""
    ordered = sorted(sorted(custom_keys), key=len, reverse=True)
    groups = {}
    for name in names:
        key = next((k for k in ordered if k in name), None)
        settings = custom_keys.get(key, {})
        groups[name] = (settings.get("lr_mult", 1.0), settings.get("decay_mult", 1.0))
    return groups


@pytest.mark.parametrize("name, recipe_name, official_keys", [
    ("seaformer_b", "seaformer_b_ade20k", {"pos_emb": {"decay_mult": 0.0}, "head": {"lr_mult": 10.0},
                                           "norm": {"decay_mult": 0.0}}),
    ("segnext_t", "segnext_t_ade20k", {"pos_block": {"decay_mult": 0.0}, "norm": {"decay_mult": 0.0},
                                       "head": {"lr_mult": 10.0}}),
    ("cgrseg_b", "cgrseg_b_ade20k", {"absolute_pos_embed": {"decay_mult": 0.0}, "head": {"lr_mult": 10.0},
                                     "norm": {"decay_mult": 0.0}}),
    ("cgrseg_l", "cgrseg_l_ade20k", {"absolute_pos_embed": {"decay_mult": 0.0}, "head": {"lr_mult": 10.0},
                                     "norm": {"decay_mult": 0.0}}),
])
def test_recipe_parameter_groups_are_the_official_ones(name, recipe_name, official_keys, zoo):
    """The official configs' custom keys, applied to the official parameter names, give every parameter the learning
    rate and weight decay that the recipe's keys give it under our names (the official "norm" key, for instance,
    matches none of SeaFormer's `bn` layers, so our `normalization` layers keep their weight decay too)."""
    from ssa_hf.convert import convert_state_dict
    from ssa_hf.training import Recipe, build_model, parameter_groups

    fixture_state_dict, _ = zoo
    state = fixture_state_dict(ZOO / name / "keys.json")
    _, report = convert_state_dict(state)
    recipe = Recipe.load(recipe_name)
    model = build_model(recipe)
    ours = {}
    for group in parameter_groups(model, recipe.lr, recipe.weight_decay, recipe.custom_keys):
        for parameter_name in group["names"]:
            ours[parameter_name] = (group["lr"] / recipe.lr, group["weight_decay"] / recipe.weight_decay)
    trainable = {k for k, v in state.items() if v.is_floating_point() and "running_" not in k
                 and k not in report.ignored}  # the loss's constant buffer, EfficientFormerV2's unused ImageNet biases
    official = _official_groups(sorted(trainable), official_keys)
    mapped = {report.mapped[k]: settings for k, settings in official.items()}
    assert mapped == ours
    assert {settings for settings in ours.values()} >= {(1.0, 1.0), (10.0, 1.0)}  # the rule has something to do


@pytest.mark.parametrize("name, head_key, wrapper", [("seaformer_b", "linear", "state_dict_ema"),
                                                      ("segnext_t", "head", "state_dict")])
def test_imagenet_encoders_convert_and_start_a_recipe(name, head_key, wrapper, zoo, tmp_path, capsys):
    """The ImageNet classification checkpoints the official configs start from: the encoder's keys without the
    `backbone.` prefix, plus a 1000-class head. `ssa-seg convert` reads them (the head dropped, the decoder fresh),
    and a recipe's `--encoder` takes the file itself, reporting what it used and dropped."""
    from ssa_hf.training import Recipe, build_model

    fixture_state_dict, _ = zoo
    state = fixture_state_dict(ZOO / name / "keys.json")
    encoder = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    width = state["decode_head.conv_seg.weight"].shape[1] if name == "segnext_t" else 256
    encoder |= {f"{head_key}.weight": torch.randn(1000, width), f"{head_key}.bias": torch.zeros(1000)}
    checkpoint = tmp_path / f"{name}_imagenet.pth"
    torch.save({wrapper: encoder}, checkpoint)
    assert cli_main(["convert", str(checkpoint), "--output", str(tmp_path / "converted"), "--num-labels", "150"]) == 0
    report = json.loads((tmp_path / "converted" / "conversion_report.json").read_text())
    assert report["source_format"].endswith("_imagenet") and not report["missing"] and not report["unexpected"]
    assert set(report["ignored"]) == {f"{head_key}.weight", f"{head_key}.bias"}
    assert report["fresh"] and all(key.startswith("decode_head.") for key in report["fresh"])
    capsys.readouterr()
    recipe = Recipe.load(f"{name}_ade20k", encoder=str(checkpoint))
    model = build_model(recipe)
    err = capsys.readouterr().err
    encoder_keys = [k for k in model.state_dict() if k.startswith("encoder.")]
    assert f"{len(encoder_keys)} of the encoder's {len(encoder_keys)}" in err and "0 of the decoder" in err
    converted = SSAForSemanticSegmentation.from_pretrained(tmp_path / "converted")
    for key in encoder_keys:
        assert torch.equal(model.state_dict()[key], converted.state_dict()[key]), key
    assert model.config.source_checkpoint == f"local:{checkpoint.name}"
    baseline = build_model(recipe, baseline=True)  # the same start for the plain model
    assert baseline.config.classifier_type == "plain"
    assert torch.equal(baseline.encoder.state_dict()[encoder_keys[0].removeprefix("encoder.")],
                       model.encoder.state_dict()[encoder_keys[0].removeprefix("encoder.")])


@pytest.mark.parametrize("name, extra", [
    ("cgrseg_b", {"norm.weight": (288,), "norm.bias": (288,), "norm.running_mean": (288,), "norm.running_var": (288,),
                  "head.weight": (1000, 288), "head.bias": (1000,), "dist_head.weight": (1000, 288),
                  "dist_head.bias": (1000,)}),
    ("afformer_b", {"cls_head.cls.weight": (1000, 216), "cls_head.cls.bias": (1000,)}),
])
def test_imagenet_encoders_of_cgrseg_and_afformer(name, extra, zoo, tmp_path, capsys):
    """EfficientFormerV2 and AFFormer ImageNet classifiers as the official configs start from them. EfficientFormerV2's
    has no segmentation attention biases: they start at zero (as in the official code) and its ImageNet-size biases
    are dropped. AFFormer's repeats its shared modules under every layer's name: the copies are checked and dropped."""
    from ssa_hf.training import Recipe, build_model

    fixture_state_dict, _ = zoo
    state = fixture_state_dict(ZOO / name / "keys.json")
    encoder = {k.removeprefix("backbone."): v for k, v in state.items()
               if k.startswith("backbone.") and not k.endswith("_seg")}
    encoder |= {key: torch.randn(shape) for key, shape in extra.items()}
    checkpoint = tmp_path / f"{name}_imagenet.pth"
    torch.save({"model": encoder}, checkpoint)
    assert cli_main(["convert", str(checkpoint), "--output", str(tmp_path / "converted"), "--num-labels", "150"]) == 0
    report = json.loads((tmp_path / "converted" / "conversion_report.json").read_text())
    assert report["source_format"].endswith("_imagenet") and not report["missing"] and not report["unexpected"]
    assert len(report["mapped"]) + len(report["ignored"]) == len(encoder)
    dropped = DROPPED[name.split("_")[0]].replace("backbone\\.", "")
    assert {k for k in report["ignored"] if not re.fullmatch(dropped, k)} == set(extra)
    fresh_encoder = [key for key in report["fresh"] if key.startswith("encoder.")]
    assert all(key.startswith("decode_head.") or ".relative_bias." in key for key in report["fresh"])
    assert bool(fresh_encoder) == (name == "cgrseg_b")
    converted = SSAForSemanticSegmentation.from_pretrained(tmp_path / "converted")
    for key in fresh_encoder:
        if key.endswith(".biases"):
            assert not converted.state_dict()[key].any()  # zero, as the official segmentation backbone starts them
    capsys.readouterr()
    recipe = Recipe.load(f"{name}_ade20k", encoder=str(checkpoint))
    model = build_model(recipe)
    err = capsys.readouterr().err
    assert "0 of the decoder" in err
    for key, value in converted.state_dict().items():
        if key.startswith("encoder."):
            assert torch.equal(model.state_dict()[key], value), key


def test_published_cgrseg_converts_to_ssa_or_to_its_own_baseline(zoo, tmp_path, capsys):
    """A published CGRSeg (no SSA layers, its second stage `lgc`): by default SSA with fresh SSA layers and the
    second stage left out, said so; with `--baseline` the published model itself, second stage kept. An SSA
    checkpoint has no baseline to keep."""
    fixture_state_dict, pixel_values = zoo
    official = fixture_state_dict(ZOO / "cgrseg_b" / "keys.json")
    ssa_layers = ("get_feat_pos", "center_", "gt_center_", "ssa_loss")
    state = {k: v for k, v in official.items() if not k.removeprefix("decode_head.").startswith(ssa_layers)}
    generator = torch.Generator().manual_seed(0)
    second_stage = {"conv_mask.weight": (1, 256, 1, 1), "conv_mask.bias": (1,), "channel_mul_conv.0.weight":
                    (256, 256, 1, 1), "channel_mul_conv.0.bias": (256,), "channel_mul_conv.1.weight": (256, 1, 1),
                    "channel_mul_conv.1.bias": (256, 1, 1), "channel_mul_conv.3.weight": (256, 256, 1, 1),
                    "channel_mul_conv.3.bias": (256,)}
    state |= {f"decode_head.lgc.{k}": 0.05 * torch.randn(shape, generator=generator) for k, shape in second_stage.items()}
    checkpoint = tmp_path / "cgrseg_b_ade20k.pth"
    torch.save({"state_dict": state}, checkpoint)

    assert cli_main(["convert", str(checkpoint), "--output", str(tmp_path / "ssa")]) == 0
    report = json.loads((tmp_path / "ssa" / "conversion_report.json").read_text())
    assert report["source_format"] == "cgrseg_plain" and not report["missing"] and not report["unexpected"]
    assert {k for k, why in report["ignored"].items() if "second stage" in why} == {
        f"decode_head.lgc.{k}" for k in second_stage}
    assert report["fresh"] and all(".classifier." in k for k in report["fresh"])

    assert cli_main(["convert", str(checkpoint), "--output", str(tmp_path / "baseline"), "--baseline"]) == 0
    report = json.loads((tmp_path / "baseline" / "conversion_report.json").read_text())
    assert not report["missing"] and not report["unexpected"] and not report["fresh"]
    baseline = SSAForSemanticSegmentation.from_pretrained(tmp_path / "baseline").eval()
    ssa = SSAForSemanticSegmentation.from_pretrained(tmp_path / "ssa").eval()
    assert baseline.config.classifier_type == "plain"
    torch.testing.assert_close(baseline.decode_head.prototype_guidance.channel_gate[3].weight,
                               state["decode_head.lgc.channel_mul_conv.3.weight"], rtol=0, atol=0)
    with torch.no_grad():
        published, coarse = baseline(pixel_values=pixel_values).logits, ssa(pixel_values=pixel_values).coarse_logits
    assert published.shape == coarse.shape and not torch.allclose(published, coarse, atol=1e-3)  # the second stage acts

    torch.save({"state_dict": official}, tmp_path / "cgrseg_b_ssa.pth")
    capsys.readouterr()
    assert cli_main(["convert", str(tmp_path / "cgrseg_b_ssa.pth"), "--output", str(tmp_path / "no"), "--baseline"]) == 2
    assert "keeps the classifier of a plain segmenter" in capsys.readouterr().err
