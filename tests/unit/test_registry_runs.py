"""Registry lookups and run-directory helpers (atomic writes, metrics.jsonl)."""

from __future__ import annotations

import json
import os

import pytest

from mmtool.errors import UserError
from mmtool.files import MetricsWriter, atomic_write_bytes, atomic_write_text, read_json
from mmtool.methods import METHODS
from mmtool.registry import Registry
from mmtool.runs import new_run_dir, require_run


# ------------------------------------------------------------------------------------------ registry
def test_registry_get_and_names():
    reg: Registry = Registry("widget")

    @reg.register("zeta")
    class Zeta: ...

    reg.register("alpha")(len)
    assert reg.get("zeta") is Zeta and reg.get("alpha") is len
    assert reg.names() == ["alpha", "zeta"]
    assert "zeta" in reg and "beta" not in reg
    assert [name for name, _ in reg.items()] == ["alpha", "zeta"]


def test_registry_unknown_name_lists_known_names():
    reg: Registry = Registry("widget")
    reg.register("b")(1)
    reg.register("a")(2)
    with pytest.raises(UserError) as err:
        reg.get("c")
    msg = str(err.value)
    assert "widget" in msg and "'c'" in msg and "a, b" in msg


def test_empty_registry_says_none_known():
    with pytest.raises(UserError, match="none"):
        Registry("gadget").get("x")


def test_registry_double_registration_raises():
    reg: Registry = Registry("widget")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="twice"):
        reg.register("a")(2)
    assert reg.get("a") == 1  # the first registration stays


def test_methods_registry_unknown_name():
    with pytest.raises(UserError) as err:
        METHODS.get("distill")
    for name in ("naive", "ume", "umt", "unimodal"):
        assert name in str(err.value)


# ------------------------------------------------------------------------------------------ atomic writes
def test_atomic_write_creates_parents_replaces_content_and_leaves_no_temp(tmp_path):
    path = tmp_path / "deep" / "er" / "blob.bin"
    atomic_write_bytes(path, b"first")
    assert path.read_bytes() == b"first"
    atomic_write_bytes(path, b"second, longer content")
    assert path.read_bytes() == b"second, longer content"
    atomic_write_text(path, "third")
    assert path.read_text() == "third"
    assert os.listdir(path.parent) == ["blob.bin"]


def test_atomic_write_failure_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "blob.bin"
    atomic_write_bytes(path, b"keep me")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]  # fails inside the write
    assert path.read_bytes() == b"keep me"
    assert os.listdir(tmp_path) == ["blob.bin"]


# ------------------------------------------------------------------------------------------ metrics.jsonl
def test_metrics_writer_appends_and_truncates(tmp_path):
    writer = MetricsWriter(tmp_path / "run" / "metrics.jsonl")
    assert writer.read() == []
    writer.truncate_after(3)  # no file yet: nothing happens
    assert not writer.path.exists()
    writer.write({"note": "header without epoch"})
    for epoch in range(1, 7):
        writer.write({"epoch": epoch, "loss": 1.0 / epoch})
    assert [r.get("epoch") for r in writer.read()] == [None, 1, 2, 3, 4, 5, 6]

    writer.truncate_after(3)
    records = writer.read()
    assert [r.get("epoch") for r in records] == [None, 1, 2, 3]
    assert records[2]["loss"] == 0.5
    # the file stays valid JSON lines and appending continues after the kept records
    writer.write({"epoch": 4, "loss": 9.0})
    lines = writer.path.read_text().splitlines()
    assert [json.loads(line).get("epoch") for line in lines] == [None, 1, 2, 3, 4]

    writer.truncate_after(0)
    assert [r.get("epoch") for r in writer.read()] == [None]
    assert sorted(os.listdir(writer.path.parent)) == ["metrics.jsonl"]


# ------------------------------------------------------------------------------------------ run dirs
def test_read_json_errors(tmp_path):
    with pytest.raises(UserError, match="missing file"):
        read_json(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_new_run_dir_is_unique_and_refuses_existing_runs(tmp_path):
    a = new_run_dir(tmp_path, "train", "synth-alpha", "naive")
    b = new_run_dir(tmp_path, "train", "synth-alpha", "naive")
    assert a != b and a.is_dir() and b.is_dir()
    assert a.parent == tmp_path / "train" and a.name.startswith("synth-alpha-naive-")

    chosen = tmp_path / "mine"
    assert new_run_dir(tmp_path, "train", "d", "m", chosen) == chosen
    (chosen / "config.yaml").write_text("stage: train\n")
    with pytest.raises(UserError, match="already holds a run"):
        new_run_dir(tmp_path, "train", "d", "m", chosen)


def test_require_run(tmp_path):
    with pytest.raises(UserError, match="run=RUN_DIR"):
        require_run(None, "probe", "run")
    with pytest.raises(UserError, match="not a run directory"):
        require_run(tmp_path, "probe", "run")
    (tmp_path / "config.yaml").write_text("stage: train\n")
    assert require_run(tmp_path, "probe", "run") == tmp_path
