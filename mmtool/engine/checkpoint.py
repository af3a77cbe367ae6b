"""Checkpoints: plain tensors and dicts, written atomically, loaded with ``weights_only=True``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from mmtool.errors import UserError
from mmtool.models import MultiModalNet, build_model
from mmtool.runs import atomic_write_bytes

LAST, BEST, COMPLETE = "last.pt", "best.pt", "COMPLETE"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


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
    model = build_model(ckpt["spec"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt
