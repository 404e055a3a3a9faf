"""SSA on any transformers backbone (Swin, ConvNeXt, ResNet, DINOv2) with the UperNet or SegFormer decoder: forward,
loss, from_upernet parity, save/load round trips and remote code in a fresh process without ssa_hf."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import WITHOUT_SSA_HF
from test_convert import _randomise_batch_norms
from transformers import (
    AutoModelForSemanticSegmentation,
    ConvNextConfig,
    Dinov2Config,
    ResNetConfig,
    SwinConfig,
    UperNetConfig,
    UperNetForSemanticSegmentation,
    ViTConfig,
)

from ssa_hf import SSAConfig, SSAForSemanticSegmentation

STAGES = ["stage1", "stage2", "stage3", "stage4"]
BACKBONES = {
    "swin": lambda: SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                               out_features=STAGES),
    "convnext": lambda: ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], out_features=STAGES),
    "resnet": lambda: ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                   layer_type="basic", out_features=STAGES),
    "dinov2": lambda: Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                                   patch_size=8, image_size=64, out_features=STAGES),
}


def ssa_model(family: str, decoder_type: str = "upernet", **kwargs) -> SSAForSemanticSegmentation:
    torch.manual_seed(0)
    config = SSAConfig(backbone_config=BACKBONES[family](), decoder_type=decoder_type, decoder_hidden_size=16,
                       num_labels=5, auxiliary_channels=8, **kwargs)
    return SSAForSemanticSegmentation(config)


@pytest.mark.parametrize("family", sorted(BACKBONES))
@pytest.mark.parametrize("decoder_type", ["upernet", "segformer"])
def test_forward_and_loss_on_every_backbone_family(family, decoder_type):
    model = ssa_model(family, decoder_type, use_auxiliary_head=decoder_type == "upernet")
    pixel_values = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, 5, (2, 64, 64))
    labels[:, :4] = 255
    out = model(pixel_values=pixel_values, labels=labels)
    stride = 8 if family == "dinov2" else 4  # F is at the first feature map's resolution
    assert out.logits.shape == (2, 5, 64 // stride, 64 // stride)
    expected_terms = 9 if decoder_type == "upernet" else 8
    assert len(out.loss_terms) == expected_terms and torch.isfinite(out.loss)
    torch.testing.assert_close(sum(out.loss_terms.values()), out.loss.detach())
    out.loss.backward()
    without_grad = {n for n, p in model.encoder.named_parameters() if p.requires_grad and p.grad is None}
    # Unused by the backbones themselves: DINOv2's mask token (masked inputs only), Swin's final model norm.
    assert without_grad <= {"embeddings.mask_token", "swin.layernorm.weight", "swin.layernorm.bias"}, without_grad
    model.eval()
    with torch.no_grad():
        inference = model(pixel_values=pixel_values)
    assert inference.teacher_logits is None and inference.loss is None


def test_from_upernet_keeps_the_upernet_logits_when_ssa_is_bypassed():
    torch.manual_seed(0)
    upernet = UperNetForSemanticSegmentation(UperNetConfig(
        backbone_config=BACKBONES["swin"](), hidden_size=16, auxiliary_channels=8, num_labels=5,
        use_auxiliary_head=True, id2label={i: f"class{i}" for i in range(5)})).eval()
    _randomise_batch_norms(upernet)
    model = SSAForSemanticSegmentation.from_upernet(upernet).eval()
    assert model.config.decoder_type == "upernet" and model.config.id2label[3] == "class3"
    pixel_values = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = upernet(pixel_values=pixel_values).logits  # UperNet upsamples to the image size
        coarse = model(pixel_values=pixel_values).coarse_logits
        coarse = F.interpolate(coarse, size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(coarse, expected, rtol=0, atol=1e-6)

    # The auxiliary term is mmseg's FCNHead loss on the copied auxiliary head (all labels valid here, so it equals
    # the mean cross-entropy of the upsampled auxiliary logits); both models in eval mode.
    labels = torch.randint(0, 5, (2, 64, 96))
    with torch.no_grad():
        auxiliary = upernet.auxiliary_head(upernet.backbone(pixel_values).feature_maps)
        expected_loss = F.cross_entropy(
            F.interpolate(auxiliary, size=(64, 96), mode="bilinear", align_corners=False), labels)
        ours = model._auxiliary_loss(model.encoder(pixel_values).feature_maps, labels)
    torch.testing.assert_close(ours, expected_loss, rtol=1e-6, atol=1e-6)
    out = model.train()(pixel_values=pixel_values, labels=labels)
    assert torch.isfinite(out.loss_terms["auxiliary"])


def test_from_upernet_folder_and_new_classes(tmp_path):
    torch.manual_seed(0)
    upernet = UperNetForSemanticSegmentation(UperNetConfig(
        backbone_config=BACKBONES["convnext"](), hidden_size=16, auxiliary_channels=8, num_labels=5))
    upernet.save_pretrained(tmp_path / "upernet")
    model = SSAForSemanticSegmentation.from_upernet(tmp_path / "upernet")
    torch.testing.assert_close(model.decode_head.classifier.weight, upernet.decode_head.classifier.weight)
    torch.testing.assert_close(model.auxiliary_head.classifier.weight, upernet.auxiliary_head.classifier.weight)
    relabelled = SSAForSemanticSegmentation.from_upernet(upernet, num_labels=3)
    assert relabelled.decode_head.classifier.weight.shape[0] == 3
    assert relabelled.auxiliary_head.classifier.weight.shape[0] == 3
    torch.testing.assert_close(relabelled.decode_head.fpn_bottleneck.conv.weight,
                               upernet.decode_head.fpn_bottleneck.conv.weight)
    with pytest.raises(TypeError, match="UperNetForSemanticSegmentation"):
        SSAForSemanticSegmentation.from_upernet(model)
    # A folder of another kind of model is refused by name (not with a dataclass error deep inside a config).
    with pytest.raises(ValueError, match="is a 'upernet' model, not a SegFormer"):
        SSAForSemanticSegmentation.from_segformer(tmp_path / "upernet")
    model.save_pretrained(tmp_path / "ssa")
    with pytest.raises(ValueError, match="is a 'ssa' model, not a UperNet"):
        SSAForSemanticSegmentation.from_upernet(tmp_path / "ssa")



def test_cli_convert_of_an_upernet_folder_saves_its_processor_and_runs_in_pipeline(tmp_path):
    import json

    from PIL import Image
    from transformers import SegformerImageProcessor, pipeline

    from ssa_hf_cli import main as cli_main

    torch.manual_seed(0)
    upernet = UperNetForSemanticSegmentation(UperNetConfig(
        backbone_config=BACKBONES["convnext"](), hidden_size=16, auxiliary_channels=8, num_labels=5))
    upernet.save_pretrained(tmp_path / "upernet")
    SegformerImageProcessor(do_reduce_labels=True, size={"height": 64, "width": 64}).save_pretrained(
        tmp_path / "upernet")
    assert cli_main(["convert", str(tmp_path / "upernet"), "--output", str(tmp_path / "ssa")]) == 0
    model = SSAForSemanticSegmentation.from_pretrained(tmp_path / "ssa")
    assert model.config.decoder_type == "upernet"
    torch.testing.assert_close(model.auxiliary_head.classifier.weight, upernet.auxiliary_head.classifier.weight)
    saved = json.loads((tmp_path / "ssa" / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "SSAImageProcessor" and saved["do_reduce_labels"] is True
    masks = pipeline("image-segmentation", model=str(tmp_path / "ssa"))(Image.new("RGB", (48, 40), "grey"))
    assert masks and all(m["mask"].size == (48, 40) for m in masks)
    # Another model type is refused by name, not with a dataclass error deep inside the config.
    from transformers import ConvNextConfig, ConvNextModel

    ConvNextModel(ConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 8, 8, 8])).save_pretrained(tmp_path / "convnext")
    assert cli_main(["convert", str(tmp_path / "convnext"), "--output", str(tmp_path / "bad")]) == 2


@pytest.mark.parametrize("family", sorted(BACKBONES))
def test_save_and_load_round_trip(family, tmp_path):
    model = ssa_model(family, use_auxiliary_head=True).eval()
    model.save_pretrained(tmp_path / family)
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / family).eval()
    assert type(loaded) is SSAForSemanticSegmentation and loaded.config.backbone_config.model_type == family
    saved, reloaded = model.state_dict(), loaded.state_dict()
    assert saved.keys() == reloaded.keys()
    for key in saved:
        torch.testing.assert_close(reloaded[key], saved[key], rtol=0, atol=0)
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # weights identical bit for bit; Swin's reloaded logits differ by float rounding (~1e-7)
        torch.testing.assert_close(loaded(pixel_values=pixel_values).logits, model(pixel_values=pixel_values).logits,
                                   rtol=1e-5, atol=1e-5)


def test_decoder_and_backbone_errors_are_clear():
    with pytest.raises(Exception, match="Unknown decoder_type 'fpn'"):
        SSAConfig(backbone_config=BACKBONES["swin"](), decoder_type="fpn", num_labels=3)
    with pytest.raises(Exception, match="at least 2 feature maps"):
        SSAConfig(backbone_config=SwinConfig(out_features=["stage4"]), decoder_type="upernet", num_labels=3)
    with pytest.raises(Exception, match="third feature map"):
        SSAConfig(backbone_config=SwinConfig(out_features=["stage3", "stage4"]), decoder_type="upernet",
                  use_auxiliary_head=True, num_labels=3)
    with pytest.raises(Exception, match="'vit' is neither"):
        SSAConfig(backbone_config=ViTConfig(), num_labels=3)
    from transformers import TimmBackboneConfig

    with pytest.raises(Exception, match="timm backbones are not supported"):
        SSAConfig(backbone_config=TimmBackboneConfig(backbone="resnet18"), num_labels=3)


FRESH_PROCESS = WITHOUT_SSA_HF + textwrap.dedent(
    """
    import numpy as np, torch
    from transformers import AutoModelForSemanticSegmentation

    for folder in sys.argv[1:]:
        model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model(pixel_values=torch.from_numpy(np.load(folder + "/probe.npy"))).logits
        np.save(folder + "/remote_logits.npy", logits.numpy())
    """
)


def test_every_backbone_family_loads_as_remote_code_without_ssa_hf(tmp_path):
    folders, expected = [], {}
    for family in sorted(BACKBONES):
        model = ssa_model(family, use_auxiliary_head=family == "swin").eval()
        folder = tmp_path / family
        model.save_pretrained(folder)
        probe = torch.randn(1, 3, 64, 64)
        np.save(folder / "probe.npy", probe.numpy())
        with torch.no_grad():
            expected[family] = model(pixel_values=probe).logits.numpy()
        folders.append(str(folder))
    (tmp_path / "use.py").write_text(FRESH_PROCESS)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run([sys.executable, "use.py", *folders], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for family in BACKBONES:  # Swin: float rounding (~1e-7) as in the in-process round trip
        np.testing.assert_allclose(np.load(tmp_path / family / "remote_logits.npy"), expected[family], rtol=1e-5,
                                   atol=1e-5)


def test_upernet_swin_recipes_build_the_paper_setup_from_a_backbone_checkpoint(tmp_path):
    """The UperNet Swin-T/L recipes (the official configs): AdamW 6e-5, weight decay 0.01 except position tables and the
    backbone's norms, no head multiplier; an ImageNet backbone checkpoint under a fresh UperNet + auxiliary head."""

    from transformers import SwinModel

    from ssa_hf.training import Recipe, build_model, parameter_groups

    for name, encoder in [("upernet_swin_t_ade20k", "microsoft/swin-tiny-patch4-window7-224"),
                          ("upernet_swin_l_ade20k", "microsoft/swin-large-patch4-window7-224-in22k")]:
        recipe = Recipe.load(name)
        assert (recipe.decoder_type, recipe.encoder, recipe.lr, recipe.weight_decay) == ("upernet", encoder, 6e-5, 0.01)
        assert "head" not in recipe.custom_keys and recipe.decoder_hidden_size == 512

    torch.manual_seed(0)
    swin = SwinModel(SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                                use_absolute_embeddings=True))
    swin.save_pretrained(tmp_path / "swin")  # stands in for the ImageNet checkpoint (the hub is unreachable)
    recipe = Recipe.load("upernet_swin_t_ade20k", encoder=str(tmp_path / "swin"),
                              decoder_hidden_size=16)
    model = build_model(recipe)
    assert model.config.decoder_type == "upernet" and model.auxiliary_head is not None
    assert model.config.auxiliary_loss_weight == 0.4
    source = swin.state_dict()
    loaded = {k.removeprefix("swin."): v for k, v in model.encoder.state_dict().items() if k.startswith("swin.")}
    assert loaded.keys() == source.keys()
    for key, value in loaded.items():  # the backbone weights are the checkpoint's
        torch.testing.assert_close(value, source[key], rtol=0, atol=0)
    groups = parameter_groups(model, recipe.lr, recipe.weight_decay, recipe.custom_keys)
    decay = {name: group["weight_decay"] for group in groups for name in group["names"]}
    assert {group["lr"] for group in groups} == {6e-5}
    block = "encoder.swin.encoder.layers.0.blocks.0"
    assert decay["encoder.swin.embeddings.position_embeddings"] == 0.0
    assert decay[f"{block}.attention.relative_position_bias.relative_position_bias_table"] == 0.0
    assert decay[f"{block}.layernorm_before.weight"] == 0.0
    assert decay["encoder.hidden_states_norms.stage1.weight"] == 0.0
    assert decay["encoder.swin.embeddings.norm.weight"] == 0.0
    assert decay["encoder.swin.encoder.layers.0.downsample.norm.weight"] == 0.0
    assert decay[f"{block}.attention.q_proj.weight"] == 0.01
    assert decay["decode_head.fpn_bottleneck.batch_norm.weight"] == 0.01  # mmseg's "norm" key misses heads' "bn"
    assert decay["decode_head.classifier.semantic_fusion.reduce.weight"] == 0.01
    baseline = build_model(recipe, baseline=True)
    assert type(baseline).__name__ == "UperNetForSemanticSegmentation"
    torch.testing.assert_close(baseline.backbone.state_dict()["swin.embeddings.patch_embeddings.projection.weight"],
                               source["embeddings.patch_embeddings.projection.weight"])


def _adaptive_average_loop(x, output_size):
    """Plain loops: bin i of a side of length L averages [floor(i L / s), ceil((i + 1) L / s))."""
    batch, channels, height, width = x.shape
    out = torch.zeros(batch, channels, output_size, output_size)
    for i in range(output_size):
        rows = slice(i * height // output_size, -(-(i + 1) * height // output_size))
        for j in range(output_size):
            cols = slice(j * width // output_size, -(-(j + 1) * width // output_size))
            out[:, :, i, j] = x[:, :, rows, cols].mean(dim=(2, 3))
    return out


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 9), (13, 5), (20, 31)])
def test_pooling_that_follows_the_input_size_is_adaptive_average_pooling(size):
    from ssa_hf.ops_ssa import adaptive_avg_pool_any_size as _adaptive_avg_pool_any_size

    x = torch.randn(2, 3, *size)
    for output_size in (1, 2, 3, 6):
        expected = _adaptive_average_loop(x, output_size)
        torch.testing.assert_close(_adaptive_avg_pool_any_size(x, output_size), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(F.adaptive_avg_pool2d(x, output_size), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["resnet", "convnext"])
def test_upernet_models_export_with_dynamic_sizes(tmp_path, family):
    pytest.importorskip("onnxruntime")
    from ssa_hf.onnx_export import check_onnx, export_onnx

    model = ssa_model(family, "upernet").eval()
    _randomise_batch_norms(model)
    result = export_onnx(model, tmp_path / "model.onnx", example_size=(64, 64))
    assert len(result["checks"]) == 3 and max(result["checks"].values()) <= 1e-4
    # The pyramid pooling's bins follow the image: sizes whose last feature map is not 2x2 give the same logits.
    for size, batch in [((160, 96), 1), ((200, 136), 3)]:
        assert check_onnx(model, tmp_path / "model.onnx", size, batch=batch) <= 1e-4


def test_onnx_export_of_a_swin_model_needs_a_fixed_size_and_says_so(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from ssa_hf.onnx_export import check_onnx
    from ssa_hf_cli import main as cli_main

    model = ssa_model("swin", "upernet").eval()
    model.save_pretrained(tmp_path / "model")
    output = tmp_path / "model.onnx"
    arguments = ["export-onnx", "--model", str(tmp_path / "model"), "--output", str(output), "--height", "64",
                 "--width", "64"]
    # transformers' Swin pads its windows by amounts fixed at the example size: the check at other sizes catches it.
    assert cli_main(arguments) == 2
    assert "--static" in capsys.readouterr().err
    assert not output.exists() and not list(tmp_path.glob("*.partial"))  # nothing unchecked is left behind
    assert cli_main([*arguments, "--static"]) == 0
    assert check_onnx(model, output, (64, 64), batch=3) <= 1e-4  # batch stays dynamic


@pytest.mark.parametrize("family", sorted(BACKBONES))
def test_gradient_checkpointing_where_the_backbone_allows_it(family):
    from transformers.modeling_layers import GradientCheckpointingLayer

    model = ssa_model(family).train()
    for module in model.modules():  # no randomness, so that both passes compute the same function
        if isinstance(module, (torch.nn.Dropout, torch.nn.Dropout2d)):
            module.p = 0.0
        if hasattr(module, "drop_prob"):  # drop path
            module.drop_prob = 0.0
    pixel_values, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    model(pixel_values=pixel_values, labels=labels).loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    if family in ("convnext", "resnet"):
        with pytest.raises(ValueError, match="encoder does not support gradient checkpointing"):
            model.gradient_checkpointing_enable()
        return
    model.gradient_checkpointing_enable()
    assert any(m.gradient_checkpointing for m in model.modules() if isinstance(m, GradientCheckpointingLayer))
    model(pixel_values=pixel_values, labels=labels).loss.backward()
    for name, gradient in expected.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, gradient, atol=1e-6, rtol=1e-5)
