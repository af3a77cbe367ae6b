"""`mmtool prep` under faults, through the real command line: a killed prep resumed after its raw data changed,
preps with nothing usable, and signals (no worker, fork server or resource tracker outlives the command)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from mmtool.data.pipeline_io import read_jsonl
from tests.e2e.cli import base_env, messages, run_cli
from tests.fixtures.files import tree
from tests.fixtures.media import write_vggsound
from tests.fixtures.modelnet40 import write_modelnet40

SETTINGS = ("data.store_size=32", "data.clip_frames=4", "data.audio_seconds=1.0")
CACHE = "s32-t4-sr16000-a1"  # the cache folder those settings give


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """12 VGG-Sound clips (3 classes x 3 train + 1 test)."""
    root = tmp_path_factory.mktemp("vgg") / "raw"
    write_vggsound(root, classes=("dog barking", "playing piano", "rain"), train_per_class=3, test_per_class=1,
                   frames=12, size=(32, 40), seconds=1.5, name_variants=False)  # fmt: skip
    return root


def _prep(cwd: Path, raw: Path, root: str, *extra: str, env: dict | None = None, process: bool = False,
          check: bool = True):  # fmt: skip
    return run_cli(cwd, "prep", "vggsound", "--raw", str(raw), "--root", root, *SETTINGS, *extra, env=env,
                   process=process, check=check)  # fmt: skip


def _rows(csv_path: Path) -> list[list[str]]:
    with open(csv_path, newline="") as fh:
        return list(csv.reader(fh))


def _write_rows(csv_path: Path, rows: list[list[str]]) -> None:
    with open(csv_path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _index(folder: Path) -> dict[str, tuple[int, str]]:
    return {r["key"]: (r["label"], r["split"]) for r in read_jsonl(folder / "index.jsonl")}


def test_a_killed_prep_resumed_after_the_list_changed_redoes_what_changed(raw, tmp_path):
    """Kill a prep after 3 clips, give those clips another label and split in the csv, re-run: the cache
    holds the new labels and splits (the clean prep of the edited csv, byte for byte), and only the edited
    clips are decoded again."""
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    killed = _prep(tmp_path, copy, "data", env={"MMTOOL_FAULT": "prep_item:3:kill"}, process=True, check=False)
    assert killed.returncode == 137
    folder = tmp_path / "data" / "vggsound" / CACHE
    done = [e["record"] for e in read_jsonl(folder / ".journal.jsonl")]
    assert len(done) == 3
    edited = {(r["youtube_id"], str(r["start"])) for r in done[:2]}  # two of the three finished clips change
    rows = _rows(copy / "vggsound.csv")
    for row in rows:
        if (row[0], row[1]) in edited:
            row[2] = "rain" if row[2] != "rain" else "dog barking"
            row[3] = "test" if row[3] == "train" else "train"
    _write_rows(copy / "vggsound.csv", rows)
    resumed = json.loads(_prep(tmp_path, copy, "data").stdout)["manifest"]
    assert (resumed["run"]["reused"], resumed["run"]["decoded"]) == (1, 11)
    clean = tmp_path / "clean" / "vggsound" / CACHE
    _prep(tmp_path, copy, "clean")
    before = {r["key"]: (r["label"], r["split"]) for r in done}
    after = _index(folder)
    assert sum(after[k] != v for k, v in before.items()) == 2  # the two edited clips carry the csv's new rows
    assert after == _index(clean) and tree(folder) == tree(clean)


def test_an_unfinished_cache_refuses_another_raw_folder(raw, tmp_path):
    killed = _prep(tmp_path, raw, "data", env={"MMTOOL_FAULT": "prep_item:2:kill"}, process=True, check=False)
    assert killed.returncode == 137
    other = tmp_path / "other"
    shutil.copytree(raw, other)
    refused = _prep(tmp_path, other, "data", check=False)
    assert refused.returncode == 2
    (line,) = messages(refused.stderr)
    assert f"holds an unfinished prep of {raw.resolve()}, not {other.resolve()}" in line and "--force" in line
    forced = json.loads(_prep(tmp_path, other, "data", "--force").stdout)["manifest"]
    assert forced["run"]["reused"] == 0 and forced["raw"] == str(other.resolve())


def test_a_csv_whose_clips_are_all_missing_fails_in_one_line(raw, tmp_path):
    (tmp_path / "empty").mkdir()
    shutil.copy(raw / "vggsound.csv", tmp_path / "empty" / "vggsound.csv")  # the list without its clips
    failed = _prep(tmp_path, tmp_path / "empty", "data", check=False)
    assert failed.returncode == 2
    (line,) = messages(failed.stderr)
    assert line.startswith("error: 12 of 12 listed samples are missing on disk (100%; allowed: 50%")
    anyway = _prep(tmp_path, tmp_path / "empty", "data", "--max-missing-frac", "1", check=False)
    assert anyway.returncode == 2
    (line,) = messages(anyway.stderr)
    assert "no usable sample: 0 listed on disk, 0 skipped, 12 missing" in line
    assert not list((tmp_path / "data").rglob("manifest.json"))


def test_a_wrong_modelnet40_layout_fails_in_one_line(tmp_path):
    info = write_modelnet40(tmp_path / "raw", classes=("bed", "chair"), train_objects=1, test_objects=1, views=2)
    flat = tmp_path / "flat"  # every render in one folder: not the published class/split layout
    flat.mkdir()
    for png in Path(info["root"]).rglob("*.png"):
        shutil.copy(png, flat / png.name)
    failed = run_cli(tmp_path, "prep", "modelnet40", "--raw", str(flat), "--root", "data", check=False)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert len(messages(failed.stderr)) == 1


REAPER = """
import ctypes, json, os, signal, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: the command's orphans become our children
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
def left(*_):  # still alive 60 s after the command ended: report them
    ours = str(os.getpid())
    kids = [p for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/stat").read().split()[3] == ours]
    names = [open(f"/proc/{k}/cmdline").read() for k in kids]
    print(json.dumps({"rc": proc.returncode, "stderr": proc.stderr, "left": names}))
    os._exit(0)
signal.signal(signal.SIGALRM, left)
signal.alarm(60)
try:
    while True:
        os.waitpid(-1, 0)  # blocks until the next descendant ends
except ChildProcessError:  # none left
    pass
signal.alarm(0)
print(json.dumps({"rc": proc.returncode, "stderr": proc.stderr, "left": []}))
"""


@pytest.mark.parametrize(("fault", "code"), [("kill", 137), ("sigterm", 143), ("sigint", 130)])
def test_no_helper_process_outlives_an_interrupted_prep(raw, tmp_path, fault, code):
    """`prep --workers 2` killed (kill -9), stopped by SIGTERM or by Ctrl-C after its 3rd clip: every process
    it started (workers, fork server, resource tracker) ends with it; a signal says how to continue."""
    import os
    import subprocess

    cmd = [sys.executable, "-m", "mmtool.cli", "prep", "vggsound", "--raw", str(raw), "--root", "data", "--workers",
           "2", *SETTINGS]  # fmt: skip
    env = {**os.environ, **base_env(), "MMTOOL_FAULT": f"prep_item:3:{fault}"}
    done = subprocess.run([sys.executable, "-c", REAPER, *cmd], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=True)  # fmt: skip
    report = json.loads(done.stdout)
    assert report["rc"] == code and report["left"] == []
    if fault != "kill":
        last = messages(report["stderr"])[-1]
        assert last.startswith("prep vggsound: interrupted after 3/12 items, which are kept (stopped by SIG")
        assert last.endswith("run the same command again to continue")
        resumed = json.loads(_prep(tmp_path, raw, "data").stdout)["manifest"]["run"]
        assert resumed["reused"] == 3


def test_a_shipped_recipe_runs_with_one_command_on_a_fresh_checkout(tmp_path):
    """`mmtool train naive -d tiny` with nothing prepared: the embedded dataset is generated on first use,
    said in one line, and a second command finds it ready."""
    first = run_cli(tmp_path, "train", "naive", "-d", "tiny", "train.epochs=2", "--run-dir", "a")
    said = [line for line in messages(first.stderr) if "on first use" in line]
    assert len(said) == 1 and "mmtool prep synth-gamma data.n=600" in said[0]
    assert json.loads(first.stdout)["dataset"] == "synth-gamma"
    again = run_cli(tmp_path, "pretrain-unimodal", "-d", "tiny", "train.epochs=2", "--run-dir", "b")
    assert "on first use" not in again.stderr
