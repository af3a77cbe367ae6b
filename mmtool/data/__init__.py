"""Datasets: registry, prepared caches, splits and batch iteration.

* :mod:`mmtool.data.registry` — :class:`DatasetSpec` per dataset name, with its settings class (no torch);
* :mod:`mmtool.data.settings` — the built-in datasets' own recipe settings (no torch);
* :mod:`mmtool.data.cache` — ``prep`` and loading of prepared caches, manifest checks, array-set helpers;
* :mod:`mmtool.data.source` — the split interface (:class:`SplitSource`) and batches;
* one module per dataset family (ucf101, vggsound, kinetics, cremad, modelnet40, registry_synthetic,
  registry_laziness), each registering its :class:`DatasetSpec`.

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
        (
            "Dataset", "EVAL_SUFFIX", "RootGuard", "SPLITS", "Split", "cache_dir", "check_array_manifest",
            "check_labels", "dataset_from_arrays", "input_shape", "load_dataset", "manifest_field", "prep_command",
            "prepare", "read_manifest", "read_verified_arrays", "save_arrays", "split_indices", "write_array_cache",
        ),
        "mmtool.data.cache",
    ),
}  # fmt: skip

__all__ = ["DATASETS", "DatasetSpec", "PrepOptions", "dataset_settings", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:  # a submodule (``from mmtool.data import ucf101``) is imported by Python itself
        raise AttributeError(f"module 'mmtool.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
