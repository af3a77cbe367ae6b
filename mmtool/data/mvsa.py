"""MVSA-Single (paper 003, MLA, Sec. 4.1; Niu et al., MMM 2016): a tweet's image and text, 3 sentiment classes.

``mmtool prep mvsa --raw DIR data.tokenizer=TOK`` reads the released layout: ``data/<id>.jpg`` and ``data/<id>.txt``
(one tweet per file) and ``labelResultAll.txt`` (header ``ID<TAB>text,image``, then ``<id><TAB><text label>,<image
label>``, labels positive/neutral/negative), and yields two modalities: ``image`` (3, S, S) and ``text`` (token ids,
1-D, at most ``data.max_tokens``). Layout, quirks and choices: ``data_prep/mvsa.md``. The raw layout and prep are in
:mod:`mmtool.data.mvsa_prep`; this module loads a prepared cache and registers the dataset.

Design notes
  * Labels: each pair was annotated once for its text and once for its image. One label per pair follows the rule
    common in the MVSA literature (e.g. Xu & Mao, CIKM 2017); the split files MLA and QMF read carry one label per
    pair (QMF's ``datasets/MVSA_Single/{train,dev,test}.jsonl``, github QingyangZhang/QMF @e608059): two equal
    labels are kept; a neutral label gives way to the other one; a positive/negative pair is dropped. Dropped
    pairs are *filtered* (``filtered.jsonl``, manifest ``filtered_counts``, reason ``conflicting_labels``), not
    broken: they do not count against the failure budget. Class ids are the sorted names (negative, neutral,
    positive), as MLA's dataset/dataset.py sorts them (github Cecile-hi/Multimodal-Learning-with-Alternating-
    Unimodal-Adaptation @11ae1ee).
  * Broken inputs, each a skip reason counting against ``--max-skip-frac``: ``missing_pair`` (a label row without
    its .jpg or .txt, or files without a label row), ``bad_label`` (a row naming another class), ``bad_encoding``
    (a tweet that is neither UTF-8 nor cp1252, or holds a NUL byte), ``empty_text``, and the image reasons of
    :func:`~mmtool.data.food101_prep.check_photo` (``zero_byte``, ``not_media``, ``truncated``, ``corrupt``,
    ``unreadable``). Tweets of the release are often not UTF-8: cp1252 (a superset of latin-1's printable range)
    is the fallback, and each row records which one read it.
  * Split: MVSA has no official split. MLA and QMF use one random 8:1:1 train/dev/test split (QMF's jsonl files;
    MLA reads its train and test files only). Ours is drawn at load time from ``data.seed`` with
    :func:`~mmtool.data.cache_arrays.split_indices` (test: ``data.test_fraction`` of all kept pairs, val:
    ``data.val_fraction`` of the rest; the recipe's 0.1 and 1/9 give 8:1:1). Another seed, another split; the
    cache does not depend on it.
  * Text and images as Food-101's (:mod:`mmtool.data.food101`, whose :class:`~mmtool.data.food101.PairReader`
    reads the pairs): ids with [CLS]/[SEP] cached at prep, padded per batch; images decoded at load time with
    MLA's TVDataset pipeline, which MLA's code uses for MVSA as for its other image sets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmtool.data import Dataset, DiskSource, RootGuard, check_labels
from mmtool.data.cache_arrays import split_indices
from mmtool.data.cache_checks import check_sampled_files, read_checked_index, read_manifest
from mmtool.data.food101 import EVAL_BATCH, PairReader
from mmtool.data.mvsa_prep import CLASSES, DATA, FORMAT, INDEX, MODALITIES, NAME, cache_key, prepare, resolve_raw
from mmtool.data.registry import DATASETS, DatasetSpec, dataset_settings
from mmtool.data.settings import MVSASettings
from mmtool.data.text import TokenStore
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

FIX = f"re-run `mmtool prep {NAME} --raw DIR --force`"


def split_rows(n: int, seed: int, test_fraction: float, val_fraction: float) -> dict[str, list[int]]:
    """Index positions of train/val/test (see the module docstring).

    Raises:
        UserError: the fractions leave train or test empty.
    """
    parts = {k: v.tolist() for k, v in split_indices(n, seed, test_fraction, val_fraction).items()}
    empty = [k for k in ("train", "test") if not parts[k]]
    if empty:
        raise UserError(f"{NAME}: data.test_fraction={test_fraction} and data.val_fraction={val_fraction} of {n} "
                        f"pairs leave {' and '.join(empty)} empty")  # fmt: skip
    return parts


def _load(cfg: DataConfig, folder: Path) -> Dataset:
    manifest = read_manifest(folder, FIX)
    if manifest.get("format") != FORMAT:
        raise UserError(f"{folder / 'manifest.json'} is in data format {manifest.get('format')}, this mmtool reads "
                        f"format {FORMAT} ({FIX})")  # fmt: skip
    rows = read_checked_index(folder, manifest, INDEX, FIX)
    raw = resolve_raw(cfg.raw) if cfg.raw else Path(manifest["layout"]["raw"])
    _check_rows(rows, manifest, raw, folder)
    tokens = TokenStore(folder)
    tokens.check(len(rows), FIX)
    check_sampled_files([raw / r[m] for r in rows for m in ("image", "text")], folder / INDEX, FIX)
    s = dataset_settings(cfg, MVSASettings)
    splits = {}
    for name, positions in split_rows(len(rows), cfg.seed, cfg.test_fraction, cfg.val_fraction).items():
        reader = PairReader([str(raw / rows[i]["image"]) for i in positions], tokens, positions, s.image_size,
                            s.augment, s.image_norm)  # fmt: skip
        targets = torch.tensor([rows[i]["label"] for i in positions], dtype=torch.long)
        splits[name] = DiskSource(reader, targets, MODALITIES, EVAL_BATCH)
    dims = {"image": [3, s.image_size, s.image_size], "text": [int(manifest["tokenizer"]["max_tokens"])]}
    return Dataset(NAME, MODALITIES, len(CLASSES), dims, splits, list(CLASSES))


def _check_rows(rows: list[dict], manifest: dict, raw: Path, folder: Path) -> None:
    """The manifest's counts and class names against the index; each row's class and label agree; every path stays
    inside the raw folder's ``data/`` (links included)."""
    path, index = folder / "manifest.json", folder / INDEX
    if manifest.get("class_names") != list(CLASSES):
        raise UserError(f"{path}: field 'class_names' is {manifest.get('class_names')!r}, not {list(CLASSES)} ({FIX})")
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    check_labels(path, manifest, labels, FIX, str(index), len(CLASSES), "MVSA's three sentiments")
    guard = RootGuard(raw, FIX)
    for line, row in enumerate(rows, start=1):
        if CLASSES[row["label"]] != row.get("class"):
            raise UserError(f"{index}:{line}: class {row.get('class')!r} and label {row['label']} do not agree "
                            f"({FIX})")  # fmt: skip
        for part in ("image", "text"):
            guard.check(row[part], f"{index}:{line} {part}", DATA)


DATASETS.register(NAME)(
    DatasetSpec(
        prepare=prepare,
        load=_load,
        cache_key=cache_key,
        description="MVSA-Single (paper 003, MLA): tweet image and text token ids, 3 sentiments, agreement-filtered",
        settings=MVSASettings,
        data_format=FORMAT,
        raw_doc="data_prep/mvsa.md",
    )
)
