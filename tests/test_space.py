"""`ssa-seg space` and `publish --space`: the Gradio app for a hub Space, served locally and used through
gradio_client and a real headless browser. The app's table must show the shares of the masks `pipeline` gives."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import Browser, chromium_binary
from PIL import Image
from test_cli import ID2LABEL, TINY_SEGFORMER
from transformers import SegformerImageProcessor

from ssa_hf import SSAConfig, SSAForSemanticSegmentation
from ssa_hf_cli import main as cli_main

pytest.importorskip("gradio")
ARTIFACTS = Path(os.environ.get("SSA_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))


def _model_folder(folder: Path) -> Path:
    torch.manual_seed(0)
    config = SSAConfig.from_segformer_config(dict(TINY_SEGFORMER), id2label=ID2LABEL)
    model = SSAForSemanticSegmentation(config).eval()
    with torch.no_grad():  # several classes present in the predictions
        model.decode_head.classifier.bias.copy_(torch.tensor([0.0, 0.5, -0.5, 0.2]))
    model.save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def _example(path: Path) -> Path:
    rng = np.random.default_rng(3)
    image = np.zeros((96, 128, 3), np.uint8)
    image[:40] = (90, 140, 220)
    image[40:] = rng.integers(0, 256, (56, 128, 3))
    Image.fromarray(image).save(path)
    return path


def expected_shares(model: Path, image: Path) -> list[list]:
    """What the app must show: the share of each class in the masks of `pipeline("image-segmentation")`."""
    from transformers import pipeline

    segments = pipeline("image-segmentation", model=str(model))(Image.open(image).convert("RGB"))
    shares = sorted(((s["label"], float((np.asarray(s["mask"]) > 0).mean())) for s in segments), key=lambda r: -r[1])
    return [[label, round(100 * share, 2)] for label, share in shares]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_space(tmp_path_factory):
    """A Space written by `ssa-seg space` for a local model, served by `python app.py` as a Space would run it."""
    root = tmp_path_factory.mktemp("space")
    model = _model_folder(root / "ssa-tiny")
    example = _example(root / "street.png")
    assert cli_main(["space", str(model), "--output", str(root / "app"), "--example", str(example)]) == 0
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    log = (root / "app.log").open("w")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=root / "app", env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                raise RuntimeError(f"the app did not start: {(root / 'app.log').read_text()[-3000:]}") from None
            time.sleep(0.5)
    yield {"url": url, "model": model, "example": example, "folder": root / "app"}
    process.terminate()
    process.wait(timeout=20)
    log.close()


def test_space_folder_has_the_app_requirements_and_space_metadata(tmp_path, capsys):
    model = _model_folder(tmp_path / "ssa-tiny")
    assert cli_main(["space", "me/ssa-b0-camvid", "--output", str(tmp_path / "hub-space")]) == 0
    folder = tmp_path / "hub-space"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "README.md", "app.py", "examples/generated_street_scene.png", "requirements.txt"]
    readme = (folder / "README.md").read_text()
    header = readme.split("---\n")[1]
    metadata = dict(line.split(": ", 1) for line in header.splitlines() if ": " in line)
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py"
    import gradio

    assert metadata["sdk_version"] == gradio.__version__
    assert "models:\n  - me/ssa-b0-camvid" in header
    app = (folder / "app.py").read_text()
    assert 'os.environ.get("SSA_SPACE_MODEL", \'me/ssa-b0-camvid\')' in app and "TRUST_REMOTE_CODE = True" in app
    compile(app, "app.py", "exec")
    # By default the app runs the model repository's own code: no package to install, nothing of this machine.
    requirements = (folder / "requirements.txt").read_text().splitlines()
    assert "transformers>=5.0" in requirements and not any(line.startswith("ssa-hf") for line in requirements)
    assert str(tmp_path) not in app + readme and "LOCAL_MODEL = False" in app
    assert "--requirement" in app and "--trust-remote-code" not in app  # its comments name the real flag

    # Pinning a released package instead: the app imports ssa_hf from the requirement and trusts no remote code.
    assert cli_main(["space", "me/ssa-b0-camvid", "--output", str(tmp_path / "pinned"), "--requirement",
                     "ssa-hf==0.2.0", "--title", "CamVid demo"]) == 0
    assert "TRUST_REMOTE_CODE = False" in (tmp_path / "pinned" / "app.py").read_text()
    assert "ssa-hf==0.2.0" in (tmp_path / "pinned" / "requirements.txt").read_text().splitlines()
    assert 'title: "CamVid demo"' in (tmp_path / "pinned" / "README.md").read_text()

    # A local model is named relative to the Space folder, so the pair can move together.
    assert cli_main(["space", str(model), "--output", str(tmp_path / "local")]) == 0
    local_app = (tmp_path / "local" / "app.py").read_text()
    assert "'../ssa-tiny'" in local_app and "LOCAL_MODEL = True" in local_app and str(tmp_path) not in local_app

    # Nothing is overwritten without asking, a folder that is not a Space is never replaced, bad input is named.
    capsys.readouterr()
    assert cli_main(["space", "me/x", "--output", str(folder)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert cli_main(["space", "me/x", "--output", str(tmp_path / "mine"), "--overwrite"]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert cli_main(["space", str(model), "--output", str(tmp_path / "s2"), "--example",
                     str(tmp_path / "broken.png")]) == 2
    assert "broken.png" in capsys.readouterr().err and not (tmp_path / "s2").exists()
    (tmp_path / "segformer").mkdir()
    (tmp_path / "segformer" / "config.json").write_text(json.dumps({"model_type": "segformer"}))
    assert cli_main(["space", str(tmp_path / "segformer"), "--output", str(tmp_path / "s3")]) == 2
    assert "'segformer' model" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["space", str(tmp_path / "empty"), "--output", str(tmp_path / "s4")]) == 2
    assert "no config.json" in capsys.readouterr().err
    (model / "model.safetensors").rename(tmp_path / "kept.safetensors")
    assert cli_main(["space", str(model), "--output", str(tmp_path / "s6")]) == 2
    assert "has no weights" in capsys.readouterr().err
    (tmp_path / "kept.safetensors").rename(model / "model.safetensors")
    (model / "preprocessor_config.json").rename(tmp_path / "kept.json")
    assert cli_main(["space", str(model), "--output", str(tmp_path / "s5")]) == 2
    assert "no preprocessor_config.json" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("s2", "s3", "s4", "s5", "s6", ".s2.partial"))
    assert cli_main(["space", "me/y", "--output", str(folder), "--overwrite"]) == 0
    assert "me/y" in (folder / "app.py").read_text()


def test_the_app_answers_gradio_client_with_the_pipeline_shares(served_space):
    from gradio_client import Client, handle_file

    client = Client(served_space["url"], verbose=False)
    overlay, legend, table = client.predict(handle_file(str(served_space["example"])), api_name="/segment")
    expected = expected_shares(served_space["model"], served_space["example"])
    assert len(expected) >= 2  # the check means something: several classes
    assert table["data"] == expected
    assert abs(sum(share for _, share in expected) - 100) < 0.05
    image = Image.open(overlay)
    assert image.size == Image.open(served_space["example"]).size
    for label, _ in expected:
        assert f"</span>{label}</span>" in legend


def test_the_app_in_a_real_browser_runs_an_example(served_space):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    browser = Browser(binary)
    try:
        browser.navigate(served_space["url"])
        browser.wait_for("document.querySelectorAll('button.gallery-item').length", what="the example gallery")
        browser.evaluate("document.querySelector('button.gallery-item').click()")
        # The gallery's thumbnail is one image of the example; the input box shows the second once it is loaded.
        browser.wait_for("[...document.querySelectorAll('img')].filter(i => i.src.includes('street') && "
                         "i.complete && i.naturalWidth > 0).length >= 2", what="the example in the input box")
        browser.evaluate("[...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Submit')"
                         ".click()")
        browser.wait_for("document.querySelectorAll('#ssa-legend .ssa-legend-entry').length", what="the legend")
        rows = browser.wait_for(
            # Gradio's table shows its rows as role=row elements (a virtual list); the header row has th cells.
            "(() => { const rows = [...document.querySelectorAll('#ssa-shares [role=row]')]"
            ".filter(r => !r.querySelector('th')).map(r => [...r.querySelectorAll('td, [role=gridcell]')]"
            ".map(c => c.textContent.replace('⋮', '').trim()).filter(t => t !== ''));"
            " return rows.length && rows[0].length >= 2 ? rows : null; })()", what="the share table")
        legend = browser.evaluate("[...document.querySelectorAll('#ssa-legend .ssa-legend-entry')]"
                                  ".map(e => e.innerText.trim())")
        output_images = browser.evaluate("[...document.querySelectorAll('img')].filter(i => i.naturalWidth > 0 && "
                                         "!i.src.includes('street')).length")
        screenshot = browser.screenshot(ARTIFACTS / "space_app.png")
    finally:
        browser.close()
    expected = expected_shares(served_space["model"], served_space["example"])
    shown = [[cells[-2], float(cells[-1])] for cells in rows]
    assert shown == expected, (shown, expected)
    assert legend == [label for label, _ in expected]
    assert output_images >= 1  # the overlay was rendered
    assert screenshot.stat().st_size > 10_000


def test_publish_with_a_space_dry_run_and_hub_calls(tmp_path, monkeypatch):
    """`publish --space --dry-run DIR` writes DIR/model (the upload) and DIR/space, whose app names the model's
    repository; without --dry-run the Space is created beside the model through the hub client."""
    import huggingface_hub

    model = _model_folder(tmp_path / "ssa-tiny")
    dry = tmp_path / "dry"
    assert cli_main(["publish", str(model), "--repo-id", "me/ssa-tiny", "--space", "--dry-run", str(dry)]) == 0
    assert (dry / "model" / "model.safetensors").is_file() and (dry / "model" / "README.md").is_file()
    assert "'me/ssa-tiny'" in (dry / "space" / "app.py").read_text()
    assert "models:\n  - me/ssa-tiny" in (dry / "space" / "README.md").read_text()

    # The written Space runs against the dry-run model folder (SSA_SPACE_MODEL points the app at it).
    env = {**os.environ, "SSA_SPACE_MODEL": str(dry / "model"), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(Path(__file__).parents[1])}
    example = next((dry / "space" / "examples").iterdir())
    script = ("import runpy, json; from PIL import Image; app = runpy.run_path('app.py', run_name='space'); "
              f"print(json.dumps(app['segment'](Image.open({str(example)!r}))[2]))")
    result = subprocess.run([sys.executable, "-c", script], cwd=dry / "space", env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected_shares(dry / "model", example)

    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kwargs: calls.append(("create_repo", repo_id, kwargs)))

    def upload_folder(self, folder_path, repo_id, **kwargs):
        calls.append(("upload_folder", repo_id, kwargs, sorted(p.name for p in os.scandir(folder_path))))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert cli_main(["publish", str(model), "--repo-id", "me/ssa-tiny", "--space"]) == 0
    model_create, model_upload, space_create, space_upload = calls
    assert model_create[1] == "me/ssa-tiny" and model_create[2]["repo_type"] == "model"
    assert model_upload[3] == sorted(p.name for p in (dry / "model").iterdir())
    assert space_create[1] == "me/ssa-tiny-demo" and space_create[2]["repo_type"] == "space"
    assert space_create[2]["space_sdk"] == "gradio"
    assert space_upload[1] == "me/ssa-tiny-demo" and space_upload[2]["repo_type"] == "space"
    assert space_upload[3] == sorted(p.name for p in (dry / "space").iterdir())


def test_the_app_colours_classes_as_ssa_seg_predict_does():
    """app.py is one standalone file (a Space with remote code has no ssa_hf), so it carries its own copy of the
    palette; it must stay the one of `ssa-seg predict`."""
    import ast

    from ssa_hf.space import TEMPLATE
    from ssa_hf.visualization import palette

    tree = ast.parse(TEMPLATE.read_text())
    (function,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "palette"]
    namespace = {"np": np}
    exec(compile(ast.Module(body=[function], type_ignores=[]), "app.py", "exec"), namespace)
    for num_classes in (4, 150, 300):
        np.testing.assert_array_equal(namespace["palette"](num_classes), palette(num_classes))
