"""SSA on transformers' own semantic segmenters (`SSAForSemanticSegmentation.from_transformers`): BEiT,
Data2VecVision, DPT, MobileViT, MobileViTV2 and MobileNetV2, beside SegFormer and UperNet (test_backbones.py,
test_convert.py). Each source is a small random model with randomised batch-norm statistics; the SSA model built from
it must compute the source's decoder feature bit for bit, and its coarse logits must be the source's logits."""

import json
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
    BeitConfig,
    BeitForSemanticSegmentation,
    Data2VecVisionConfig,
    Data2VecVisionForSemanticSegmentation,
    DPTConfig,
    DPTForSemanticSegmentation,
    MobileNetV2Config,
    MobileNetV2ForSemanticSegmentation,
    MobileViTConfig,
    MobileViTForSemanticSegmentation,
    MobileViTV2Config,
    MobileViTV2ForSemanticSegmentation,
)

from ssa_hf import SSAForSemanticSegmentation

TINY_VIT = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
                patch_size=8, num_labels=5, id2label={i: f"class{i}" for i in range(5)})
SOURCES = {
    "beit": lambda: BeitForSemanticSegmentation(BeitConfig(
        **TINY_VIT, out_indices=[1, 2, 3, 4], use_auxiliary_head=True, auxiliary_channels=8,
        use_relative_position_bias=True)),
    "data2vec-vision": lambda: Data2VecVisionForSemanticSegmentation(Data2VecVisionConfig(
        **TINY_VIT, out_indices=[1, 2, 3, 4], use_auxiliary_head=True, auxiliary_channels=8,
        auxiliary_concat_input=True)),
    "dpt": lambda: DPTForSemanticSegmentation(DPTConfig(
        **TINY_VIT, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16)),
    "mobilevit": lambda: MobileViTForSemanticSegmentation(MobileViTConfig(
        image_size=64, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64], aspp_out_channels=16,
        num_labels=5)),
    "mobilevitv2": lambda: MobileViTV2ForSemanticSegmentation(MobileViTV2Config(
        image_size=64, width_multiplier=0.25, aspp_out_channels=16, num_labels=5)),
    "mobilenet_v2": lambda: MobileNetV2ForSemanticSegmentation(MobileNetV2Config(
        image_size=64, depth_multiplier=0.25, num_labels=5)),
}
# The source's final classifier, whose input is the feature F that SSA classifies.
SOURCE_CLASSIFIER = {"beit": "decode_head.classifier", "data2vec-vision": "decode_head.classifier",
                     "dpt": "head.head.4", "mobilevit": "segmentation_head.classifier",
                     "mobilevitv2": "segmentation_head.classifier", "mobilenet_v2": "segmentation_head.classifier"}


def source_model(kind: str):
    torch.manual_seed(0)
    model = SOURCES[kind]().eval()
    _randomise_batch_norms(model)
    return model


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_from_transformers_computes_the_source_feature_and_logits(kind):
    source = source_model(kind)
    model = SSAForSemanticSegmentation.from_transformers(source).eval()
    assert model.config.segmenter_encoder and model.config.id2label == source.config.id2label
    pixel_values = torch.randn(2, 3, 64, 64)
    captured = {}
    classifier = source.get_submodule(SOURCE_CLASSIFIER[kind])
    classifier.register_forward_pre_hook(lambda module, args: captured.setdefault("feature", args[0]))
    with torch.no_grad():
        expected = source(pixel_values=pixel_values).logits
        feature_maps = model.encoder.forward_with_filtered_kwargs(pixel_values).feature_maps
        feature = model.decode_head.fuse(feature_maps)
        out = model(pixel_values=pixel_values)
    # The encoder, neck and decoder are the source's, so F is bit for bit the source classifier's input, and the
    # fixed prototypes are its classifier: the coarse logits are the source's up to the order of the sums
    # (SSA computes them as a matrix product).
    torch.testing.assert_close(feature, captured["feature"], rtol=0, atol=0)
    assert out.coarse_logits.shape == expected.shape == out.logits.shape
    torch.testing.assert_close(out.coarse_logits, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(out.logits, out.coarse_logits)  # SSA's adapted prediction is another one


@pytest.mark.parametrize("kind", ["beit", "dpt", "mobilenet_v2"])
def test_from_transformers_trains_with_the_source_auxiliary_head(kind):
    source = source_model(kind)
    model = SSAForSemanticSegmentation.from_transformers(source)
    pixel_values, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    labels[:, :3] = 255
    has_auxiliary = kind != "mobilenet_v2"
    if has_auxiliary:  # the auxiliary term is the cross-entropy of the source's auxiliary head (eval: no dropout)
        model.eval()
        with torch.no_grad():
            feature_maps = model.encoder.forward_with_filtered_kwargs(pixel_values).feature_maps
            ours = model._auxiliary_loss(feature_maps, labels)
            if kind == "beit":
                logits = source.auxiliary_head(source.fpn(tuple(
                    source.beit(pixel_values, output_hidden_states=True).hidden_states[i - 1][:, 1:]
                    .transpose(1, 2).reshape(2, -1, 8, 8) for i in source.config.out_indices)))
            else:
                logits = source.auxiliary_head(source.neck(hidden_states=list(
                    source.dpt(pixel_values, output_hidden_states=True).hidden_states[1:]))[-1])
            expected = F.cross_entropy(F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False),
                                       labels, ignore_index=255, reduction="none").mean()  # mmseg: over all pixels
        torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)
    out = model.train()(pixel_values=pixel_values, labels=labels)
    assert ("auxiliary" in out.loss_terms) == has_auxiliary and torch.isfinite(out.loss)
    torch.testing.assert_close(sum(out.loss_terms.values()), out.loss.detach())
    out.loss.backward()
    assert model.decode_head.classifier.semantic_fusion.reduce.weight.grad is not None


def test_from_transformers_new_classes_and_unsupported_sources(tmp_path):
    source = source_model("mobilevit")
    relabelled = SSAForSemanticSegmentation.from_transformers(source, num_labels=3)
    assert relabelled.decode_head.classifier.weight.shape[0] == 3
    torch.testing.assert_close(relabelled.decode_head.aspp.project.convolution.weight,
                               source.segmentation_head.aspp.project.convolution.weight, rtol=0, atol=0)
    from transformers import ViTConfig, ViTForImageClassification

    ViTForImageClassification(ViTConfig(**{k: v for k, v in TINY_VIT.items() if k not in ("num_labels", "id2label")})
                              ).save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="'vit' model; from_transformers takes .*beit, data2vec-vision, dpt"):
        SSAForSemanticSegmentation.from_transformers(tmp_path / "vit")
    # The aliases keep their own checks.
    with pytest.raises(TypeError, match="SegformerForSemanticSegmentation"):
        SSAForSemanticSegmentation.from_segformer(source)


FRESH_PROCESS = WITHOUT_SSA_HF + textwrap.dedent(
    """
    import json
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    folder = sys.argv[1]
    segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True)
    assert type(segmenter.model).__module__.startswith("transformers_modules"), type(segmenter.model).__module__
    found = segmenter(Image.fromarray(np.load(folder + "/probe_image.npy")))
    print(json.dumps({"processor": type(segmenter.image_processor).__name__,
                      "masks": {r["label"]: np.asarray(r["mask"]).tolist() for r in found}}))
    """
)


@pytest.mark.parametrize("kind", ["beit", "mobilevit"])
def test_converted_folder_keeps_the_source_processor_and_runs_as_remote_code(tmp_path, kind):
    """`ssa-seg convert` of a BEiT / MobileViT folder keeps its own image processor (a fixed 64 x 64 resize; BGR
    input for MobileViT), and the folder runs in `pipeline` in a fresh process without ssa_hf, giving the masks that
    ssa_hf's pipeline gives."""
    from PIL import Image
    from transformers import BeitImageProcessor, MobileViTImageProcessor, pipeline

    from ssa_hf_cli import main as cli_main

    source = source_model(kind)
    source.save_pretrained(tmp_path / "source")
    processor = (BeitImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False, do_reduce_labels=True)
                 if kind == "beit" else MobileViTImageProcessor(size={"shortest_edge": 64},
                                                                 crop_size={"height": 64, "width": 64}))
    processor.save_pretrained(tmp_path / "source")
    assert cli_main(["convert", str(tmp_path / "source"), "--output", str(tmp_path / "ssa")]) == 0
    saved = json.loads((tmp_path / "ssa" / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"].startswith(type(processor).__name__.removesuffix("Pil"))
    assert cli_main(["convert", str(tmp_path / "source"), "--output", str(tmp_path / "refused"),
                     "--convention", "ade20k"]) == 2  # a label convention is SSAImageProcessor's, not BEiT's

    image = (np.random.default_rng(0).random((48, 56, 3)) * 255).astype(np.uint8)
    np.save(tmp_path / "ssa" / "probe_image.npy", image)
    local = pipeline("image-segmentation", model=str(tmp_path / "ssa"))(Image.fromarray(image))
    expected = {r["label"]: np.asarray(r["mask"]).tolist() for r in local}
    assert expected and all(np.asarray(r["mask"]).shape == (48, 56) for r in local)
    run = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "ssa")], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                                          "HF_HOME": str(tmp_path / "hf")})
    assert run.returncode == 0, run.stderr[-3000:]
    remote = json.loads(run.stdout.strip().splitlines()[-1])
    assert remote["processor"].startswith(type(processor).__name__.removesuffix("Pil"))
    assert remote["masks"] == expected
