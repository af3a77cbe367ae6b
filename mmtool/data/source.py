"""The split interface: what every stage, method and the training loop see of a dataset split.

One small protocol, :class:`SplitSource`, with two implementations:

* :class:`ArraySource` — a split held in memory as tensors (synthetic sets, digits, cached features);
* :class:`DiskSource` — a split of an on-disk dataset (UCF101, VGG-Sound) read through torch's
  ``DataLoader`` by a :class:`SampleReader` that the dataset family provides.

A source knows its length, its targets (without touching the inputs), which modalities it yields, and
makes batch iterators: ``loader(batch_size, train=..., seed=..., epoch=..., workers=..., shard=...)``.
Shuffling and per-sample augmentation are functions of (seed, epoch, sample index) only, so an epoch is
the same with 0 or 8 workers and can be re-made exactly after a resume. Batches carry the samples' ids
(their position in the split), which is how :func:`mmtool.engine.inference.run_inference` returns
results in sample order whatever the sharding.

Design notes
  * Decoders (decord readers, open files) belong to the reader and are opened lazily in the process that
    reads, never in ``__init__``: a reader built in the main process is pickled into each worker clean.
  * Workers are persistent: the ``DataLoader`` of a (batch size, mode, workers) combination is built once;
    each epoch only swaps the list of (index, seed, epoch) keys its sampler hands out, so the epoch number
    reaches the workers with every key.
  * ``ArraySource`` in training mode draws one ``randperm`` per epoch from a generator seeded with the
    seed, in epoch order, exactly as mmtool always has (so earlier results reproduce bit for bit); the
    generator state after each epoch is memoised, so asking for epoch k after a resume re-draws the first
    k-1 permutations once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from mmtool.data.workers import _WITH_WORKERS, _mp_context, _stack, _worker_init, release_workers  # noqa: F401 (re-exported)
from mmtool.errors import UserError

DEFAULT_EVAL_BATCH = 4096  # in-memory splits: large batches are cheapest


@dataclass(frozen=True)
class Shard:
    """Which part of every epoch this process reads: rank ``rank`` of ``world_size``."""

    rank: int = 0
    world_size: int = 1

    def take(self, order: torch.Tensor, pad: bool) -> torch.Tensor:
        """This rank's indices of ``order``: every ``world_size``-th one. With ``pad`` (training) the order is
        first extended by wrapping so that every rank gets the same number of samples, as torch's
        DistributedSampler does; without it (evaluation) no sample is read twice."""
        if self.world_size == 1:
            return order
        if pad:
            total = math.ceil(len(order) / self.world_size) * self.world_size
            order = torch.cat([order, order[: total - len(order)]]) if total > len(order) else order
        return order[self.rank :: self.world_size]


@dataclass
class Batch:
    """One mini-batch: ``inputs`` maps modality -> (B, ...) tensor, ``target`` (B,) class indices and
    ``ids`` (B,) the samples' positions in their split; ``present`` {modality: (B,) bool}, True where the
    modality is there (:mod:`mmtool.data.missing`), None when every modality of every sample is."""

    inputs: dict[str, torch.Tensor]
    target: torch.Tensor
    ids: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    present: dict[str, torch.Tensor] | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False, channels_last: bool = False) -> Batch:
        """The batch on ``device``; with ``channels_last`` 4-D inputs become channels_last and 5-D inputs
        channels_last_3d (the layouts the model's convolutions were converted to)."""
        inputs = {m: _to(x, device, non_blocking, channels_last) for m, x in self.inputs.items()}
        present = None if self.present is None else {m: p.to(device) for m, p in self.present.items()}
        return Batch(inputs, self.target.to(device, non_blocking=non_blocking), self.ids, present)

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread (``pin_memory=True``)."""
        return Batch({m: x.pin_memory() for m, x in self.inputs.items()}, self.target.pin_memory(), self.ids,
                     self.present)  # fmt: skip

    def __len__(self) -> int:
        return self.target.shape[0]  # not len(tensor): that goes through torch's Python-level dispatch


def _only(present: dict[str, torch.Tensor] | None, modalities: Sequence[str]) -> dict[str, torch.Tensor] | None:
    return None if present is None else {m: present[m] for m in modalities}


def _to(x: torch.Tensor, device, non_blocking: bool, channels_last: bool) -> torch.Tensor:
    if channels_last and x.dim() == 4:
        return x.to(device, non_blocking=non_blocking, memory_format=torch.channels_last)
    if channels_last and x.dim() == 5:
        return x.to(device, non_blocking=non_blocking, memory_format=torch.channels_last_3d)
    return x.to(device, non_blocking=non_blocking)


@runtime_checkable
class SplitSource(Protocol):
    """A dataset split, in memory or on disk (see the module docstring)."""

    modalities: tuple[str, ...]
    eval_batch_size: int  # the batch size evaluation passes use unless told otherwise
    views: int  # evaluation batches hold this many views of each sample (mmtool.data.views); 1 for most
    present: dict[str, torch.Tensor] | None  # {modality: (N,) bool} where some are missing (mmtool.data.missing)

    def __len__(self) -> int: ...

    def targets(self) -> torch.Tensor:
        """(N,) int64 class indices, in sample order, without reading any input."""
        ...

    def select(self, modalities: Sequence[str]) -> SplitSource:
        """The same samples with only ``modalities`` read."""
        ...

    def loader(
        self,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        epoch: int = 1,
        workers: int = 0,
        shard: Shard = Shard(),
        pin_memory: bool = False,
        start: int = 0,
    ) -> Iterable[Batch]:
        """Batches of one epoch. ``train``: shuffled by (seed, epoch) with training transforms; otherwise in
        order with evaluation transforms. ``batch_size`` <= 0 means the whole split in one batch. ``start``
        skips the first ``start`` batches without reading them (an epoch resumed from a mid-epoch
        checkpoint): the batches that follow are those an uninterrupted epoch would have read."""
        ...


# --------------------------------------------------------------------------------------------- in memory
class ArraySource:
    """A split held in memory: ``inputs`` {modality: (N, ...)} and ``target`` (N,)."""

    def __init__(self, inputs: dict[str, torch.Tensor], target: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        self.inputs = inputs
        self.target = target
        self.ids = ids if ids is not None else torch.arange(len(target))
        self.modalities = tuple(inputs)
        self.eval_batch_size = DEFAULT_EVAL_BATCH
        self.views = 1  # one view per sample (mmtool.data.views)
        self.present: dict[str, torch.Tensor] | None = None  # set by mmtool.data.missing
        self._perm_memo: dict[int, tuple[int, torch.Tensor]] = {}  # seed -> (epoch drawn, generator state)

    def __len__(self) -> int:
        return self.target.shape[0]  # not len(tensor): that goes through torch's Python-level dispatch

    def targets(self) -> torch.Tensor:
        return self.target

    def select(self, modalities: Sequence[str]) -> ArraySource:
        out = ArraySource({m: self.inputs[m] for m in modalities}, self.target, self.ids)
        out.present = _only(self.present, modalities)
        return out

    def loader(
        self,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        epoch: int = 1,
        workers: int = 0,
        shard: Shard = Shard(),
        pin_memory: bool = False,
        start: int = 0,
    ) -> Iterator[Batch]:
        """In-memory batches (``workers`` and ``pin_memory`` have nothing to do here and are ignored)."""
        n = len(self)
        if not train and shard.world_size == 1 and start == 0 and (batch_size <= 0 or batch_size >= n):
            yield Batch(self.inputs, self.target, self.ids, self.present)  # the whole split, no copy
            return
        order = self._permutation(seed, epoch) if train else torch.arange(n)
        order = shard.take(order, pad=train)
        size = max(len(order), 1) if batch_size <= 0 else batch_size
        for first in range(start * size, len(order), size):
            idx = order[first : first + size]
            present = None if self.present is None else {m: p[idx] for m, p in self.present.items()}
            yield Batch({m: x[idx] for m, x in self.inputs.items()}, self.target[idx], self.ids[idx], present)

    def _permutation(self, seed: int, epoch: int) -> torch.Tensor:
        """The ``epoch``-th randperm (1-based) of a generator seeded with ``seed``."""
        gen = torch.Generator()
        done, state = self._perm_memo.get(seed, (0, None))
        if state is None or done >= epoch:
            gen.manual_seed(seed)
            done = 0
        else:
            gen.set_state(state)
        for _ in range(epoch - 1 - done):
            torch.randperm(len(self), generator=gen)
        order = torch.randperm(len(self), generator=gen)
        self._perm_memo[seed] = (epoch, gen.get_state())
        return order


# --------------------------------------------------------------------------------------------- on disk
class SampleReader(Protocol):
    """Reads one sample of an on-disk split; provided by a dataset family. Must be picklable: it is
    copied into each DataLoader worker, where it opens its decoders on first use."""

    def read(self, index: int, modalities: Sequence[str], train: bool, rng: np.random.Generator) -> dict[str, Any]:
        """``{modality: tensor}`` for sample ``index``; ``rng`` drives this sample's augmentation."""
        ...


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one sample's augmentation: a function of (seed, epoch, index) only."""
    return np.random.default_rng([seed, epoch, index, 0x6D6D])


class _Keys(torch.utils.data.Sampler):
    """Hands out the keys of the current epoch; the main process swaps ``keys`` between epochs."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int, int]] = []

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class _ReaderDataset(torch.utils.data.Dataset):
    def __init__(self, reader: SampleReader, modalities: tuple[str, ...], targets: torch.Tensor, train: bool,
                 views: int = 1) -> None:  # fmt: skip
        self.reader, self.modalities, self.targets, self.train = reader, modalities, targets, train
        self.views = views  # > 1: keys are view ids, sample * views + view (mmtool.data.views)
        self.present: dict[str, torch.Tensor] | None = None  # the split's masks (mmtool.data.missing)
        self.pad: dict[str, int] = {}  # modality -> the id its token sequences are padded with (0 where absent)
        self.owner = os.getpid()  # the training process: workers end when it does, however it ends

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[dict[str, Any], int, int]:
        index, seed, epoch = key
        if self.views > 1:
            sample, view = divmod(index, self.views)
            return self.reader.read_view(sample, view, self.modalities), int(self.targets[sample]), index
        inputs = self.reader.read(index, self.modalities, self.train, sample_rng(seed, epoch, index))
        return inputs, int(self.targets[index]), index

    def __len__(self) -> int:
        return len(self.targets)


def _collate(items: list[tuple[dict[str, Any], int, int]], pad: dict[str, int] | None = None) -> Batch:
    """One batch of ``items``; 1-D integer inputs padded with ``pad[modality]`` (0 where not named)."""
    pad = pad or {}
    inputs = {m: _stack(_pad_ids([torch.as_tensor(it[0][m]) for it in items], pad.get(m, 0))) for m in items[0][0]}
    return Batch(inputs, torch.tensor([it[1] for it in items]), torch.tensor([it[2] for it in items]))


class _WithMasks:
    """The collate of a split with missing modalities: each batch gets its rows of the masks (by sample id)."""

    def __init__(self, dataset: _ReaderDataset) -> None:
        self.dataset = dataset

    def __call__(self, items: list[tuple[dict[str, Any], int, int]]) -> Batch:
        batch = _collate(items, self.dataset.pad)
        present = self.dataset.present
        if present is not None:
            rows = batch.ids // self.dataset.views  # view ids -> sample ids
            batch.present = {m: present[m][rows] for m in batch.inputs}
        return batch


def _pad_ids(parts: list[torch.Tensor], value: int = 0) -> list[torch.Tensor]:
    """1-D integer inputs of different lengths (token ids, :mod:`mmtool.data.text`) right-padded with ``value``
    (the tokenizer's pad id: 0 is BERT's [PAD], 49407 CLIP's <|endoftext|>) to the longest of the batch; every
    other input is left as it is (equal shapes, or an error)."""
    lengths = {p.shape[0] for p in parts if p.dim() == 1}
    if len(lengths) < 2 or any(p.dim() != 1 or p.dtype.is_floating_point or p.dtype == torch.bool for p in parts):
        return parts
    longest = max(lengths)
    return [torch.nn.functional.pad(p, (0, longest - p.shape[0]), value=value) for p in parts]


class DiskSource:
    """A split of an on-disk dataset read by ``reader`` through torch's DataLoader.

    Args:
        reader: reads sample ``i`` (see :class:`SampleReader`).
        targets: (N,) class indices in sample order.
        modalities: the modalities this source yields.
        eval_batch_size: batch size of evaluation passes.
        views: evaluation reads each sample as this many views (``reader.read_view``), with ids
            ``sample * views + view``; :func:`~mmtool.engine.inference.run_inference` averages them back
            into one row per sample (:mod:`mmtool.data.views`). Training reads one view as always.
        pad: modality -> the id a batch pads its token sequences with (the tokenizer's, :mod:`mmtool.data.text`);
            0 for a modality not named.
    """

    def __init__(
        self, reader: SampleReader, targets: torch.Tensor, modalities: Sequence[str], eval_batch_size: int = 64,
        views: int = 1, pad: dict[str, int] | None = None,
    ) -> None:  # fmt: skip
        if views > 1 and not hasattr(reader, "read_view"):
            raise UserError(f"data.test_clips/test_crops: {type(reader).__name__} reads one view per sample only")
        self.reader = reader
        self._targets = torch.as_tensor(targets, dtype=torch.long)
        self.modalities = tuple(modalities)
        self.eval_batch_size = eval_batch_size
        self.views = views
        self.pad = dict(pad or {})
        self.present: dict[str, torch.Tensor] | None = None  # set by mmtool.data.missing, before any loader
        self._loaders: dict[tuple, tuple[torch.utils.data.DataLoader, _Keys]] = {}

    def __len__(self) -> int:
        return len(self._targets)

    def targets(self) -> torch.Tensor:
        return self._targets

    def select(self, modalities: Sequence[str]) -> DiskSource:
        out = DiskSource(self.reader, self._targets, modalities, self.eval_batch_size, self.views, self.pad)
        out.present = _only(self.present, modalities)
        return out

    def loader(
        self,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        epoch: int = 1,
        workers: int = 0,
        shard: Shard = Shard(),
        pin_memory: bool = False,
        start: int = 0,
    ) -> torch.utils.data.DataLoader:
        n = len(self)
        if train:
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n * self.views)  # views > 1: every view of every sample, a sample's together
        order = shard.take(order, pad=train)
        size = max(len(order), 1) if batch_size <= 0 else batch_size
        loader, keys = self._loader(size, train, workers, pin_memory)
        keys.keys = [(int(i), seed, epoch) for i in order[start * size :]]
        return loader

    def _loader(self, batch_size: int, train: bool, workers: int, pin: bool):
        key = (batch_size, train, workers, pin)
        if key not in self._loaders:
            keys = _Keys()
            dataset = _ReaderDataset(self.reader, self.modalities, self._targets, train, 1 if train else self.views)
            dataset.pad = self.pad
            dataset.present = self.present  # workers get a copy when they start: masks are set before any loader
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=batch_size,
                sampler=keys,
                num_workers=workers,
                collate_fn=_WithMasks(dataset),
                pin_memory=pin,
                worker_init_fn=_worker_init,
                persistent_workers=workers > 0,
                prefetch_factor=2 if workers > 0 else None,  # 2 batches per worker in flight, in /dev/shm
                multiprocessing_context=_mp_context() if workers > 0 else None,
            )
            self._loaders[key] = (loader, keys)
            if workers > 0:
                _WITH_WORKERS.add(loader)
        return self._loaders[key]
