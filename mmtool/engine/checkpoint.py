"""Checkpoints: plain tensors and dicts, written atomically, loaded with ``weights_only=True``.

Every file is written to a temporary sibling, flushed to disk and renamed over its target, so a crash at
any point of a save leaves the previous complete file in place. ``last.pt`` is rotated to
``last.prev.pt`` before it is replaced, and :func:`latest_good` skips a truncated, empty or unreadable
``last.pt`` (naming it in a warning) for the one before. Loading never executes a pickled payload: a file
that holds anything but tensors and plain containers is refused with one line naming the global it
asked for, and a damaged file is one line naming the file, never a raw ``EOFError`` or torch's advice to
turn ``weights_only`` off.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import torch

from mmtool.errors import UserError
from mmtool.faults import fault_point
from mmtool.models import MultiModalNet, build_model
from mmtool.runs import atomic_write

LAST, BEST, COMPLETE = "last.pt", "best.pt", "COMPLETE"
PREVIOUS = "last.prev.pt"  # the resumable checkpoint before the current one


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh))


def resumable(ckpt_dir: Path, keep: int = 2) -> list[Path]:
    """The names of the ``keep`` newest resumable checkpoints, newest first: ``last.pt``, ``last.prev.pt``,
    ``last.prev2.pt``, ..."""
    names = [LAST, PREVIOUS, *(f"last.prev{k}.pt" for k in range(2, keep))]
    return [Path(ckpt_dir) / n for n in names[:keep]]


def save_last(ckpt_dir: Path, state: dict[str, Any], keep: int = 2) -> None:
    """Write the resumable checkpoint ``last.pt``, keeping the ``keep - 1`` before it (``last.prev.pt``, ...,
    oldest dropped): with ``keep >= 2`` a save that dies half-way always leaves a complete one behind."""
    from mmtool.runs import is_writer

    if not is_writer():
        return
    chain = resumable(ckpt_dir, max(keep, 1))
    for older in _older_than(ckpt_dir, len(chain)):
        older.unlink(missing_ok=True)  # a larger keep_last before: retention is what the recipe says now
    for newer, older in zip(chain[-2::-1], chain[:0:-1], strict=True):
        if newer.exists():
            os.replace(newer, older)
    fault_point("save_last")  # tests: a second signal, or a kill, in the middle of the save
    save_checkpoint(chain[0], state)


def _older_than(ckpt_dir: Path, keep: int) -> list[Path]:
    kept = {p.name for p in resumable(ckpt_dir, keep)}
    return [p for p in Path(ckpt_dir).glob("last.prev*.pt") if p.name not in kept]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's content; a missing, damaged or unsafe file is a :class:`UserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty (a save that never finished); delete it or resume from another")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (torch raises many types for a bad file; all mean the same here)
        raise UserError(_why_unreadable(path, err)) from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} holds a {type(state).__name__}, not an mmtool checkpoint")
    return state


def _why_unreadable(path: Path, err: Exception) -> str:
    text = str(err)
    unsafe = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: ([\w.]+)", text)
    if unsafe:
        return (
            f"checkpoint {path} holds a pickled object ({unsafe.group(1)}); mmtool loads plain tensors only and "
            "refuses to run code from a checkpoint"
        )
    return f"checkpoint {path} is truncated or not a checkpoint ({type(err).__name__}); resume from another one"


def latest_good(ckpt_dir: Path) -> dict[str, Any] | None:
    """The newest readable resumable checkpoint (``last.pt``, else ``last.prev.pt``, ...), or None. A file
    that cannot be read is skipped with a warning naming it."""
    kept = len(list(Path(ckpt_dir).glob("last.prev*.pt"))) + 1
    for path in resumable(ckpt_dir, kept + 1):
        if not path.exists():
            continue
        try:
            return load_checkpoint(path)
        except UserError as err:
            print(f"warning: {err}; trying an older one", file=sys.stderr)
    return None


def snapshot_path(ckpt_dir: Path, epoch: int) -> Path:
    """Where the loop keeps the weights of ``epoch`` when ``train.snapshot_every`` is set."""
    return Path(ckpt_dir) / f"epoch_{epoch:06d}.pt"


def list_snapshots(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``[(epoch, path)]`` of the snapshots in a checkpoints folder, by epoch."""
    found = [(int(p.stem.removeprefix("epoch_")), p) for p in Path(ckpt_dir).glob("epoch_*.pt")]
    return sorted(found)


def load_model(run_dir: str | Path, which: str = BEST, subdir: str = "") -> tuple[MultiModalNet, dict]:
    """Rebuild the model saved in ``run_dir[/subdir]/checkpoints/<which>``; returns (model, checkpoint)."""
    return model_from_checkpoint(Path(run_dir) / subdir / "checkpoints" / which)


def model_from_checkpoint(path: Path) -> tuple[MultiModalNet, dict]:
    ckpt = load_checkpoint(path)
    if "spec" not in ckpt or "model" not in ckpt:
        raise UserError(f"checkpoint {path} has no model (keys: {sorted(ckpt)[:6]})")
    model = build_model(ckpt["spec"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt
