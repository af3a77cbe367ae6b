"""Duplicated modalities (paper 002, Sec. 6.2): every modality of a dataset fed one modality's input.

"In addition to the original dataset, we construct a dataset with two identical input modalities by duplicating
one of the modalities. For example, when using the colored-and-gray-MNIST dataset, we predict the digit class
using two identical gray-scale images." ``data.duplicate: gray`` does that on any dataset: the model keeps its
branches (``color`` and ``gray``, each with its own encoder as the recipe builds it), and every branch reads the
``gray`` input of the sample.

Where it applies: where a sample's inputs are read. An in-memory split (:class:`~mmtool.data.source.ArraySource`)
hands every modality the named modality's tensor; an on-disk split (:class:`~mmtool.data.source.DiskSource`) reads
the named modality once per sample, with that sample's augmentation, and hands the same tensor to every modality.
So the inputs are identical tensors in training as in evaluation (a per-view random flip drawn twice would make
them differ; the paper says "identical"). A modality's input shape becomes the named modality's
(``Dataset.input_dims``), so a branch built for 1-channel depth takes 3-channel RGB when ``data.duplicate: rgb``.

The choices of paper 002's duplicated sets (the paper names only the gray images of Colored-and-gray MNIST): the
front view twice on ModelNet40 (m0, the view the paper lists first) and RGB twice on NVGesture (ours: the modality
Kinetics-pretrained I3D weights cover, so the same setting serves a pretrained model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mmtool.data.source import ArraySource, DiskSource
from mmtool.errors import UserError

if TYPE_CHECKING:
    from mmtool.data.cache import Dataset
    from mmtool.data_config import DataConfig


class DuplicateReader:
    """A :class:`~mmtool.data.source.SampleReader` that reads ``source`` and hands it to every modality asked for."""

    def __init__(self, reader: Any, source: str) -> None:
        self.reader, self.source = reader, source

    def __len__(self) -> int:
        return len(self.reader)

    def read(self, index: int, modalities: Sequence[str], train: bool, rng: np.random.Generator) -> dict[str, Any]:
        x = self.reader.read(index, [self.source], train, rng)[self.source]
        return {m: x for m in modalities}

    def read_view(self, index: int, view: int, modalities: Sequence[str]) -> dict[str, Any]:
        x = self.reader.read_view(index, view, [self.source])[self.source]
        return {m: x for m in modalities}


def duplicated_split(split: Any, source: str) -> Any:
    """``split`` with every modality reading ``source``'s input (module docstring)."""
    if isinstance(split, ArraySource):
        out = ArraySource({m: split.inputs[source] for m in split.modalities}, split.target, split.ids)
        out.eval_batch_size, out.present = split.eval_batch_size, split.present
        return out
    if isinstance(split, DiskSource):
        out = DiskSource(DuplicateReader(split.reader, source), split.targets(), split.modalities,
                         split.eval_batch_size, split.views, split.pad)  # fmt: skip
        out.present = split.present
        return out
    raise UserError(f"data.duplicate: {type(split).__name__} splits cannot duplicate a modality")


def apply_duplicate(data: Dataset, cfg: DataConfig) -> Dataset:
    """``data`` with every modality fed ``cfg.duplicate``'s input; ``data`` itself when it names none."""
    source = cfg.duplicate
    if not source:
        return data
    if source not in data.modalities:
        raise UserError(f"data.duplicate: {source!r} is not a modality of {data.name} ({', '.join(data.modalities)})")
    splits = {name: duplicated_split(split, source) for name, split in data.splits.items()}
    dims = {m: data.input_dims[source] for m in data.input_dims}
    return dataclasses.replace(data, splits=splits, input_dims=dims)
