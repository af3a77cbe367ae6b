"""Missing modalities through the real CLI on synth-tri (data.missing_rate=0.3 in every split, as paper 003's
Table 2): naive late fusion (linear head), MLA, and UME (pretrain-unimodal -> ensemble), with the ensemble's
accuracy recomputed from its members' checkpoints and the masks; a mixing head and utilization refuse in one line;
probe reports the modality gap."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from tests.e2e.cli import run_cli

SMALL = ["-d", "synth-tri", "data.n=400", "data.missing_rate=0.3", "model.hidden=[16]", "train.epochs=4",
         "train.checkpoint_every=0", "probe.epochs=5"]  # fmt: skip


def result(cwd: Path, *args: str) -> dict:
    return json.loads(run_cli(cwd, *args, *SMALL).stdout)


def test_missing_modalities_end_to_end(tmp_path):
    naive = result(tmp_path, "train", "naive", "model.head=linear", "--run-dir", "naive")
    assert 0 <= naive["test_accuracy"] <= 100
    mla = result(tmp_path, "train", "mla", "--run-dir", "mla")
    assert 0 <= mla["test_accuracy"] <= 100
    result(tmp_path, "pretrain-unimodal", "--run-dir", "pre")
    ens = result(tmp_path, "ensemble", "--teachers", "pre")

    from mmtool.data import load_dataset
    from mmtool.data_config import DataConfig

    cfg = DataConfig.of(name="synth-tri", root=str(tmp_path / "data"), n=400, missing_rate=0.3)
    test = load_dataset(cfg).splits["test"]
    assert not all(bool(p.all()) for p in test.present.values())
    probs, weights = [], []
    for m in ("m1", "m2", "m3"):
        sd = torch.load(tmp_path / "pre" / m / "checkpoints" / "best.pt", weights_only=True)["model"]
        h = torch.relu(test.inputs[m] @ sd[f"encoders.{m}.net.0.weight"].T + sd[f"encoders.{m}.net.0.bias"])
        probs.append(F.softmax(h @ sd[f"head.proj.{m}.weight"].T + sd["head.bias"], dim=1))
        weights.append(test.present[m].float())
    w = torch.stack(weights)  # (3, N): each sample averages the members whose modality it has
    fused = (torch.stack(probs) * (w / w.sum(0)).unsqueeze(-1)).sum(0)
    want = (fused.argmax(1) == test.target).float().mean().item() * 100
    assert abs(ens["test_accuracy"] - want) < 1e-3

    mixing = run_cli(tmp_path, "train", "naive", *SMALL, "model.head=mlp", check=False)
    assert mixing.returncode == 2 and "model.head mlp mixes the modalities" in mixing.stderr
    util = run_cli(tmp_path, "utilization", "--run", "naive", *SMALL, check=False)
    assert util.returncode == 2 and "data.missing_rate > 0" in util.stderr
    probe = result(tmp_path, "probe", "--run", "naive")
    assert set(probe["modality_gap"]) == {"m1-m2", "m1-m3", "m2-m3"}
