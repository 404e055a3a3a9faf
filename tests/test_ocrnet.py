"""OCRNet with HRNet: HRNet as a transformers backbone, OCRNet's head in front of the SSA classifier (the soft object
regions' loss, the plain baseline), save/load, remote code with `pipeline` in a fresh process without ssa_hf, and
conversion of the plain mmseg OCRNet and the ImageNet HRNet (the official SSA OCRNet-HRNet-W48 is checked against the
official outputs in test_zoo_parity.py)."""

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
from test_zoo_parity import ZOO
from transformers import AutoBackbone, AutoConfig

from ssa_hf import HRNetBackbone, HRNetConfig, SSAConfig, SSAForSemanticSegmentation, SSAImageProcessor

TINY_HRNET = dict(stem_channels=8, stage1_channels=4, stage1_blocks=1, branch_channels=[4, 8, 12, 16],
                  stage_modules=[1, 1, 1], branch_blocks=1)
ID2LABEL = {i: f"class {i}" for i in range(5)}


def tiny_ocrnet(**kwargs) -> SSAForSemanticSegmentation:
    torch.manual_seed(0)
    config = SSAConfig.from_hrnet_config(HRNetConfig(**TINY_HRNET), id2label=ID2LABEL, decoder_hidden_size=16,
                                         ocr_channels=8, **kwargs)
    model = SSAForSemanticSegmentation(config).eval()
    _randomise_batch_norms(model)
    return model


def test_hrnet_is_a_transformers_backbone_with_four_resolutions():
    config = HRNetConfig(**TINY_HRNET)
    reloaded = AutoConfig.for_model("hrnet", **{k: v for k, v in config.to_dict().items() if k != "model_type"})
    backbone = AutoBackbone.from_config(reloaded).eval()
    assert type(backbone) is HRNetBackbone and backbone.channels == [4, 8, 12, 16]
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 64, 96)).feature_maps
    assert [tuple(f.shape) for f in maps] == [(1, 4, 16, 24), (1, 8, 8, 12), (1, 12, 4, 6), (1, 16, 2, 3)]
    assert HRNetConfig.from_variant("HRNet-W48").branch_channels == [48, 96, 192, 384]
    with pytest.raises(ValueError, match="unknown HRNet size"):
        HRNetConfig.from_variant("w32")
    with pytest.raises(Exception, match="stage_modules"):
        HRNetConfig(stage_modules=[1, 4])


@pytest.mark.parametrize("classifier_type", ["ssa", "plain"])
def test_ocr_head_trains_with_the_soft_object_regions_loss(classifier_type):
    model = tiny_ocrnet(classifier_type=classifier_type)
    assert model.config.classifier_dropout_prob == 0.0  # the official OCR head has no dropout before its classifier
    pixel_values, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    labels[:, :5] = 255
    with torch.no_grad():  # the auxiliary term: mmseg's cross-entropy of the region logits, weight 0.4
        regions = model.decode_head.auxiliary_logits(model.encoder(pixel_values).feature_maps)
        upsampled = F.interpolate(regions, size=(64, 64), mode="bilinear", align_corners=False)
        expected = 0.4 * F.cross_entropy(upsampled, labels, ignore_index=255, reduction="sum") / labels.numel()
        assert torch.isclose(model(pixel_values=pixel_values, labels=labels).loss_terms["auxiliary"], expected)
    out = model.train()(pixel_values=pixel_values, labels=labels)
    assert set(out.loss_terms) == ({"main", "auxiliary"} if classifier_type == "plain" else
                                   {"main", "coarse", "teacher", "response_distillation", "dice_student",
                                    "dice_teacher", "semantic_distillation", "spatial_distillation", "auxiliary"})
    torch.testing.assert_close(sum(out.loss_terms.values()), out.loss.detach())
    out.loss.backward()
    assert model.decode_head.region_classifier.weight.grad is not None
    assert model.decode_head.object_attention.key_project[0].conv.weight.grad is not None
    assert out.logits.shape == (2, 5, 16, 16)  # F at stride 4


def test_ocr_head_matches_a_loop_reference_of_the_object_context():
    """Steps 4 and 5 of decoders_ocr.py written per region and per pixel."""
    from ssa_hf.model.decoders_ocr import object_regions

    model = tiny_ocrnet()
    head = model.decode_head
    with torch.no_grad():
        pixels, logits = torch.randn(1, 16, 3, 4), torch.randn(1, 5, 3, 4)
        regions = object_regions(pixels, logits)
        for k in range(5):
            weights = torch.softmax(logits[0, k].flatten(), 0)
            torch.testing.assert_close(regions[0, :, k, 0], (pixels[0].flatten(1) * weights).sum(1))
        attention = head.object_attention
        query, key = attention.query_project(pixels), attention.key_project(regions)
        value = attention.value_project(regions)
        context = torch.zeros(1, 8, 3, 4)
        for y in range(3):
            for x in range(4):
                scores = torch.stack([(query[0, :, y, x] * key[0, :, k, 0]).sum() for k in range(5)]) / 8**0.5
                context[0, :, y, x] = (torch.softmax(scores, 0)[None] * value[0, :, :, 0]).sum(1)
        expected = attention.bottleneck(torch.cat([attention.out_project(context), pixels], 1))
        torch.testing.assert_close(attention(pixels, regions), expected, rtol=1e-5, atol=1e-6)


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
    print(json.dumps({r["label"]: np.asarray(r["mask"]).tolist() for r in found}))
    """
)


def test_ocrnet_folder_loads_and_runs_in_pipeline_without_ssa_hf(tmp_path):
    from PIL import Image
    from transformers import pipeline

    model = tiny_ocrnet()
    model.save_pretrained(tmp_path / "ocrnet")
    SSAImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path / "ocrnet")
    reloaded = SSAForSemanticSegmentation.from_pretrained(tmp_path / "ocrnet").eval()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0)
    image = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    np.save(tmp_path / "ocrnet" / "probe_image.npy", image)
    expected = {r["label"]: np.asarray(r["mask"]).tolist()
                for r in pipeline("image-segmentation", model=str(tmp_path / "ocrnet"))(Image.fromarray(image))}
    run = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "ocrnet")], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == expected and expected


@pytest.fixture(scope="module")
def official_w48():
    if not (ZOO / "weights.py").is_file():
        pytest.skip(f"the official-zoo fixtures are absent ({ZOO}); they live in the project's shared folder")
    sys.path.insert(0, str(ZOO))
    from safetensors.torch import load_file
    from weights import fixture_state_dict

    return fixture_state_dict(ZOO / "ocrnet_hrnet_w48" / "keys.json"), load_file(ZOO / "inputs.safetensors")[
        "pixel_values"], load_file(ZOO / "ocrnet_hrnet_w48" / "expected.safetensors")


def test_plain_ocrnet_and_imagenet_hrnet_convert(official_w48, tmp_path):
    """The official SSA OCRNet without its SSA layers is an mmseg OCRNet: with --baseline it becomes the published
    model, whose logits are the SSA model's coarse logits; the HRNet alone (with ImageNet classification layers) is
    the encoder under a fresh OCR head."""
    from ssa_hf.convert import convert_checkpoint

    state, pixel_values, expected = official_w48
    ssa_only = ("get_feat_pos", "center_", "gt_center", "ssa_loss")
    plain = {k: v for k, v in state.items() if not k.startswith(tuple(f"decode_head.1.{n}" for n in ssa_only))}
    plain["decode_head.1.conv_seg.weight"], plain["decode_head.1.conv_seg.bias"] = (
        state["decode_head.1.conv_seg.weight"], state["decode_head.1.conv_seg.bias"])
    torch.save({"state_dict": plain}, tmp_path / "ocrnet.pth")
    baseline, report = convert_checkpoint(tmp_path / "ocrnet.pth", classifier_type="plain")
    assert report.source_format == "ocrnet_hrnet_plain" and not report.unexpected and not report.missing
    torch.save({"state_dict": state}, tmp_path / "ssa.pth")
    model, _ = convert_checkpoint(tmp_path / "ssa.pth")
    with torch.no_grad():
        torch.testing.assert_close(baseline.eval()(pixel_values=pixel_values).logits,
                                   model(pixel_values=pixel_values).coarse_logits, rtol=1e-5, atol=1e-5)

    encoder = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    encoder |= {"incre_modules.0.0.conv1.weight": torch.zeros(1), "classifier.weight": torch.zeros(1000, 2048),
                "classifier.bias": torch.zeros(1000)}
    torch.save(encoder, tmp_path / "hrnetv2_w48.pth")
    imagenet, report = convert_checkpoint(tmp_path / "hrnetv2_w48.pth", num_labels=150)
    assert report.source_format == "hrnet_imagenet" and not report.unexpected and not report.missing
    assert set(report.ignored) == {"incre_modules.0.0.conv1.weight", "classifier.weight", "classifier.bias"}
    assert (imagenet.config.decoder_hidden_size, imagenet.config.ocr_region_channels) == (512, 720)
    with torch.no_grad():
        features = imagenet.encoder(pixel_values).feature_maps
    official = expected["backbone_features_3"]
    assert (features[3] - official).abs().max() <= 1e-5 * official.abs().max() + 1e-5


def test_ocrnet_recipes_are_the_official_schedules_and_sgd_resumes_exactly(tmp_path):
    """The official OCRNet configs (SGD, lr 0.01, momentum 0.9, weight decay 5e-4, poly 0.9 down to 1e-4, no warm-up;
    160k iterations on ADE20K, 80k on COCO-Stuff-10K and PASCAL-Context-59); a short SGD run resumed from its
    checkpoint ends bitwise where the uninterrupted run does (momentum buffers included)."""
    from ssa_hf.synthetic import CLASSES, generate
    from ssa_hf.training import Recipe, lr_factor, train

    for dataset, iterations in [("ade20k", 160000), ("coco_stuff_10k", 80000), ("pascal_context_59", 80000)]:
        recipe = Recipe.load(f"ocrnet_hrnet_w48_{dataset}")
        assert (recipe.optimizer, recipe.lr, recipe.momentum, recipe.weight_decay) == ("sgd", 0.01, 0.9, 5e-4)
        assert (recipe.decoder_type, recipe.encoder, recipe.iterations, recipe.custom_keys) == (
            "ocr", "hrnetv2-w48", iterations, {})
        for step in (0, 1, iterations // 3, iterations):  # mmcv's poly: (lr - min_lr) (1 - t)^0.9 + min_lr
            expected = (0.01 - 1e-4) * (1 - step / iterations) ** 0.9 + 1e-4
            assert recipe.lr * lr_factor(step, recipe) == pytest.approx(expected, rel=1e-12)

    scenes = generate(tmp_path / "scenes", num_train=4, num_val=2, size=(64, 80), seed=5)
    recipe = Recipe(**Recipe.load("ocrnet_hrnet_w48_ade20k").to_dict() | dict(
        encoder="hrnetv2-w18", num_labels=len(CLASSES), id2label={str(i): name for i, name in enumerate(CLASSES)},
        convention=None, crop_size=(64, 64), scale=(80, 64), eval_scale=(80, 64), ratio_range=(1.0, 1.0),
        iterations=4, batch_size=2, teacher_group_size=None, eval_every=4, save_every=2))
    options = dict(num_workers=0, progress=False, cpu=True, eval_limit=1)
    continuous = train(recipe, str(scenes), tmp_path / "a", **options)
    train(recipe, str(scenes), tmp_path / "b", max_iterations=2, **options)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "b" / "checkpoints" / "step_2" / "optimizer.safetensors")
    assert saved and all("momentum_buffer" in key for key in saved)  # SGD's state, not AdamW's moments
    resumed = train(recipe, str(scenes), tmp_path / "b", resume=str(tmp_path / "b" / "checkpoints" / "step_2"),
                    **options)
    for (name, a), b in zip(continuous["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b), name
