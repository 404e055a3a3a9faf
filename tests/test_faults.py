"""The fault suite: a training run SIGKILLed mid-run and mid-checkpoint resumes to the bitwise result of an
uninterrupted run (default data-loading workers); no code from a model folder or a checkpoint runs without consent;
each kind of bad input gives exit status 2 and a message naming the problem, with nothing lost."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_SEGFORMER
from PIL import Image

from ssa_hf.synthetic import CLASSES, generate
from ssa_hf_cli import main as cli_main

# Runs the CLI; with SSA_FAULT_KILL_AT=N it SIGKILLs itself mid-way through writing checkpoint step_N (after the
# weights file, before the optimiser state and state.json).
DRIVER = """
import os, signal, sys
import safetensors.torch

kill_at = os.environ.get("SSA_FAULT_KILL_AT")
original = safetensors.torch.save_file

def save_file(tensors, filename, *args, **kwargs):
    original(tensors, filename, *args, **kwargs)
    if kill_at and f".step_{kill_at}.partial" in str(filename) and str(filename).endswith("model.safetensors"):
        os.kill(os.getpid(), signal.SIGKILL)

safetensors.torch.save_file = save_file
from ssa_hf_cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("scenes"), num_train=8, num_val=2, size=(64, 80), seed=4)


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "tiny.json"
    path.write_text(json.dumps({
        "name": "faults", "num_labels": len(CLASSES), "id2label": dict(enumerate(CLASSES)), "encoder": "b0",
        "crop_size": [64, 64], "scale": [80, 64], "ratio_range": [0.75, 1.25], "eval_scale": [80, 64],
        "iterations": 8, "batch_size": 2, "warmup_iters": 2, "eval_every": 8, "save_every": 2, "lr": 1e-3}))
    return path


def cli_process(args: list[str], kill_at: int | None = None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="2")  # the same thread count in every run
    env.pop("SSA_FAULT_KILL_AT", None)
    if kill_at is not None:
        env["SSA_FAULT_KILL_AT"] = str(kill_at)
    return subprocess.Popen([sys.executable, "-c", DRIVER, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def train_args(recipe_file, scenes, output, *extra) -> list[str]:
    # default --num-workers (2): the loader's worker processes are part of what must resume exactly
    return ["train", "--recipe", str(recipe_file), "--data", str(scenes), "--output", str(output), "--cpu",
            "--log-with", "none", *extra]


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def final_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "final" / "model.safetensors"))


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


@pytest.mark.slow
def test_sigkill_mid_run_and_mid_checkpoint_then_resume_is_bitwise_exact(scenes, recipe_file, tmp_path):
    reference = cli_process(train_args(recipe_file, scenes, tmp_path / "uninterrupted"))
    code, err = finish(reference)
    assert code == 0, err[-3000:]
    expected = final_weights(tmp_path / "uninterrupted")

    # SIGKILL from outside at some moment after the step-4 checkpoint, workers and all.
    run = tmp_path / "killed"
    process = cli_process(train_args(recipe_file, scenes, run))
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "step_4" / "state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its step-4 checkpoint"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run / "final").exists()
    code, err = finish(cli_process(train_args(recipe_file, scenes, run, "--resume", "latest")))
    assert code == 0, err[-3000:]
    assert_bitwise_equal(final_weights(run), expected)
    history = json.loads((run / "history.json").read_text())
    assert [r["step"] for r in history if "loss" in r][-1] == 8 and any("resumed_from" in r for r in history)

    # SIGKILL in the middle of writing checkpoint step_6: the partial folder is named, never loaded.
    run = tmp_path / "killed_mid_checkpoint"
    code, _ = finish(cli_process(train_args(recipe_file, scenes, run), kill_at=6))
    assert code == -signal.SIGKILL
    assert (run / "checkpoints" / ".step_6.partial" / "model.safetensors").exists()
    assert not (run / "checkpoints" / "step_6").exists()
    assert cli_main(train_args(recipe_file, scenes, run, "--resume", str(run / "checkpoints" /
                                                                            ".step_6.partial"))) == 2
    code, err = finish(cli_process(train_args(recipe_file, scenes, run, "--resume", "latest")))  # from step_4
    assert code == 0, err[-3000:]
    assert not (run / "checkpoints" / ".step_6.partial").exists() and (run / "checkpoints" / "step_6").exists()
    assert_bitwise_equal(final_weights(run), expected)


def test_checkpoints_hold_no_pickles_and_pickled_ones_are_never_loaded(scenes, recipe_file, tmp_path, capsys):
    from ssa_hf.training import Recipe, train

    recipe = Recipe.load(str(recipe_file), iterations=2, save_every=2, eval_every=2)
    train(recipe, str(scenes), tmp_path / "run", num_workers=0, progress=False, cpu=True, log_with=None)
    checkpoint = tmp_path / "run" / "checkpoints" / "step_2"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["model.safetensors", "optimizer.safetensors",
                                                             "state.json"]
    # A checkpoint as accelerate's save_state wrote it, with a pickle that would run code: refused, never opened.
    marker = tmp_path / "pickle-ran"
    crafted = tmp_path / "run" / "checkpoints" / "step_4"
    shutil.copytree(checkpoint, crafted)

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save(RunsCode(), crafted / "custom_checkpoint_0.pkl")
    (crafted / "random_states_0.pkl").write_bytes(b"")
    command = ["train", "--recipe", str(recipe_file), "--data", str(scenes), "--output", str(tmp_path / "run"),
               "--cpu", "--num-workers", "0", "--log-with", "none", "--iterations", "2", "--save-every", "2",
               "--eval-every", "2", "--resume", str(crafted)]
    assert cli_main(command) == 2
    assert "pickled" in capsys.readouterr().err and not marker.exists()
    # Resuming from a checkpoint older than the newest would replace the newer ones: refused, naming them.
    shutil.rmtree(crafted)
    shutil.copytree(checkpoint, tmp_path / "run" / "checkpoints" / "step_3")
    assert cli_main(command[:-1] + [str(checkpoint)]) == 2
    assert "newer than step_2 (step_3)" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_2", "step_3"]


# --- consent -----------------------------------------------------------------------------------------------------

EVIL_CODE = """
from pathlib import Path
Path({marker!r}).write_text("the folder's code ran")
from transformers import PretrainedConfig, PreTrainedModel
class EvilConfig(PretrainedConfig):
    model_type = "evil_segmenter"
class EvilModel(PreTrainedModel):
    config_class = EvilConfig
class EvilProcessor:
    pass
"""


def tiny_ssa_folder(folder: Path) -> Path:
    from ssa_hf import SSAConfig, SSAForSemanticSegmentation, SSAImageProcessor

    torch.manual_seed(0)
    config = SSAConfig.from_segformer_config(dict(TINY_SEGFORMER), id2label=dict(enumerate(CLASSES)))
    SSAForSemanticSegmentation(config).eval().save_pretrained(folder)
    SSAImageProcessor(size={"shortest_edge": 64, "longest_edge": 80}, label_remap=None).save_pretrained(folder)
    return folder


def test_no_command_runs_a_model_folders_code_without_consent(scenes, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    # 1. A model of a type only the folder's own code defines.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    (foreign / "config.json").write_text(json.dumps({
        "model_type": "evil_segmenter", "auto_map": {"AutoConfig": "evil.EvilConfig",
                                                      "AutoModelForSemanticSegmentation": "evil.EvilModel"}}))
    # 2. An SSA model whose config and image processor point at the folder's code.
    ssa = tiny_ssa_folder(tmp_path / "ssa")
    (ssa / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    config = json.loads((ssa / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForSemanticSegmentation": "evil.EvilModel"}
    (ssa / "config.json").write_text(json.dumps(config))
    processor = json.loads((ssa / "preprocessor_config.json").read_text())
    processor |= {"image_processor_type": "EvilProcessor", "auto_map": {"AutoImageProcessor": "evil.EvilProcessor"}}
    (ssa / "preprocessor_config.json").write_text(json.dumps(processor))
    image = next((scenes / "val" / "images").iterdir())

    for folder in (foreign, ssa):
        commands = [
            ["predict", str(image), "--model", str(folder), "--output", str(tmp_path / "predicted")],
            ["evaluate", "--model", str(folder), "--data", str(scenes), "--output", str(tmp_path / "eval.json")],
            ["export-onnx", "--model", str(folder), "--output", str(tmp_path / "model.onnx")],
            ["card", str(folder), "--output", str(tmp_path / "card.md")],
            ["publish", str(folder), "--repo-id", "me/model", "--dry-run", str(tmp_path / "upload")],
        ]
        for command in commands:
            code = cli_main(command)
            err = capsys.readouterr().err
            # The foreign model cannot load at all; the SSA one loads through the registered classes, and only
            # what needs the folder's code (its image processor) is refused. Either way the code never runs.
            assert code == 2 or (folder is ssa and command[0] == "card"), (command, err)
            assert code == 0 or "--trust-remote-code" in err, (command, err)
            assert not marker.exists(), f"{command} ran the folder's code"
    # With consent the code runs: the check above can fail.
    cli_main(["predict", str(image), "--model", str(ssa), "--output", str(tmp_path / "p2"), "--trust-remote-code"])
    assert marker.exists()


# --- bad input ----------------------------------------------------------------------------------------------------


def copy_scenes(scenes: Path, target: Path) -> Path:
    shutil.copytree(scenes, target)
    return target


def first(folder: Path) -> Path:
    return sorted(folder.iterdir())[0]


def truncated_jpeg(data: Path):
    path = first(data / "val" / "images")
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="JPEG")
    path.unlink()
    path.with_suffix(".jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path.with_suffix(".jpg").name


def truncated_png_mask(data: Path):
    path = first(data / "val" / "labels")
    path.write_bytes(path.read_bytes()[:-40])
    return path.name


def rotated_photo(data: Path):
    path = first(data / "val" / "images")
    image = Image.open(path).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    path.unlink()
    image.save(path.with_suffix(".jpg"), exif=exif, quality=95)
    return "EXIF orientation 6"


def sixteen_bit_image(data: Path):
    path = first(data / "val" / "images")
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(path)  # mode I;16
    return "more than 8 bits"


def shared_stem(data: Path):
    path = first(data / "val" / "images")
    Image.open(path).convert("RGB").save(path.with_suffix(".jpg"))
    return "share"


def colour_mask(data: Path):
    path = first(data / "val" / "labels")
    Image.open(path).convert("RGB").save(path)
    return "single-channel"


def label_out_of_range(data: Path):
    path = first(data / "val" / "labels")
    labels = np.array(Image.open(path))
    labels[0, 0] = 40
    Image.fromarray(labels).save(path)
    return "label values [40]"


def mask_of_another_size(data: Path):
    path = first(data / "val" / "labels")
    Image.open(path).resize((80, 80), Image.NEAREST).save(path)  # the image is 80x64: another aspect ratio
    return "must have the same size"


def multi_page_annotation(data: Path):
    path = first(data / "val" / "labels")
    frames = [Image.open(path), Image.open(path)]
    path.unlink()
    frames[0].save(path.with_suffix(".tif"), save_all=True, append_images=frames[1:])
    return "2 frames"


DATA_CASES = {
    "multi-page annotation": multi_page_annotation,
    "truncated JPEG image": truncated_jpeg,
    "truncated PNG annotation": truncated_png_mask,
    "EXIF-rotated photo": rotated_photo,
    "16-bit image": sixteen_bit_image,
    "two images sharing a stem": shared_stem,
    "RGB colour annotation": colour_mask,
    "label value out of range": label_out_of_range,
    "annotation of another size": mask_of_another_size,
}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return tiny_ssa_folder(tmp_path_factory.mktemp("model") / "ssa")


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_is_named_in_evaluate_and_training(case, scenes, model_folder, recipe_file, tmp_path, capsys):
    data = copy_scenes(scenes, tmp_path / "data")
    expected = DATA_CASES[case](data)
    assert cli_main(["evaluate", "--model", str(model_folder), "--data", str(data), "--output",
                     str(tmp_path / "eval.json")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err
    assert not (tmp_path / "eval.json").exists()
    # The same file among the training images, read by a data-loading worker (default --num-workers).
    shutil.rmtree(data / "train")
    shutil.copytree(data / "val", data / "train")
    for extra in range(6):  # enough rows for a batch whatever the case removed
        source = scenes / "train" / "images" / f"train_{extra:04d}.png"
        shutil.copy(source, data / "train" / "images" / f"extra_{extra}.png")
        shutil.copy(scenes / "train" / "labels" / source.name, data / "train" / "labels" / f"extra_{extra}.png")
    command = ["train", "--recipe", str(recipe_file), "--data", str(data), "--output", str(tmp_path / "run"),
               "--cpu", "--log-with", "none", "--iterations", "4", "--eval-every", "100", "--save-every", "100"]
    assert cli_main(command) == 2
    err = capsys.readouterr().err
    assert expected in err and "Original Traceback" not in err, err


def test_damaged_and_mismatched_model_folders_are_refused_by_name(scenes, model_folder, tmp_path, capsys):
    marker = tmp_path / "pickle-ran"
    image = next((scenes / "val" / "images").iterdir())

    truncated = tmp_path / "truncated"
    shutil.copytree(model_folder, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])

    pickled = tmp_path / "pickled"
    shutil.copytree(model_folder, pickled)
    (pickled / "model.safetensors").unlink()

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state": RunsCode()}, pickled / "pytorch_model.bin")

    other_depths = tmp_path / "other_depths"
    shutil.copytree(model_folder, other_depths)
    config = json.loads((other_depths / "config.json").read_text())
    config["backbone_config"]["depths"] = [2, 1, 1, 1]
    (other_depths / "config.json").write_text(json.dumps(config))

    for folder, expected in ((truncated, "cannot load a model"), (pickled, "cannot load a model"),
                             (other_depths, "do not fit its config")):
        assert cli_main(["predict", str(image), "--model", str(folder), "--output", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_nothing_is_overwritten_or_lost(scenes, model_folder, tmp_path, capsys):
    # evaluate keeps an earlier report unless --overwrite
    report = tmp_path / "eval.json"
    report.write_text("mine")
    assert cli_main(["evaluate", "--model", str(model_folder), "--data", str(scenes), "--output", str(report)]) == 2
    assert report.read_text() == "mine"
    # predict: one overlay and one label map per image, under names that never collide, and a true count
    images = tmp_path / "images"
    images.mkdir()
    source = Image.open(next((scenes / "val" / "images").iterdir())).convert("RGB")
    for name in ("a.png", "a.jpg", "a_1.png"):
        source.save(images / name)
    capsys.readouterr()
    assert cli_main(["predict", *(str(images / n) for n in ("a.png", "a.jpg", "a_1.png")), "--model",
                     str(model_folder), "--output", str(tmp_path / "predicted")]) == 0
    written = sorted(p.name for p in (tmp_path / "predicted").iterdir())
    assert len(written) == 6 and "wrote 6 files" in capsys.readouterr().out, written
    # build-dataset --overwrite never deletes the source it reads, nor a folder it did not build
    archive = tmp_path / "downloads" / "ADEChallengeData2016.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("ADEChallengeData2016/objectInfo150.txt", "Idx\tRatio\tTrain\tVal\tName\n")
    assert cli_main(["build-dataset", "ade20k", str(archive), "--output", str(archive.parent), "--overwrite"]) == 2
    assert "overlap" in capsys.readouterr().err and archive.exists()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep")
    assert cli_main(["build-dataset", "ade20k", str(archive), "--output", str(notes), "--overwrite"]) == 2
    assert "not a dataset built earlier" in capsys.readouterr().err and (notes / "mine.txt").exists()


def test_an_archive_with_paths_leaving_it_is_refused(tmp_path, capsys):
    import tarfile

    archive = tmp_path / "trainval.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        data = b"outside"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        handle.addfile(info, io.BytesIO(data))
    voc = tmp_path / "VOC2010"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "train.txt").write_text("")
    assert cli_main(["build-dataset", "pascal_context_59", str(voc), str(archive), "--output",
                     str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "outside the unpacked folder" in err and "../escaped.txt" in err
    assert not (tmp_path / "escaped.txt").exists()


def test_a_non_finite_batch_changes_nothing_and_repeated_ones_stop_the_run(scenes, recipe_file, tmp_path,
                                                                           monkeypatch, capsys):
    import ssa_hf.training as training

    real_batches = training._batches
    poisoned_steps = {2}

    def poisoned(run):
        for index, batch in enumerate(real_batches(run), start=run.step + 1):
            if index in poisoned_steps:
                batch = dict(batch, pixel_values=torch.full_like(batch["pixel_values"], float("nan")))
            yield batch

    recipe = training.Recipe.load(str(recipe_file), iterations=3, eval_every=3, save_every=3)
    monkeypatch.setattr(training, "_batches", poisoned)
    result = training.train(recipe, str(scenes), tmp_path / "run", num_workers=0, progress=False, cpu=True,
                            log_with=None, max_iterations=2)
    skipped = [r for r in result["history"] if r.get("skipped")]
    assert [r["step"] for r in skipped] == [2] and skipped[0]["loss"] is None
    assert "step 2: the loss is not finite" in capsys.readouterr().err
    # Step 2 changed nothing: the weights and batch-norm statistics are step 1's, all finite.
    monkeypatch.setattr(training, "_batches", real_batches)
    step_one = training.train(recipe, str(scenes), tmp_path / "one", num_workers=0, progress=False, cpu=True,
                              log_with=None, max_iterations=1)["model"].state_dict()
    for name, tensor in result["model"].state_dict().items():
        assert torch.equal(tensor, step_one[name]), name
    assert all(torch.isfinite(t.float()).all() for t in result["model"].state_dict().values())

    poisoned_steps.update(range(1, 20))
    monkeypatch.setattr(training, "_batches", poisoned)
    with pytest.raises(training.NonFiniteLossError, match="5 iterations in a row"):
        training.train(training.Recipe.load(str(recipe_file)), str(scenes), tmp_path / "stop", num_workers=0,
                       progress=False, cpu=True, log_with=None)


def test_a_config_whose_classes_reach_the_ignore_index_is_refused():
    from ssa_hf import SSAConfig

    with pytest.raises(Exception, match="reaches semantic_loss_ignore_index 255"):
        SSAConfig(num_labels=256)
    assert SSAConfig(num_labels=256, semantic_loss_ignore_index=65535).num_labels == 256


def test_palette_masks_are_their_indices_and_check_label_values_names_broken_masks(scenes, tmp_path):
    from ssa_hf.data import CONVENTIONS, DataError, check_label_values, decode_pair, load_folder

    indices = np.array([[0, 1], [10, 11]], np.uint8)
    palette_mask = Image.fromarray(indices, mode="P")
    palette_mask.putpalette([value for index in range(256) for value in (255 - index, index, 7)])  # colours != ids
    buffer = io.BytesIO()
    palette_mask.save(buffer, format="PNG")
    row = {"image": Image.new("RGB", (2, 2)), "annotation": {"path": "p.png", "bytes": buffer.getvalue()}}
    _, labels = decode_pair(row, CONVENTIONS["camvid"])
    assert labels.tolist() == [[0, 1], [10, 255]]  # the stored indices, CamVid's 11 ignored

    data = copy_scenes(scenes, tmp_path / "data")
    broken = truncated_png_mask(data)
    with pytest.raises(DataError, match=broken):
        check_label_values(load_folder(data, split="validation"), CONVENTIONS["camvid"], progress=False)


def test_predict_shows_photos_upright_as_pipeline_does(model_folder, tmp_path):
    photo = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 80x64, shown 64x80
    Image.new("RGB", (80, 64), "grey").save(photo, exif=exif)
    assert cli_main(["predict", str(photo), "--model", str(model_folder), "--output", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "photo_labels.png").size == (64, 80)
