"""The worker processes of on-disk split loaders (:class:`mmtool.data.source.DiskSource`): how they start, what
they share, and how a command stops them."""

from __future__ import annotations

import os
import weakref

import numpy as np
import torch

from mmtool.procs import exit_with

__all__ = ["release_workers"]


def _stack(parts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``, straight into shared memory inside a worker (as torch's default collate does): the
    batch then crosses to the training process without another copy."""
    if torch.utils.data.get_worker_info() is None:
        return torch.stack(parts)
    first = parts[0]
    storage = first.untyped_storage()._new_shared(len(parts) * first.numel() * first.element_size())
    out = first.new(storage).resize_(len(parts), *first.shape)
    return torch.stack(parts, out=out)


def _worker_init(worker_id: int) -> None:
    """Workers share no random state with each other or the parent (augmentation uses :func:`sample_rng`;
    this only covers library code that draws from the global generators), use one thread each, and exit
    when the training process is gone."""
    info = torch.utils.data.get_worker_info()
    base = info.seed if info is not None else worker_id
    torch.set_num_threads(1)
    np.random.seed(base % 2**32)
    if info is not None:
        exit_with(info.dataset.owner)


_WITH_WORKERS: weakref.WeakSet = weakref.WeakSet()  # loaders whose persistent workers may still run


def release_workers() -> None:
    """Stop the worker processes of every loader that still has them, now. Persistent workers otherwise
    live until their loader is garbage collected; collected as part of a reference cycle, the loader's
    queues can go first, and each worker then waits out torch's 5 s join timeout before being killed.
    Every command calls this when it ends (a long-lived Python process calling several commands, or a
    notebook, gets its worker processes back at once)."""
    for loader in list(_WITH_WORKERS):
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        loader._iterator = None
    _WITH_WORKERS.clear()


def _mp_context():
    """Workers start with ``forkserver`` where it exists: a forked copy of a parent that already runs
    OpenMP threads (any torch op) can hang, and ``spawn`` re-imports everything per worker. The fork
    server imports torch and this module once (it runs no torch op, so forking it is safe); each worker
    it forks starts with them in place instead of importing them again (about a second of CPU each)."""
    override = os.environ.get("MMTOOL_WORKER_START")
    if override:
        return override
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return "spawn"
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "mmtool.data.source"])
    return ctx
