"""UPMC Food-101 (paper 003, MLA, Sec. 4.1 and App. A.1): recipe-page images and their titles, 101 classes.

``mmtool prep food101 --raw DIR data.tokenizer=TOK`` reads the released layout of Wang et al. (ICME 2015 workshops):
``images/{train,test}/<class>/<file>.jpg`` and ``texts/{train,test}_titles.csv`` with rows
``image_file_name,text,label``, and yields two modalities: ``image`` (3, S, S) and ``text`` (token ids, 1-D, at
most ``data.max_tokens``). The layout, quirks and choices are described in ``data_prep/food101.md``. The raw layout
and prep are in :mod:`mmtool.data.food101_prep`; this module loads a prepared cache and registers the dataset.

Design notes
  * A sample is an image and the row that names it (same split, class and file name). Half pairs are skipped as
    ``missing_pair`` (an image without a row, a row without an image); rows with blank text as ``empty_text``,
    with bytes that are not UTF-8 as ``bad_encoding``; an image that does not decode with the reasons of
    :func:`~mmtool.data.modelnet40_prep.check_image`. All count against the failure budget (``--max-skip-frac``).
  * Texts are tokenized once at prep (:mod:`mmtool.data.text`): ids with [CLS]/[SEP], truncated to
    ``data.max_tokens`` (256: MLA's data/extract_token.py, max_length=256), stored in ``tokens.npy`` and
    ``offsets.npy``; a batch pads them to its longest text with the tokenizer's pad id (the manifest's
    ``tokenizer.pad_id``: 0 for BERT, ``<|endoftext|>`` for CLIP, whose id 0 is a token). The cache key is the
    tokenizer's fingerprint and ``max_tokens``. Images stay where they are (the cache holds an index) and are
    decoded at load time.
  * Images: MLA's ResNet pipeline (dataset/dataset.py TVDataset, github Cecile-hi/Multimodal-Learning-with-
    Alternating-Unimodal-Adaptation @11ae1ee): training ``RandomResizedCrop(S)`` (scale 0.08-1, ratio 3/4-4/3)
    and a horizontal flip with probability 1/2; evaluation ``Resize((S, S))``; ImageNet mean and std, or CLIP's
    with ``data.image_norm: clip`` (paper 003 Table 4's CLIP towers: recipes/_base/food101_clip.yaml). Every
    random draw comes from the sample's generator (seed, epoch, index), as everywhere in mmtool.
  * Splits: test is the official test split and is never used for selection. Validation is carved at load time
    from the train pairs as ModelNet40's (:func:`mmtool.data.modelnet40.carve_splits`: ``random.Random(seed)``
    shuffle of the train rows in index order, ``floor(val_fraction * n)`` held out). MLA's code has no
    validation split (it reads train and test only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmtool.data import Dataset, DiskSource, RootGuard
from mmtool.data.cache_checks import check_class_rows, check_sampled_files, read_checked_index, read_manifest
from mmtool.data.food101_prep import FORMAT, INDEX, MODALITIES, NAME, SPLIT_DIRS, cache_key, prepare, resolve_raw
from mmtool.data.modelnet40 import carve_splits, load_rgb
from mmtool.data.registry import DATASETS, DatasetSpec, dataset_settings
from mmtool.data.settings import Food101Settings
from mmtool.data.text import TokenStore, pad_id
from mmtool.data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, hflip, normalize, resize
from mmtool.data_config import DataConfig

EVAL_BATCH = 64
NORMS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}  # data.image_norm
FIX = f"re-run `mmtool prep {NAME} --raw DIR --force`"


def random_resized_crop(x: torch.Tensor, size: tuple[int, int], rng: np.random.Generator,
                        scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        ) -> torch.Tensor:  # fmt: skip
    """torchvision's ``RandomResizedCrop`` on a (C, H, W) image with ``rng``: up to 10 draws of an area fraction
    in ``scale`` and a log-uniform aspect ratio in ``ratio``; failing those, the central crop of the ratio
    nearest the image's; the crop resized to ``size``."""
    height, width = x.shape[-2:]
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            return resize(x[..., top : top + h, left : left + w], size)
    in_ratio = width / height
    w, h = ((width, round(width / ratio[0])) if in_ratio < ratio[0]
            else (round(height * ratio[1]), height) if in_ratio > ratio[1] else (width, height))  # fmt: skip
    top, left = (height - h) // 2, (width - w) // 2
    return resize(x[..., top : top + h, left : left + w], size)


class PairReader:
    """Reads the ``image`` (3, S, S) float32 and ``text`` (L,) int64 inputs of a list of samples.

    Picklable and stateless but for the token arrays, memory-mapped on first use in the process that reads.

    Args:
        images: image path of each sample, in sample order.
        tokens: the cache's token arrays; ``positions[i]`` is sample ``i``'s row in them.
        image_size: S.
        augment: random resized crops and flips in training.
        norm: ``imagenet`` (MLA's ResNet pipeline) or ``clip`` (CLIP's mean and std: :mod:`mmtool.models.clip`).
    """

    def __init__(self, images: Sequence[str], tokens: TokenStore, positions: Sequence[int], image_size: int,
                 augment: bool = True, norm: str = "imagenet") -> None:  # fmt: skip
        self.images, self.tokens, self.positions = list(images), tokens, list(positions)
        self.size = (image_size, image_size)
        self.augment = augment
        self.mean_std = NORMS[norm]

    def __len__(self) -> int:
        return len(self.images)

    def read(self, index: int, modalities: Sequence[str], train: bool, rng: np.random.Generator) -> dict[str, Any]:
        """``{modality: tensor}`` of sample ``index``; ``rng`` drives the image's augmentation."""
        seed = int(rng.integers(0, 2**63))  # drawn whatever is selected: the image is augmented alike alone or paired
        out: dict[str, Any] = {}
        if "image" in modalities:
            out["image"] = self._image(Path(self.images[index]), train, np.random.default_rng(seed))
        if "text" in modalities:
            out["text"] = torch.from_numpy(self.tokens.ids(self.positions[index]))
        return out

    def _image(self, path: Path, train: bool, rng: np.random.Generator) -> torch.Tensor:
        x = load_rgb(path).float() / 255.0  # (3, H, W)
        if train and self.augment:
            x = random_resized_crop(x, self.size, rng)
            if rng.random() < 0.5:
                x = hflip(x)
        else:
            x = resize(x, self.size)  # MLA TVDataset: Resize(size=(224, 224)), no crop
        return normalize(x, *self.mean_std).contiguous()


# --------------------------------------------------------------------------------------------- loading
def _load(cfg: DataConfig, folder: Path) -> Dataset:
    manifest = read_manifest(folder, FIX, FORMAT)
    rows = read_checked_index(folder, manifest, INDEX, FIX)
    raw = resolve_raw(cfg.raw) if cfg.raw else Path(manifest["layout"]["raw"])
    _check_rows(rows, manifest, raw, folder)
    tokens = TokenStore(folder)
    tokens.check(len(rows), FIX)
    check_sampled_files([raw / r["image"] for r in rows], folder / INDEX, FIX)
    s = dataset_settings(cfg, Food101Settings)
    splits = {}
    for name, positions in carve_splits(rows, cfg.val_fraction, cfg.seed).items():
        reader = PairReader([str(raw / rows[i]["image"]) for i in positions], tokens, positions, s.image_size,
                            s.augment, s.image_norm)  # fmt: skip
        targets = torch.tensor([rows[i]["label"] for i in positions], dtype=torch.long)
        splits[name] = DiskSource(reader, targets, MODALITIES, EVAL_BATCH, pad={"text": pad_id(manifest)})
    dims = {"image": [3, s.image_size, s.image_size], "text": [int(manifest["tokenizer"]["max_tokens"])]}
    return Dataset(NAME, MODALITIES, manifest["num_classes"], dims, splits, list(manifest["class_names"]))



def _check_rows(rows: list[dict], manifest: dict, raw: Path, folder: Path) -> None:
    """The manifest's counts against the index; each row's class, label and split agree; every image path stays
    inside its ``images/<split>/<class>/`` folder of the raw folder (links included)."""
    check_class_rows(folder, manifest, rows, INDEX, SPLIT_DIRS, FIX)
    guard, index = RootGuard(raw, FIX), folder / INDEX
    for line, row in enumerate(rows, start=1):
        guard.check(row["image"], f"{index}:{line} image", f"images/{row['split']}/{row['class']}")


DATASETS.register(NAME)(
    DatasetSpec(
        prepare=prepare,
        load=_load,
        cache_key=cache_key,
        description="UPMC Food-101 (paper 003, MLA): recipe-page image and title token ids, 101 classes",
        settings=Food101Settings,
        data_format=FORMAT,
        raw_doc="data_prep/food101.md",
    )
)
