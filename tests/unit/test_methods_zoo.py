"""Baselines of paper 000 (Tables 5, 8, 9, 14, 15): each method's defining property, computed for real."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmtool.data import Batch
from mmtool.engine.checkpoint import load_checkpoint
from mmtool.engine.evaluate import evaluate
from mmtool.engine.loop import fit
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.methods import MethodContext, build_method
from mmtool.models.heads import self_attention
from mmtool.runs import BEST, COMPLETE, LAST, Layout

TWO = ("m1", "m2")


def whole(split) -> Batch:
    return Batch(split.inputs, split.target)


def make_teachers(make_model, hidden=(16,)):
    """One-modality models with the student's encoder architecture, as `pretrain-unimodal` builds them."""
    return {m: make_model((m,), hidden=hidden, seed=10 + i)[0] for i, m in enumerate(TWO)}


# ------------------------------------------------------------------------------------------ attention head
def test_attention_head_parameters_are_its_linear_layer_only(make_model):
    model, _ = make_model(head="attention", hidden=(16,), num_classes=3)
    shapes = {k: tuple(p.shape) for k, p in model.head.named_parameters()}
    assert shapes == {"linear.weight": (3, 2 * 16), "linear.bias": (3,)}  # Table 11: the size of the linear head


def test_self_attention_matches_the_formula_and_is_permutation_equivariant():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(4, 3, 5, generator=g)  # (B, M, D)
    out = self_attention(tokens)
    for b in range(4):
        for i in range(3):
            scores = torch.tensor([float(tokens[b, i] @ tokens[b, j]) / math.sqrt(5) for j in range(3)])
            expected = (scores.softmax(0)[:, None] * tokens[b]).sum(0)
            torch.testing.assert_close(out[b, i], expected)
    perm = [2, 0, 1]
    torch.testing.assert_close(self_attention(tokens[:, perm]), out[:, perm])


def test_attention_head_concatenates_attended_tokens_in_spec_order(make_model):
    model, _ = make_model(head="attention", num_classes=3)
    g = torch.Generator().manual_seed(1)
    f1, f2 = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    with torch.no_grad():
        logits = model.head({"m2": f2, "m1": f1})["logits"]  # dict order of the call does not matter
        attended = self_attention(torch.stack([f1, f2], dim=1))
        torch.testing.assert_close(logits, model.head.linear(torch.cat([attended[:, 0], attended[:, 1]], 1)))
        # identical tokens attend to themselves only: the head is then the linear layer on the features
        same = model.head({"m1": f1, "m2": f1})["logits"]
        torch.testing.assert_close(same, model.head.linear(torch.cat([f1, f1], 1)))


def test_attention_head_pads_unequal_feature_sizes_with_zeros(make_model):
    """Raw inputs of 200 and 100 dims: the 100-dim token is zero-padded to 200, still without parameters."""
    model, _ = make_model(head="attention", encoder="identity")
    f1, f2 = torch.randn(4, 200), torch.randn(4, 100)
    with torch.no_grad():
        logits = model.head({"m1": f1, "m2": f2})["logits"]
        attended = self_attention(torch.stack([f1, torch.cat([f2, torch.zeros(4, 100)], 1)], dim=1))
        torch.testing.assert_close(logits, model.head.linear(attended.flatten(1)))
    assert [p.shape for p in model.head.parameters()] == [(2, 400), (2,)]  # the linear layer only


# ------------------------------------------------------------------------------------------ Aux-CE
def test_aux_ce_loss_is_fused_ce_plus_ce_of_separate_unimodal_heads(make_model, alpha_splits):
    model, _ = make_model(head="linear")
    method = build_method("aux_ce", {}, MethodContext(num_classes=2, modalities=TWO))
    with pytest.raises(RuntimeError, match="setup"):
        method.training_step(model, whole(alpha_splits["train"]))
    method.setup(model)
    aux = model.extras["aux"]  # the heads belong to the model: its forward runs them
    split = alpha_splits["train"]
    losses = method.training_step(model, whole(split))
    assert set(losses) == {"task_loss", "aux_m1_loss", "aux_m2_loss"}
    with torch.no_grad():
        out = model(split.inputs)
        torch.testing.assert_close(losses["task_loss"], F.cross_entropy(out["logits"], split.target))
        for m in TWO:
            head = aux[m]
            z = model.encoders[m](split.inputs[m]) @ head.weight.T + head.bias
            torch.testing.assert_close(out["aux_logits"][m], z)
            torch.testing.assert_close(losses[f"aux_{m}_loss"], F.cross_entropy(z, split.target))  # weight 1
    # an auxiliary loss trains its own head and encoder, never the fusion head
    losses["aux_m1_loss"].backward()
    assert all(p.grad is None for p in model.head.parameters())
    assert model.encoders["m2"].net[0].weight.grad is None
    assert model.encoders["m1"].net[0].weight.grad.abs().sum() > 0
    assert aux["m1"].weight.grad.abs().sum() > 0


def test_aux_ce_heads_are_created_where_they_always_were_in_the_random_stream(make_model):
    """The heads are drawn from torch's global generator at setup time exactly as before they moved into
    the model (nn.Linear per modality, in the model's modality order), so runs keep their numbers."""
    model, _ = make_model(head="linear")
    torch.manual_seed(123)
    build_method("aux_ce", {}, MethodContext(num_classes=2, modalities=TWO)).setup(model)
    torch.manual_seed(123)
    expected = {m: torch.nn.Linear(16, 2) for m in TWO}
    for m in TWO:
        assert torch.equal(model.extras["aux"][m].weight, expected[m].weight)
        assert torch.equal(model.extras["aux"][m].bias, expected[m].bias)


def test_aux_ce_heads_are_optimised_and_saved_for_resume(make_model, alpha_splits, train_cfgs, snapshot, tmp_path):
    model, spec = make_model(head="linear")
    plain_keys = set(model.state_dict())
    method = build_method("aux_ce", {}, MethodContext(num_classes=2, modalities=TWO))
    optim, schedule, cfg = train_cfgs(epochs=3, lr=0.1, momentum=0.9, snapshot_every=1)
    fit(model, method, alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule, cfg,
        Runtime.cpu(cfg))
    aux = model.extras["aux"]
    ckpt = load_checkpoint(tmp_path / "checkpoints" / LAST)
    n_model, n_aux = len(list(model.parameters())), len(list(aux.parameters()))
    assert n_aux == 4 and len(ckpt["optimizer"]["param_groups"][0]["params"]) == n_model
    assert len(ckpt["optimizer"]["state"]) == n_model  # every one, the heads too, took momentum steps
    # last.pt holds the heads (a resume gets the trained ones back) ...
    assert {k for k in ckpt["model"] if k.startswith("extras.aux.")} == {f"extras.aux.{m}.{p}" for m in TWO
                                                                      for p in ("weight", "bias")}  # fmt: skip
    assert set(ckpt["best_model"]) == plain_keys
    # ... best.pt and the snapshots do not: they rebuild from the spec, strictly, as a plain model
    assert set(load_checkpoint(tmp_path / "checkpoints" / BEST)["model"]) == plain_keys
    for _, path in Layout(tmp_path).checkpoints().snapshots():
        assert set(load_checkpoint(path)["model"]) == plain_keys
    best, _ = Layout(tmp_path).checkpoints().load_model()
    assert set(best.state_dict()) == plain_keys and len(best.extras) == 0


def test_aux_ce_resume_restores_the_trained_heads(make_model, alpha_splits, train_cfgs, snapshot, tmp_path):
    optim, schedule, cfg = train_cfgs(epochs=2, lr=0.1, momentum=0.9, checkpoint_every=1)
    model, spec = make_model(head="linear")
    method = build_method("aux_ce", {}, MethodContext(num_classes=2, modalities=TWO))
    fit(model, method, alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule, cfg,
        Runtime.cpu(cfg))
    trained = snapshot(model.extras["aux"])
    (tmp_path / "checkpoints" / COMPLETE).unlink()
    (tmp_path / "checkpoints" / BEST).unlink()
    again, _ = make_model(head="linear", seed=7)
    fresh = build_method("aux_ce", {}, MethodContext(num_classes=2, modalities=TWO))
    longer = train_cfgs(epochs=2, lr=0.0, checkpoint_every=1)  # lr 0: what resume restored stays as it is
    fit(again, fresh, alpha_splits["train"], alpha_splits["val"], spec, tmp_path, longer[0], schedule, longer[2],
        Runtime.cpu(longer[2]), resume=True)  # fmt: skip
    for k, v in trained.items():
        assert torch.equal(again.extras["aux"].state_dict()[k], v), k


class Killed(RuntimeError):
    pass


class KilledAt:
    """Wraps a method and dies at its ``at``-th training step (a simulated kill); hooks pass through."""

    def __init__(self, method, at: int) -> None:
        self.method, self.at, self.calls = method, at, 0

    def training_step(self, model, batch):
        self.calls += 1
        if self.calls == self.at:
            raise Killed
        return self.method.training_step(model, batch)

    def __getattr__(self, name):
        return getattr(self.method, name)


@pytest.mark.parametrize("name", ["aux_ce", "dropout", "modality_dropout"])
def test_resumed_run_equals_uninterrupted_run(name, make_model, alpha_splits, train_cfgs, tmp_path):
    """Method state (Aux-CE's heads) and random masks (dropout) survive a kill and ``--resume``."""
    optim, schedule, cfg = train_cfgs(epochs=6, checkpoint_every=3, lr=0.1, momentum=0.9, batch_size=100)
    train, val = alpha_splits["train"], alpha_splits["val"]
    runs = {}
    for kind in ("whole", "killed"):
        model, spec = make_model(head="linear")
        method = build_method(name, {}, MethodContext(num_classes=2, modalities=TWO))
        out = tmp_path / kind
        if kind == "killed":
            with pytest.raises(Killed):  # 3 batches per epoch: dies in epoch 5, after the epoch-3 checkpoint
                fit(model, KilledAt(method, 13), train, val, spec, out, optim, schedule, cfg, Runtime.cpu(cfg))
            model, spec = make_model(head="linear", seed=99)
            method = build_method(name, {}, MethodContext(num_classes=2, modalities=TWO))
        fit(model, method, train, val, spec, out, optim, schedule, cfg, Runtime.cpu(cfg), resume=kind == "killed")
        runs[kind] = model.state_dict()  # Aux-CE's heads included: they are model.extras["aux"]
    assert runs["whole"].keys() == runs["killed"].keys()
    for k, v in runs["whole"].items():
        assert torch.equal(v, runs["killed"][k]), k


# ------------------------------------------------------------------------------------------ dropout
def test_dropout_zeroes_elements_at_rate_p_and_rescales_the_rest():
    method = build_method("dropout", {"p": 0.2}, MethodContext())
    torch.manual_seed(0)
    out = method.drop({"m1": torch.ones(1000, 60), "m2": 3 * torch.ones(1000, 40)})
    for m, value in (("m1", 1.0), ("m2", 3.0)):
        f = out[m]
        rate = float((f == 0).float().mean())
        sigma = math.sqrt(0.2 * 0.8 / f.numel())
        assert abs(rate - 0.2) < 5 * sigma, (m, rate)
        assert torch.allclose(f[f != 0], torch.tensor(value / 0.8))


def test_dropout_is_on_in_training_steps_only(make_model, alpha_splits, train_cfgs, tmp_path):
    model, spec = make_model(head="mlp")
    split = alpha_splits["val"]
    method = build_method("dropout", {}, MethodContext())
    assert method.params.p == 0.5
    optim, schedule, cfg = train_cfgs(epochs=3)
    fit(model, method, alpha_splits["train"], split, spec, tmp_path, optim, schedule, cfg, Runtime.cpu(cfg))
    with torch.no_grad():
        plain = F.cross_entropy(model(split.inputs)["logits"], split.target)
        first, second = (method.training_step(model, whole(split))["task_loss"] for _ in range(2))
        no_drop = build_method("dropout", {"p": 0.0}, MethodContext()).training_step(model, whole(split))
    loss = evaluate(model, split, Runtime.cpu())["loss"]  # the loop's evaluation
    assert loss == pytest.approx(float(plain), rel=1e-6)
    assert not torch.equal(first, second) and not torch.isclose(first, plain)
    torch.testing.assert_close(no_drop["task_loss"], plain)


def test_dropout_rate_is_checked():
    with pytest.raises(UserError, match="method.p"):
        build_method("dropout", {"p": 1.0}, MethodContext())


# ------------------------------------------------------------------------------------------ modality dropout
@pytest.mark.parametrize("modalities", [("m1", "m2"), ("a", "b", "c")])
def test_modality_dropout_drops_one_whole_modality_at_rate_one_third(modalities):
    method = build_method("modality_dropout", {}, MethodContext())
    n = 30000
    torch.manual_seed(0)
    out = method.drop({m: torch.full((n, 4), 2.0) for m in modalities})
    dropped = {m: (f == 0).all(1) for m, f in out.items()}  # (N,) whole vector zeroed
    for m, f in out.items():
        assert torch.equal(f[~dropped[m]], torch.full_like(f[~dropped[m]], 2.0))  # kept: unchanged, no rescale
        assert ((f == 0).any(1) == dropped[m]).all()  # never a partly zeroed vector
    count = torch.stack(list(dropped.values())).sum(0)  # (N,) modalities dropped per sample
    assert count.max() == 1
    p, k = 1 / 3, len(modalities)
    assert abs(float((count == 1).float().mean()) - p) < 5 * math.sqrt(p * (1 - p) / n)
    for m in modalities:
        assert abs(float(dropped[m].float().mean()) - p / k) < 5 * math.sqrt(p / k * (1 - p / k) / n)


def test_modality_dropout_trains_on_dropped_features_and_evaluates_on_all(make_model, alpha_splits):
    model, _ = make_model(head="linear")
    split = alpha_splits["val"]
    method = build_method("modality_dropout", {"p": 1.0}, MethodContext())
    torch.manual_seed(3)
    loss = method.training_step(model, whole(split))["task_loss"]
    torch.manual_seed(3)
    with torch.no_grad():
        features = method.drop(model.encode(split.inputs))
        assert all(((f == 0).all(1)).any() for f in features.values())  # p = 1: every sample lost one
        torch.testing.assert_close(loss, F.cross_entropy(model.fuse(features)["logits"], split.target))
        plain = F.cross_entropy(model(split.inputs)["logits"], split.target)
    assert evaluate(model, split, Runtime.cpu())["loss"] == pytest.approx(float(plain), rel=1e-6)
    assert not torch.isclose(loss, plain)


def test_modality_dropout_needs_two_modalities(make_model):
    with pytest.raises(UserError, match="two or more modalities"):
        build_method("modality_dropout", {}, MethodContext()).setup(make_model(("m1",))[0])
    with pytest.raises(UserError, match="method.p"):
        build_method("modality_dropout", {"p": 1.5}, MethodContext())


# ------------------------------------------------------------------------------------------ self-distillation
def test_self_distill_label_loss_is_the_tempered_kl(make_model, naive_run, alpha_splits):
    run = naive_run()
    teacher, _ = Layout(run).checkpoints().load_model()
    model, _ = make_model(head="mlp")
    split = alpha_splits["train"]
    for params, weight, t in (({}, 1.0, 4.0), ({"weight": 2.0, "temperature": 1.0}, 2.0, 1.0)):
        method = build_method("self_distill", {"teacher_run": str(run), **params}, MethodContext(num_classes=2))
        losses = method.training_step(model, whole(split))
        assert set(losses) == {"task_loss", "distill_loss"}
        with torch.no_grad():
            z_s, z_t = model(split.inputs)["logits"], teacher(split.inputs)["logits"]
            p_t = torch.softmax(z_t / t, 1)
            kl = (p_t * (p_t.log() - torch.log_softmax(z_s / t, 1))).sum(1).mean()
            assert kl > 0
            torch.testing.assert_close(losses["distill_loss"], weight * t**2 * kl, rtol=1e-4, atol=0)
            torch.testing.assert_close(losses["task_loss"], F.cross_entropy(z_s, split.target))


def test_self_distill_feature_loss_is_50_mse_to_the_fusion_teacher(make_model, naive_run, alpha_splits):
    run = naive_run()
    teacher, _ = Layout(run).checkpoints().load_model()
    model, _ = make_model(head="mlp")
    method = build_method("self_distill", {"teacher_run": str(run), "level": "feature"}, MethodContext())
    method.setup(model)
    split = alpha_splits["train"]
    losses = method.training_step(model, whole(split))
    assert set(losses) == {"task_loss", "distill_m1_loss", "distill_m2_loss"}
    with torch.no_grad():
        for m in TWO:
            mse = ((model.encoders[m](split.inputs[m]) - teacher.encoders[m](split.inputs[m])) ** 2).mean()
            torch.testing.assert_close(losses[f"distill_{m}_loss"], 50 * mse)


def test_self_distill_teacher_stays_frozen(make_model, naive_run, alpha_splits, train_cfgs, snapshot, tmp_path):
    run = naive_run()
    model, spec = make_model(head="mlp")
    method = build_method("self_distill", {"teacher_run": str(run)}, MethodContext(num_classes=2))
    before, student = snapshot(method.teacher), snapshot(model)
    optim, schedule, cfg = train_cfgs(epochs=3, lr=0.1, momentum=0.9)
    out = tmp_path / "student"
    fit(model, method, alpha_splits["train"], alpha_splits["val"], spec, out, optim, schedule, cfg, Runtime.cpu(cfg))
    assert not method.teacher.training
    for k, v in method.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(not p.requires_grad and p.grad is None for p in method.teacher.parameters())
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in student.items())


def test_self_distill_refuses_missing_or_mismatched_teachers(make_model, naive_run, tmp_path):
    with pytest.raises(UserError, match="method.teacher_run=RUN_DIR"):
        build_method("self_distill", {}, MethodContext())
    with pytest.raises(UserError, match="method.teacher_run: .* has no checkpoints/best.pt"):
        build_method("self_distill", {"teacher_run": str(tmp_path / "nowhere")}, MethodContext())
    run = str(naive_run(epochs=1))
    with pytest.raises(UserError, match="method.level"):
        build_method("self_distill", {"teacher_run": run, "level": "logits"}, MethodContext())
    with pytest.raises(UserError, match="predicts 2 classes, the data has 3"):
        build_method("self_distill", {"teacher_run": run}, MethodContext(num_classes=3))
    method = build_method("self_distill", {"teacher_run": run, "level": "feature"}, MethodContext())
    with pytest.raises(UserError, match="teacher's modalities"):
        method.setup(make_model(("m1",))[0])
    with pytest.raises(UserError, match="model.hidden"):
        method.setup(make_model(hidden=(8,))[0])


# ------------------------------------------------------------------------------------------ fine-tuning
def test_finetune_starts_from_the_pretrained_encoders(make_model, snapshot):
    model, _ = make_model()
    teachers = make_teachers(make_model)
    head = snapshot(model.head)
    build_method("finetune", {}, MethodContext(teachers=teachers)).setup(model)
    for m in TWO:
        for k, v in teachers[m].encoders[m].state_dict().items():
            assert torch.equal(model.encoders[m].state_dict()[k], v), (m, k)
    assert all(torch.equal(v, model.head.state_dict()[k]) for k, v in head.items())  # the head stays random


def test_finetune_optimizer_gives_encoders_the_scaled_lr(make_model, alpha_splits, train_cfgs, tmp_path):
    model, spec = make_model()
    ctx = MethodContext(teachers=make_teachers(make_model), lr=0.1)
    method = build_method("finetune", {"encoder_lr_scale": 0.01}, ctx)
    optim, schedule, cfg = train_cfgs(epochs=2, lr=0.1)
    fit(model, method, alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule, cfg,
        Runtime.cpu(cfg))
    groups = load_checkpoint(tmp_path / "checkpoints" / LAST)["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.001])
    assert [len(g["params"]) for g in groups] == [len(list(model.head.parameters())), 4]


def test_finetune_with_encoder_lr_zero_keeps_the_pretrained_encoders(
    make_model, alpha_splits, train_cfgs, snapshot, tmp_path
):
    model, spec = make_model()
    teachers = make_teachers(make_model)
    frozen = {m: snapshot(t) for m, t in teachers.items()}
    head = snapshot(model.head)
    method = build_method("finetune", {"encoder_lr_scale": 0.0}, MethodContext(teachers=teachers, lr=0.2))
    optim, schedule, cfg = train_cfgs(epochs=3, lr=0.2, momentum=0.9)
    fit(model, method, alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule, cfg,
        Runtime.cpu(cfg))
    for m in TWO:
        for k, v in teachers[m].encoders[m].state_dict().items():
            assert torch.equal(model.encoders[m].state_dict()[k], v)
        assert all(torch.equal(v, teachers[m].state_dict()[k]) for k, v in frozen[m].items())  # only read
    assert all(not torch.equal(v, model.head.state_dict()[k]) for k, v in head.items())


def test_finetune_refuses_missing_or_mismatched_pretrained_encoders(make_model):
    with pytest.raises(UserError, match="--teachers RUN_DIR"):
        build_method("finetune", {}, MethodContext())
    with pytest.raises(UserError, match="method.encoder_lr_scale"):
        build_method("finetune", {"encoder_lr_scale": -1.0}, MethodContext(teachers=make_teachers(make_model)))
    only_m1 = {"m1": make_teachers(make_model)["m1"]}
    with pytest.raises(UserError, match="no pre-trained model for modality 'm2'"):
        build_method("finetune", {}, MethodContext(teachers=only_m1)).setup(make_model()[0])
    method = build_method("finetune", {}, MethodContext(teachers=make_teachers(make_model, hidden=(8,))))
    with pytest.raises(UserError, match="model.hidden"):
        method.setup(make_model()[0])
    scaled = build_method("finetune", {"encoder_lr_scale": 0.1}, MethodContext(teachers=make_teachers(make_model)))
    with pytest.raises(RuntimeError, match="MethodContext.lr"):
        scaled.param_groups(make_model()[0])
