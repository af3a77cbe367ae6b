"""MVSA-Single prep and loader: the released layout, the label-agreement rule, tweets in UTF-8 or cp1252, broken and
filtered inputs with their reasons, the seeded 8:1:1 split, batches, and prep -> pretrain -> train through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmtool.data import PrepOptions, cache_dir, load_dataset, prepare
from mmtool.data.mvsa import split_rows
from mmtool.data.mvsa_prep import combine_labels
from mmtool.data.pipeline_io import read_jsonl
from mmtool.data.text import encode, load_tokenizer, tokenizer_fingerprint
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from tests.e2e.cli import run_cli
from tests.fixtures.mvsa import GOOD, write_mvsa
from tests.unit.test_food101 import SIZE, codes

pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "recipes" / "_base" / "smoke" / "mvsa.yaml")
BUDGET = PrepOptions(max_skip_frac=0.5)  # the fixture holds 9 broken inputs among 21 items


def data_cfg(root: Path, raw: Path, tokenizer: Path, **overrides) -> DataConfig:
    fields = {"image_size": SIZE, "max_tokens": 16, "test_fraction": 0.25, "val_fraction": 0.25, "seed": 3,
              "tokenizer": str(tokenizer), **overrides}  # fmt: skip
    return DataConfig.of(name="mvsa", root=str(root), raw=str(raw), **fields)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("mvsa")
    return write_mvsa(base / "raw", base / "tokenizer")


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> DataConfig:
    cfg = data_cfg(tmp_path_factory.mktemp("data"), raw["root"], raw["tokenizer"])
    prepare(cfg, options=BUDGET)
    return cfg


# --------------------------------------------------------------------------------------------- label rule
@pytest.mark.parametrize(
    "text, image, want",
    [("positive", "positive", "positive"), ("negative", "negative", "negative"), ("neutral", "neutral", "neutral"),
     ("neutral", "positive", "positive"), ("positive", "neutral", "positive"), ("neutral", "negative", "negative"),
     ("negative", "neutral", "negative"), ("positive", "negative", None), ("negative", "positive", None)],
)  # fmt: skip
def test_label_rule_keeps_agreement_lets_neutral_give_way_and_drops_conflicts(text, image, want):
    assert combine_labels(text, image) == want


# --------------------------------------------------------------------------------------------- prep output
def test_prep_indexes_the_kept_pairs_and_gives_each_broken_or_filtered_input_its_reason(prepared, raw):
    folder = cache_dir(prepared)
    assert folder.name == f"tok-{tokenizer_fingerprint(raw['tokenizer'])}-L16"
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = read_jsonl(folder / "index.jsonl")
    assert [r["key"] for r in rows] == [str(k) for k in sorted(GOOD)] and manifest["n"] == 12
    assert [r["label"] for r in rows] == [raw["samples"][r["key"]]["label"] for r in rows]
    assert {r["key"]: r["reason"] for r in read_jsonl(folder / "skipped.jsonl")} == raw["broken"]
    filtered = read_jsonl(folder / "filtered.jsonl")
    assert {f["key"]: (f["text_label"], f["image_label"]) for f in filtered} == raw["filtered"]
    assert {f["reason"] for f in filtered} == {"conflicting_labels"}
    assert manifest["filtered_counts"] == {"conflicting_labels": 2}
    assert manifest["skipped_counts"] == {"bad_encoding": 1, "bad_label": 1, "empty_text": 1, "missing_pair": 3,
                                          "not_media": 1, "truncated": 1, "zero_byte": 1}  # fmt: skip
    assert manifest["class_names"] == ["negative", "neutral", "positive"] and manifest["class_counts"] == [4, 3, 5]
    assert manifest["labels"]["header"] and manifest["labels"]["rows"] == 22
    assert manifest["labels"]["duplicates"]["examples"] == ["1"] and manifest["labels"]["malformed"]["count"] == 1
    assert manifest["unrecognised"]["examples"] == ["data/notes.md"] and manifest["hidden_files"] == 1
    assert manifest["text_encodings"] == {"cp1252": 1, "utf-8": 11}
    details = {r["key"]: r["detail"] for r in read_jsonl(folder / "skipped.jsonl")}
    assert "without data/20.txt" in details["20"] and "without a row" in details["21"]
    assert "data/23.jpg and data/23.txt" in details["23"] and "'positive,happy'" in details["22"]


def test_the_failure_budget_counts_broken_inputs_not_filtered_pairs(raw, tmp_path):
    # 9 broken of 21 items: 43% (of 23 ids, filtered ones counted, it would be 39%)
    with pytest.raises(UserError, match="9 of 21 items skipped"):
        prepare(data_cfg(tmp_path, raw["root"], raw["tokenizer"]), options=PrepOptions(max_skip_frac=0.4))
    _, manifest = prepare(data_cfg(tmp_path / "ok", raw["root"], raw["tokenizer"]), options=PrepOptions(0, 0.43))
    assert manifest["run"]["items"] == 21 and manifest["filtered_counts"] == {"conflicting_labels": 2}


def test_tweets_are_read_as_utf8_or_cp1252_and_tokenized_once(prepared, raw):
    folder = cache_dir(prepared)
    tokens, offsets = np.load(folder / "tokens.npy"), np.load(folder / "offsets.npy")
    tok = load_tokenizer(str(raw["tokenizer"]))
    rows = read_jsonl(folder / "index.jsonl")
    for i, row in enumerate(rows):
        want = encode(tok, raw["samples"][row["key"]]["text"], 16)
        assert tokens[offsets[i] : offsets[i + 1]].tolist() == want.tolist() and row["tokens"] == len(want)
    by_key = {r["key"]: r for r in rows}
    assert (by_key["9"]["encoding"], by_key["10"]["encoding"]) == ("cp1252", "utf-8")
    cafe = tok.convert_tokens_to_ids("cafe")  # "café" read right from either encoding (BERT strips the accent)
    for key in ("9", "10"):
        i = [r["key"] for r in rows].index(key)
        assert cafe in tokens[offsets[i] : offsets[i + 1]].tolist()


# --------------------------------------------------------------------------------------------- split and batches
def test_split_is_8_1_1_and_a_function_of_the_seed():
    for n, sizes in ((4511, (3609, 451, 451)), (1000, (800, 100, 100))):
        parts = split_rows(n, 0, 0.1, 1 / 9)
        assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == sizes
        assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(n))
        assert split_rows(n, 0, 0.1, 1 / 9) == parts and split_rows(n, 1, 0.1, 1 / 9)["test"] != parts["test"]
    with pytest.raises(UserError, match="leave test empty"):
        split_rows(4, 0, 0.1, 0.1)


def test_loaded_splits_follow_data_seed(prepared, raw):
    def members(cfg: DataConfig) -> dict[str, list[int]]:  # each split's samples, by their image codes
        data = load_dataset(cfg)
        return {k: sorted(c for b in v.loader(8, train=False) for c in codes(b.inputs["image"]))
                for k, v in data.splits.items()}  # fmt: skip

    first = members(prepared)
    assert {k: len(v) for k, v in first.items()} == {"train": 7, "val": 2, "test": 3}
    assert sorted(sum(first.values(), [])) == sorted(v["code"] for v in raw["samples"].values())
    assert members(prepared) == first and members(prepared.updated(seed=4)) != first


def test_a_batch_pairs_each_image_with_its_tweet_padded_to_the_batch_longest(prepared, raw):
    data = load_dataset(prepared)
    assert data.input_dims == {"image": [3, SIZE, SIZE], "text": [16]} and data.num_classes == 3
    by_code = {v["code"]: v for v in raw["samples"].values()}
    tok = load_tokenizer(str(raw["tokenizer"]))
    batch = next(iter(data.splits["train"].loader(4, train=False)))
    image, text = batch.inputs["image"], batch.inputs["text"]
    assert image.dtype == torch.float32 and image.shape == (4, 3, SIZE, SIZE)
    lengths = [len(encode(tok, by_code[c]["text"], 16)) for c in codes(image)]
    assert text.dtype == torch.int64 and text.shape == (4, max(lengths))
    for row, code, length in zip(text.tolist(), codes(image), lengths, strict=True):
        assert row[:length] == encode(tok, by_code[code]["text"], 16).tolist() and set(row[length:]) <= {0}
    assert batch.target.dtype == torch.int64 and batch.target.tolist() == [by_code[c]["label"] for c in codes(image)]


# --------------------------------------------------------------------------------------------- bad input
def test_layout_and_key_errors_are_one_line(raw, tmp_path):
    with pytest.raises(UserError, match="has no data/ or labelResultAll.txt"):
        prepare(data_cfg(tmp_path / "cache", tmp_path, raw["tokenizer"]))
    with pytest.raises(UserError, match="key 'data.n': mvsa uses every pair"):
        prepare(data_cfg(tmp_path / "data", raw["root"], raw["tokenizer"], n=10))
    with pytest.raises(UserError, match="needs a tokenizer"):
        prepare(DataConfig.of(name="mvsa", root=str(tmp_path), raw=str(raw["root"])))


# --------------------------------------------------------------------------------------------- end to end
def test_prep_pretrain_and_train_naive_through_the_command_line(raw, tmp_path):
    tok = f"data.tokenizer={raw['tokenizer']}"
    run_cli(tmp_path, "prep", "mvsa", "--raw", str(raw["root"]), "--root", "data/smoke", "--max-skip-frac", "0.5", tok,
            "data.max_tokens=16")  # fmt: skip
    run_cli(tmp_path, "pretrain-unimodal", "-d", "mvsa", "-r", SMOKE, tok, "train.epochs=1", "--run-dir", "pre")
    run_cli(tmp_path, "train", "naive", "-d", "mvsa", "-r", SMOKE, tok, "train.epochs=1", "--run-dir", "run")
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["dataset"] == "mvsa" and set(result["unimodal_head_accuracy"]) == {"image", "text"}
    assert np.asarray(result["test_confusion"]).shape == (3, 3) and np.asarray(result["test_confusion"]).sum() == 3
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1] and np.isfinite(metrics[0]["val_loss"])
    assert (tmp_path / "pre" / "results.json").is_file()
