"""The prep pipeline: skips with reasons, the failure budget, resume, and a decoder that kills its worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmtool.data.pipeline import PrepItem, SkipSample, clean_detail, read_jsonl, run_pipeline, save_npy
from mmtool.errors import UserError


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
    with pytest.raises(UserError, match=r"too many failures \(2/10\); see .*skipped.jsonl"):
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
