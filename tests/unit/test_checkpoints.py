"""Checkpoint files: atomic rotation, damaged files skipped or named, pickled payloads refused."""

from __future__ import annotations

import pickle
import signal

import pytest
import torch

from mmtool.engine.checkpoint import load_checkpoint
from mmtool.errors import UserError
from mmtool.runs import LAST, PREVIOUS, CheckpointStore


def save_last(folder, state, keep=2):
    CheckpointStore(folder).save_last(state, keep)


def latest_good(folder):
    return CheckpointStore(folder).latest_good()


def test_rotation_keeps_the_previous_checkpoint(tmp_path):
    save_last(tmp_path, {"epoch": 1})
    save_last(tmp_path, {"epoch": 2})
    assert load_checkpoint(tmp_path / LAST)["epoch"] == 2 and load_checkpoint(tmp_path / PREVIOUS)["epoch"] == 1


def test_retention_keeps_the_newest_keep_last_and_falls_back_through_them(tmp_path, capsys):
    for epoch in range(1, 6):
        save_last(tmp_path, {"epoch": epoch}, keep=3)
    kept = sorted(p.name for p in tmp_path.glob("last*.pt"))
    assert kept == ["last.prev.pt", "last.prev2.pt", "last.pt"]
    assert [load_checkpoint(tmp_path / n)["epoch"] for n in ("last.pt", "last.prev.pt", "last.prev2.pt")] == [5, 4, 3]
    (tmp_path / LAST).write_bytes(b"")
    (tmp_path / PREVIOUS).write_bytes(b"\x00junk")
    assert latest_good(tmp_path)["epoch"] == 3  # two damaged files skipped, each named
    err = capsys.readouterr().err
    assert str(tmp_path / LAST) in err and str(tmp_path / PREVIOUS) in err
    save_last(tmp_path, {"epoch": 6}, keep=1)  # a smaller keep_last later: the older files go
    assert sorted(p.name for p in tmp_path.glob("last*.pt")) == ["last.pt"]


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_a_damaged_last_falls_back_to_the_previous_with_a_warning(tmp_path, capsys, damage):
    save_last(tmp_path, {"epoch": 1, "w": torch.ones(1000)})
    save_last(tmp_path, {"epoch": 2, "w": torch.ones(1000)})
    blob = (tmp_path / LAST).read_bytes()
    damaged = {"truncate": blob[: len(blob) // 2], "empty": b"", "garbage": b"\x00junk" * 9}[damage]
    (tmp_path / LAST).write_bytes(damaged)
    assert latest_good(tmp_path)["epoch"] == 1
    assert str(tmp_path / LAST) in capsys.readouterr().err
    with pytest.raises(UserError, match="last.pt is (truncated|empty)") as err:
        load_checkpoint(tmp_path / LAST)
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)


class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_pickled_payload_is_refused_naming_the_global(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "x": _Payload()}, path)
    with pytest.raises(UserError, match=r"holds a pickled object \((builtins\.)?print\)"):
        load_checkpoint(path)
    assert "this ran" not in capsys.readouterr().out
    path.write_bytes(pickle.dumps({"epoch": 1}))  # a plain pickle, not torch's format
    with pytest.raises(UserError):
        load_checkpoint(path)


def test_a_refused_write_names_the_path_and_keeps_the_previous_file(tmp_path, monkeypatch):
    from mmtool import faults
    from mmtool.files import atomic_write_bytes

    target = tmp_path / "last.pt"
    atomic_write_bytes(target, b"good")
    monkeypatch.setenv("MMTOOL_FAULT", "write:1:enospc")
    monkeypatch.setattr(faults, "_counts", {})
    with pytest.raises(UserError, match=r"cannot write .*last\.pt: No space left on device"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"good" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_a_checkpoint_that_fails_while_streaming_to_disk_is_one_line_and_keeps_the_previous(tmp_path):
    """torch.save writes straight into the temp file; when the file system refuses part-way (here: the
    process's file size limit, EFBIG), the error is the same one line as for any refused write."""
    import resource

    from mmtool.engine.checkpoint import save_checkpoint

    target = tmp_path / "best.pt"
    save_checkpoint(target, {"epoch": 1})
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit: EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, limits[1]))
    try:
        with pytest.raises(UserError, match=r"cannot write .*best\.pt: File too large"):
            save_checkpoint(target, {"epoch": 2, "w": torch.zeros(1 << 20)})  # 4 MiB
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert load_checkpoint(target)["epoch"] == 1 and [p.name for p in tmp_path.iterdir()] == ["best.pt"]


@pytest.fixture
def fault(monkeypatch):
    """``fault("point:N:action")`` arms MMTOOL_FAULT for this test, counting from zero."""
    from mmtool import faults

    def arm(spec: str) -> None:
        monkeypatch.setenv("MMTOOL_FAULT", spec)
        monkeypatch.setattr(faults, "_counts", {})

    return arm


@pytest.mark.parametrize("spec", ["save_last:1:enospc", "write:1:efbig", "checkpoint_rotate:1:erofs"])
def test_a_refused_save_leaves_the_previous_checkpoints_as_they_were(tmp_path, fault, spec):
    """The new last.pt is complete on disk before anything rotates: a full disk while writing it, or a folder
    turned read-only while rotating, leaves last.pt and last.prev.pt as they were, and no temp file."""
    save_last(tmp_path, {"epoch": 1})
    save_last(tmp_path, {"epoch": 2})
    fault(spec)
    with pytest.raises(UserError, match=r"cannot write .*last(\.prev)?\.pt: .*, then run the command again"):
        save_last(tmp_path, {"epoch": 3})
    assert {p.name: load_checkpoint(p)["epoch"] for p in tmp_path.iterdir()} == {LAST: 2, PREVIOUS: 1}


def test_a_save_that_dies_after_rotating_still_leaves_a_resumable_checkpoint(tmp_path, monkeypatch):
    import os

    save_last(tmp_path, {"epoch": 1})
    real = os.replace

    def dies_at_the_last_rename(src, dst):
        if str(dst).endswith(LAST):
            raise KeyboardInterrupt  # as a kill between the rotation and the rename would
        real(src, dst)

    monkeypatch.setattr(os, "replace", dies_at_the_last_rename)
    with pytest.raises(KeyboardInterrupt):
        save_last(tmp_path, {"epoch": 2})
    assert latest_good(tmp_path)["epoch"] == 1 and not list(tmp_path.glob("*.tmp"))


def test_every_resumable_checkpoint_damaged_is_one_line_naming_them(tmp_path, capsys):
    assert latest_good(tmp_path) is None  # nothing saved yet: a fresh start
    save_last(tmp_path, {"epoch": 1})
    save_last(tmp_path, {"epoch": 2})
    (tmp_path / LAST).write_bytes(b"")
    (tmp_path / PREVIOUS).write_bytes(b"\x00junk")
    with pytest.raises(UserError) as err:
        latest_good(tmp_path)
    assert str(err.value) == (
        f"every resumable checkpoint in {tmp_path} is damaged (last.pt, last.prev.pt); start a new run, or move "
        f"them out of {tmp_path} to restart this run from epoch 0"
    )
    assert capsys.readouterr().err == ""  # no warnings before the one line


def _full(epoch: int) -> dict:
    weights = {"w": torch.ones(4)}
    return {"epoch": epoch, "step": 5 * epoch, "model": weights, "spec": {"x": 1}, "best_epoch": 1,
            "best_val": {"accuracy": 50.0}, "optimizer": {"state": {0: {"m": torch.ones(4)}}}, "scheduler": {},
            "method": {}, "rng": [], "best_model": weights, "partial": {}}  # fmt: skip


def test_compact_last_keeps_the_counters_and_drops_the_rest_and_the_rotations(tmp_path):
    from mmtool.engine.checkpoint import SMALL, save_checkpoint
    from mmtool.runs import BEST

    for epoch in (1, 2, 3):
        save_last(tmp_path, _full(epoch), keep=3)
    save_checkpoint(tmp_path / BEST, {"model": {"w": torch.ones(4)}, "epoch": 1})
    CheckpointStore(tmp_path).compact()
    assert sorted(p.name for p in tmp_path.iterdir()) == [BEST, LAST]
    small = load_checkpoint(tmp_path / LAST)
    assert set(small) == {*SMALL, "complete"} and small["epoch"] == 3 and small["step"] == 15
    assert "model" not in small and "optimizer" not in small  # the run's weights are best.pt's
    stamp = (tmp_path / LAST).stat().st_mtime_ns
    CheckpointStore(tmp_path).compact()  # again: nothing to do
    assert (tmp_path / LAST).stat().st_mtime_ns == stamp


def test_compact_last_with_keep_optimizer_only_drops_the_rotations(tmp_path):

    for epoch in (1, 2):
        save_last(tmp_path, _full(epoch))
    CheckpointStore(tmp_path).compact(keep_optimizer=True)
    assert [p.name for p in tmp_path.iterdir()] == [LAST]
    assert "optimizer" in load_checkpoint(tmp_path / LAST)


def test_compact_last_leaves_a_damaged_last_alone(tmp_path):

    for epoch in (1, 2):
        save_last(tmp_path, _full(epoch))
    (tmp_path / LAST).write_bytes(b"\x00junk")
    CheckpointStore(tmp_path).compact()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LAST, PREVIOUS])
