"""Training methods: a smoke test for every registered method, and UMT's distillation in detail."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mmtool.data import Batch
from mmtool.engine.checkpoint import load_checkpoint
from mmtool.engine.loop import fit
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.methods import METHODS, MethodContext, build_method, describe
from mmtool.models import build_model
from mmtool.runs import BEST, LAST
from tests.unit.conftest import measure_on
from tests.unit.test_methods_zoo import Killed, KilledAt


def make_teachers(make_model, hidden=(16,), seed=10):
    """One-modality models with the same encoder architecture as the student, as pretrain would build."""
    return {m: make_model((m,), hidden=hidden, seed=seed + i)[0] for i, m in enumerate(("m1", "m2"))}


SMOKE_LR = 0.1  # the smoke test's optim.lr (finetune scales it for its encoders)
TWO = ("m1", "m2")


def _naive(make_model, naive_run, splits=None):
    model, spec = make_model(head="mlp")
    return model, spec, build_method("naive", {}, MethodContext(num_classes=2, modalities=TWO)), {"task_loss"}


def _unimodal(make_model, naive_run, splits=None):
    model, spec = make_model(("m2",))
    ctx = MethodContext(num_classes=2, modalities=("m2",))
    return model, spec, build_method("unimodal", {}, ctx), {"task_loss"}


def _ume(make_model, naive_run, splits=None):
    model, spec = make_model(head="ensemble")
    ctx = MethodContext(num_classes=2, modalities=TWO)
    return model, spec, build_method("ume", {}, ctx), {"ce_m1_loss", "ce_m2_loss"}


def _umt(make_model, naive_run, splits=None):
    model, spec = make_model()
    ctx = MethodContext(teachers=make_teachers(make_model), num_classes=2, modalities=TWO)
    return model, spec, build_method("umt", {}, ctx), {"task_loss", "distill_m1_loss", "distill_m2_loss"}


def _aux_ce(make_model, naive_run, splits=None):
    model, spec = make_model(head="attention")  # the auxiliary heads do not depend on the fusion head
    ctx = MethodContext(num_classes=2, modalities=TWO)
    return model, spec, build_method("aux_ce", {}, ctx), {"task_loss", "aux_m1_loss", "aux_m2_loss"}


def _rubi(make_model, naive_run, splits=None):
    model, spec = make_model(head="linear")  # any fusion head: the branches read the features
    ctx = MethodContext(num_classes=2, modalities=TWO)
    return model, spec, build_method("rubi", {}, ctx), {"task_loss", "rubi_m1_loss", "rubi_m2_loss"}


def _dropout(make_model, naive_run, splits=None):
    model, spec = make_model(head="mlp")
    return model, spec, build_method("dropout", {}, MethodContext(num_classes=2, modalities=TWO)), {"task_loss"}


def _modality_dropout(make_model, naive_run, splits=None):
    model, spec = make_model(head="mlp")
    ctx = MethodContext(num_classes=2, modalities=TWO)
    return model, spec, build_method("modality_dropout", {}, ctx), {"task_loss"}


def _self_distill(make_model, naive_run, splits=None):
    model, spec = make_model(head="mlp")
    ctx = MethodContext(num_classes=2, modalities=TWO)
    method = build_method("self_distill", {"teacher_run": str(naive_run(epochs=2))}, ctx)
    return model, spec, method, {"task_loss", "distill_loss"}


def _finetune(make_model, naive_run, splits=None):
    model, spec = make_model()
    ctx = MethodContext(teachers=make_teachers(make_model), num_classes=2, modalities=TWO, lr=SMOKE_LR)
    return model, spec, build_method("finetune", {"encoder_lr_scale": 0.5}, ctx), {"task_loss"}


def _ogm_ge(make_model, naive_run, splits=None):
    model, spec = make_model(head="linear")
    return model, spec, build_method("ogm_ge", {}, MethodContext(num_classes=2, modalities=TWO)), {"task_loss"}


def _gblending(make_model, naive_run, splits=None):
    model, spec = make_model(head="mlp")
    ctx = MethodContext(num_classes=2, modalities=TWO, measure=measure_on(splits))
    return model, spec, build_method("gblending", {}, ctx), {"task_loss", "aux_m1_loss", "aux_m2_loss"}


def _mla(make_model, naive_run, splits=None):
    model, spec = make_model(head="shared")
    return model, spec, build_method("mla", {}, MethodContext(num_classes=2, modalities=TWO)), {"task_loss"}


def _balanced(make_model, naive_run, splits=None):
    from mmtool.config import ModelConfig
    from mmtool.models import build_model, model_spec

    cfg = ModelConfig(encoder="mlp", hidden=(16, 8), head="ensemble", fusion="mmtm")
    spec = model_spec(cfg, {"m1": 200, "m2": 100}, 2, list(TWO))
    torch.manual_seed(0)
    ctx = MethodContext(num_classes=2, modalities=TWO)
    method = build_method("balanced", {"alpha": 0.0, "window": 1}, ctx)  # a re-balancing step after every regular one
    return build_model(spec), spec, method, {"ce_m1_loss", "ce_m2_loss"}


def _qmf(make_model, naive_run, splits=None):
    model, spec = make_model(head="qmf")
    ctx = MethodContext(num_classes=2, modalities=TWO)
    names = {"task_loss", "ce_m1_loss", "ce_m2_loss", "rank_m1_loss", "rank_m2_loss"}
    return model, spec, build_method("qmf", {}, ctx), names


SETUPS = {
    "naive": _naive,
    "unimodal": _unimodal,
    "ume": _ume,
    "umt": _umt,
    "aux_ce": _aux_ce,
    "rubi": _rubi,
    "dropout": _dropout,
    "modality_dropout": _modality_dropout,
    "self_distill": _self_distill,
    "finetune": _finetune,
    "ogm_ge": _ogm_ge,
    "gblending": _gblending,
    "mla": _mla,
    "balanced": _balanced,
    "qmf": _qmf,
}


def setup_method(name, make_model, naive_run, splits=None):
    """(model, spec, method, expected loss names) for a registered method."""
    if name not in SETUPS:
        raise AssertionError(f"method {name!r} has no smoke test: add it to SETUPS")
    return SETUPS[name](make_model, naive_run, splits)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_trains(name, make_model, naive_run, alpha_splits, train_cfgs, snapshot, tmp_path):
    model, spec, method, loss_names = setup_method(name, make_model, naive_run, alpha_splits)
    mods = model.modalities
    train, val = (alpha_splits[k].select(mods) for k in ("train", "val"))
    before = snapshot(model)
    optim, schedule, cfg = train_cfgs(epochs=4, lr=SMOKE_LR)
    result = fit(model, method, train, val, spec, tmp_path, optim, schedule, cfg, Runtime.cpu(cfg))

    assert result.epochs == 4 and 1 <= result.best_epoch <= 4
    records = [r for r in (tmp_path / "metrics.jsonl").read_text().splitlines() if r]
    assert len(records) == 4
    last = json.loads(records[-1])
    for k in loss_names:
        assert math.isfinite(last[f"train_{k}"])
    assert {k[len("train_") :] for k in last if k.startswith("train_")} == loss_names | {"loss"}
    assert last["train_loss"] == pytest.approx(sum(last[f"train_{k}"] for k in loss_names), rel=1e-5)
    after = model.state_dict()
    for k, v in before.items():
        assert not torch.equal(v, after[k]), f"{name}: parameter {k} did not move"
    # the loss went down over a few full-batch steps
    first = json.loads(records[0])
    assert last["train_loss"] < first["train_loss"]
    # best.pt holds the model its spec rebuilds, whatever extras the method attached for training
    best = load_checkpoint(tmp_path / "checkpoints" / BEST)
    build_model(spec).load_state_dict(best["model"])  # strict
    assert not any(k.startswith("extras.") for k in best["model"])


def test_methods_describe_themselves():
    rows = describe()
    assert [r[0] for r in rows] == METHODS.names()
    assert all(summary and ref for _, summary, ref in rows)


# ------------------------------------------------------------------------------------------ setup
def test_ume_needs_ensemble_head(make_model):
    model, _ = make_model(head="linear")
    method = build_method("ume", {}, MethodContext())
    with pytest.raises(UserError, match="ensemble"):
        method.setup(model)
    method.setup(make_model(head="ensemble")[0])


def test_unimodal_needs_one_modality(make_model):
    method = build_method("unimodal", {}, MethodContext())
    with pytest.raises(UserError, match="one modality"):
        method.setup(make_model()[0])
    method.setup(make_model(("m1",))[0])


def test_ume_losses_are_independent_unimodal_ce(make_model, alpha_splits):
    model, _ = make_model(head="ensemble")
    split = alpha_splits["train"]
    batch = Batch(split.inputs, split.target)
    losses = build_method("ume", {}, MethodContext()).training_step(model, batch)
    for m in ("m1", "m2"):
        z = model.head.proj[m](model.encoders[m](split.inputs[m]))
        torch.testing.assert_close(losses[f"ce_{m}_loss"], F.cross_entropy(z, split.target))
    # each loss only reaches its own modality's parameters
    losses["ce_m1_loss"].backward()
    assert model.encoders["m2"].net[0].weight.grad is None and model.head.proj["m2"].weight.grad is None
    assert model.encoders["m1"].net[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ UMT
def test_umt_losses_are_ce_plus_50_mse(make_model, alpha_splits):
    model, _ = make_model()
    teachers = make_teachers(make_model)
    method = build_method("umt", {}, MethodContext(teachers=teachers))
    assert method.params.task_weight == 1.0 and method.params.distill_weight == 50.0
    split = alpha_splits["train"]
    losses = method.training_step(model, Batch(split.inputs, split.target))
    assert set(losses) == {"task_loss", "distill_m1_loss", "distill_m2_loss"}
    with torch.no_grad():
        logits = model(split.inputs)["logits"]
        torch.testing.assert_close(losses["task_loss"], F.cross_entropy(logits, split.target))
        for m in ("m1", "m2"):
            student = model.encoders[m](split.inputs[m])
            teacher = teachers[m].encoders[m](split.inputs[m])
            mse = ((student - teacher) ** 2).mean()
            assert mse > 0
            torch.testing.assert_close(losses[f"distill_{m}_loss"], 50 * mse)


def test_umt_weights_and_modality_subset(make_model, alpha_splits):
    model, _ = make_model()
    teachers = make_teachers(make_model)
    split = alpha_splits["train"]
    batch = Batch(split.inputs, split.target)
    full = build_method("umt", {}, MethodContext(teachers=teachers)).training_step(model, batch)
    custom = build_method(
        "umt", {"task_weight": 2.0, "distill_weight": 3.0, "modalities": ("m2",)}, MethodContext(teachers=teachers)
    ).training_step(model, batch)
    assert set(custom) == {"task_loss", "distill_m2_loss"}
    torch.testing.assert_close(custom["task_loss"], 2 * full["task_loss"])
    torch.testing.assert_close(custom["distill_m2_loss"], full["distill_m2_loss"] * 3 / 50)


def test_umt_leaves_teachers_untouched(make_model, alpha_splits, train_cfgs, snapshot, tmp_path):
    model, spec = make_model()
    teachers = make_teachers(make_model)
    frozen = {m: snapshot(t) for m, t in teachers.items()}
    method = build_method("umt", {}, MethodContext(teachers=teachers))
    optim, schedule, cfg = train_cfgs(epochs=5, lr=0.1, momentum=0.9, batch_size=100)
    student_before = snapshot(model)
    fit(model, method, alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule, cfg,
        Runtime.cpu(cfg))
    for m, t in teachers.items():
        assert not t.training
        for k, v in t.state_dict().items():
            assert torch.equal(v, frozen[m][k]), f"teacher {m} changed: {k}"
        for p in t.parameters():
            assert not p.requires_grad and p.grad is None
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in student_before.items())


def test_umt_distillation_pulls_student_features_to_teacher(make_model, alpha_splits, train_cfgs, tmp_path):
    model, spec = make_model()
    teachers = make_teachers(make_model)
    method = build_method("umt", {"task_weight": 0.0}, MethodContext(teachers=teachers))
    split = alpha_splits["train"]
    batch = Batch(split.inputs, split.target)
    with torch.no_grad():
        start = method.training_step(model, batch)
    optim, schedule, cfg = train_cfgs(epochs=30, lr=0.05)
    fit(model, method, split, alpha_splits["val"], spec, tmp_path, optim, schedule, cfg, Runtime.cpu(cfg))
    with torch.no_grad():
        end = method.training_step(model, batch)
    for m in ("m1", "m2"):
        assert end[f"distill_{m}_loss"] < 0.5 * start[f"distill_{m}_loss"]


def test_umt_feature_size_mismatch_fails_at_setup(make_model, alpha_splits, train_cfgs, tmp_path):
    model, spec = make_model(hidden=(16,))
    method = build_method("umt", {}, MethodContext(teachers=make_teachers(make_model, hidden=(8,))))
    with pytest.raises(UserError, match="model.hidden"):
        method.setup(model)
    optim, schedule, cfg = train_cfgs(epochs=1)
    with pytest.raises(UserError, match="16 dims"):  # fit checks before training
        fit(model, method, alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule, cfg,
            Runtime.cpu(cfg))
    assert not (tmp_path / "metrics.jsonl").exists()


def test_umt_teacher_modality_missing_from_student(make_model):
    model, _ = make_model(("m1",))
    method = build_method("umt", {}, MethodContext(teachers=make_teachers(make_model)))
    with pytest.raises(UserError, match="'m2'"):
        method.setup(model)


def test_umt_needs_teachers(make_model):
    with pytest.raises(UserError, match="teachers"):
        build_method("umt", {}, MethodContext())
    with pytest.raises(UserError, match="method.modalities"):
        build_method("umt", {"modalities": ("m3",)}, MethodContext(teachers=make_teachers(make_model)))


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_resumes_mid_epoch_exactly(name, make_model, naive_run, alpha_splits, train_cfgs, tmp_path):
    """A checkpoint every 2 steps, 3 steps per epoch: the kill at step 6 resumes from epoch 2, step 1 (loader
    position, the epoch's loss sums so far, the method's state as its epoch started) and ends identical."""
    optim, schedule, cfg = train_cfgs(epochs=3, lr=SMOKE_LR, momentum=0.9, batch_size=100, checkpoint_every_steps=2)
    runs = {}
    for kind in ("whole", "killed"):
        model, spec, method, _ = setup_method(name, make_model, naive_run, alpha_splits)
        train, val = (alpha_splits[k].select(model.modalities) for k in ("train", "val"))
        out = tmp_path / kind
        if kind == "killed":
            with pytest.raises(Killed):
                fit(model, KilledAt(method, 6), train, val, spec, out, optim, schedule, cfg, Runtime.cpu(cfg))
            saved = load_checkpoint(out / "checkpoints" / LAST)
            assert (saved["epoch"], saved["partial"]["epoch"], saved["partial"]["step"]) == (1, 2, 1)
            model, spec, method, _ = setup_method(name, make_model, naive_run, alpha_splits)
        fit(model, method, train, val, spec, out, optim, schedule, cfg, Runtime.cpu(cfg), resume=kind == "killed")
        runs[kind] = (model.state_dict(), (out / "metrics.jsonl").read_text())
    assert runs["killed"][1] == runs["whole"][1]
    for k, v in runs["whole"][0].items():
        assert torch.equal(v, runs["killed"][0][k]), f"{name}: {k}"
