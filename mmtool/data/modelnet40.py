"""ModelNet40 front and rear views (paper 000, App. A.1; paper 002, Sec. 6.1): prepared from a local copy.

Paper 000 "follows Wu et al. (2022)" (paper 002) for ModelNet40 and defers to their code
(github nyukat/greedy_multimodal_learning) for every setting. That code reads the MVCNN 12-view renders of
Su et al. (``modelnet40_images_new_12x``, env.sh) laid out as ``<class>/<train|test>/<object>.obj.shaded_vVVV.png``
(VVV = 001..012, one camera every 30 degrees around the object), and feeds a multi-modal ResNet-18 pair with
views ``[0, 6]`` (configs/training.gin, ``specific_views``): v001 is the *front* and v007, 180 degrees round, the
*rear*. ``mmtool prep modelnet40 --raw DIR`` reads that layout; ``data.front_view``/``data.rear_view``
pick other renders. ``data.side_view`` adds a third view, modality ``side`` (paper 002, Sec. 7 trains on "three
views" without naming them; recipes/modelnet40/*_3view.yaml take v004, 90 degrees between front and rear: our
choice, so that the three-view model holds the two-view model's views plus one).
The layout, quirks and choices are described in ``data_prep/modelnet40.md``. The raw layout and prep are in
:mod:`mmtool.data.modelnet40_prep`; this module reads and loads a prepared cache and registers the dataset.

Design notes
  * What Wu et al.'s loader (src/dataset.py) does, and this module does alike: labels are the position of the
    class folder in the sorted class list (their hard-coded list is the 40 names sorted); every image is read
    with ``PIL.Image.convert("RGB")`` at its own size (224 x 224 in the published renders) and normalised with
    the ImageNet mean and std; training flips each view horizontally with probability 1/2 (independently per
    view, as their per-image ``RandomHorizontalFlip``) and does nothing else: no crop, unlike UCF101;
    evaluation reads the image as it is. ``data.image_size`` other than the renders' size resizes both.
  * Splits: test is the ``test/`` folders and is never used for selection. Validation is carved at load time
    from the ``train/`` objects exactly as Wu et al. do: the train objects in (class, name) order, shuffled by
    ``random.Random(data.seed).shuffle``, the first ``floor(data.val_fraction * n)`` held out (at least one when
    the fraction is positive). With their ``valid_size=0.2`` and ``random_seed_for_validation=10``
    (recipes/_base/modelnet40.yaml) and a complete copy, the validation objects are theirs. The split is not
    stratified by class, as theirs is not.
  * Objects are found from the file names (there are no split lists): everything before ``.obj.`` names the
    object. An object with renders but without the front or the rear one is skipped as ``missing_view``: an
    interrupted extraction must not pass unseen. The same object name in two
    folders (a train/test leak) stops prep with the two paths.
  * Renders stay where they are: the cache holds an index, not a copy (as the frames of UCF101). Prep decodes
    each selected render once; a render that does not decode is skipped with its reason (``truncated``:
    a PNG cut before its IEND chunk; ``not_media``: not an image at all; ``zero_byte``; ``corrupt``;
    ``unreadable``). Files that are not renders are counted in the manifest (``unrecognised``), never dropped
    silently. The cache key is the pair of views (``v001-v007``); image size, split seed and fraction are
    applied at load time.
  * Sizes: the published copy has 9,843 train and 2,468 test objects. Both papers print "9,483 training
    samples", a transposition of 9,843 (the official ModelNet40 train split); the manifest records the
    counts found.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmtool.data import Dataset, DiskSource, RootGuard
from mmtool.data.cache_checks import check_class_rows, read_checked_index, read_manifest
from mmtool.data.modelnet40_prep import FORMAT, INDEX, MODALITIES, NAME, SPLIT_DIRS, prepare, resolve_raw, view_set
from mmtool.data.registry import DATASETS, DatasetSpec, dataset_settings
from mmtool.data.settings import ModelNet40Settings
from mmtool.data.transforms import IMAGENET_MEAN, IMAGENET_STD, hflip, normalize, resize
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

EVAL_BATCH = 64


def _cache_key(cfg: DataConfig) -> str:
    # only what prep's output depends on; image_size, val_fraction and seed are applied at load time
    return "-".join(f"v{v + 1:03d}" for v in view_set(cfg).values())  # v001-v007, or v001-v007-v004 with a side


# --------------------------------------------------------------------------------------------- reading
class ViewReader:
    """Reads the view inputs (``front`` and ``rear``, and ``side`` with three views), (3, S, S) each, of a list
    of objects.

    Picklable and stateless: every image is opened when it is read, inside the process that reads it.

    Args:
        pairs: the render paths of each object, one per modality in ``modalities`` order, in sample order.
        image_size: S, the side of the square inputs.
        augment: random horizontal flips in training (Wu et al.: ``RandomHorizontalFlip``, per view).
        modalities: the views' modality names.
    """

    def __init__(self, pairs: Sequence[tuple[str, ...]], image_size: int, augment: bool = True,
                 modalities: Sequence[str] = MODALITIES) -> None:  # fmt: skip
        self.modalities = tuple(modalities)
        self.pairs = list(pairs)
        self.size = (image_size, image_size)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int, modalities: Sequence[str], train: bool, rng: np.random.Generator) -> dict[str, Any]:
        """``{modality: float32 tensor (3, S, S)}`` of object ``index``; ``rng`` drives the training flips."""
        # one child stream per view, drawn whatever is selected: a view is augmented the same alone or in a pair
        mods = self.modalities
        seeds = dict(zip(mods, rng.integers(0, 2**63, size=len(mods)), strict=True))
        paths = dict(zip(mods, self.pairs[index], strict=True))
        return {m: self._view(paths[m], train, np.random.default_rng(seeds[m])) for m in modalities}

    def _view(self, path: str, train: bool, rng: np.random.Generator) -> torch.Tensor:
        x = resize(load_rgb(Path(path)).float() / 255.0, self.size)  # (3, S, S); no-op at the renders' size
        if train and self.augment and rng.random() < 0.5:
            x = hflip(x)
        return normalize(x, IMAGENET_MEAN, IMAGENET_STD).contiguous()


def load_rgb(path: Path) -> torch.Tensor:
    """(3, H, W) uint8 of one render, converted to RGB as Wu et al. do (grey or RGBA renders alike)."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


# --------------------------------------------------------------------------------------------- loading
def carve_splits(rows: Sequence[dict], val_fraction: float, seed: int) -> dict[str, list[int]]:
    """Row positions of train/val/test: test is the test/ folders; val is Wu et al.'s rule (module docstring)
    applied to the train/ rows in index order, which is their (class, name) order."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    k = math.floor(val_fraction * len(train))
    if val_fraction > 0 and len(train) > 1:
        k = min(len(train) - 1, max(1, k))
    held = set(order[:k])
    return {
        "train": [p for j, p in enumerate(train) if j not in held],
        "val": [p for j, p in enumerate(train) if j in held],
        "test": [i for i, r in enumerate(rows) if r["split"] == "test"],
    }


def _load(cfg: DataConfig, folder: Path) -> Dataset:
    manifest = read_manifest(folder, FIX, FORMAT)
    rows = read_checked_index(folder, manifest, INDEX, FIX)
    raw = resolve_raw(cfg.raw) if cfg.raw else Path(manifest["layout"]["raw"])
    mods = tuple(view_set(cfg))
    _check_rows(rows, manifest, raw, folder, mods)
    pairs = [tuple(str(raw / row[m]) for m in mods) for row in rows]
    _check_sampled_paths(pairs, folder)
    parts = carve_splits(rows, cfg.val_fraction, cfg.seed)
    s = dataset_settings(cfg, ModelNet40Settings)
    splits = {}
    for name, positions in parts.items():
        reader = ViewReader([pairs[i] for i in positions], s.image_size, s.augment, mods)
        targets = torch.tensor([rows[i]["label"] for i in positions], dtype=torch.long)
        splits[name] = DiskSource(reader, targets, mods, EVAL_BATCH)
    dims = {m: [3, s.image_size, s.image_size] for m in mods}
    return Dataset(NAME, mods, manifest["num_classes"], dims, splits, list(manifest["class_names"]))


FIX = f"re-run `mmtool prep {NAME} --raw DIR --force`"



def _check_rows(rows: list[dict], manifest: dict, raw: Path, folder: Path, mods: Sequence[str]) -> None:
    """The manifest's n, num_classes and class_counts against the index; each row's class, label and split
    agree; every path stays inside its ``<class>/<split>/`` folder of the raw folder (links included)."""
    check_class_rows(folder, manifest, rows, INDEX, SPLIT_DIRS, FIX)
    guard, index = RootGuard(raw, FIX), folder / INDEX
    for line, row in enumerate(rows, start=1):
        for m in mods:
            guard.check(row[m], f"{index}:{line} {m}", f"{row['class']}/{row['split']}")


def _check_sampled_paths(pairs: list[tuple[str, ...]], cache: Path, samples: int = 3) -> None:
    """The renders of a few evenly spaced objects exist: catches a moved or wrong raw folder cheaply."""
    picks = sorted({round(j * (len(pairs) - 1) / max(1, samples - 1)) for j in range(samples)}) if pairs else []
    for path in (Path(p) for i in picks for p in pairs[i]):
        if not path.is_file():
            raise UserError(
                f"{path} (listed in {cache / INDEX}) does not exist: pass data.raw=DIR of the prepared copy, or {FIX}"
            )


DATASETS.register(NAME)(
    DatasetSpec(
        prepare=prepare,
        load=_load,
        cache_key=_cache_key,
        description="ModelNet40 (App. A.1; Wu et al. 2022): front (v001) and rear (v007) renders of the MVCNN "
        "12-view set, 40 classes",
        settings=ModelNet40Settings,
        data_format=FORMAT,
        raw_doc="data_prep/modelnet40.md",
    )
)
