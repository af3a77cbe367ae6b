"""UPMC Food-101 prep and loader: the released layout, image-title pairing, broken inputs with their reasons,
batches of images and padded token ids, the validation carve, and prep -> pretrain -> train through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmtool.data import PrepOptions, cache_dir, load_dataset, prepare
from mmtool.data.food101 import random_resized_crop
from mmtool.data.pipeline_io import read_jsonl
from mmtool.data.text import encode, load_tokenizer, tokenizer_fingerprint
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from tests.e2e.cli import run_cli
from tests.fixtures.food101 import write_food101, write_tokenizer

pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "recipes" / "_base" / "smoke" / "food101.yaml")
SIZE = 16
MEAN, STD = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
BUDGET = PrepOptions(max_skip_frac=0.5)  # the fixture holds 7 broken inputs among 20


def data_cfg(root: Path, raw: Path, tokenizer: Path, **overrides) -> DataConfig:
    fields = {"image_size": SIZE, "max_tokens": 16, "val_fraction": 0.25, "seed": 3, "tokenizer": str(tokenizer),
              **overrides}  # fmt: skip
    return DataConfig.of(name="food101", root=str(root), raw=str(raw), **fields)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("food")
    info = write_food101(base / "raw")
    (info["root"] / "images" / "train" / "ramen" / "notes.txt").write_text("not an image\n")
    return {**info, "tokenizer": write_tokenizer(base / "tokenizer")}


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> DataConfig:
    cfg = data_cfg(tmp_path_factory.mktemp("data"), raw["root"], raw["tokenizer"])
    prepare(cfg, options=BUDGET)
    return cfg


def codes(x: torch.Tensor) -> list[int]:
    """Sample codes of a (B, 3, S, S) batch of fixture images: the red level of the right half (away from the blue
    quarter, whose edge JPEG's colour subsampling blurs) rounded to the nearest code (10 levels apart)."""
    red = ((x * STD + MEAN) * 255)[:, 0, :, SIZE // 2 :].mean((1, 2))
    return (torch.round(red / 10) * 10).int().tolist()


def good(raw: dict) -> dict[str, dict]:
    return {k: v for k, v in raw["samples"].items() if k not in raw["broken"]}


# --------------------------------------------------------------------------------------------- prep output
def test_prep_indexes_the_pairs_and_skips_each_broken_input_with_its_reason(prepared, raw):
    folder = cache_dir(prepared)
    assert folder.name == f"tok-{tokenizer_fingerprint(raw['tokenizer'])}-L16"
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = read_jsonl(folder / "index.jsonl")
    assert {r["key"] for r in rows} == set(good(raw)) and manifest["n"] == len(rows) == 13
    assert {r["key"]: r["reason"] for r in read_jsonl(folder / "skipped.jsonl")} == raw["broken"]
    assert manifest["skipped_counts"] == {"bad_encoding": 1, "empty_text": 1, "missing_pair": 2, "not_media": 1,
                                          "truncated": 1, "zero_byte": 1}  # fmt: skip
    assert manifest["class_names"] == ["apple_pie", "baklava", "ramen"] and manifest["split_sizes"] == {
        "train": 8, "test": 5}
    assert manifest["csv"]["train"]["header"] and not manifest["csv"]["test"]["header"]
    assert manifest["unrecognised"] == {"count": 1, "examples": ["images/train/ramen/notes.txt"]}
    assert manifest["tokenizer"]["pad_id"] == 0 and manifest["tokenizer"]["max_tokens"] == 16
    details = {r["key"]: r["detail"] for r in read_jsonl(folder / "skipped.jsonl")}
    assert "without a row" in details["train/apple_pie/apple_pie_99.jpg"]
    assert "without its image" in details["test/baklava/baklava_77.jpg"]
    assert "\\xff" in details["train/baklava/baklava_0.jpg"]


def test_token_ids_are_the_tokenizers_of_each_title(prepared, raw):
    folder = cache_dir(prepared)
    tokens, offsets = np.load(folder / "tokens.npy"), np.load(folder / "offsets.npy")
    assert tokens.dtype == np.int32 and offsets.dtype == np.int64
    tok = load_tokenizer(str(raw["tokenizer"]))
    for i, row in enumerate(read_jsonl(folder / "index.jsonl")):
        want = encode(tok, raw["samples"][row["key"]]["text"], 16)
        assert tokens[offsets[i] : offsets[i + 1]].tolist() == want.tolist() and row["tokens"] == len(want)
    assert len(set(np.diff(offsets).tolist())) > 1  # texts of several lengths: padding has work to do


# --------------------------------------------------------------------------------------------- loading
def test_a_batch_pairs_each_image_with_its_title_padded_to_the_batch_longest(prepared, raw):
    data = load_dataset(prepared)
    assert data.input_dims == {"image": [3, SIZE, SIZE], "text": [16]} and data.num_classes == 3
    by_code = {v["code"]: v for v in good(raw).values()}
    tok = load_tokenizer(str(raw["tokenizer"]))
    test = data.splits["test"]
    batch = next(iter(test.loader(4, train=False)))
    image, text = batch.inputs["image"], batch.inputs["text"]
    assert image.dtype == torch.float32 and image.shape == (4, 3, SIZE, SIZE)
    lengths = [len(encode(tok, by_code[c]["text"], 16)) for c in codes(image)]
    assert text.dtype == torch.int64 and text.shape == (4, max(lengths))
    for row, code, length in zip(text.tolist(), codes(image), lengths, strict=True):
        assert row[:length] == encode(tok, by_code[code]["text"], 16).tolist() and set(row[length:]) <= {0}
    assert batch.target.tolist() == [by_code[c]["label"] for c in codes(image)]


def test_val_is_carved_from_train_and_test_is_the_official_split(prepared):
    data = load_dataset(prepared)
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sizes == {"train": 6, "val": 2, "test": 5}
    other = load_dataset(DataConfig.of(**{**prepared.flat(), "seed": 4}))
    assert other.splits["test"].targets().tolist() == data.splits["test"].targets().tolist()


def test_training_crops_and_flips_are_drawn_from_the_sample_seed(prepared):
    train = load_dataset(prepared).splits["train"]
    first = [b.inputs["image"] for b in train.loader(4, train=True, seed=1, epoch=1)]
    again = [b.inputs["image"] for b in train.loader(4, train=True, seed=1, epoch=1)]
    other = [b.inputs["image"] for b in train.loader(4, train=True, seed=1, epoch=2)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(torch.cat(first).sort(0).values, torch.cat(other).sort(0).values)


def test_random_resized_crop_keeps_inside_the_image_at_the_asked_size():
    x = torch.arange(40 * 60, dtype=torch.float32).reshape(1, 40, 60)
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = random_resized_crop(x, (8, 8), rng)
        assert y.shape == (1, 8, 8) and x.min() <= y.min() and y.max() <= x.max()
    strip = torch.zeros(1, 2, 200)  # no draw fits a 1:100 strip: the central crop of ratio 4/3
    assert random_resized_crop(strip, (4, 4), np.random.default_rng(0)).shape == (1, 4, 4)


# --------------------------------------------------------------------------------------------- bad input
def test_layout_and_tokenizer_errors_are_one_line(raw, tmp_path):
    with pytest.raises(UserError, match="needs a tokenizer: data.tokenizer=DIR"):
        prepare(DataConfig.of(name="food101", root=str(tmp_path), raw=str(raw["root"])))
    with pytest.raises(UserError, match="has no texts/"):
        (tmp_path / "images").mkdir()
        prepare(data_cfg(tmp_path / "data", tmp_path, raw["tokenizer"]))
    over = run_cli(tmp_path, "prep", "food101", "--raw", str(raw["root"]), "--root", "over",
                   f"data.tokenizer={raw['tokenizer']}", check=False)  # fmt: skip
    errors = [line for line in over.stderr.splitlines() if line.startswith("error:")]
    assert over.returncode == 2 and len(errors) == 1 and "too many failures" in errors[0]


# --------------------------------------------------------------------------------------------- end to end
def test_prep_pretrain_and_train_naive_through_the_command_line(raw, tmp_path):
    tok = f"data.tokenizer={raw['tokenizer']}"
    run_cli(tmp_path, "prep", "food101", "--raw", str(raw["root"]), "--root", "data/smoke", "--max-skip-frac", "0.5",
            tok, "data.max_tokens=16")  # fmt: skip
    run_cli(tmp_path, "pretrain-unimodal", "-d", "food101", "-r", SMOKE, tok, "train.epochs=1", "--run-dir", "pre")
    run_cli(tmp_path, "train", "naive", "-d", "food101", "-r", SMOKE, tok, "train.epochs=1", "--run-dir", "run")
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["dataset"] == "food101" and set(result["unimodal_head_accuracy"]) == {"image", "text"}
    assert np.asarray(result["test_confusion"]).sum() == 5
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1] and np.isfinite(metrics[0]["val_loss"])
    assert (tmp_path / "pre" / "results.json").is_file()
