"""Training checkpoints that hold no pickles and are complete or absent.

A checkpoint folder `step_N` holds:
- `model.safetensors`: the model's state dict (parameters and buffers);
- `optimizer.safetensors`: the optimiser's per-parameter tensors (AdamW's step counts and moments);
- `state.json`: the step, the optimiser's parameter groups, the learning-rate schedule's and the fp16 loss scaler's
  state, and the run's history up to this step.

Nothing in it is unpickled on resume, so a crafted checkpoint cannot run code. The randomness of each iteration is a
function of the recipe's seed and the iteration (`ssa_hf.training.iteration_seed`), so no RNG state is stored.

A checkpoint is written into a hidden `.step_N.partial` folder beside it and renamed when every file is on disk: a
run killed mid-write leaves the partial folder (named, and removed by the next save), never a `step_N` that is
half-loaded.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import torch

FORMAT_VERSION = 1
MODEL_FILE, OPTIMIZER_FILE, STATE_FILE = "model.safetensors", "optimizer.safetensors", "state.json"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be resumed from; the message names the folder and what is wrong."""


def partial_folder(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.partial")


def is_complete(folder: Path) -> bool:
    return (folder / STATE_FILE).is_file()


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer, scheduler, scaler, step: int,
                    history: list) -> None:
    """Write a checkpoint of `model` (unwrapped), `optimizer`, `scheduler` and the fp16 `scaler` (or None) at
    `step`, atomically: into a partial folder, then renamed to `folder`, which must not exist. A failed write (a
    full disk) removes the partial folder and raises `CheckpointError`."""
    from safetensors import SafetensorError

    folder = Path(folder)
    if folder.exists():
        raise CheckpointError(f"{folder} exists already; a checkpoint is never overwritten.")
    partial = partial_folder(folder)
    if partial.exists():  # left by a run killed while writing it
        shutil.rmtree(partial)
    try:
        _write_checkpoint(partial, model, optimizer, scheduler, scaler, step, history)
    except (OSError, SafetensorError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint {folder.name} in {folder.parent}: {write_failure(error)}; "
                              f"the earlier checkpoints are intact, resume from the newest with --resume latest.") \
            from error
    os.replace(partial, folder)


def write_failure(error: Exception) -> str:
    """What went wrong when writing a file, in words: a full disk says so, other errors keep their message."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in text or "StorageFull" in text:
        return "the disk is full"
    return text


def _write_checkpoint(partial: Path, model, optimizer, scheduler, scaler, step: int, history: list) -> None:
    from safetensors.torch import save_file

    partial.mkdir(parents=True)
    save_file({name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()},
              str(partial / MODEL_FILE))
    optimizer_state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in optimizer_state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = value
    save_file(tensors, str(partial / OPTIMIZER_FILE))
    state = {
        "format": FORMAT_VERSION,
        "step": step,
        "optimizer": {"param_groups": optimizer_state["param_groups"], "scalars": scalars},
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "scaler": scaler.state_dict() if scaler is not None else None,
        "history": history,
    }
    _write_synced(partial / STATE_FILE, json.dumps(state, indent=1))
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        _fsync(partial / name)


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer, scheduler, scaler) -> tuple[int, list]:
    """Restore a checkpoint into `model` (unwrapped), `optimizer`, `scheduler` and `scaler` in place; returns
    (step, history). Missing, truncated or foreign files raise `CheckpointError` naming them."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    state = read_state(folder)
    try:
        weights = load_file(str(folder / MODEL_FILE))
        optimizer_tensors = load_file(str(folder / OPTIMIZER_FILE))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{folder}: a weights file is missing or damaged ({error}).") from error
    result = model.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{folder}/{MODEL_FILE} does not fit this model: missing {result.missing_keys[:5]}, "
                              f"unexpected {result.unexpected_keys[:5]}.")
    per_parameter: dict[int, dict] = {}
    for key, value in list(optimizer_tensors.items()) + list(state["optimizer"]["scalars"].items()):
        index, name = key.split(".", 1)
        per_parameter.setdefault(int(index), {})[name] = value
    groups = [dict(group, betas=tuple(group["betas"])) if "betas" in group else group
              for group in state["optimizer"]["param_groups"]]
    try:
        optimizer.load_state_dict({"state": per_parameter, "param_groups": groups})
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"{folder}: the optimiser state does not fit this model ({error}).") from error
    scheduler.load_state_dict(state["scheduler"] | {"lr_lambdas": [None] * len(scheduler.lr_lambdas)})
    if (state["scaler"] is None) != (scaler is None):
        raise CheckpointError(f"{folder} was written with{'out' if state['scaler'] is None else ''} fp16 loss "
                              f"scaling; resume with the run's --mixed-precision.")
    if scaler is not None:
        scaler.load_state_dict(state["scaler"])
    return state["step"], state["history"]


def read_state(folder: Path) -> dict:
    """`state.json` of a checkpoint, checked: a partial or foreign folder raises `CheckpointError` naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a checkpoint folder.")
    if (folder / "random_states_0.pkl").exists() or (folder / "custom_checkpoint_0.pkl").exists():
        raise CheckpointError(f"{folder} was written by an older ssa-hf (accelerate's pickled state); it is not "
                              f"loaded, because unpickling can run code. Start the run again.")
    if not is_complete(folder):
        raise CheckpointError(f"{folder} is not a complete checkpoint (no {STATE_FILE}).")
    missing = [name for name in (MODEL_FILE, OPTIMIZER_FILE) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder} is damaged: {', '.join(missing)} missing.")
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{folder}/{STATE_FILE} is damaged ({error}).") from error
    if state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{folder}/{STATE_FILE}: unknown checkpoint format {state.get('format')!r}.")
    return state


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


__all__ = ["CheckpointError", "is_complete", "load_checkpoint", "read_state", "save_checkpoint"]
