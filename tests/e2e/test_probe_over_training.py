"""Probe over training: snapshots every k epochs, one probe per snapshot, curves beside a uni-modal run."""

from __future__ import annotations

import json

import torch

from tests.e2e.test_cli_chain import TINY, mmtool


def test_probe_curves_follow_snapshots(tmp_path):
    mmtool(tmp_path, "prep", "synth-gamma", *TINY)
    mmtool(
        tmp_path, "pretrain-unimodal", "-d", "tiny", "train.epochs=30", "train.snapshot_every=15", "--run-dir", "uni"
    )
    mmtool(tmp_path, "train", "naive", "-d", "tiny", "train.epochs=30", "train.snapshot_every=10",
           "train.keep_optimizer=true", "--run-dir", "fused")  # last.pt then keeps the final weights
    snaps = sorted(p.name for p in (tmp_path / "fused" / "checkpoints").glob("epoch_*.pt"))
    assert snaps == ["epoch_000010.pt", "epoch_000020.pt", "epoch_000030.pt"]
    # the last snapshot is the final model: its weights equal last.pt's
    last = torch.load(tmp_path / "fused" / "checkpoints" / "last.pt", weights_only=True)["model"]
    snap = torch.load(tmp_path / "fused" / "checkpoints" / snaps[-1], weights_only=True)["model"]
    assert all(torch.equal(last[k], snap[k]) for k in last)

    out = mmtool(tmp_path, "probe", "-d", "tiny", "--run", "fused", "--teachers", "uni", "probe.over_training=true",
                 "probe.epochs=10", "--run-dir", "curves")  # fmt: skip
    result = json.loads(out.stdout)
    assert {m: [p["epoch"] for p in pts] for m, pts in result["curves"].items()} == {
        "m1": [10, 20, 30],
        "m2": [10, 20, 30],
    }
    assert {m: [p["epoch"] for p in pts] for m, pts in result["reference"].items()} == {"m1": [15, 30], "m2": [15, 30]}
    assert all(0 <= p["test_accuracy"] <= 100 for pts in result["curves"].values() for p in pts)
    assert (tmp_path / "curves" / "plots" / "probe_m1.png").stat().st_size > 0

    plain = mmtool(tmp_path, "probe", "-d", "tiny", "--run", "fused", "probe.over_training=true", "probe.epochs=5",
                   check=False)  # fmt: skip
    assert plain.returncode == 0
    no_snaps = mmtool(tmp_path, "train", "naive", "-d", "tiny", "train.epochs=5", "--run-dir", "nosnap")
    assert no_snaps.returncode == 0
    refused = mmtool(tmp_path, "probe", "-d", "tiny", "--run", "nosnap", "probe.over_training=true", check=False)
    assert refused.returncode == 2 and "snapshot_every" in refused.stderr
