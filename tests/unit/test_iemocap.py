"""IEMOCAP: the EmoEvaluation and transcription lines, the class mapping, the splits, prep on the fixture copy
(index, skip reasons, filtered labels), a batch of three modalities, and prep -> pretrain-unimodal -> train naive ->
decide through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmtool.data import PrepOptions, cache_dir, load_dataset, prepare
from mmtool.data.iemocap import split_positions
from mmtool.data.iemocap_prep import CLASSES, class_map, dialog_of, parse_evaluation, parse_transcription, session_split
from mmtool.data.pipeline_io import read_jsonl
from mmtool.data.text import encode, load_tokenizer
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from tests.e2e.cli import run_cli
from tests.fixtures.iemocap import BROKEN, FILTERED, write_iemocap
from tests.fixtures.media import class_tone_hz

pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "recipes" / "_base" / "smoke" / "iemocap.yaml")
SIZE = 16
MODS = ("audio", "visual", "text")
BUDGET = PrepOptions(max_skip_frac=0.5)  # the fixture holds 4 broken utterances among 28


def data_cfg(root: Path, info: dict, **overrides) -> DataConfig:
    fields = {"store_size": SIZE, "image_size": SIZE, "audio_seconds": 1.0, "max_tokens": 16, "val_fraction": 0.25,
              "tokenizer": str(info["tokenizer"]), **overrides}  # fmt: skip
    return DataConfig.of(name="iemocap", root=str(root), raw=str(info["root"]), **fields)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict:
    return write_iemocap(tmp_path_factory.mktemp("iemo"))


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> DataConfig:
    cfg = data_cfg(tmp_path_factory.mktemp("data"), raw)
    prepare(cfg, options=BUDGET)
    return cfg


# --------------------------------------------------------------------------------------------- parsing
def test_evaluation_lines_are_read_and_annotator_lines_are_not():
    text = ("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
            "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
            "C-E2:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n"
            "[10.01 - 11.3925]\tSes01F_impro01_M001\txxx\t[2.5000, 3.0000, 3.0000]\n")  # fmt: skip
    rows = parse_evaluation(text)
    assert rows == [{"utt": "Ses01F_impro01_F000", "start": 6.2901, "end": 8.2357, "code": "neu"},
                    {"utt": "Ses01F_impro01_M001", "start": 10.01, "end": 11.3925, "code": "xxx"}]  # fmt: skip


def test_transcription_lines_keep_the_text_after_the_times():
    text = ("Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\nM: [BREATHING]\n"
            "Ses01F_impro01_M001 [010.0100-011.3925]: Do you have your forms? Yeah: that one.\n")  # fmt: skip
    assert parse_transcription(text) == {"Ses01F_impro01_F000": "Excuse me.",
                                         "Ses01F_impro01_M001": "Do you have your forms? Yeah: that one."}  # fmt: skip
    assert dialog_of("Ses01F_script01_1_F012") == "Ses01F_script01_1"


def test_class_mapping_merges_excited_into_happy_only_when_asked():
    assert CLASSES == ("angry", "happy", "neutral", "sad")
    assert class_map(True)["exc"] == "happy" and "exc" not in class_map(False)
    assert {"fru", "sur", "xxx", "oth"}.isdisjoint(class_map(True))


def test_splits_by_session_and_at_random():
    assert [session_split(u) for u in ("Ses01F_a_F000", "Ses04M_b_M001", "Ses05F_c_F002")] == ["train", "train", "test"]
    rows = [{"split": "test" if i % 5 == 0 else "train"} for i in range(100)]
    by_session = split_positions(rows, "session", 0.25, seed=1)
    assert by_session["test"] == list(range(0, 100, 5)) and len(by_session["val"]) == 20
    drawn = [split_positions(rows, "random", 0.25, seed=s) for s in (1, 1, 2)]
    assert [len(drawn[0][k]) for k in ("train", "val", "test")] == [60, 20, 20]  # gen_iemo_txt.py's 60/20/20
    assert drawn[0] == drawn[1] and drawn[0]["test"] != drawn[2]["test"]
    assert sorted(sum(drawn[0].values(), [])) == list(range(100))


# --------------------------------------------------------------------------------------------- prep
def test_prep_indexes_the_good_utterances_and_skips_the_broken_with_reasons(prepared, raw):
    folder = cache_dir(prepared)
    rows = read_jsonl(folder / "index.jsonl")
    assert [r["key"] for r in rows] == sorted(raw["good"])
    assert all(r["label"] == raw["good"][r["key"]]["label"] and r["session"] == raw["good"][r["key"]]["session"]
               for r in rows)  # fmt: skip
    assert {r["key"]: r["reason"] for r in read_jsonl(folder / "skipped.jsonl")} == BROKEN
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["filtered_labels"] == {code: 1 for code in FILTERED.values()}
    assert manifest["class_names"] == list(CLASSES) and manifest["split_sizes"] == {"train": 16, "test": 8}
    excited = next(r for r in rows if r["emotion"] == "exc")
    assert excited["class"] == "happy" and excited["label"] == 1


def test_prep_refuses_a_folder_without_sessions_in_one_line(raw, tmp_path):
    with pytest.raises(UserError, match="no Session<n>/dialog/EmoEvaluation"):
        prepare(data_cfg(tmp_path / "data", {**raw, "root": tmp_path}), options=BUDGET)
    with pytest.raises(UserError, match="needs a tokenizer"):
        prepare(data_cfg(tmp_path / "data", raw, tokenizer=None), options=BUDGET)


def test_a_batch_holds_three_modalities_of_the_utterance(prepared, raw):
    data = load_dataset(prepared)
    assert data.modalities == ("audio", "visual", "text") and data.num_classes == 4
    assert data.input_dims == {"audio": [16000], "visual": [3, SIZE, SIZE], "text": [16]}
    assert [len(data.splits[k]) for k in ("train", "val", "test")] == [14, 4, 6]
    test = data.splits["test"]
    batch = next(iter(test.loader(6, train=False, seed=0, epoch=0)))
    audio, visual, text = (batch.inputs[m] for m in ("audio", "visual", "text"))
    assert audio.shape == (6, 16000) and audio.dtype == torch.float32
    assert visual.shape == (6, 3, SIZE, SIZE) and visual.dtype == torch.float32
    assert text.dtype == torch.int64 and text.shape[0] == 6
    rows = read_jsonl(cache_dir(prepared) / "index.jsonl")
    keys = [rows[i]["key"] for i in split_positions(rows, "random", 0.25, prepared.seed)["test"]]
    tok = load_tokenizer(str(raw["tokenizer"]))
    for j, key in enumerate(keys):  # the text is the transcript's, the audio the class tone of the utterance's label
        ids = encode(tok, raw["good"][key]["text"], 16)
        assert text[j, : len(ids)].tolist() == ids.tolist() and not text[j, len(ids) :].any()
        spectrum = np.abs(np.fft.rfft(audio[j].numpy()))
        assert abs(int(np.argmax(spectrum)) - class_tone_hz(int(batch.target[j]))) <= 2
    assert batch.target.tolist() == [raw["good"][k]["label"] for k in keys]


# --------------------------------------------------------------------------------------------- end to end
def test_prep_pretrain_train_and_decide_through_the_command_line(raw, tmp_path):
    tok = f"data.tokenizer={raw['tokenizer']}"
    # prep-time sizes of recipes/_base/smoke/iemocap.yaml, so the stages find the cache
    run_cli(tmp_path, "prep", "iemocap", "--raw", str(raw["root"]), "--root", "data/smoke", "--max-skip-frac", "0.5",
            tok, "data.store_size=32", "data.audio_seconds=1.0", "data.max_tokens=16")  # fmt: skip
    run_cli(tmp_path, "pretrain-unimodal", "-d", "iemocap", "-r", SMOKE, tok, "train.epochs=1", "--run-dir", "pre")
    pre = json.loads((tmp_path / "pre" / "results.json").read_text())
    assert sorted(pre["modalities"]) == ["audio", "text", "visual"]
    run_cli(tmp_path, "train", "naive", "-d", "iemocap", "-r", SMOKE, tok, "train.epochs=1", "--run-dir", "run")
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(result["unimodal_head_accuracy"]) == {"audio", "visual", "text"}
    assert np.asarray(result["test_confusion"]).sum() == 6
    decided = json.loads(run_cli(tmp_path, "decide", "-d", "iemocap", "-r", SMOKE, tok, "--teachers", "pre",
                                 "--run-dir", "dec").stdout)  # fmt: skip
    assert sorted(decided["unimodal_accuracy"]) == sorted(decided["split_classifier_accuracy"]) == sorted(MODS)
    for m in MODS:  # decide's uni-modal accuracies are those of the pretrain run's models on the same test split
        assert decided["unimodal_accuracy"][m] == pytest.approx(pre["modalities"][m]["test_accuracy"], abs=1e-3)
