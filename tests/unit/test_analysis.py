"""Analyses: paired bootstrap, conditional utilization rates, linear probes, evaluation helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmtool.analysis.bootstrap import paired_bootstrap_diff
from mmtool.analysis.linear_probe import train_linear_classifier
from mmtool.analysis.utilization import mean_features, utilization_rates
from mmtool.config import ProbeConfig
from mmtool.data import Split
from mmtool.engine.evaluate import accuracy, confusion_matrix, evaluate
from mmtool.engine.inference import run_inference
from mmtool.engine.runtime import Runtime
from mmtool.models import MultiModalNet
from mmtool.models.encoders import IdentityEncoder
from mmtool.models.heads import LinearHead

CPU = Runtime.cpu()


# ------------------------------------------------------------------------------------------ bootstrap
def test_bootstrap_identical_inputs_give_zero():
    correct = torch.rand(200, generator=torch.Generator().manual_seed(0)) > 0.3
    out = paired_bootstrap_diff(correct, correct.clone(), resamples=500, confidence=0.95, seed=0)
    assert out["diff"] == 0.0 and out["low"] == 0.0 and out["high"] == 0.0
    assert out["confidence"] == 0.95 and out["resamples"] == 500


def test_bootstrap_always_right_vs_always_wrong_is_100_points():
    a, b = torch.ones(50, dtype=torch.bool), torch.zeros(50, dtype=torch.bool)
    out = paired_bootstrap_diff(a, b, resamples=300, confidence=0.9, seed=1)
    assert out["diff"] == pytest.approx(100.0)
    assert out["low"] == pytest.approx(100.0) and out["high"] == pytest.approx(100.0)
    flipped = paired_bootstrap_diff(b, a, resamples=300, confidence=0.9, seed=1)
    assert flipped["diff"] == pytest.approx(-100.0)


def test_bootstrap_interval_brackets_estimate_and_matches_normal_width():
    g = torch.Generator().manual_seed(3)
    n = 400
    a = torch.rand(n, generator=g) < 0.8
    b = torch.rand(n, generator=g) < 0.7
    out = paired_bootstrap_diff(a, b, resamples=2000, confidence=0.95, seed=0)
    d = (a.float() - b.float()).numpy()
    assert out["diff"] == pytest.approx(d.mean() * 100, abs=1e-4)
    assert out["low"] < out["diff"] < out["high"]
    # the percentile interval of a mean is close to the normal one: +-1.96 standard errors
    se = d.std() / np.sqrt(n) * 100
    assert out["high"] - out["low"] == pytest.approx(2 * 1.96 * se, rel=0.15)
    # same seed -> same interval; a wider confidence level gives a wider interval from the same resamples
    assert paired_bootstrap_diff(a, b, 2000, 0.95, 0) == out
    wide = paired_bootstrap_diff(a, b, 2000, 0.99, 0)
    assert wide["low"] <= out["low"] and wide["high"] >= out["high"]
    assert wide["high"] - wide["low"] > out["high"] - out["low"]


# ------------------------------------------------------------------------------------------ utilization
def linear_net(w1: torch.Tensor, w2: torch.Tensor, bias: torch.Tensor) -> MultiModalNet:
    head = LinearHead({"m1": w1.shape[1], "m2": w2.shape[1]}, w1.shape[0])
    with torch.no_grad():
        head.proj["m1"].weight.copy_(w1)
        head.proj["m2"].weight.copy_(w2)
        head.bias.copy_(bias)
    return MultiModalNet({"m1": IdentityEncoder(w1.shape[1]), "m2": IdentityEncoder(w2.shape[1])}, head)


def np_accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean() * 100)


def test_utilization_of_an_ignored_modality_is_zero():
    g = torch.Generator().manual_seed(0)
    # m1 decides the class, m2 has zero weight in the head
    train = Split(
        {"m1": torch.randn(200, 2, generator=g) + torch.tensor([0.7, -0.7]), "m2": torch.randn(200, 3, generator=g)},
        torch.zeros(200, dtype=torch.long),
    )
    test_m1 = torch.randn(300, 2, generator=g)
    test = Split({"m1": test_m1, "m2": torch.randn(300, 3, generator=g)}, test_m1.argmax(1))
    model = linear_net(torch.eye(2), torch.zeros(2, 3), torch.zeros(2))

    rates = utilization_rates(model, train, test, CPU)
    assert rates["modalities"] == ["m1", "m2"]
    assert rates["accuracy"] == 100.0
    assert rates["accuracy_only_m1"] == 100.0  # m2 := its mean changes nothing
    assert rates["u(m2|m1)"] == 0.0
    # m1 := its training mean [0.7, -0.7] -> constant logits -> always class 0
    frac0 = float((test.target == 0).float().mean() * 100)
    assert rates["accuracy_only_m2"] == pytest.approx(frac0)
    assert rates["u(m1|m2)"] == pytest.approx((100 - frac0) / 100)
    assert rates["d_util"] == pytest.approx(0.0 - (100 - frac0) / 100)


def test_utilization_matches_independent_computation():
    rng = np.random.default_rng(1)
    c, d1, d2 = 3, 4, 5
    w1, w2, b = rng.normal(size=(c, d1)), rng.normal(size=(c, d2)) * 0.7, rng.normal(size=c) * 0.1
    tr1, tr2 = rng.normal(size=(250, d1)) + 0.5, rng.normal(size=(250, d2)) - 0.3
    te1, te2 = rng.normal(size=(300, d1)), rng.normal(size=(300, d2))
    clean = te1 @ w1.T + te2 @ w2.T + b
    y = np.where(rng.random(300) < 0.85, clean.argmax(1), rng.integers(0, c, 300))  # ~85% accurate model

    f32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    model = linear_net(f32(w1), f32(w2), f32(b))
    train = Split({"m1": f32(tr1), "m2": f32(tr2)}, torch.zeros(250, dtype=torch.long))
    test = Split({"m1": f32(te1), "m2": f32(te2)}, torch.tensor(y))
    rates = utilization_rates(model, train, test, CPU)

    acc = np_accuracy(clean, y)
    only_m1 = np_accuracy(te1 @ w1.T + tr2.mean(0) @ w2.T + b, y)  # m2 replaced by its training mean
    only_m2 = np_accuracy(tr1.mean(0) @ w1.T + te2 @ w2.T + b, y)
    assert 0 < only_m1 < acc and 0 < only_m2 < acc
    assert rates["accuracy"] == pytest.approx(acc)
    assert rates["accuracy_only_m1"] == pytest.approx(only_m1)
    assert rates["accuracy_only_m2"] == pytest.approx(only_m2)
    assert rates["u(m2|m1)"] == pytest.approx((acc - only_m1) / acc)
    assert rates["u(m1|m2)"] == pytest.approx((acc - only_m2) / acc)
    assert rates["d_util"] == pytest.approx((only_m2 - only_m1) / acc, abs=1e-6)


def test_mean_features_are_means_of_encoder_outputs(make_model, alpha_splits):
    model, _ = make_model()  # ReLU encoders: mean of features != features of the mean input
    train = alpha_splits["train"]
    means = mean_features(model, train, CPU)
    with torch.no_grad():
        for m in ("m1", "m2"):
            feats = model.encoders[m](train.inputs[m])
            torch.testing.assert_close(means[m], feats.mean(0))
            assert not torch.allclose(means[m], model.encoders[m](train.inputs[m].mean(0, keepdim=True))[0])


# ------------------------------------------------------------------------------------------ linear probe
def test_linear_probe_learns_separable_features(tmp_path):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 6, generator=g) * 2

    def split(n):
        y = torch.randint(0, 3, (n,), generator=g)
        return Split({"f": centres[y] + 0.3 * torch.randn(n, 6, generator=g)}, y)

    feats = {"train": split(300), "val": split(100), "test": split(200)}
    cfg = ProbeConfig(epochs=60, optim="adam", lr=0.05)
    model = train_linear_classifier(feats, 3, cfg, seed=0, out=tmp_path, runtime=Runtime.cpu())
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    assert not model.training
    acc = evaluate(model, feats["test"], Runtime.cpu())["accuracy"]
    assert acc > 98
    assert model.modalities == ["f"]
    assert isinstance(model.head, LinearHead)


# ------------------------------------------------------------------------------------------ evaluation
def test_accuracy_and_confusion_matrix():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    target = torch.tensor([0, 1, 1, 2, 1])
    assert accuracy(logits, target) == pytest.approx(60.0)
    assert confusion_matrix(logits, target, 3) == [[1, 0, 0], [0, 2, 1], [1, 0, 0]]
    assert np.isnan(accuracy(logits[:0], target[:0]))


def test_inference_concatenates_batches_and_restores_mode(make_model, alpha_splits):
    model, _ = make_model(head="ensemble")
    model.train()
    split = alpha_splits["val"]
    small = run_inference(model, split, Runtime.cpu(), batch_size=7)
    assert model.training  # mode restored
    with torch.no_grad():
        out = model(split.inputs)
    torch.testing.assert_close(small["logits"], out["logits"])
    assert torch.equal(small["target"], split.target)
    assert small["features"]["m1"].shape == (100, 16)
    torch.testing.assert_close(small["unimodal_logits"]["m2"], out["unimodal_logits"]["m2"])
    res = evaluate(model, split, Runtime.cpu())
    assert res["accuracy"] == pytest.approx(accuracy(out["logits"], split.target))
    assert res["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(out["logits"], split.target)))
