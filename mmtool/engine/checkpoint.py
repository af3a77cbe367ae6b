"""Checkpoints: plain tensors and dicts, written atomically, loaded with ``weights_only=True``.

The file names and their folder are :class:`mmtool.runs.CheckpointStore`'s; this module writes and reads
the files it is given. Every file is written to a temporary sibling, flushed to disk and renamed over its
target, so a crash at any point of a save leaves the previous complete file in place. A new ``last.pt``
is written to its temporary file first; only once it is complete is ``last.pt`` rotated to
``last.prev.pt`` (and so on) and the new one renamed into place, so a save that fails at any point (a
full disk, a folder turned read-only) leaves the previous checkpoint resumable. :func:`first_good` skips a
truncated, empty or unreadable ``last.pt`` (naming it in a warning) for the one before, and refuses,
naming them, when every one is damaged. When a run completes, :func:`compact` cuts ``last.pt`` down to
the weights and counters.

Loading never executes a pickled payload: a file that holds anything but tensors and plain containers is
refused with one line naming the global it asked for, and a damaged file is one line naming the file,
never a raw ``EOFError`` or torch's advice to turn ``weights_only`` off.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mmtool.errors import UserError
from mmtool.faults import fault_point
from mmtool.files import atomic_write, writing
from mmtool.models import MultiModalNet, build_model


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh))


def save_rotating(chain: list[Path], state: dict[str, Any], stale: Callable[[], list[Path]] = list) -> None:
    """Write ``state`` to ``chain[0]`` (last.pt), moving each older file one place down the chain (last.pt
    -> last.prev.pt -> ...; the oldest dropped), then remove the ``stale`` rotations a smaller chain no
    longer keeps. The new file is complete on disk before anything is rotated: a save that dies or is
    refused at any point leaves the previous checkpoint as ``chain[0]`` (or, once rotated, ``chain[1]``)."""
    from mmtool.files import is_writer

    if not is_writer():
        return

    def write(fh) -> None:
        fault_point("save_last")  # tests: a second signal, a kill or a full disk in the middle of the save
        torch.save(state, fh)

    atomic_write(chain[0], write, before_replace=lambda: _rotate(chain))
    for older in stale():  # a larger keep_last before: retention is what the recipe says now
        with writing(older, "remove"):
            older.unlink(missing_ok=True)


def _rotate(chain: list[Path]) -> None:
    """``chain[-2]`` -> ``chain[-1]``, ..., then ``chain[0]`` -> ``chain[1]`` (oldest first, so a failure
    half-way loses no checkpoint but the oldest)."""
    for newer, older in zip(chain[-2::-1], chain[:0:-1], strict=True):
        if newer.exists():
            with writing(older):
                fault_point("checkpoint_rotate")  # tests: checkpoints/ turning read-only (checkpoint_rotate:1:erofs)
                newer.replace(older)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's content; a missing, damaged or unsafe file is a :class:`UserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty (a save that never finished); {_what_to_do(path)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (torch raises many types for a bad file; all mean the same here)
        raise UserError(_why_unreadable(path, err)) from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} holds a {type(state).__name__}, not an mmtool checkpoint")
    return state


def damaged(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be loaded (:func:`load_checkpoint`'s one line), or None when it
    loads or does not exist."""
    if not Path(path).is_file():
        return None
    try:
        load_checkpoint(path)
    except UserError as err:
        return str(err)
    return None


def _why_unreadable(path: Path, err: Exception) -> str:
    text = str(err)
    unsafe = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: ([\w.]+)", text)
    if unsafe:
        return (
            f"checkpoint {path} holds a pickled object ({unsafe.group(1)}); mmtool loads plain tensors only and "
            "refuses to run code from a checkpoint"
        )
    return f"checkpoint {path} is truncated or not a checkpoint ({type(err).__name__}); {_what_to_do(path)}"


def _what_to_do(path: Path) -> str:
    """What a damaged checkpoint means for its run, by its kind."""
    if path.name.startswith("last"):
        return "`--resume` falls back to an older last*.pt when there is one"
    if path.name.startswith("best"):
        return ("`--resume` writes it again from last.pt where that still holds the best weights (an unfinished "
                "run, or one with train.keep_optimizer); otherwise train again or restore the file")  # fmt: skip
    return "restore the file or write it again"


def first_good(chain: list[Path], folder: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint of ``chain`` (newest first), or None when there is none. A file that
    cannot be read is skipped with a warning naming it; when every one is damaged, a :class:`UserError`
    names them (restarting from epoch 0 is the user's call, not a silent one)."""
    damaged: list[UserError] = []
    for path in chain:
        if not path.exists():
            continue
        try:
            state = load_checkpoint(path)
        except UserError as err:
            damaged.append(err)
            continue
        for err in damaged:
            print(f"warning: {err}; resuming from {path.name}", file=sys.stderr)
        return state
    if damaged:
        names = ", ".join(p.name for p in chain if p.exists())
        raise UserError(
            f"every resumable checkpoint in {folder} is damaged ({names}); start a new run, or move them out "
            f"of {folder} to restart this run from epoch 0"
        )
    return None


# what a finished run's last.pt keeps: how training ended, a few kilobytes. Not the final weights: the run's
# weights are best.pt's (selected on validation); train.keep_optimizer keeps everything (to train on from it)
SMALL = ("epoch", "step", "spec", "best_epoch", "best_val")


def compact(last: Path, rotations: list[Path], keep_optimizer: bool = False) -> None:
    """For a finished training: remove the older ``rotations`` and, unless ``keep_optimizer``, cut ``last``
    down to :data:`SMALL` (the counters: no weights, optimizer, scheduler, scaler, random or method state),
    marked ``complete``. The selected checkpoint is untouched. A ``last`` that cannot be read is left as it
    is (the run is complete without it)."""
    try:
        state = load_checkpoint(last) if last.is_file() and not keep_optimizer else None
    except UserError:
        return
    for older in rotations:  # first: their space is what the smaller file is written in
        with writing(older, "remove"):
            older.unlink(missing_ok=True)
    if state is None or state.get("complete"):
        return
    save_checkpoint(last, {**{k: state[k] for k in SMALL if k in state}, "complete": True})


def model_from_checkpoint(path: Path) -> tuple[MultiModalNet, dict]:
    ckpt = load_checkpoint(path)
    if "spec" not in ckpt or "model" not in ckpt:
        raise UserError(f"checkpoint {path} has no model (keys: {sorted(ckpt)[:6]})")
    model = build_model(ckpt["spec"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt
