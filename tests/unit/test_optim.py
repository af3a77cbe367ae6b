"""The optimizers of ``optim.name`` (paper 000, Table 12): each builds its torch class with the recipe's
settings and PyTorch's defaults for the rest, takes a step, and refuses the keys it does not read."""

from __future__ import annotations

import math

import pytest
import torch

from mmtool.config import OPTIMIZER_KEYS, OptimConfig, load_recipe, save_recipe
from mmtool.engine.optim import TORCH_OPTIMIZERS, build_optimizer
from mmtool.errors import UserError

# name -> (recipe keys, the torch class, the param-group values expected: the recipe's and PyTorch's defaults)
CASES = {
    "sgd": ({"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}, torch.optim.SGD,
            {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "dampening": 0, "nesterov": False}),
    "adam": ({"lr": 1e-3}, torch.optim.Adam,
             {"lr": 1e-3, "weight_decay": 0.0, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False}),
    "rmsprop": ({"lr": 1e-3, "momentum": 0.5}, torch.optim.RMSprop,
                {"lr": 1e-3, "momentum": 0.5, "weight_decay": 0.0, "alpha": 0.99, "eps": 1e-8, "centered": False}),
    "adagrad": ({"lr": 1e-2, "weight_decay": 1e-4}, torch.optim.Adagrad,
                {"lr": 1e-2, "weight_decay": 1e-4, "lr_decay": 0, "initial_accumulator_value": 0, "eps": 1e-10}),
    "adadelta": ({"lr": 1.0}, torch.optim.Adadelta, {"lr": 1.0, "weight_decay": 0.0, "rho": 0.9, "eps": 1e-6}),
    "adamw": ({"lr": 1e-3, "weight_decay": 1e-2}, torch.optim.AdamW,
              {"lr": 1e-3, "weight_decay": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False}),
}  # fmt: skip


def test_every_table_12_optimizer_is_known():
    assert set(CASES) == set(OPTIMIZER_KEYS) == set(TORCH_OPTIMIZERS)


@pytest.mark.parametrize("name", CASES)
def test_builds_the_torch_class_with_its_settings(name):
    keys, cls, expected = CASES[name]
    frozen, free = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    frozen.requires_grad_(False)
    opt = build_optimizer([*frozen.parameters(), *free.parameters()], OptimConfig(name=name, **keys))
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert len(group["params"]) == 2  # frozen parameters are left out
    assert {k: group[k] for k in expected} == expected


@pytest.mark.parametrize("name", CASES)
def test_one_step_changes_the_parameters(name):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(model.parameters(), OptimConfig(name=name, **CASES[name][0]))
    loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.arange(8) % 3)
    loss.backward()
    opt.step()
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("name", CASES)
def test_parameter_groups_keep_their_own_lr(name):
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    groups = [{"params": list(a.parameters())}, {"params": list(b.parameters()), "lr": 1e-5}]
    opt = build_optimizer(groups, OptimConfig(name=name, **CASES[name][0]))
    assert [g["lr"] for g in opt.param_groups] == [CASES[name][0]["lr"], 1e-5]


@pytest.mark.parametrize("name", ["adam", "adagrad", "adadelta", "adamw"])
def test_momentum_is_refused_where_it_is_not_read(name, tmp_path):
    keys = {**CASES[name][0], "momentum": 0.9}
    why = f"key 'optim.momentum': {name} does not read it (only sgd, rmsprop do); remove it"
    with pytest.raises(UserError) as err:
        build_optimizer(torch.nn.Linear(2, 2).parameters(), OptimConfig(name=name, **keys))
    assert str(err.value) == why
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"# r\nstage: train\noptim: {{name: {name}, momentum: 0.9, weight_decay: 0.1}}\n")
    with pytest.raises(UserError) as err:
        load_recipe(recipe)
    assert str(err.value) == f"{recipe}: {why}"
    # momentum 0 is no momentum, which every optimizer has: a run's saved config.yaml lists it for adam too
    assert load_recipe(recipe, ["optim.momentum=0.0"]).optim.name == name


def test_a_base_momentum_is_refused_when_a_recipe_switches_to_adam(tmp_path):
    (tmp_path / "base.yaml").write_text("optim: {name: sgd, lr: 0.1, momentum: 0.9}\n")
    (tmp_path / "r.yaml").write_text("# r\nstage: train\nbase: base.yaml\n")
    with pytest.raises(UserError, match="key 'optim.momentum': adam does not read it") as err:
        load_recipe(tmp_path / "r.yaml", ["optim.name=adam"])
    assert "\n" not in str(err.value)
    assert load_recipe(tmp_path / "r.yaml", ["optim.name=rmsprop"]).optim.momentum == 0.9


def test_adamw_without_weight_decay_is_refused(tmp_path):
    with pytest.raises(UserError, match="optim.weight_decay': adamw with weight_decay 0 is adam"):
        build_optimizer(torch.nn.Linear(2, 2).parameters(), OptimConfig(name="adamw", lr=1e-3))
    (tmp_path / "r.yaml").write_text("# r\nstage: train\noptim: {name: adamw, lr: 1.0e-3}\n")
    with pytest.raises(UserError, match="PyTorch's AdamW default is 0.01"):
        load_recipe(tmp_path / "r.yaml")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UserError, match="known: sgd, adam, rmsprop, adagrad, adadelta, adamw"):
        build_optimizer(torch.nn.Linear(2, 2).parameters(), OptimConfig(name="lion"))


@pytest.mark.parametrize("name", CASES)
def test_recipe_round_trips_through_a_saved_config(name, tmp_path):
    keys = ", ".join(f"{k}: {v!r}" for k, v in CASES[name][0].items())
    path = tmp_path / "r.yaml"
    path.write_text(f"# r\nstage: train\noptim: {{name: {name}, {keys}}}\n")
    recipe = load_recipe(path)
    save_recipe(recipe, tmp_path / "run" / "config.yaml")
    assert load_recipe(tmp_path / "run" / "config.yaml").optim == recipe.optim


def test_cosine_lr_follows_pyslowfast_with_warm_up():
    """SLOWFAST_8x8_R50: BASE_LR 0.1, MAX_EPOCH 196, WARMUP_EPOCHS 34 from WARMUP_START_LR 0.01, end 0."""
    from mmtool.config import ScheduleConfig
    from mmtool.engine.optim import cosine_lr

    cfg = ScheduleConfig(name="cosine", warmup_epochs=34.0, warmup_start_lr=0.01)
    at_34 = 0.1 * (math.cos(math.pi * 34 / 196) + 1) / 2  # the warm-up's target: the cosine's value at 34
    assert cosine_lr(0.0, 0.1, cfg, 196) == pytest.approx(0.01)
    assert cosine_lr(17.0, 0.1, cfg, 196) == pytest.approx(0.01 + (at_34 - 0.01) / 2)
    assert cosine_lr(34.0, 0.1, cfg, 196) == pytest.approx(at_34)
    assert cosine_lr(98.0, 0.1, cfg, 196) == pytest.approx(0.05)
    assert cosine_lr(196.0, 0.1, cfg, 196) == pytest.approx(0.0, abs=1e-12)


def test_cosine_schedule_steps_every_batch_and_keeps_group_ratios():
    from mmtool.config import ScheduleConfig
    from mmtool.engine.optim import build_scheduler, cosine_lr

    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.05}], lr=0.1)
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1.0, warmup_start_lr=0.01)
    sched = build_scheduler(opt, cfg, epochs=3, steps_per_epoch=4)
    assert sched.per_step
    for step in range(12):
        expected = cosine_lr(step / 4, 0.1, cfg, 3)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)
        assert opt.param_groups[1]["lr"] == pytest.approx(expected / 2)
        opt.step()
        sched.step()
    with pytest.raises(UserError, match="schedule.warmup_epochs"):
        build_scheduler(opt, ScheduleConfig(name="cosine", warmup_epochs=3.0), epochs=3, steps_per_epoch=4)


def test_nesterov_is_sgds_and_needs_momentum(tmp_path):
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], OptimConfig(name="sgd", lr=0.1, momentum=0.9,
                                                                            nesterov=True))  # fmt: skip
    assert opt.param_groups[0]["nesterov"] is True and opt.param_groups[0]["momentum"] == 0.9
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stage: train\noptim: {name: adam, lr: 1.0e-3, nesterov: true}\n")
    with pytest.raises(UserError, match="key 'optim.nesterov': adam does not read it \\(only sgd do\\)"):
        load_recipe(recipe)
    recipe.write_text("stage: train\noptim: {name: sgd, lr: 0.1, nesterov: true}\n")
    with pytest.raises(UserError, match="Nesterov momentum needs optim.momentum > 0"):
        load_recipe(recipe)
