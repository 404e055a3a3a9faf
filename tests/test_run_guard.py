"""Run folders that cannot be corrupted, and errors a user can act on or report.

A training holds a lock on its folder: a second one is refused by the holder's PID and host, a stale lock is taken
over. A failed start (a mistyped --data, a bad recipe value, a bad file at step 1) leaves nothing that blocks the
corrected command. Every recipe field and flag is checked before anything starts. Resume refuses a changed
--mixed-precision. Sharded training is refused up front. A full disk is said in words. Errors we raise are one line;
unexpected ones keep their traceback."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_run_folder import train_command

from ssa_hf.run_folder import LOCK_NAME, RunFolderBusy, RunFolderLock
from ssa_hf_cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


def test_a_second_training_into_the_same_folder_is_refused_and_the_first_finishes(scenes, recipe_file, tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "ssa_hf_cli", *train_command(recipe_file, scenes, run, "--seed", "0",
                                                              "--iterations", "40", "--eval-every", "40",
                                                              "--save-every", "40")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / LOCK_NAME).exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    second = subprocess.run(
        [sys.executable, "-m", "ssa_hf_cli", *train_command(recipe_file, scenes, run, "--seed", "1")], cwd=REPO,
        capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2
    message = second.stderr.strip().splitlines()[-1]
    assert "in use by another training" in message and f"PID {first.pid}" in message, message
    assert socket.gethostname() in message
    assert json.loads((run / "run.json").read_text())["seed"] == 0  # the first run's record, untouched
    assert (run / "final" / "model.safetensors").is_file() and not (run / LOCK_NAME).exists()


def test_a_stale_lock_is_taken_over_and_another_hosts_lock_is_respected(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                "started": "2026-01-01T00:00:00"}))
    lock = RunFolderLock(folder)
    lock.acquire()
    assert "stale lock" in capsys.readouterr().err
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    probe = subprocess.run([sys.executable, "-c", f"from ssa_hf.run_folder import RunFolderLock; "
                                                  f"RunFolderLock({str(folder)!r}).acquire()"],
                           cwd=REPO, capture_output=True, text=True)
    assert probe.returncode != 0 and f"PID {os.getpid()}" in probe.stderr  # held: a second holder is refused
    lock.release()
    assert not (folder / LOCK_NAME).exists()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "gpu-node-7", "started": "2026-01-01T00:00:00"}))
    with pytest.raises(RunFolderBusy, match="gpu-node-7"):
        RunFolderLock(folder).acquire()


@pytest.mark.parametrize("mistake, message", [
    (["--data", "cvv"], "--data cvv: no such folder"),
    (["--iterations", "0"], "argument --iterations: must be at least 1, got 0"),
    (["--iterations", "-3"], "argument --iterations: must be at least 1, got -3"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1"),
    (["--gradient-accumulation-steps", "0"], "argument --gradient-accumulation-steps: must be at least 1"),
    (["--encoder", "b9"], "encoder 'b9' is not an MiT variant: the variants are b0, b1, b2, b3, b4, b5"),
    (["--lr", "abc"], "argument --lr: expected a number, got 'abc'"),
])
def test_a_failed_start_is_one_line_and_leaves_nothing(mistake, message, scenes, recipe_file, tmp_path, capsys):
    run = tmp_path / "run"
    command = train_command(recipe_file, scenes, run)
    for flag, value in zip(mistake[::2], mistake[1::2]):
        if flag in command:
            command[command.index(flag) + 1] = value
        else:
            command += [flag, value]
    try:
        status = cli_main(command)
    except SystemExit as exit_:  # argparse refuses the flag itself
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and message in err, err[-1500:]
    assert "Traceback" not in err
    assert not run.exists()


@pytest.mark.parametrize("field, value, message", [
    ("iterations", "ten", "recipe field 'iterations' must be an integer >= 1, got 'ten'"),
    ("batch_size", "2", "recipe field 'batch_size' must be an integer >= 1, got '2'"),
    ("crop_size", 512, "recipe field 'crop_size' must be a pair [height, width] of positive integers, got 512"),
    ("lr", -1, "recipe field 'lr' must be a number > 0"),
    ("convention", "kitti", "recipe field 'convention' must be null or one of"),
])
def test_every_recipe_field_is_checked_before_anything_starts(field, value, message, scenes, recipe_file,
                                                              tmp_path, capsys):
    recipe = json.loads(recipe_file.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(recipe | {field: value}))
    assert cli_main(train_command(bad, scenes, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert message in err and "bad.json" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_bad_file_found_at_step_one_leaves_nothing_and_the_fixed_data_trains(scenes, recipe_file, tmp_path,
                                                                               capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(scenes, data)
    image = sorted((data / "train" / "images").iterdir())[0]
    image.write_bytes(image.read_bytes()[:200])  # truncated: found only when the loader decodes it
    run = tmp_path / "run"
    assert cli_main(train_command(recipe_file, data, run, "--log-with", "tensorboard")) == 2
    err = capsys.readouterr().err
    assert image.name in err and "removed what it wrote" in err
    assert not run.exists()
    shutil.copy(scenes / "train" / "images" / image.name, image)
    assert cli_main(train_command(recipe_file, data, run, "--max-iterations", "3")) == 0


def test_resume_refuses_another_mixed_precision_and_a_refused_resume_writes_nothing(scenes, recipe_file, tmp_path,
                                                                                    capsys):
    run = tmp_path / "run"
    assert cli_main(train_command(recipe_file, scenes, run, "--max-iterations", "3", "--mixed-precision", "bf16",
                                  "--log-with", "tensorboard")) == 0
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    record = (run / "run.json").read_text()
    assert cli_main(train_command(recipe_file, scenes, run, "--resume", "latest", "--log-with", "tensorboard")) == 2
    err = capsys.readouterr().err
    assert "mixed_precision" in err and "--mixed-precision bf16" in err
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before  # no tracker folder, nothing
    assert (run / "run.json").read_text() == record
    # A folder whose run died before its first checkpoint is named as such, not offered a resume that cannot work.
    (tmp_path / "dead").mkdir()
    (tmp_path / "dead" / "run.json").write_text("{}")
    assert cli_main(train_command(recipe_file, scenes, tmp_path / "dead")) == 2
    assert "stopped before its first checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_sharded_training_is_refused_before_anything_is_written(variable, scenes, recipe_file, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setenv(variable, "true")
    assert cli_main(train_command(recipe_file, scenes, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "is not supported" in err and "--multi_gpu" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("failure", ["safetensors", "json"])
def test_a_full_disk_is_said_in_words_and_the_partial_checkpoint_goes(failure, tmp_path, monkeypatch):
    """The errors a full disk raises (safetensors' StorageFull, an OSError with ENOSPC while writing state.json),
    injected where they would occur: this sandbox cannot fill a disk on purpose."""
    import errno

    import safetensors.torch
    import torch
    from safetensors import SafetensorError

    from ssa_hf import checkpoints
    from ssa_hf.checkpoints import CheckpointError, save_checkpoint

    def full(*args, **kwargs):
        if failure == "safetensors":
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                                  '"No space left on device" })')
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch if failure == "safetensors" else checkpoints,
                        "save_file" if failure == "safetensors" else "_write_synced", full)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(CheckpointError, match="the disk is full; the earlier checkpoints are intact"):
        save_checkpoint(tmp_path / "checkpoints" / "step_2", model, optimizer, scheduler, None, 2, [])
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_errors_we_raise_are_one_line_and_unexpected_ones_keep_their_traceback(tmp_path, capsys, monkeypatch):
    from ssa_hf import commands

    assert cli_main(["predict", str(tmp_path / "missing.png"), "--model", "x", "--output", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err

    def deep_inside_torch(args):
        import torch

        torch.zeros(2) @ torch.zeros(3)  # a RuntimeError from inside torch

    monkeypatch.setattr(commands, "cmd_predict", deep_inside_torch)
    (tmp_path / "a.png").write_bytes(b"")
    assert cli_main(["predict", str(tmp_path / "a.png"), "--model", "x", "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError" in err and "unexpected error" in err


def test_predict_names_a_missing_device_and_a_missing_model_folder(tmp_path, capsys):
    import torch
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    if not torch.cuda.is_available():
        assert cli_main(["predict", str(tmp_path / "a.png"), "--model", str(tmp_path), "--output",
                         str(tmp_path / "o"), "--device", "cuda"]) == 2
        assert "--device cuda: this torch" in capsys.readouterr().err
    assert cli_main(["predict", str(tmp_path / "a.png"), "--model", "./runs/no/final", "--output",
                     str(tmp_path / "o")]) == 2
    assert "no such model folder: ./runs/no/final" in capsys.readouterr().err


def test_a_decompression_bomb_is_named(tmp_path, capsys):
    from PIL import Image

    from ssa_hf.data import DataError, open_image

    Image.new("1", (14_000, 14_000)).save(tmp_path / "huge.png")  # 196 megapixels, small on disk
    with pytest.raises(DataError, match="huge.png: the image is too large to decode safely"):
        open_image(tmp_path / "huge.png", "image")


def test_legend_draws_non_latin_names_or_says_which_it_cannot(tmp_path):
    import numpy as np
    from PIL import Image, ImageDraw

    from ssa_hf.visualization import legend_font, overlay_with_legend

    names = {0: "Straße", 1: "道路"}
    undrawable = []
    canvas = overlay_with_legend(Image.new("RGB", (40, 30)), np.array([[0, 1]] * 30).repeat(20, 1), names,
                                 undrawable=undrawable)
    font, missing = legend_font("Straße道路")
    assert "ß" not in missing  # every machine with FreeType has a font for Latin-1
    if missing:
        assert undrawable == ["道路"]
    else:  # a font with CJK glyphs was found: the names are drawn, not the "missing glyph" box
        assert undrawable == []
        box = Image.new("L", (40, 20))
        ImageDraw.Draw(box).text((0, 0), "\U0010ffff", font=font, fill=255)
        road = Image.new("L", (40, 20))
        ImageDraw.Draw(road).text((0, 0), "道", font=font, fill=255)
        assert np.asarray(box).tobytes() != np.asarray(road).tobytes()
    assert canvas.width > 40


def test_every_option_has_help_and_shows_its_default():
    import argparse

    from ssa_hf_cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    undocumented = [f"{name} {'/'.join(action.option_strings) or action.dest}"
                    for name, sub in commands.choices.items() for action in sub._actions
                    if not isinstance(action, argparse._HelpAction) and action.help is None]
    assert not undocumented, undocumented
    top = parser.format_help()
    assert "imports neither torch" not in top and "ssa_hf.commands" not in top  # no notes for developers
    train = commands.choices["train"].format_help()
    assert "data-loading processes (default: 2)" in " ".join(train.split())
    evaluate = " ".join(commands.choices["evaluate"].format_help().split())
    assert "sliding window step (default: 341 341)" in evaluate and "(default: validation)" in evaluate
    assert "--app-trusts-remote-code" not in commands.choices["space"].format_help()  # the default now, hidden
