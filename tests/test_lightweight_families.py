"""SeaFormer, MSCAN (SegNeXt), EfficientFormerV2 (CGRSeg) and AFFormer as transformers backbones, with their decoders
in front of the one SSA classifier: Auto classes, out_features, forward/loss/gradients, the plain baseline (CGRSeg's
with its second stage), SegNeXt's reproducible NMF bases, EfficientFormerV2's frozen batch norms, save/load, remote
code with `pipeline` in a fresh process without ssa_hf, and ONNX. Tiny sizes; the official sizes are checked against
the official outputs in test_zoo_parity.py."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import WITHOUT_SSA_HF
from transformers import AutoBackbone, AutoConfig, AutoModelForSemanticSegmentation

from ssa_hf import (
    AFFormerBackbone,
    AFFormerConfig,
    EfficientFormerV2Backbone,
    EfficientFormerV2Config,
    MSCANBackbone,
    MSCANConfig,
    SeaFormerBackbone,
    SeaFormerConfig,
    SSAConfig,
    SSAForSemanticSegmentation,
    SSAImageProcessor,
)

TINY_SEAFORMER = dict(stem_channels=8, block_settings=[[[3, 1, 8, 1], [3, 2, 8, 2]], [[3, 2, 16, 2]], [[5, 2, 16, 2]],
                                                        [[3, 2, 24, 2]]],
                      attention_depths=[1, 1], key_dims=[4, 4], num_attention_heads=2, mlp_ratios=[2, 2])
TINY_MSCAN = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], mlp_ratios=[2, 2, 2, 2])
TINY_EFFICIENTFORMER = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 2], mlp_ratios=[[2], [2], [2, 2], [2, 2]],
                            num_attention_blocks=1, num_attention_heads=2, key_dim=4, downsample_key_dim=4,
                            attention_ratio=2, resolution=64)
TINY_AFFORMER = dict(hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1])
ID2LABEL = {i: f"class {i}" for i in range(5)}
FAMILIES = ["seaformer", "mscan", "efficientformer_v2", "afformer"]


def tiny_model(family: str, **kwargs) -> SSAForSemanticSegmentation:
    torch.manual_seed(0)
    if family == "seaformer":
        config = SSAConfig.from_seaformer_config(SeaFormerConfig(**TINY_SEAFORMER), id2label=ID2LABEL,
                                                 decoder_embed_dims=[16, 16], decoder_hidden_size=16, **kwargs)
    elif family == "mscan":
        config = SSAConfig.from_mscan_config(MSCANConfig(**TINY_MSCAN), id2label=ID2LABEL, ham_channels=32,
                                             decoder_hidden_size=32, ham_num_bases=4, **kwargs)
    elif family == "efficientformer_v2":
        config = SSAConfig.from_efficientformer_v2_config(
            EfficientFormerV2Config(**TINY_EFFICIENTFORMER), id2label=ID2LABEL, decoder_hidden_size=16,
            cgr_context_blocks=2, cgr_context_band_size=5, cgr_band_size=5, **kwargs)
    else:
        config = SSAConfig.from_afformer_config(AFFormerConfig(**TINY_AFFORMER), id2label=ID2LABEL,
                                                decoder_hidden_size=32, **kwargs)
    return SSAForSemanticSegmentation(config)


def test_backbones_are_transformers_backbones_with_out_features():
    for config, backbone_class in ((SeaFormerConfig(**TINY_SEAFORMER), SeaFormerBackbone),
                                   (MSCANConfig(**TINY_MSCAN), MSCANBackbone),
                                   (EfficientFormerV2Config(**TINY_EFFICIENTFORMER), EfficientFormerV2Backbone),
                                   (AFFormerConfig(**TINY_AFFORMER), AFFormerBackbone)):
        fields = {k: v for k, v in config.to_dict().items() if k != "model_type"}
        reloaded = AutoConfig.for_model(config.model_type, **fields)
        assert type(reloaded) is type(config) and reloaded.out_features == config.out_features
        assert type(AutoBackbone.from_config(reloaded)) is backbone_class
    seaformer = AutoBackbone.from_config(SeaFormerConfig(**TINY_SEAFORMER, out_features=["stem", "stage3"])).eval()
    assert seaformer.out_indices == [0, 3] and seaformer.channels == [8, 16]
    with torch.no_grad():
        output = seaformer(torch.randn(1, 3, 64, 64), output_hidden_states=True)
    assert [tuple(f.shape) for f in output.feature_maps] == [(1, 8, 32, 32), (1, 16, 4, 4)]
    assert len(output.hidden_states) == len(seaformer.stage_names) == 5
    mscan = MSCANBackbone(MSCANConfig(**TINY_MSCAN, out_indices=[2, 4])).eval()
    assert mscan.out_features == ["stage2", "stage4"] and mscan.channels == [16, 32]
    with pytest.raises(ValueError, match="unknown SeaFormer size"):
        SeaFormerConfig.from_variant("xl")
    with pytest.raises(Exception, match="one entry per attention stage"):
        SeaFormerConfig(**TINY_SEAFORMER | {"key_dims": [4]})


@pytest.mark.parametrize("family, stride", [("seaformer", 8), ("mscan", 8), ("efficientformer_v2", 8), ("afformer", 8)])
@pytest.mark.parametrize("classifier_type", ["ssa", "plain"])
def test_forward_loss_and_gradients(family, stride, classifier_type):
    model = tiny_model(family, classifier_type=classifier_type)
    pixel_values, labels = torch.randn(2, 3, 64, 96), torch.randint(0, 5, (2, 64, 96))
    labels[:, :5] = 255
    out = model(pixel_values=pixel_values, labels=labels)
    assert out.logits.shape == (2, 5, 64 // stride, 96 // stride)
    assert torch.isfinite(out.loss)
    assert len(out.loss_terms) == (8 if classifier_type == "ssa" else 1)
    torch.testing.assert_close(sum(out.loss_terms.values()), out.loss.detach())
    out.loss.backward()
    unused = {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None}
    assert not {n for n in unused if n.startswith(("encoder.", "decode_head.")) and ".teacher_" not in n}, unused
    if classifier_type == "plain":  # the baseline: the decoder's own classifier and mmseg's cross-entropy
        assert model.config.num_labels == 5 and not hasattr(model.decode_head.classifier, "semantic_fusion")
        upsampled = torch.nn.functional.interpolate(out.logits.detach(), size=labels.shape[-2:], mode="bilinear")
        losses = torch.nn.functional.cross_entropy(upsampled, labels, ignore_index=255, reduction="sum")
        torch.testing.assert_close(out.loss.detach(), losses / labels.numel(), rtol=1e-5, atol=1e-6)


def test_a_trained_baseline_loads_into_ssa_as_its_fixed_prototypes(tmp_path):
    baseline = tiny_model("seaformer", classifier_type="plain")
    baseline.save_pretrained(tmp_path / "baseline")
    ssa = tiny_model("seaformer")
    result = ssa.load_state_dict(baseline.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(".classifier." in key for key in result.missing_keys)  # only the SSA layers start fresh
    torch.testing.assert_close(ssa.decode_head.classifier.weight, baseline.decode_head.classifier.weight)
    ssa.eval(), baseline.eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ssa(pixel_values=pixel_values).coarse_logits,
                                   baseline(pixel_values=pixel_values).logits)


def test_segnext_bases_are_reproducible_and_can_be_set():
    model = tiny_model("mscan").eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        first, again = model(pixel_values=pixel_values).logits, model(pixel_values=pixel_values).logits
        alone = model(pixel_values=pixel_values[1:]).logits
    assert torch.equal(first, again)  # the official code draws new bases every call
    torch.testing.assert_close(first[1:], alone, rtol=1e-4, atol=1e-4)  # an image's bases do not depend on the batch
    generator = torch.Generator().manual_seed(1)
    bases = torch.nn.functional.normalize(torch.rand(1, 32, 4, generator=generator), dim=1)
    model.set_ham_bases(bases)
    with torch.no_grad():
        other = model(pixel_values=pixel_values).logits
    assert not torch.allclose(other, first)
    model.set_ham_bases(None)
    with torch.no_grad():
        assert torch.equal(model(pixel_values=pixel_values).logits, first)
    with pytest.raises(ValueError, match="bases must have shape"):
        model.set_ham_bases(torch.rand(1, 32, 3))
    with pytest.raises(ValueError, match="has no Hamburger"):
        tiny_model("seaformer").set_ham_bases(bases)
    # Training draws fresh bases from the global generator, which ssa-seg train reseeds each iteration.
    model.train()
    torch.manual_seed(5)
    a = model(pixel_values=pixel_values).logits
    torch.manual_seed(5)
    torch.testing.assert_close(model(pixel_values=pixel_values).logits, a, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_round_trip(family, tmp_path):
    model = tiny_model(family).eval()
    model.save_pretrained(tmp_path / family)
    saved = json.loads((tmp_path / family / "config.json").read_text())
    assert saved["backbone_config"]["model_type"] == family
    copied = {p.name for p in (tmp_path / family).glob("*.py")}
    assert {f"configuration_{family}.py", f"modeling_{family}.py", "decoders_ssa.py"} <= copied
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / family).eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixel_values).logits, model(pixel_values=pixel_values).logits,
                                   rtol=0, atol=0)


FRESH_PROCESS = WITHOUT_SSA_HF + textwrap.dedent(
    """
    import json, numpy as np, torch
    from PIL import Image
    from transformers import AutoModelForSemanticSegmentation, pipeline

    report = {}
    for folder in sys.argv[1:]:
        model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model(pixel_values=torch.from_numpy(np.load(folder + "/probe.npy"))).logits
        np.save(folder + "/remote_logits.npy", logits.numpy())
        segments = pipeline("image-segmentation", model=folder, trust_remote_code=True)(Image.open(folder + "/probe.png"))
        report[folder] = sorted(s["label"] for s in segments)
    print(json.dumps(report))
    """
)


def test_folders_load_as_remote_code_and_run_in_pipeline_without_ssa_hf(tmp_path):
    from PIL import Image

    folders, expected = [], {}
    rng = np.random.default_rng(0)
    for family in FAMILIES:
        model = tiny_model(family).eval()
        with torch.no_grad():
            for parameter in model.decode_head.parameters():
                parameter.normal_(0, 1)  # predictions spread over several classes
        folder = tmp_path / family
        model.save_pretrained(folder)
        SSAImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(folder)
        probe = torch.randn(1, 3, 64, 96)
        np.save(folder / "probe.npy", probe.numpy())
        Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(folder / "probe.png")
        with torch.no_grad():
            expected[family] = model(pixel_values=probe).logits.numpy()
        folders.append(str(folder))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, *folders], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for family in FAMILIES:
        np.testing.assert_array_equal(np.load(tmp_path / family / "remote_logits.npy"), expected[family])
        assert report[str(tmp_path / family)] and set(report[str(tmp_path / family)]) <= set(ID2LABEL.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_export_with_dynamic_sizes_matches_pytorch(family, tmp_path):
    """The graph takes any batch and image size (checked by onnxruntime at the example and two other sizes);
    SegNeXt's seeded evaluation bases are a constant of the graph."""
    pytest.importorskip("onnxruntime")
    from ssa_hf.onnx_export import check_onnx, export_onnx

    model = tiny_model(family).eval()
    result = export_onnx(model, tmp_path / "model.onnx", example_size=(64, 96))
    assert len(result["checks"]) == 3 and max(result["checks"].values()) <= 1e-4
    assert check_onnx(model, tmp_path / "model.onnx", (72, 120), batch=3) <= 1e-4


def test_cgrseg_baseline_is_the_published_two_stage_head():
    """The plain CGRSeg keeps its second stage: class contexts from the first prediction, pooled by an attention
    over the classes, gate the channels of the refined map, and the classifier runs again on gated + refined.
    Checked against that computation written out image by image and class by class."""
    model = tiny_model("efficientformer_v2", classifier_type="plain").eval()
    head = model.decode_head
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.normal_(0, 0.5)  # the gate's last conv starts at zero, which would hide the second stage
        feature_maps = model.encoder(torch.randn(2, 3, 64, 96)).feature_maps
        refined = head.refine(feature_maps)
        first = torch.nn.functional.conv2d(head.linear_fuse(refined), head.classifier.weight,
                                           head.classifier.bias)
        guidance, expected = head.prototype_guidance, []
        for image, logits in zip(refined, first):
            pixels, probabilities = image.flatten(1), logits.flatten(1).softmax(dim=1)
            contexts = [(probabilities[k] * pixels).sum(dim=1) for k in range(len(probabilities))]
            scores = torch.stack([(guidance.class_attention.weight.flatten() * c).sum() for c in contexts])
            weights = (scores + guidance.class_attention.bias).softmax(dim=0)
            pooled = sum(w * c for w, c in zip(weights, contexts))
            gate = torch.sigmoid(guidance.channel_gate(pooled[None, :, None, None]))[0]
            expected.append(image * gate + image)
        expected = torch.nn.functional.conv2d(torch.stack(expected), head.classifier.weight,
                                              head.classifier.bias)
        torch.testing.assert_close(head.plain_logits(feature_maps), expected, rtol=1e-5, atol=1e-5)
    assert tiny_model("efficientformer_v2").decode_head.prototype_guidance is None  # SSA replaces the second stage
    fresh = tiny_model("efficientformer_v2", classifier_type="plain").decode_head.prototype_guidance
    assert not fresh.channel_gate[-1].weight.any() and not fresh.channel_gate[-1].bias.any()  # CGRSeg's init


def test_efficientformer_batch_norms_stay_frozen_in_training_by_default(tmp_path):
    """As the official backbone's `train()`: the encoder's batch norms keep eval mode (running statistics used, not
    updated) while everything trains; `frozen_batch_norm=False` trains them. The setting survives save/load."""
    pixel_values, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    model = tiny_model("efficientformer_v2").train()
    assert model.config.backbone_config.frozen_batch_norm
    norms = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(norm.training for norm in norms)
    assert model.decode_head.training and model.decode_head.linear_fuse.bn.training  # the head's are not frozen
    before = {k: v.clone() for k, v in model.encoder.state_dict().items() if "running_" in k}
    model(pixel_values=pixel_values, labels=labels).loss.backward()
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(norm.weight.grad is not None for norm in norms)  # their scale and shift still learn
    model.save_pretrained(tmp_path / "frozen")
    assert AutoConfig.from_pretrained(tmp_path / "frozen").backbone_config.frozen_batch_norm

    free = tiny_model("efficientformer_v2")
    free.config.backbone_config.frozen_batch_norm = False
    free.train()
    assert all(m.training for m in free.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    free(pixel_values=pixel_values, labels=labels)
    assert any(not torch.equal(before[k], free.encoder.state_dict()[k]) for k in before)
