"""The prep pipeline: skips with reasons, the failure budget, resume, and a decoder that kills its worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmtool.data.pipeline import clean_detail, run_pipeline
from mmtool.data.pipeline_io import PrepItem, SkipSample, read_jsonl, save_npy
from mmtool.errors import PrepInterrupted, UserError


def _process(item: PrepItem, out: Path) -> dict:
    """Writes one .npy per item; ``meta`` says how this item fails, if it does."""
    import numpy as np

    fail = item.meta.get("fail")
    if fail == "crash":
        os._exit(11)  # a decoder segfault takes its worker process down
    if fail == "raise":
        raise ValueError(f"bad header in {out}/x.mp4 at 0x7f00ff [12:34:56]")
    if fail:
        raise SkipSample(fail, "by design")
    return {"sha256": save_npy(out / f"{item.key}.npy", np.full(3, item.label)), "label": item.label}


def _items(n: int, **fails: str) -> list[PrepItem]:
    return [PrepItem(f"k{i:02d}", "train", i % 3, (f"raw/{i}",), {"fail": fails.get(f"k{i:02d}")}) for i in range(n)]


def test_skips_are_recorded_with_reasons_and_sorted(tmp_path):
    items = _items(10, k07="no_audio", k02="zero_byte", k05="raise")
    result = run_pipeline(items, _process, tmp_path, max_skip_frac=0.3)
    assert [r["key"] for r in result.records] == [f"k{i:02d}" for i in (0, 1, 3, 4, 6, 8, 9)]
    skipped = read_jsonl(tmp_path / "skipped.jsonl")
    assert [(s["key"], s["reason"]) for s in skipped] == [("k02", "zero_byte"), ("k05", "error"), ("k07", "no_audio")]
    assert skipped[1]["detail"] == "ValueError: bad header in x.mp4 at 0x…"  # nothing that changes per run


def test_budget_counts_broken_items_not_missing_ones(tmp_path):
    items = _items(10, k01="corrupt", k02="truncated")
    missing = [{"key": f"gone{i}"} for i in range(5)]
    run_pipeline(items, _process, tmp_path / "ok", max_skip_frac=0.2, missing=missing)  # 2/10 broken: allowed
    assert len(read_jsonl(tmp_path / "ok" / "missing.jsonl")) == 5
    with pytest.raises(UserError, match=r"too many failures: 2 of the first 3 items skipped \(10 listed; prep "
                       r"stopped there.*see .*skipped.jsonl"):
        run_pipeline(items, _process, tmp_path / "over", max_skip_frac=0.1, missing=missing)


def test_journal_resumes_without_redoing_items(tmp_path):
    items = _items(6)
    first = run_pipeline(items[:4], _process, tmp_path)  # as if a prep of 6 was killed after 4 items
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.npy")}
    result = run_pipeline(items, _process, tmp_path)
    assert result.reused == 4 and len(result.records) == 6
    assert {p: (tmp_path / p).stat().st_mtime_ns for p in stamps} == stamps
    assert result.records[:4] == first.records


def test_a_crashing_decoder_is_isolated_and_skipped(tmp_path):
    """One file that kills its worker (a decoder segfault) costs that file, not the prep."""
    items = _items(8, k03="crash")
    result = run_pipeline(items, _process, tmp_path, workers=2, max_skip_frac=0.2)
    assert len(result.records) == 7
    (crashed,) = read_jsonl(tmp_path / "skipped.jsonl")
    assert crashed["key"] == "k03" and crashed["reason"] == "error" and "crashed" in crashed["detail"]


def test_clean_detail_keeps_the_message_and_drops_what_varies():
    message = "[09:10:11] /tmp/abc/def/clip.mp4: moov atom not found\nmore"
    assert clean_detail(message) == "clip.mp4: moov atom not found"


# ------------------------------------------------------------------------- journal keyed by what items read
def _file_items(raw: Path, labels: dict[str, int], splits: dict[str, str] | None = None) -> list[PrepItem]:
    """One item per raw file ``raw/<key>.bin``, its label and split as a list would give them."""
    splits = splits or {}
    return [PrepItem(k, splits.get(k, "train"), labels[k], (f"{k}.bin",), {}) for k in sorted(labels)]


def _read_process(item: PrepItem, out: Path) -> dict:
    """Records what the raw file held when it was prepared (so a stale reuse would show)."""
    return {"label": item.label, "split": item.split, "held": Path(item.meta["raw"], item.sources[0]).read_text()}


def _raw_files(raw: Path, keys: list[str]) -> None:
    raw.mkdir(exist_ok=True)
    for k in keys:
        (raw / f"{k}.bin").write_text(f"data of {k}")


def _with_raw(items: list[PrepItem], raw: Path) -> list[PrepItem]:
    return [PrepItem(i.key, i.split, i.label, i.sources, {"raw": str(raw)}) for i in items]


def test_journal_redoes_items_whose_list_row_or_file_changed(tmp_path):
    """An interrupted prep's entries are reused only for items made from the same list row and the same
    files: another label or split in the list, or a file rewritten (even with its size and modification
    time put back), is redone."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    keys = ["a", "b", "c", "d", "e"]
    _raw_files(raw, keys)
    labels = dict.fromkeys(keys, 0)
    run_pipeline(_with_raw(_file_items(raw, labels), raw)[:4], _read_process, out, raw=raw)  # killed after 4
    labels["a"] = 2  # the list now gives 'a' another label ...
    splits = {"b": "test"}  # ... 'b' another split ...
    st = (raw / "c.bin").stat()
    (raw / "c.bin").write_text("data of C")  # ... and 'c' was re-downloaded, same size, time put back
    os.utime(raw / "c.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    result = run_pipeline(_with_raw(_file_items(raw, labels, splits), raw), _read_process, out, raw=raw)
    assert result.reused == 1  # only 'd' is unchanged
    got = {r["key"]: (r["label"], r["split"], r["held"]) for r in result.records}
    assert got == {"a": (2, "train", "data of a"), "b": (0, "test", "data of b"), "c": (0, "train", "data of C"),
                   "d": (0, "train", "data of d"), "e": (0, "train", "data of e")}  # fmt: skip


def test_journal_of_another_raw_folder_is_not_reused(tmp_path):
    first, second, out = tmp_path / "one", tmp_path / "two", tmp_path / "out"
    _raw_files(first, ["a", "b"])
    _raw_files(second, ["a", "b"])
    labels = {"a": 0, "b": 1}
    run_pipeline(_with_raw(_file_items(first, labels), first), _read_process, out, raw=first)
    result = run_pipeline(_with_raw(_file_items(second, labels), second), _read_process, out, raw=second)
    assert result.reused == 0


def test_too_many_missing_fails_before_anything_is_decoded(tmp_path):
    items = _items(4)
    missing = [{"key": f"gone{i}"} for i in range(5)]  # 5 of 9 listed: over half
    with pytest.raises(UserError, match=r"5 of 9 listed samples are missing on disk \(56%; allowed: 50%, "
                                        r"--max-missing-frac\); see .*missing.jsonl"):
        run_pipeline(items, _process, tmp_path, missing=missing, max_missing_frac=0.5)
    assert not list(tmp_path.glob("*.npy")) and len(read_jsonl(tmp_path / "missing.jsonl")) == 5
    run_pipeline(items, _process, tmp_path / "ok", missing=missing, max_missing_frac=0.6)


def test_a_prep_without_a_usable_sample_fails(tmp_path):
    with pytest.raises(UserError, match=r"no usable sample: 0 listed on disk, 0 skipped, 3 missing"):
        run_pipeline([], _process, tmp_path, missing=[{"key": f"gone{i}"} for i in range(3)])
    with pytest.raises(UserError, match=r"no usable sample: 2 listed on disk, 2 skipped, 0 missing"):
        run_pipeline(_items(2, k00="corrupt", k01="corrupt"), _process, tmp_path, max_skip_frac=1.0)


@pytest.mark.parametrize("signal_name", ["sigterm", "sigint"])
def test_a_signal_stops_the_prep_between_items_and_keeps_the_journal(tmp_path, monkeypatch, signal_name):
    """SIGTERM / SIGINT after the 3rd item: the prep stops there (a flag checked between items, which no
    decoder can swallow), says how far it got, and a re-run reuses the 3 items."""
    import signal

    from mmtool import faults

    faults._counts.clear()  # the fault counters of this process start again (as in a new command)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setenv("MMTOOL_FAULT", f"prep_item:3:{signal_name}")
    with pytest.raises(PrepInterrupted, match=r"interrupted after 3/6 items, which are kept \(stopped by SIG") as info:
        run_pipeline(_items(6), _process, tmp_path)
    assert info.value.exit_code == (143 if signal_name == "sigterm" else 130)
    assert {s: signal.getsignal(s) for s in before} == before  # the prep's handlers are gone again
    monkeypatch.delenv("MMTOOL_FAULT")
    assert run_pipeline(_items(6), _process, tmp_path).reused == 3
