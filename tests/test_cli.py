"""The `ssa-seg` command as a user runs it: predict, card, publish (dry run and the hub client calls), export-onnx."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import TINY_SEGFORMER
from huggingface_hub import ModelCard
from PIL import Image
from test_remote_code import FRESH_PROCESS
from transformers import SegformerImageProcessor

from ssa_hf import SSAConfig, SSAForSemanticSegmentation
from ssa_hf.visualization import palette
from ssa_hf_cli import main as cli_main

ID2LABEL = {0: "road", 1: "sky", 2: "tree", 3: "car"}


@pytest.fixture
def model_folder(tmp_path):
    torch.manual_seed(0)
    config = SSAConfig.from_segformer_config(dict(TINY_SEGFORMER), id2label=ID2LABEL,
                                             decoder_type="segformer_mmseg")
    model = SSAForSemanticSegmentation(config).eval()
    with torch.no_grad():  # several classes present in the predictions
        model.decode_head.classifier.bias.copy_(torch.tensor([0.0, 0.5, -0.5, 0.2]))
    folder = tmp_path / "ssa-tiny"
    model.save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def _images(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 56, 4), dtype=np.uint8), mode="RGBA").save(folder / "street.png")
    Image.fromarray(rng.integers(0, 255, (30, 20), dtype=np.uint8), mode="L").save(folder / "grey.jpg")
    return [folder / "street.png", folder / "grey.jpg"]


def test_predict_writes_label_maps_and_overlays_with_a_legend(tmp_path, model_folder, capsys):
    images = _images(tmp_path / "images")
    out = tmp_path / "predictions"
    assert cli_main(["predict", *map(str, images), "--model", str(model_folder), "--output", str(out)]) == 0

    model = SSAForSemanticSegmentation.from_pretrained(model_folder).eval()
    processor = SegformerImageProcessor.from_pretrained(model_folder)
    colours = palette(4)
    for path in images:
        image = Image.open(path).convert("RGB")
        with torch.no_grad():
            logits = model(**processor(images=image, return_tensors="pt")).logits
        expected = torch.nn.functional.interpolate(logits, size=(image.height, image.width), mode="bilinear",
                                                   align_corners=False).argmax(1)[0].numpy()
        labels = Image.open(out / f"{path.stem}_labels.png")
        assert labels.mode == "L" and labels.size == image.size
        np.testing.assert_array_equal(np.array(labels), expected)

        overlay = np.array(Image.open(out / f"{path.stem}_overlay.png").convert("RGB")).astype(int)
        assert overlay.shape[1] > image.width  # image + legend panel
        blended = np.round(0.5 * np.array(image, dtype=np.float32) + 0.5 * colours[expected]).astype(int)
        np.testing.assert_allclose(overlay[: image.height, : image.width], blended, atol=1)
        # The first legend row shows the most frequent class's colour swatch.
        most_frequent = np.bincount(expected.ravel(), minlength=4).argmax()
        swatch = overlay[4 + 2 + 7, image.width + 4 + 7]
        np.testing.assert_array_equal(swatch, colours[most_frequent])


def test_predict_names_an_unreadable_image_and_writes_nothing(tmp_path, model_folder, capsys):
    images = _images(tmp_path / "images")
    broken = tmp_path / "images" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "predictions"
    assert cli_main(["predict", *map(str, images), str(broken), "--model", str(model_folder),
                     "--output", str(out)]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert cli_main(["predict", str(tmp_path / "nope.png"), "--model", str(model_folder), "--output", str(out)]) == 2
    assert "nope.png" in capsys.readouterr().err


def test_predict_does_not_overwrite_without_asking(tmp_path, model_folder, capsys):
    images = _images(tmp_path / "images")
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "street_labels.png").write_bytes(b"user data")
    assert cli_main(["predict", str(images[0]), "--model", str(model_folder), "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "street_labels.png").read_bytes() == b"user data"
    assert cli_main(["predict", str(images[0]), "--model", str(model_folder), "--output", str(out),
                     "--overwrite"]) == 0
    assert Image.open(out / "street_labels.png").size == (56, 40)


def _evaluation(path):
    report = {"model": "m", "data": "d", "split": "validation", "convention": "camvid", "images": 101,
              "protocol": {"mode": "slide", "scale": [960, 720], "crop": [512, 512], "stride": [341, 341],
                           "scales": [0.5, 1.0, 1.5], "flip": True, "size_divisor": None},
              "mean_iou": 0.4321, "mean_accuracy": 0.5, "overall_accuracy": 0.8}
    path.write_text(json.dumps(report))
    return path


def test_card_states_measured_numbers_only(tmp_path, model_folder, capsys):
    card_path = tmp_path / "card.md"
    assert cli_main(["card", str(model_folder), "--output", str(card_path)]) == 0
    card = ModelCard(card_path.read_text())
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-segmentation"
    assert not card.data.eval_results
    assert "has not been evaluated" in card.text
    assert "trust_remote_code=True" in card.text and "@inproceedings" in card.text

    evaluation = _evaluation(tmp_path / "eval.json")
    assert cli_main(["card", str(model_folder), "--eval", str(evaluation), "--dataset", "me/camvid",
                     "--recipe", "ssa_hf/recipes/camvid.json", "--output", str(card_path), "--overwrite"]) == 0
    card = ModelCard(card_path.read_text())
    (result,) = card.data.eval_results
    assert result.metric_type == "mean_iou" and result.metric_value == 43.21
    assert result.dataset_type == "me/camvid" and result.dataset_split == "validation"
    assert "multi-scale [0.5, 1.0, 1.5], flip, sliding window" in result.metric_name
    assert "| 43.21 |" in card.text and "has not been evaluated" not in card.text
    assert "Unlabelled" in card.text  # the label convention
    assert cli_main(["card", str(model_folder), "--output", str(card_path)]) == 2  # exists: not overwritten


def test_publish_dry_run_folder_works_as_remote_code(tmp_path, model_folder, capsys):
    upload = tmp_path / "upload"
    evaluation = _evaluation(tmp_path / "eval.json")
    assert cli_main(["publish", str(model_folder), "--repo-id", "me/ssa-tiny", "--eval", str(evaluation),
                     "--dry-run", str(upload)]) == 0
    names = {p.name for p in upload.iterdir()}
    assert {"model.safetensors", "config.json", "configuration_ssa.py", "modeling_ssa.py", "loss_ssa.py",
            "preprocessor_config.json", "README.md"} <= names
    assert not any(n.endswith((".bin", ".pth", ".pt")) for n in names)
    assert 'pipeline("image-segmentation", model="me/ssa-tiny", trust_remote_code=True)' in \
        (upload / "README.md").read_text()

    # Use the folder as someone without ssa_hf would.
    model = SSAForSemanticSegmentation.from_pretrained(model_folder).eval()
    pixel_values = torch.randn(2, 3, 64, 80)
    np.save(upload / "probe_pixels.npy", pixel_values.numpy())
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 72, 3), dtype=np.uint8)).save(upload / "probe.png")
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits.numpy()
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    (workdir / "use.py").write_text(FRESH_PROCESS)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run([sys.executable, "use.py", str(upload), str(workdir)], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(workdir / "remote_logits.npy"), expected)
    assert set(json.loads((workdir / "pipeline.json").read_text())["labels"]) <= set(ID2LABEL.values())


def test_publish_uploads_the_dry_run_folder_through_the_hub_client(tmp_path, model_folder, monkeypatch):
    import huggingface_hub

    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, folder_path, repo_id, **kwargs):
        calls.append(("upload_folder", repo_id, kwargs, sorted(p.name for p in os.scandir(folder_path))))
        return type("Commit", (), {"pr_url": "https://huggingface.co/me/ssa-tiny/discussions/1"})()

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert cli_main(["publish", str(model_folder), "--repo-id", "me/ssa-tiny", "--private", "--create-pr"]) == 0
    (create, repo_id, create_kwargs), (upload, upload_repo, upload_kwargs, uploaded) = calls
    assert create == "create_repo" and repo_id == "me/ssa-tiny" and create_kwargs["private"] is True
    assert upload == "upload_folder" and upload_repo == "me/ssa-tiny" and upload_kwargs["create_pr"] is True
    dry = tmp_path / "dry"
    assert cli_main(["publish", str(model_folder), "--repo-id", "me/ssa-tiny", "--dry-run", str(dry)]) == 0
    assert uploaded == sorted(p.name for p in dry.iterdir())


def test_publish_refuses_a_model_that_is_not_ssa(tmp_path, capsys):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    folder = tmp_path / "segformer"
    SegformerForSemanticSegmentation(SegformerConfig(**TINY_SEGFORMER, num_labels=3)).save_pretrained(folder)
    assert cli_main(["publish", str(folder), "--repo-id", "me/x", "--dry-run", str(tmp_path / "up")]) == 2
    assert "convert it first" in capsys.readouterr().err


def test_export_onnx_matches_pytorch_at_other_sizes(tmp_path, model_folder):
    pytest.importorskip("onnxruntime")
    from ssa_hf.onnx_export import onnx_session

    output = tmp_path / "model.onnx"
    assert cli_main(["export-onnx", "--model", str(model_folder), "--output", str(output), "--height", "64",
                     "--width", "96"]) == 0
    model = SSAForSemanticSegmentation.from_pretrained(model_folder).eval()
    session = onnx_session(output)
    for batch, height, width in [(1, 64, 96), (3, 96, 128), (2, 40, 72)]:
        pixel_values = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            expected = model(pixel_values=pixel_values).logits.numpy()
        (actual,) = session.run(["logits"], {"pixel_values": pixel_values.numpy()})
        assert actual.shape == expected.shape
        assert np.abs(actual - expected).max() <= 1e-4
    assert cli_main(["export-onnx", "--model", str(model_folder), "--output", str(output)]) == 2  # exists


def test_console_script_is_installed():
    executable = shutil.which("ssa-seg", path=os.path.dirname(sys.executable))
    assert executable, "the ssa-seg entry point is not installed next to this Python"
    result = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in ("predict", "evaluate", "convert", "export-onnx", "publish"):
        assert command in result.stdout
