"""Datasets: registry, prepared caches, splits and batch iteration.

* :mod:`mmtool.data.registry` — :class:`DatasetSpec` per dataset name, with its settings class (no torch);
* :mod:`mmtool.data.settings` — the built-in datasets' own recipe settings (no torch);
* :mod:`mmtool.data.cache` — ``prep`` and loading of prepared caches;
* :mod:`mmtool.data.cache_checks` — a cache's manifest checked against its data; index paths kept in their root;
* :mod:`mmtool.data.cache_arrays` — caches of in-memory arrays (``data.npz``): writing, verified reading, splits;
* :mod:`mmtool.data.source` — the split interface (:class:`SplitSource`) and batches;
* one module per dataset family (ucf101, vggsound, kinetics, cremad, modelnet40, registry_synthetic,
  registry_laziness), each registering its :class:`DatasetSpec`; a family too large for one module keeps
  its prep in ``<family>_prep`` (ucf101 also its raw layout in ``ucf101_layout``).

Importing this package loads no torch: the registry's names are imported here, every other public name
(``load_dataset``, ``Batch``, ...) is read from its module on first use, so recipe validation can ask the
registry for a dataset's settings without loading the data stack.
"""

from __future__ import annotations

import importlib
from typing import Any

from mmtool.data.registry import DATASETS, DatasetSpec, PrepOptions, dataset_settings

# public name -> the module that defines it (imported on first access)
_LAZY = {
    **dict.fromkeys(("ArraySource", "Batch", "DiskSource", "Shard", "SplitSource"), "mmtool.data.source"),
    **dict.fromkeys(
        ("Dataset", "SPLITS", "Split", "cache_dir", "load_dataset", "prep_command", "prepare"), "mmtool.data.cache"
    ),
    **dict.fromkeys(("RootGuard", "check_labels", "manifest_field", "read_manifest"), "mmtool.data.cache_checks"),
    **dict.fromkeys(
        (
            "EVAL_SUFFIX", "check_array_manifest", "dataset_from_arrays", "input_shape", "read_verified_arrays",
            "save_arrays", "split_indices", "write_array_cache",
        ),
        "mmtool.data.cache_arrays",
    ),
}  # fmt: skip

__all__ = ["DATASETS", "DatasetSpec", "PrepOptions", "dataset_settings", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:  # a submodule (``from mmtool.data import ucf101``) is imported by Python itself
        raise AttributeError(f"module 'mmtool.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
