"""Missing modalities (paper 003, Sec. 4.2 Table 2 and Sec. 4.3.2 Fig. 2): which modality of which sample is absent.

"We randomly mask each modality of each sample with a probability eta" (Sec. 4.2.1), with the same rate in the
training, validation and test data (``data.missing_in: all``, Table 2); Fig. 2 masks the audio or the video of
the *training* data only (``data.missing_in: train`` with ``data.missing_modalities: [audio]``).

The masks are part of the data, not of a method: :func:`apply_missing` computes them once per split when the
dataset is loaded and hangs them on the split source (``source.present``: ``{m: (N,) bool}``, True where the
modality is there); every batch carries its rows (``Batch.present``). A source without masks has
``present = None``: every modality of every sample is there (complete data reads exactly as before).

How a mask is drawn. Modality ``m`` of sample ``i`` of split ``s`` is missing when ``u < eta``, where ``u`` is the
``i``-th uniform number of a generator seeded by ``(data.seed, s, m)`` (:func:`_uniforms`). So the masks depend
on the data settings only: every method, recipe and run on the same data sees the same masks, and a higher rate
masks a superset of what a lower one masks (same ``u``). A sample whose modalities were all drawn missing keeps
one of them, chosen uniformly from a separate generator seeded by ``(data.seed, s, "keep")`` -- our choice: the
paper does not say how it avoids samples with no modality left (each maskable modality's missing rate is then
slightly below ``eta``: ``eta - eta^M / M`` with M maskable modalities of M in all). Masking only some
modalities never leaves a sample empty.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np
import torch

from mmtool.errors import UserError

if TYPE_CHECKING:
    from mmtool.data.cache import Dataset
    from mmtool.data_config import DataConfig

Masks = dict[str, torch.Tensor]  # {modality: (N,) bool}, True where the modality is there


def _code(name: str) -> int:
    """A stable integer for a split or modality name (Python's ``hash`` of a str changes per process)."""
    return zlib.crc32(name.encode())


def _uniforms(seed: int, split: str, name: str, n: int) -> np.ndarray:
    return np.random.default_rng([seed, _code(split), _code(name), 0x4D495353]).random(n)


def draw_masks(n: int, modalities: list[str], rate: float, seed: int, split: str,
               maskable: list[str] | None = None) -> Masks:  # fmt: skip
    """Presence masks of ``n`` samples of ``split``: modality m (of ``maskable``, default all) missing with
    probability ``rate``; never every modality of one sample (one is kept, module docstring)."""
    maskable = list(modalities) if maskable is None else maskable
    present = np.ones((n, len(modalities)), dtype=bool)
    for j, m in enumerate(modalities):
        if m in maskable:
            present[:, j] = _uniforms(seed, split, m, n) >= rate
    empty = ~present.any(axis=1)  # (N,)
    if empty.any():
        cols = [modalities.index(m) for m in maskable]
        pick = np.random.default_rng([seed, _code(split), _code("keep"), 0x4D495353]).integers(len(cols), size=n)
        rows = np.flatnonzero(empty)
        present[rows, np.asarray(cols)[pick[rows]]] = True
    return {m: torch.from_numpy(present[:, j].copy()) for j, m in enumerate(modalities)}


def apply_missing(data: Dataset, cfg: DataConfig) -> Dataset:
    """Hang the presence masks ``cfg`` asks for on ``data``'s splits (module docstring); nothing at rate 0."""
    if not cfg.missing_rate:
        return data
    mods = list(data.modalities)
    maskable = list(cfg.missing_modalities) or mods
    unknown = [m for m in maskable if m not in mods]
    if unknown:
        raise UserError(f"data.missing_modalities: {unknown} not in {data.name} ({mods})")
    if len(mods) < 2:
        raise UserError(f"data.missing_rate: {data.name} has one modality ({mods}); nothing could stand in for it")
    for name, split in data.splits.items():
        if cfg.missing_in == "all" or name == "train":
            split.present = draw_masks(len(split), mods, cfg.missing_rate, cfg.seed, name, maskable)
    return data


def any_present(present: Masks | None, modalities: list[str] | tuple[str, ...] | None = None) -> torch.Tensor | None:
    """(B,) True where at least one of ``modalities`` (default: every modality of the masks) is there; None
    when there are no masks (all there)."""
    if present is None:
        return None
    mods = list(present) if modalities is None else [m for m in modalities if m in present]
    out = present[mods[0]]
    for m in mods[1:]:
        out = out | present[m]
    return out


def describe(present: Masks | None) -> dict[str, float]:
    """The share (%) of samples missing each modality, for results."""
    if present is None:
        return {}
    return {m: round(100.0 * float((~p).float().mean()), 2) for m, p in present.items()}
