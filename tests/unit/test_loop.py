"""The shared training loop: model selection on validation, metrics.jsonl, checkpoints and resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmtool.config import ScheduleConfig
from mmtool.data import Split
from mmtool.engine.checkpoint import load_checkpoint, save_checkpoint
from mmtool.engine.evaluate import evaluate
from mmtool.engine.loop import fit
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.methods import Method, MethodContext, build_method
from mmtool.methods.naive import NaiveFusion
from mmtool.runs import BEST, COMPLETE, LAST, PREVIOUS, Layout

CPU = Runtime.cpu()


def load_model(run, which: str = "best"):
    return Layout(run).checkpoints().load_model(which)


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def naive():
    return build_method("naive", {}, MethodContext(num_classes=2, modalities=("m1", "m2")))


class Crash(RuntimeError):
    pass


class CrashingNaive(NaiveFusion):
    """Naive fusion that dies on its ``crash_at``-th training step (a simulated kill)."""

    def __init__(self, crash_at: int) -> None:
        super().__init__(NaiveFusion.Params(), MethodContext())
        self.calls, self.crash_at = 0, crash_at

    def training_step(self, model, batch):
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash(f"killed at step {self.calls}")
        return super().training_step(model, batch)


def flipped(split: Split) -> Split:
    return Split(split.inputs, 1 - split.target)


# ------------------------------------------------------------------------------------------ selection
def test_best_checkpoint_is_selected_on_validation(make_model, alpha_splits, train_cfgs, tmp_path):
    # validation labels are the opposite of the training rule: the better the model fits train, the worse
    # it does on val, so the best validation epoch is early and differs from the last one
    model, spec = make_model()
    val = flipped(alpha_splits["val"])
    optim, schedule, cfg = train_cfgs(epochs=12, lr=0.2)
    result = fit(model, naive(), alpha_splits["train"], val, spec, tmp_path, optim, schedule, cfg, Runtime.cpu(cfg))

    records = read_metrics(tmp_path)
    assert [r["epoch"] for r in records] == list(range(1, 13))
    accs = [r["val_accuracy"] for r in records]
    best_epoch = accs.index(max(accs)) + 1  # the first epoch reaching the maximum
    assert best_epoch < 12 and accs[-1] < max(accs)
    assert result.best_epoch == best_epoch
    assert result.best_val["accuracy"] == max(accs)
    assert records[-1]["best_epoch"] == best_epoch

    best = load_checkpoint(tmp_path / "checkpoints" / BEST)
    assert best["epoch"] == best_epoch and best["spec"] == spec
    assert best["val"]["accuracy"] == max(accs)
    # the stored weights are the selected epoch's: they reproduce its validation numbers
    selected, _ = load_model(tmp_path)
    again = evaluate(selected, val, CPU)
    assert again["accuracy"] == pytest.approx(max(accs))
    assert again["loss"] == pytest.approx(records[best_epoch - 1]["val_loss"], rel=1e-5)
    # ... and the final weights are not the selected ones
    last, _ = load_model(tmp_path, which="last")
    assert evaluate(last, val, CPU)["accuracy"] == pytest.approx(accs[-1])


def test_last_holds_the_best_weights_once_when_they_are_the_models(make_model, alpha_splits, train_cfgs, tmp_path):
    """Saved right after its best epoch, last.pt shares the model's storage for the best copy (a video
    model's copy is hundreds of MB); after a later, worse epoch it holds both, and resuming reads either."""
    model, spec = make_model()
    optim, schedule, cfg = train_cfgs(epochs=1, lr=0.2)
    fit(model, naive(), alpha_splits["train"], alpha_splits["val"], spec, tmp_path / "a", optim, schedule, cfg,
        Runtime.cpu(cfg))
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / LAST, weights_only=True)
    assert ckpt["best_epoch"] == 1 and ckpt["best_model"].keys() <= ckpt["model"].keys()
    for key, value in ckpt["best_model"].items():
        assert value.untyped_storage().data_ptr() == ckpt["model"][key].untyped_storage().data_ptr()

    model, spec = make_model()
    optim, schedule, cfg = train_cfgs(epochs=12, lr=0.2)
    fit(model, naive(), alpha_splits["train"], flipped(alpha_splits["val"]), spec, tmp_path / "b", optim, schedule,
        cfg, Runtime.cpu(cfg))  # fmt: skip
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / LAST, weights_only=True)
    best = load_checkpoint(tmp_path / "b" / "checkpoints" / BEST)
    assert ckpt["best_epoch"] < 12  # the flipped validation labels make an early epoch the best
    assert all(torch.equal(ckpt["best_model"][k], v) for k, v in best["model"].items())
    assert any(not torch.equal(ckpt["model"][k], v) for k, v in best["model"].items())


def test_metrics_record_losses_lr_and_validation(make_model, alpha_splits, train_cfgs, tmp_path):
    model, spec = make_model()
    optim, _, cfg = train_cfgs(epochs=6, lr=0.4, eval_every=2)
    schedule = ScheduleConfig(name="step", step_size=2, gamma=0.5)
    fit(model, naive(), alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule, cfg,
        Runtime.cpu(cfg))
    records = read_metrics(tmp_path)
    assert [r["epoch"] for r in records] == [2, 4, 6]  # logged at evaluation epochs
    for r in records:
        assert {"train_task_loss", "train_loss", "val_loss", "val_accuracy", "lr", "best_epoch"} <= set(r)
        assert r["train_loss"] == pytest.approx(r["train_task_loss"])
        assert math.isfinite(r["val_loss"]) and 0 <= r["val_accuracy"] <= 100
    # lr is the one used during the logged epoch: 0.4 for epochs 1-2, then halved every 2 epochs
    assert [r["lr"] for r in records] == pytest.approx([0.4, 0.2, 0.1])
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    # full batch: the training loss logged for epoch 2 is the loss of the weights after one SGD step,
    # i.e. before epoch 2's own step; recompute it independently
    twin, _ = make_model()
    train = alpha_splits["train"]
    opt = torch.optim.SGD(twin.parameters(), lr=0.4)
    torch.nn.functional.cross_entropy(twin(train.inputs)["logits"], train.target).backward()
    opt.step()
    assert records[0]["train_loss"] == pytest.approx(evaluate(twin, train, CPU)["loss"], rel=1e-5)


def test_no_validation_split_selects_last_epoch(make_model, alpha_splits, train_cfgs, tmp_path):
    model, spec = make_model()
    empty = Split({m: x[:0] for m, x in alpha_splits["val"].inputs.items()}, alpha_splits["val"].target[:0])
    optim, schedule, cfg = train_cfgs(epochs=3)
    result = fit(model, naive(), alpha_splits["train"], empty, spec, tmp_path, optim, schedule, cfg, Runtime.cpu(cfg))
    assert result.best_epoch == 3
    assert load_checkpoint(tmp_path / "checkpoints" / BEST)["epoch"] == 3


def test_non_finite_loss_raises(make_model, alpha_splits, train_cfgs, tmp_path):
    model, spec = make_model()
    optim, schedule, cfg = train_cfgs(epochs=50, lr=1e6)
    with pytest.raises(FloatingPointError, match="non-finite"):
        fit(model, naive(), alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule, cfg,
            Runtime.cpu(cfg))


class _PoisonAt(Method):
    """naive fusion whose loss becomes NaN at one (epoch, step): a deterministic non-finite loss."""

    def __init__(self, epoch: int, step: int) -> None:
        self.inner, self.at, self.epoch, self.step = naive(), (epoch, step), 0, -1

    def on_epoch_start(self, model, epoch: int) -> None:
        self.epoch, self.step = epoch, -1

    def training_step(self, model, batch):
        self.step += 1
        losses = self.inner.training_step(model, batch)
        if (self.epoch, self.step) == self.at:
            losses["poison_loss"] = torch.tensor(float("nan"))
        else:
            losses["poison_loss"] = torch.zeros(())
        return losses


def test_non_finite_loss_names_epoch_step_and_term_and_keeps_checkpoints(
    make_model, alpha_splits, train_cfgs, snapshot, tmp_path
):
    model, spec = make_model()
    optim, schedule, cfg = train_cfgs(epochs=4, batch_size=50, checkpoint_every=1, log_every=2)
    with pytest.raises(FloatingPointError, match=r"epoch 3, step 4 in poison_loss"):
        fit(model, _PoisonAt(3, 4), alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule,
            cfg, Runtime.cpu(cfg))  # fmt: skip
    assert load_checkpoint(tmp_path / "checkpoints" / LAST)["epoch"] == 2  # the last good epoch's state
    assert all(math.isfinite(v) for k, v in load_checkpoint(tmp_path / "checkpoints" / BEST)["val"].items())
    assert [r["epoch"] for r in json_lines(tmp_path / "metrics.jsonl")] == [1, 2]


def test_on_diverge_stop_keeps_the_model_selected_before_the_non_finite_epoch(
    make_model, alpha_splits, train_cfgs, tmp_path
):
    model, spec = make_model()
    optim, schedule, cfg = train_cfgs(epochs=5, batch_size=50, log_every=2, on_diverge="stop")
    result = fit(model, _PoisonAt(3, 4), alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule,
                 cfg, Runtime.cpu(cfg))  # fmt: skip
    assert result.diverged_at == 3 and result.best_epoch in (1, 2)
    best = load_checkpoint(tmp_path / "checkpoints" / BEST)
    assert best["epoch"] == result.best_epoch and all(torch.isfinite(v).all() for v in best["model"].values())
    rows = json_lines(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and "epoch 3, step 4 in poison_loss" in rows[-1]["diverged"]
    again = fit(model, naive(), alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule, cfg,
                Runtime.cpu(cfg), resume=True)  # fmt: skip
    assert (again.diverged_at, again.best_epoch) == (3, result.best_epoch)  # a resume only scores the finished run
    model, spec = make_model()
    with pytest.raises(UserError, match=r"not finite in epoch 1, before any validated epoch"):
        fit(model, _PoisonAt(1, 0), alpha_splits["train"], alpha_splits["val"], spec, tmp_path / "early", optim,
            schedule, cfg, Runtime.cpu(cfg))  # fmt: skip


def test_nan_validation_is_never_best(make_model, alpha_splits, train_cfgs, tmp_path, monkeypatch):
    import mmtool.engine.loop as loop

    real = loop.evaluate
    calls = iter([False, True, False])  # epoch 2's validation "diverges"

    def flaky(model, split, runtime=None):
        out = real(model, split, runtime)
        return {"loss": float("nan"), "accuracy": 100.0} if next(calls) else out

    monkeypatch.setattr(loop, "evaluate", flaky)
    model, spec = make_model()
    optim, schedule, cfg = train_cfgs(epochs=3)
    result = fit(model, naive(), alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule, cfg,
                 Runtime.cpu(cfg))
    assert result.best_epoch in (1, 3)
    assert load_checkpoint(tmp_path / "checkpoints" / BEST)["epoch"] != 2


def test_validation_that_is_never_finite_is_one_line_not_a_missing_best_checkpoint(
    make_model, alpha_splits, train_cfgs, tmp_path, monkeypatch
):
    import mmtool.engine.loop as loop

    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: {**real(*a, **k), "loss": float("inf")})
    model, spec = make_model()
    optim, schedule, cfg = train_cfgs(epochs=2)
    with pytest.raises(UserError, match=r"validation loss was not finite at any evaluation .* lower optim\.lr"):
        fit(model, naive(), alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule, cfg,
            Runtime.cpu(cfg))
    assert not (tmp_path / "checkpoints" / COMPLETE).exists() and not (tmp_path / "checkpoints" / BEST).exists()


def json_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_unknown_optimizer_raises_user_error(make_model, alpha_splits, train_cfgs, tmp_path):
    from mmtool.config import OptimConfig

    model, spec = make_model()
    _, schedule, cfg = train_cfgs()
    with pytest.raises(UserError, match="optim.name"):
        fit(model, naive(), alpha_splits["train"], None, spec, tmp_path, OptimConfig(name="lion"), schedule, cfg,
            Runtime.cpu(cfg))


# ------------------------------------------------------------------------------------------ checkpoints
def test_checkpoints_load_with_weights_only(make_model, alpha_splits, train_cfgs, tmp_path):
    model, spec = make_model()
    optim, schedule, cfg = train_cfgs(epochs=4, checkpoint_every=2, momentum=0.9)
    fit(model, naive(), alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule, cfg,
        Runtime.cpu(cfg))
    ckpt_dir = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == sorted([BEST, LAST, PREVIOUS, COMPLETE])
    assert torch.load(ckpt_dir / PREVIOUS, weights_only=True)["epoch"] == 2  # the one before, kept
    for name in (BEST, LAST):
        ckpt = torch.load(ckpt_dir / name, map_location="cpu", weights_only=True)
        assert ckpt["spec"] == spec
        assert set(ckpt["model"]) == set(model.state_dict())
    last = torch.load(ckpt_dir / LAST, weights_only=True)
    assert last["epoch"] == 4
    for k, v in model.state_dict().items():
        assert torch.equal(last["model"][k], v)
    assert last["optimizer"]["state"]  # momentum buffers saved for resuming
    done = json.loads((ckpt_dir / COMPLETE).read_text())
    assert done["epochs"] == 4 and done["best_epoch"] == load_checkpoint(ckpt_dir / BEST)["epoch"]
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(ckpt_dir / "nope.pt")


# ------------------------------------------------------------------------------------------ resume
RESUME = dict(epochs=10, checkpoint_every=3, batch_size=64, lr=0.1, momentum=0.9)
STEPS_PER_EPOCH = 5  # 300 training samples in batches of 64


def _resume_cfgs(train_cfgs):
    return train_cfgs(**RESUME, schedule=ScheduleConfig(name="step", step_size=4, gamma=0.5))


@pytest.mark.parametrize("crash_epoch", [8, 2])  # after the epoch-6 checkpoint / before any checkpoint
def test_resume_after_crash_equals_uninterrupted_run(crash_epoch, make_model, alpha_splits, train_cfgs, tmp_path):
    optim, schedule, cfg = _resume_cfgs(train_cfgs)
    train, val = alpha_splits["train"], alpha_splits["val"]

    straight_dir = tmp_path / "straight"
    straight, spec = make_model(seed=0)
    fit(straight, naive(), train, val, spec, straight_dir, optim, schedule, cfg, Runtime.cpu(cfg))

    run_dir = tmp_path / "crashed"
    first, _ = make_model(seed=0)
    crash_at = (crash_epoch - 1) * STEPS_PER_EPOCH + 1  # first step of crash_epoch
    with pytest.raises(Crash):
        fit(first, CrashingNaive(crash_at), train, val, spec, run_dir, optim, schedule, cfg, Runtime.cpu(cfg))
    logged = [r["epoch"] for r in read_metrics(run_dir)]
    assert logged == list(range(1, crash_epoch))
    assert not (run_dir / "checkpoints" / COMPLETE).exists()
    saved = (crash_epoch - 1) // 3 * 3  # the last complete checkpoint
    if saved:
        assert load_checkpoint(run_dir / "checkpoints" / LAST)["epoch"] == saved

    # a new process: fresh model and method, resume from disk. With a checkpoint the weights must come from
    # it (so start from a different init); without one the run restarts, and the stages rebuild the model
    # from the same seed, as done here.
    resumed, _ = make_model(seed=123 if saved else 0)
    torch.manual_seed(999)  # the global RNG state must come from the checkpoint, not from here
    result = fit(resumed, naive(), train, val, spec, run_dir, optim, schedule, cfg, Runtime.cpu(cfg), resume=True)
    assert result.resumed_from == (saved or None)

    for k, v in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), f"resumed weights differ from the straight run: {k}"
    a, b = read_metrics(straight_dir), read_metrics(run_dir)
    assert [r["epoch"] for r in b] == list(range(1, 11))  # every epoch exactly once
    assert a == b  # same losses, learning rates, accuracies, best epochs
    best_a = load_checkpoint(straight_dir / "checkpoints" / BEST)
    best_b = load_checkpoint(run_dir / "checkpoints" / BEST)
    assert best_a["epoch"] == best_b["epoch"] == result.best_epoch
    for k, v in best_a["model"].items():
        assert torch.equal(best_b["model"][k], v)


def test_checkpoints_by_minutes_follow_the_clock(make_model, alpha_splits, train_cfgs, tmp_path, monkeypatch):
    """``checkpoint_every_minutes``: a save once the clock passed the interval since the last save, at the
    step where it did, and none before (a fake clock moving one minute per step)."""
    from mmtool.engine import fit_state

    now = iter(range(0, 10**6, 60))  # seconds: one reading per step, one when the run starts and per save
    monkeypatch.setattr(fit_state, "_clock", lambda: float(next(now)))
    optim, schedule, cfg = train_cfgs(epochs=2, batch_size=100, checkpoint_every_minutes=2.5)
    model, spec = make_model()
    saves = []
    real_save = fit_state._save_last
    monkeypatch.setattr(fit_state, "_save_last", lambda run, epoch, partial: (saves.append(run.state.step),
                                                                               real_save(run, epoch, partial)))
    with pytest.raises(Crash):
        fit(model, CrashingNaive(5), alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule,
            cfg, Runtime.cpu(cfg))  # fmt: skip
    # the clock reads 0 s when the run starts, 60 and 120 s after steps 1 and 2, 180 s after step 3: a save
    # (the clock then reads 240 s), and step 4 at 300 s is only 60 s later
    assert saves == [3]
    saved = load_checkpoint(tmp_path / "checkpoints" / LAST)
    assert (saved["epoch"], saved["partial"]["epoch"], saved["partial"]["step"]) == (0, 1, 3)


def test_resume_does_not_keep_a_best_checkpoint_from_the_lost_epochs(make_model, alpha_splits, train_cfgs, tmp_path):
    """Epochs after the last resumable checkpoint are redone on resume and their metrics dropped; a best.pt
    written during those lost epochs must not survive as "the selected model" either. The lost timeline is
    simulated by its best.pt (epoch 7, better than anything the replay reaches), which is what happens
    whenever the replay is not bit-identical to the lost epochs (GPU kernels, bf16)."""
    optim, schedule, cfg = _resume_cfgs(train_cfgs)
    train, val = alpha_splits["train"], flipped(alpha_splits["val"])  # val accuracy peaks early
    run_dir = tmp_path / "crashed"
    first, spec = make_model(seed=0)
    with pytest.raises(Crash):
        fit(first, CrashingNaive(7 * STEPS_PER_EPOCH + 1), train, val, spec, run_dir, optim, schedule, cfg,
            Runtime.cpu(cfg))
    checkpoint = load_checkpoint(run_dir / "checkpoints" / LAST)
    assert checkpoint["epoch"] == 6
    lost, _ = make_model(seed=77)
    lost_best = {"model": lost.state_dict(), "spec": spec, "epoch": 7, "val": {"loss": 0.0, "accuracy": 100.0}}
    save_checkpoint(run_dir / "checkpoints" / BEST, lost_best)

    resumed, _ = make_model(seed=0)
    result = fit(resumed, naive(), train, val, spec, run_dir, optim, schedule, cfg, Runtime.cpu(cfg), resume=True)
    records = read_metrics(run_dir)
    # precondition: the replayed epochs 7-10 never beat the best epoch saved with the checkpoint
    assert all(r["val_accuracy"] <= checkpoint["best_val"]["accuracy"] for r in records[6:])
    assert result.best_epoch == checkpoint["best_epoch"] == records[-1]["best_epoch"]
    # the selected checkpoint must be the epoch this run reports, with that epoch's logged accuracy
    best = load_checkpoint(run_dir / "checkpoints" / BEST)
    assert best["epoch"] == result.best_epoch
    assert best["val"]["accuracy"] == records[result.best_epoch - 1]["val_accuracy"]


def test_resume_of_a_finished_run_does_not_train(make_model, alpha_splits, train_cfgs, snapshot, tmp_path):
    optim, schedule, cfg = train_cfgs(epochs=3)
    model, spec = make_model()
    done = fit(model, naive(), alpha_splits["train"], alpha_splits["val"], spec, tmp_path, optim, schedule, cfg,
               Runtime.cpu(cfg))
    metrics_before = (tmp_path / "metrics.jsonl").read_text()
    fresh, _ = make_model(seed=5)
    before = snapshot(fresh)
    again = fit(
        fresh,
        naive(),
        alpha_splits["train"],
        alpha_splits["val"],
        spec,
        tmp_path,
        optim,
        schedule,
        cfg,
        Runtime.cpu(cfg),
        resume=True,
    )
    assert (again.best_epoch, again.epochs, again.resumed_from) == (done.best_epoch, 3, 3)
    assert (tmp_path / "metrics.jsonl").read_text() == metrics_before
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, before[k])


# ------------------------------------------------------------------------------------------ optim
def test_build_optimizer_and_scheduler():
    from mmtool.config import OptimConfig
    from mmtool.engine.optim import build_optimizer, build_scheduler

    frozen, free = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    frozen.requires_grad_(False)
    opt = build_optimizer([*frozen.parameters(), *free.parameters()], OptimConfig(name="sgd", lr=0.3, momentum=0.5))
    assert isinstance(opt, torch.optim.SGD)
    assert len(opt.param_groups[0]["params"]) == 2  # frozen parameters are left out
    assert opt.param_groups[0]["lr"] == 0.3 and opt.param_groups[0]["momentum"] == 0.5
    adam = build_optimizer(free.parameters(), OptimConfig(name="adam", lr=0.01, weight_decay=0.1))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["weight_decay"] == 0.1

    assert build_scheduler(opt, ScheduleConfig(name="none")) is None
    step = build_scheduler(opt, ScheduleConfig(name="step", step_size=2, gamma=0.5))
    assert isinstance(step, torch.optim.lr_scheduler.StepLR)
    plateau = build_scheduler(adam, ScheduleConfig(name="plateau", patience=3, factor=0.2))
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)
    with pytest.raises(UserError, match="schedule.name"):
        build_scheduler(opt, ScheduleConfig(name="linear"))


def test_a_per_batch_cosine_schedule_resumes_exactly(make_model, alpha_splits, train_cfgs, tmp_path):
    """The cosine schedule steps after every batch: a run killed in epoch 8 and resumed from its epoch-6
    checkpoint ends with the weights, and the scheduler position, of the uninterrupted run."""
    optim, _, cfg = train_cfgs(**RESUME)
    schedule = ScheduleConfig(name="cosine", warmup_epochs=2.0, warmup_start_lr=0.01)
    train, val = alpha_splits["train"], alpha_splits["val"]
    straight, spec = make_model(seed=0)
    fit(straight, naive(), train, val, spec, tmp_path / "straight", optim, schedule, cfg, Runtime.cpu(cfg))
    first, _ = make_model(seed=0)
    with pytest.raises(Crash):
        fit(first, CrashingNaive(7 * STEPS_PER_EPOCH + 1), train, val, spec, tmp_path / "crashed", optim, schedule,
            cfg, Runtime.cpu(cfg))  # fmt: skip
    resumed, _ = make_model(seed=123)
    fit(resumed, naive(), train, val, spec, tmp_path / "crashed", optim, schedule, cfg, Runtime.cpu(cfg), resume=True)
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    last = torch.load(tmp_path / "crashed" / "checkpoints" / LAST, weights_only=True)
    assert last["scheduler"]["last_epoch"] == 10 * STEPS_PER_EPOCH
    lrs = [r["lr"] for r in read_metrics(tmp_path / "straight")]
    assert lrs[1] > lrs[0] and lrs[-1] < lrs[2]  # the warm-up rises, the cosine falls
