"""Recipes: loading into frozen dataclasses, base inheritance, overrides, strict validation, round-trip."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from mmtool.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    Recipe,
    TrainConfig,
    deep_merge,
    load_recipe,
    save_recipe,
)
from mmtool.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


FULL = """
    stage: train
    description: a test recipe
    data: {name: synth-alpha, n: 400, seed: 3, val_fraction: 0.2}
    model: {encoder: mlp, hidden: [32, 16], head: mlp, head_hidden: 8}
    optim: {name: adam, lr: 0.01, weight_decay: 1}
    schedule: {name: step, step_size: 3}
    train: {epochs: 5, batch_size: 64, channels_last: false}
    method: {name: umt, distill_weight: 10.0, modalities: [m1]}
    ensemble: {weights: [0.25, 0.75]}
    modalities: [m1, m2]
    teachers: runs/pretrain/x
"""


# ------------------------------------------------------------------------------------------ valid loading
def test_valid_recipe_loads_into_typed_frozen_dataclasses(tmp_path):
    path = write(tmp_path / "r.yaml", FULL)
    r = load_recipe(path)

    assert isinstance(r, Recipe)
    assert isinstance(r.data, DataConfig) and isinstance(r.model, ModelConfig)
    assert isinstance(r.optim, OptimConfig) and isinstance(r.train, TrainConfig)
    assert r.stage == "train" and r.description == "a test recipe"
    assert (r.data.name, r.data.n, r.data.seed, r.data.val_fraction) == ("synth-alpha", 400, 3, 0.2)
    assert r.model.hidden == (32, 16) and isinstance(r.model.hidden, tuple)
    assert r.model.head == "mlp" and r.model.head_hidden == 8
    assert r.optim.name == "adam" and r.optim.lr == 0.01
    # an int written where a float is expected becomes a float
    assert r.optim.weight_decay == 1.0 and isinstance(r.optim.weight_decay, float)
    assert r.schedule.name == "step" and r.schedule.step_size == 3
    assert r.train.epochs == 5 and r.train.batch_size == 64
    # keys not written keep the dataclass defaults
    assert r.train.eval_every == TrainConfig().eval_every
    assert r.data.test_fraction == DataConfig().test_fraction
    assert r.ensemble.weights == (0.25, 0.75)
    assert r.modalities == ("m1", "m2")
    assert r.teachers == "runs/pretrain/x"
    assert r.run is None
    assert r.source == str(path)
    # method section validated against UMT's parameter dataclass, defaults filled in
    assert r.method.name == "umt"
    assert r.method.params == {"task_weight": 1.0, "distill_weight": 10.0, "modalities": ("m1",)}

    with pytest.raises(dataclasses.FrozenInstanceError):
        r.optim.lr = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.stage = "probe"  # type: ignore[misc]


def test_minimal_recipe_uses_defaults(tmp_path):
    r = load_recipe(write(tmp_path / "r.yaml", "stage: probe\n"))
    assert r.data == DataConfig() and r.model == ModelConfig() and r.train == TrainConfig()
    assert r.method.name == "naive" and r.method.params == {}


def test_base_inheritance_deep_merges(tmp_path):
    write(
        tmp_path / "common.yaml",
        """
        stage: train
        data: {name: synth-alpha, n: 500, seed: 1}
        optim: {name: sgd, lr: 0.2, momentum: 0.9}
        train: {epochs: 50, eval_every: 5}
        """,
    )
    write(
        tmp_path / "mid" / "umt.yaml",
        """
        base: ../common.yaml
        method: {name: umt, distill_weight: 5.0}
        train: {epochs: 20}
        """,
    )
    child = write(
        tmp_path / "mid" / "leaf" / "child.yaml",
        """
        base: ../umt.yaml
        data: {n: 300}
        optim: {lr: 0.05}
        method: {task_weight: 2.0}
        """,
    )
    r = load_recipe(child)
    # the child wins key by key; untouched sibling keys of the same section survive from the base
    assert (r.data.name, r.data.n, r.data.seed) == ("synth-alpha", 300, 1)
    assert (r.optim.name, r.optim.lr, r.optim.momentum) == ("sgd", 0.05, 0.9)
    assert (r.train.epochs, r.train.eval_every) == (20, 5)
    assert r.method.name == "umt"
    assert r.method.params["distill_weight"] == 5.0 and r.method.params["task_weight"] == 2.0
    assert r.source == str(child)


def test_deep_merge_does_not_mutate_inputs():
    a = {"x": {"y": 1, "z": 2}, "k": 1}
    b = {"x": {"y": 3}}
    out = deep_merge(a, b)
    assert out == {"x": {"y": 3, "z": 2}, "k": 1}
    assert a == {"x": {"y": 1, "z": 2}, "k": 1} and b == {"x": {"y": 3}}


def test_circular_base_chain_raises(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\nstage: train\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(UserError, match="circular"):
        load_recipe(tmp_path / "a.yaml")


def test_missing_base_file_names_it(tmp_path):
    path = write(tmp_path / "r.yaml", "base: nowhere.yaml\nstage: train\n")
    with pytest.raises(UserError, match="nowhere.yaml"):
        load_recipe(path)


# ------------------------------------------------------------------------------------------ overrides
def test_overrides_parse_yaml_types(tmp_path):
    path = write(tmp_path / "r.yaml", "stage: train\noptim: {lr: 0.5}\ndata: {n: 300}\n")
    r = load_recipe(
        path,
        [
            "optim.lr=0.1",
            "model.hidden=[8,8]",
            "train.epochs=7",
            "train.channels_last=true",
            "data.n=null",
            "schedule.name=step",  # section absent from the file
            "description=hello world",
            "method.name=umt",
            "method.distill_weight=3.0",
        ],
    )
    assert r.optim.lr == 0.1 and isinstance(r.optim.lr, float)
    assert r.model.hidden == (8, 8) and isinstance(r.model.hidden, tuple)
    assert r.train.epochs == 7 and isinstance(r.train.epochs, int)
    assert r.train.channels_last is True
    assert r.data.n is None
    assert r.schedule.name == "step"
    assert r.description == "hello world"
    assert r.method.name == "umt" and r.method.params["distill_weight"] == 3.0


def test_overrides_apply_after_base_merge(tmp_path):
    write(tmp_path / "base.yaml", "stage: train\noptim: {lr: 0.5, momentum: 0.9}\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\noptim: {lr: 0.3}\n")
    r = load_recipe(child, ["optim.lr=0.1"])
    assert (r.optim.lr, r.optim.momentum) == (0.1, 0.9)


def test_override_without_equals_sign_raises(tmp_path):
    path = write(tmp_path / "r.yaml", "stage: train\n")
    with pytest.raises(UserError, match="key=value"):
        load_recipe(path, ["optim.lr"])


def test_unknown_override_key_names_file_and_key(tmp_path):
    path = write(tmp_path / "r.yaml", "stage: train\n")
    with pytest.raises(UserError) as err:
        load_recipe(path, ["optim.lrr=0.1"])
    assert str(path) in str(err.value) and "'optim.lrr'" in str(err.value)


# ------------------------------------------------------------------------------------------ strictness
@pytest.mark.parametrize(
    "body, key",
    [
        ("stage: train\nepochs: 5\n", "'epochs'"),
        ("stage: train\noptim: {lrr: 0.1}\n", "'optim.lrr'"),
        ("stage: train\ndata: {name: synth-alpha, nn: 3}\n", "'data.nn'"),
        ("stage: train\nmethod: {name: umt, distil_weight: 50.0}\n", "'method.distil_weight'"),
        ("stage: train\nmethod: {name: naive, distill_weight: 50.0}\n", "'method.distill_weight'"),
    ],
)
def test_unknown_key_names_file_and_dotted_key(tmp_path, body, key):
    path = write(tmp_path / "recipe.yaml", body)
    with pytest.raises(UserError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert str(path) in msg
    assert key in msg
    assert "unknown key" in msg


@pytest.mark.parametrize(
    "body, key",
    [
        ('stage: train\noptim: {lr: "1e-2"}\n', "'optim.lr'"),
        ("stage: train\noptim: {lr: 1e-2}\n", "'optim.lr'"),  # YAML 1.1 reads 1e-2 as a string
        ("stage: train\ntrain: {epochs: 2.5}\n", "'train.epochs'"),
        ("stage: train\ntrain: {epochs: true}\n", "'train.epochs'"),  # bool is not an int here
        ("stage: train\ntrain: {channels_last: 1}\n", "'train.channels_last'"),
        ("stage: train\nmodel: {hidden: 8}\n", "'model.hidden'"),
        ("stage: train\nmodel: {hidden: [8, x]}\n", "'model.hidden'"),
        ("stage: train\ndata: {n: many}\n", "'data.n'"),
        ("stage: train\noptim: 0.1\n", "'optim'"),
        ("stage: train\nmethod: {name: umt, distill_weight: lots}\n", "'method.distill_weight'"),
        ("stage: 3\n", "'stage'"),
    ],
)
def test_wrong_type_names_file_and_key(tmp_path, body, key):
    path = write(tmp_path / "recipe.yaml", body)
    with pytest.raises(UserError) as err:
        load_recipe(path)
    assert str(path) in str(err.value)
    assert key in str(err.value)


def test_float_given_as_exponent_string_gets_a_hint(tmp_path):
    path = write(tmp_path / "r.yaml", "stage: train\noptim: {lr: 1e-2}\n")
    with pytest.raises(UserError, match="1.0e-2"):
        load_recipe(path)


def test_missing_file_raises_user_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(UserError) as err:
        load_recipe(missing)
    assert str(missing) in str(err.value)


@pytest.mark.parametrize(
    "body, pattern",
    [
        ("description: no stage\n", "missing key 'stage'"),
        ("stage: bake\n", "'stage' must be one of"),
        ("stage: train\nstage: probe\n", "duplicate key"),
        ("stage: train\noptim: {lr: 0.1\n", "invalid YAML"),
        ("- just\n- a list\n", "mapping"),
        ("stage: train\nmethod: umt\n", "'method'"),
        ("stage: train\nmethod: {name: distill}\n", "unknown method 'distill'"),
        ("stage: train\nbase: 3\n", "'base'"),
    ],
)
def test_malformed_recipes_raise_user_error(tmp_path, body, pattern):
    path = write(tmp_path / "bad.yaml", body)
    with pytest.raises(UserError, match=pattern) as err:
        load_recipe(path)
    assert str(tmp_path) in str(err.value)


def test_unknown_method_lists_known_methods(tmp_path):
    path = write(tmp_path / "r.yaml", "stage: train\nmethod: {name: nope}\n")
    with pytest.raises(UserError) as err:
        load_recipe(path)
    for name in ("naive", "ume", "umt", "unimodal"):
        assert name in str(err.value)


# ------------------------------------------------------------------------------------------ round-trip
def test_save_then_load_round_trips(tmp_path):
    r = load_recipe(write(tmp_path / "r.yaml", FULL), ["data.n=null"])
    out = tmp_path / "run" / "config.yaml"
    save_recipe(r, out)
    assert "\nsource:" not in out.read_text()
    again = load_recipe(out)
    assert again.source == str(out)
    assert dataclasses.replace(again, source=r.source) == r


def _shipped_recipes() -> list[Path]:
    return sorted(p for p in (REPO / "recipes").rglob("*.yaml") if "_base" not in p.parts)


@pytest.mark.parametrize("path", _shipped_recipes(), ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_shipped_recipes_round_trip(tmp_path, path):
    r = load_recipe(path)
    save_recipe(r, tmp_path / "config.yaml")
    again = load_recipe(tmp_path / "config.yaml")
    assert dataclasses.replace(again, source=r.source) == r


def test_dataset_recipe_then_recipe_fragments(tmp_path, monkeypatch):
    from mmtool.config import resolve_recipe

    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "train.yaml").write_text("stage: train\noptim: {lr: 0.5}\ntrain: {epochs: 9}\n")
    (tmp_path / "smoke.yaml").write_text("train: {epochs: 1}\n")
    monkeypatch.setenv("MMTOOL_RECIPES", str(tmp_path))
    files = resolve_recipe([tmp_path / "smoke.yaml"], "toy", "train.yaml")
    assert files == [tmp_path / "toy" / "train.yaml", tmp_path / "smoke.yaml"]
    recipe = load_recipe(files, ["optim.lr=0.1"])
    assert (recipe.train.epochs, recipe.optim.lr) == (1, 0.1)  # fragment over the dataset recipe, overrides last
    assert resolve_recipe(None, "toy", "train.yaml") == tmp_path / "toy" / "train.yaml"
    with pytest.raises(UserError, match="give --recipe PATH or --dataset NAME"):
        resolve_recipe([], None, "train.yaml")
