"""Runs that describe themselves and short runs that mean something: run.json holds the effective recipe after the
command-line flags, seed, version and commit; history.json grows on resume; a warm-up longer than the run is warned
about with its real peak learning rate; the card reads the run and refuses partial evaluations; streamed data trains;
`ssa-seg` answers --help fast and installs from a wheel."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssa_hf.training import Recipe, lr_factor
from ssa_hf_cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


def train_command(recipe_file, data, output, *extra):
    return ["train", "--recipe", str(recipe_file), "--data", str(data), "--output", str(output), "--cpu",
            "--num-workers", "0", "--log-with", "none", *extra]


def test_run_folder_records_the_effective_recipe_and_grows_its_history_on_resume(scenes, recipe_file, tmp_path,
                                                                                   capsys):
    run = tmp_path / "run"
    flags = ["--lr", "0.002", "--seed", "7", "--warmup-iters", "2"]
    assert cli_main(train_command(recipe_file, scenes, run, *flags, "--max-iterations", "3")) == 0
    metadata = json.loads((run / "run.json").read_text())
    assert metadata["name"] == "tiny-scenes" and metadata["seed"] == 7
    assert metadata["recipe"]["lr"] == 0.002 and metadata["recipe"]["warmup_iters"] == 2
    assert metadata["recipe"]["iterations"] == 6 and metadata["trained_iterations"] == 3
    assert metadata["ssa_hf_version"] == __import__("ssa_hf").__version__ and "git_commit" in metadata
    assert metadata["sessions"][0]["command"][:2] == ["ssa-seg", "train"]
    assert metadata["sessions"][0]["command"][-8:] == flags + ["--max-iterations", "3"]
    first = json.loads((run / "history.json").read_text())
    assert [r["step"] for r in first if "loss" in r] == [1, 2, 3]
    assert first[1]["lr"] == pytest.approx(0.002 * lr_factor(2, Recipe(lr=0.002, iterations=6, warmup_iters=2)))

    # Resuming with other flags than the run's is refused; with the same ones it continues and appends.
    assert cli_main(train_command(recipe_file, scenes, run, "--resume", "latest")) == 2
    assert "another recipe" in capsys.readouterr().err
    assert cli_main(train_command(recipe_file, scenes, run, *flags, "--resume", "latest")) == 0
    history = json.loads((run / "history.json").read_text())
    assert history[: len(first)] == first  # never truncated
    assert [r["step"] for r in history if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert any(r.get("resumed_from", "").endswith("step_3") for r in history)
    assert [r["step"] for r in history if "eval" in r] == [3, 6]
    metadata = json.loads((run / "run.json").read_text())
    assert len(metadata["sessions"]) == 2 and metadata["sessions"][1]["from_step"] == 3
    assert json.loads((run / "final" / "training_run.json").read_text())["trained_iterations"] == 6


def test_a_warm_up_longer_than_the_run_is_announced_with_the_real_peak(scenes, recipe_file, tmp_path, capsys):
    assert cli_main(train_command(recipe_file, scenes, tmp_path / "run", "--iterations", "4")) == 0
    err = capsys.readouterr().err
    # Peak of warm-up (100 iterations) x poly over 4 iterations, by hand: the largest of step/100-ish factors.
    recipe = Recipe(lr=1e-3, iterations=4, warmup_iters=100)
    peak = max(1e-3 * (1 - (1 - s / 100) * (1 - 1e-6)) * (1 - s / 4) for s in range(5))
    assert peak == pytest.approx(1e-3 * max(lr_factor(s, recipe) for s in range(5)))
    assert f"peaks at {peak:.3g}" in err and "--warmup-iters" in err



def test_the_progress_bar_rate_leaves_evaluations_out_and_keeps_the_last_miou(scenes, recipe_file, tmp_path,
                                                                               monkeypatch):
    import tqdm.auto

    import ssa_hf.training as training

    bars = []

    class RecordingBar(tqdm.auto.tqdm):
        def close(self):
            if not self.disable:
                bars.append((self.desc, self.format_dict["elapsed"], self.n, self.postfix))
            super().close()

    real_evaluate = training.evaluate_run

    def slow_evaluate(run, bar=None):
        time.sleep(1.5)  # an evaluation far slower than the 6 training iterations
        return real_evaluate(run, bar)

    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    monkeypatch.setattr(training, "evaluate_run", slow_evaluate)
    started = time.monotonic()
    training.train(Recipe.load(str(recipe_file)), str(scenes), tmp_path / "run", progress=True, cpu=True,
                   num_workers=0, log_with=None)
    wall = time.monotonic() - started
    (desc, elapsed, steps, postfix), = [bar for bar in bars if bar[0] == "SSA"]
    assert steps == 6 and "mIoU=" in postfix
    assert elapsed < wall - 2 * 1.5, (elapsed, wall)  # both evaluations (2 x 1.5 s at least) are left out
    assert any(bar[0].startswith("evaluating step") for bar in bars)  # evaluations have their own bar


def test_card_reads_the_run_and_refuses_partial_evaluations(scenes, recipe_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_main(train_command(recipe_file, scenes, run, "--iterations", "2", "--batch-size", "1",
                                  "--warmup-iters", "1")) == 0
    final = run / "final"
    assert cli_main(["evaluate", "--model", str(final), "--data", str(scenes), "--limit", "2",
                     "--output", str(tmp_path / "partial.json")]) == 0
    capsys.readouterr()
    assert cli_main(["card", str(final), "--eval", str(tmp_path / "partial.json")]) == 2
    assert "--limit" in capsys.readouterr().err and not (final / "README.md").exists()
    assert cli_main(["evaluate", "--model", str(final), "--data", str(scenes)]) == 0
    report = json.loads((final / "eval_validation.json").read_text())
    assert cli_main(["card", str(final), "--eval", str(final / "eval_validation.json")]) == 0
    card = (final / "README.md").read_text()
    assert "# tiny-scenes" in card  # the run's name, not "final"
    assert "trained 2 iterations of a 2-iteration schedule (batch 1" in card
    assert "| batch_size | 1 |" in card and "| iterations | 2 |" in card
    assert f"| {100 * report['mean_iou']:.2f} |" in card


def test_training_reads_a_streamed_parquet_dataset(scenes, recipe_file, tmp_path):
    import datasets

    from ssa_hf.data import load_folder

    parquet = tmp_path / "scenes-parquet"
    (parquet / "data").mkdir(parents=True)
    for split, name in (("train", "train"), ("validation", "validation")):
        rows = load_folder(scenes, split=split)
        rows = rows.cast(rows.features)  # embed the image bytes, as a hub parquet copy holds them
        rows.to_parquet(str(parquet / "data" / f"{name}-00000-of-00001.parquet"))
    streamed = datasets.load_dataset(str(parquet), split="train", streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    run = tmp_path / "run"
    assert cli_main(train_command(recipe_file, parquet, run, "--streaming", "--iterations", "3", "--warmup-iters",
                                  "1")) == 0
    metadata = json.loads((run / "run.json").read_text())
    assert metadata["streaming"] is True
    history = json.loads((run / "history.json").read_text())
    assert [r["step"] for r in history if "loss" in r] == [1, 2, 3]
    assert [(r["step"], r["images"]) for r in history if "eval" in r] == [(3, 3)]  # every val image, streamed


def test_help_is_fast_and_every_command_says_output(tmp_path):
    executable = Path(sys.executable).with_name("ssa-seg")
    env = dict(os.environ)
    for command in ([], ["train"], ["evaluate"], ["predict"], ["convert"], ["card"], ["publish"], ["demo"]):
        started = time.perf_counter()
        result = subprocess.run([str(executable), *command, "--help"], capture_output=True, text=True, timeout=60,
                                env=env)
        elapsed = time.perf_counter() - started
        assert result.returncode == 0, result.stderr
        assert elapsed < 1.5, f"ssa-seg {' '.join(command)} --help took {elapsed:.2f} s"
        if command and command[0] not in ("card", "publish"):
            assert "--output" in result.stdout
    version = subprocess.run([str(executable), "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == f"ssa-seg (ssa-hf) {__import__('ssa_hf').__version__}"


@pytest.mark.slow
def test_wheel_installs_and_trains_from_another_directory(scenes, recipe_file, tmp_path):
    """Built wheel (not the editable checkout), installed into its own folder, run from elsewhere: the recipes are
    package data and `ssa-seg train --recipe NAME` resolves them."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(wheels), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("ssa_hf-*.whl")
    import zipfile

    with zipfile.ZipFile(wheel) as archive:  # the README's `pip install "ssa-hf[tensorboard]"` brings the viewer
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "Provides-Extra: tensorboard" in metadata
    assert 'Requires-Dist: tensorboard; extra == "tensorboard"' in metadata
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    probe = subprocess.run([sys.executable, "-c", "import ssa_hf, ssa_hf_cli; print(ssa_hf.__file__); "
                            "from ssa_hf.training import available_recipes; print(available_recipes())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.startswith(str(target)) and "camvid" in probe.stdout
    recipe = json.loads(recipe_file.read_text()) | {"iterations": 1, "eval_every": 1, "save_every": 1,
                                                    "warmup_iters": 1}
    (elsewhere / "tiny.json").write_text(json.dumps(recipe))
    trained = subprocess.run([sys.executable, "-m", "ssa_hf_cli", "train", "--recipe", "tiny.json", "--data",
                              str(scenes), "--output", "run", "--cpu", "--num-workers", "0", "--log-with", "none"],
                             cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (elsewhere / "run" / "final" / "preprocessor_config.json").exists()
    # Several processes from the installed package: accelerate launch runs its module entry point (CPU, gloo).
    launched = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                               "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
                               "ssa_hf_cli", "train", "--recipe", "tiny.json", "--data", str(scenes), "--output",
                               "run-2p", "--cpu", "--num-workers", "0", "--log-with", "none"],
                              cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert json.loads((elsewhere / "run-2p" / "run.json").read_text())["world_size"] == 2
    assert launched.stdout.count("final evaluation") == 1  # reported once, by the main process
    shipped = subprocess.run([sys.executable, "-m", "ssa_hf_cli", "train", "--recipe", "camvid", "--data",
                              str(tmp_path / "missing"), "--output", "run2"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=300)
    assert shipped.returncode == 2 and "missing" in shipped.stderr  # the recipe resolved by name; the data is named
