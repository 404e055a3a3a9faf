"""The run folder of `ssa-seg train`: who may write to it, and what a run that fails before its first checkpoint
leaves behind (nothing).

A training holds `RunFolderLock` on its folder from the moment it first writes there until it ends: a second training
started into the same folder is refused with the holder's PID and host, and a lock left by a killed run is recognised
as stale (its process no longer holds it) and taken over. Everything a run writes is named in `RUN_FILES`, so a new
run that fails before it saved a checkpoint can remove exactly what it wrote, and the corrected command starts again.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from .checkpoints import CheckpointError, is_complete

LOCK_NAME = ".ssa-seg.lock"
# Everything `ssa-seg train` writes into a run folder.
RUN_FILES = ("run.json", "history.json", "logs", "checkpoints", "final", ".final.partial", ".run.json.tmp",
             ".history.json.tmp")


class RunFolderBusy(CheckpointError):
    """Another training holds the run folder."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunFolderLock:
    """An exclusive lock on a run folder, held by one training process (the main one).

    On POSIX it is an `flock` on `FOLDER/.ssa-seg.lock`, released by the system when the process dies, so a lock
    file left by a killed run is stale by construction; the file also records the holder's PID, host and start time
    for the message a second run gets. A lock file written on another host cannot be checked from here and is
    respected (remove it by hand when that run is known to be gone)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.handle = None

    def acquire(self) -> None:
        """Take the lock, creating the folder; `RunFolderBusy` names the holder when another run has it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+")
            holder = _read_holder(self.path)
            if (holder and holder.get("host") != socket.gethostname()) or not _lock_file(handle, holder):
                handle.close()
                raise RunFolderBusy(_busy_message(self.folder, self.path, holder))
            try:  # the file may have been released and removed between open and lock: lock the current one
                same = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        if holder and holder.get("pid") != os.getpid():
            print(f"note: {self.folder} had a stale lock of PID {holder.get('pid')} (no longer running); taken over",
                  file=sys.stderr)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        handle.flush()
        self.handle = handle

    def check_free(self) -> None:
        """Raise `RunFolderBusy` naming the holder when a training holds the folder now; takes nothing."""
        if not self.path.is_file():
            return
        holder = _read_holder(self.path)
        with open(self.path) as handle:
            free = _lock_file(handle, holder)  # closing the handle releases the probe's own lock
        if not free or (holder and holder.get("host") != socket.gethostname()):
            raise RunFolderBusy(_busy_message(self.folder, self.path, holder))

    def release(self) -> None:
        if self.handle is None:
            return
        self.path.unlink(missing_ok=True)
        self.handle.close()  # closing releases the flock
        self.handle = None


def _busy_message(folder: Path, path: Path, holder: dict) -> str:
    if holder and holder.get("host") != socket.gethostname():
        return (f"{folder} is locked by a training on host {holder.get('host')} (PID {holder.get('pid')}, started "
                f"{holder.get('started')}); if that run is gone, delete {path}.")
    return (f"{folder} is in use by another training (PID {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"started {holder.get('started', '?')}); wait for it to end, or choose another --output.")


def _read_holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _lock_file(handle, holder: dict) -> bool:
    """Lock `handle` without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the recorded holder decides
        return not (holder.get("pid") and holder.get("pid") != os.getpid() and _process_alive(int(holder["pid"])))
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def check_output_folder(output: Path, resume: Path | None) -> None:
    """A new run needs an empty or absent folder (a stale lock aside); a resumed run continues its own folder."""
    if resume is not None or not output.exists():
        return
    if not output.is_dir():
        raise ValueError(f"{output} exists and is not a folder: choose another --output (nothing was changed)")
    entries = sorted(p.name for p in output.iterdir() if p.name != LOCK_NAME)
    if not entries:
        return
    checkpoints = output / "checkpoints"
    if (output / "run.json").is_file() and not any(is_complete(p) for p in checkpoints.glob("step_*")):
        raise ValueError(f"{output} is not empty: it holds a run that stopped before its first checkpoint (run.json, "
                         f"no complete checkpoint), so there is nothing to resume; delete the folder or choose another "
                         f"--output (nothing was changed)")
    if (output / "run.json").is_file():
        raise ValueError(f"{output} is not empty: it holds a run; continue it with --resume latest, or choose "
                         f"another --output (nothing was changed)")
    raise ValueError(f"{output} exists and is not empty ({', '.join(entries[:5])}"
                     f"{', ...' if len(entries) > 5 else ''}): choose another --output (nothing was changed)")


def remove_failed_start(output: Path, created_folder: bool) -> list[str]:
    """After a new run failed before any complete checkpoint: remove what it wrote (`RUN_FILES`), and the folder
    itself when the run created it and it is empty then. Returns the names removed."""
    if any(is_complete(p) for p in (output / "checkpoints").glob("step_*")):
        return []
    removed = []
    for name in RUN_FILES:
        path = output / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    if created_folder and output.is_dir() and not [p for p in output.iterdir() if p.name != LOCK_NAME]:
        (output / LOCK_NAME).unlink(missing_ok=True)
        output.rmdir()
    return removed


__all__ = ["LOCK_NAME", "RUN_FILES", "RunFolderBusy", "RunFolderLock", "check_output_folder", "remove_failed_start"]
