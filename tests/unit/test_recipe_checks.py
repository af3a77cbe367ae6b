"""Range checks on recipe values, and every problem of a recipe reported in one message (also via the CLI)."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from mmtool.checks import Check, checked
from mmtool.config import (
    DecideConfig,
    EncoderConfig,
    EnsembleConfig,
    ModelConfig,
    OptimConfig,
    ProbeConfig,
    ScheduleConfig,
    TrainConfig,
    load_recipe,
)
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from tests.e2e.test_cli_chain import mmtool

SECTIONS = (DataConfig, EncoderConfig, ModelConfig, OptimConfig, ScheduleConfig, TrainConfig, ProbeConfig,
            DecideConfig, EnsembleConfig)  # fmt: skip


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def minimal(tmp_path) -> Path:
    return write(tmp_path / "r.yaml", "# a recipe\nstage: train\n")


# key, a refused value, the expected wording, an accepted value at the edge
BOUNDS = [
    ("train.epochs", "0", "must be >= 1", "1"),
    ("train.batch_size", "-3", "must be >= 0", "0"),
    ("train.eval_batch_size", "-1", "must be >= 0", "0"),
    ("train.eval_every", "0", "must be >= 1", "1"),
    ("train.checkpoint_every", "-1", "must be >= 0", "0"),
    ("train.snapshot_every", "-1", "must be >= 0", "0"),
    ("train.log_every", "0", "must be >= 1", "1"),
    ("train.workers", "-1", "must be >= 0", "0"),
    ("train.seed", "-1", "must be >= 0", "0"),
    ("optim.lr", "0.0", "must be > 0", "1.0e-9"),
    ("optim.momentum", "1.0", "must be in [0, 1)", "0.0"),
    ("optim.weight_decay", "-0.1", "must be >= 0", "0.0"),
    ("optim.name", "lion", "must be one of sgd, adam, rmsprop, adagrad, adadelta, adamw", "adadelta"),
    ("schedule.step_size", "0", "must be >= 1", "1"),
    ("schedule.gamma", "0.0", "must be in (0, 1]", "1.0"),
    ("schedule.patience", "-1", "must be >= 0", "0"),
    ("schedule.factor", "1.0", "must be in (0, 1)", "0.5"),
    ("schedule.name", "linear", "must be one of none, step, plateau, cosine", "plateau"),
    ("probe.epochs", "0", "must be >= 1", "1"),
    ("probe.lr", "-1.0", "must be > 0", "0.5"),
    ("probe.batch_size", "-1", "must be >= 0", "0"),
    ("decide.bootstrap", "0", "must be >= 1", "1"),
    ("decide.confidence", "1.0", "must be in (0, 1)", "0.99"),
    ("data.test_fraction", "0.0", "must be in (0, 1)", "0.5"),
    ("data.val_fraction", "1.0", "must be in [0, 1)", "0.0"),
    ("data.n", "0", "must be >= 1", "null"),
    ("data.seed", "-2", "must be >= 0", "0"),
    ("data.split", "4", "must be one of 1, 2, 3", "3"),
    ("data.image_size", "0", "must be >= 1", "1"),
    ("data.store_size", "0", "must be >= 1", "1"),
    ("data.clip_frames", "0", "must be >= 1", "1"),
    ("data.flow_stack", "0", "must be >= 1", "1"),
    ("data.audio_seconds", "0.0", "must be > 0", "0.5"),
    ("data.sample_rate", "0", "must be >= 1", "1"),
    ("data.rgb_source", "disk", "must be one of frames, video, auto", "video"),
    ("model.head_hidden", "0", "must be >= 1", "1"),
    ("ensemble.combine", "max", "must be one of mean, entropy", "entropy"),
]


# a dataset's own settings are checked for a dataset that has them
OWNER = {"data.split": "ucf101", "data.flow_stack": "ucf101", "data.rgb_source": "ucf101", "data.image_size": "ucf101",
         "data.store_size": "vggsound", "data.clip_frames": "vggsound", "data.audio_seconds": "vggsound",
         "data.sample_rate": "vggsound"}  # fmt: skip


@pytest.mark.parametrize("key, bad, wording, edge", BOUNDS, ids=[b[0] for b in BOUNDS])
def test_out_of_range_value_names_file_key_bound_and_value(minimal, key, bad, wording, edge):
    dataset = [f"data.name={OWNER[key]}"] if key in OWNER else []
    with pytest.raises(UserError) as err:
        load_recipe(minimal, [*dataset, f"{key}={bad}"])
    assert str(err.value).startswith(f"{minimal}: {key} {wording}, got ")
    assert "\n" not in str(err.value)  # one problem: one line
    load_recipe(minimal, [*dataset, f"{key}={edge}"])  # the edge of the range is accepted


def test_a_setting_of_another_dataset_is_an_unknown_key_naming_the_dataset(minimal):
    with pytest.raises(UserError) as err:
        load_recipe(minimal, ["data.name=ucf101", "data.front_view=3"])
    assert str(err.value).startswith("override 'data.front_view=3': unknown key 'data.front_view' for dataset "
                                     "'ucf101' (known: augment, duplicate, flow_stack, image_size, missing_in, "
                                     "missing_modalities, missing_rate, n, name, raw, rgb_source, ")
    with pytest.raises(UserError) as err:
        load_recipe(minimal, ["data.name=ucf101", "data.flow_stak=3"])
    assert str(err.value) == ("override 'data.flow_stak=3': unknown key 'data.flow_stak' for dataset 'ucf101'; "
                              "did you mean 'data.flow_stack'?")


def test_a_run_folder_saved_with_every_dataset_key_still_loads(minimal, tmp_path):
    """config.yaml files written before datasets owned their settings hold every dataset's keys at their old
    defaults: in a saved recipe those are dropped; the same key at another value is the dataset's unknown key,
    and in a recipe a user writes every one of them is (nothing is accepted and then read by nothing)."""
    old = tmp_path / "config.yaml"
    old.write_text("stage: train\ndata: {name: synth-gamma, n: 600, split: 1, image_size: 224, store_size: 256, "
                   "clip_frames: 32, flow_stack: 10, rgb_source: auto, audio_seconds: 10.0, sample_rate: 16000, "
                   "augment: true, front_view: 0, rear_view: 6}\n")
    saved = load_recipe(old, saved=True).data.flat()
    assert saved == load_recipe(old, ["data={name: synth-gamma, n: 600}"], saved=True).data.flat()
    with pytest.raises(UserError, match="unknown key 'data.image_size' for dataset 'synth-gamma'"):
        load_recipe(old, ["data.image_size=112"], saved=True)
    with pytest.raises(UserError, match="11 problems") as err:
        load_recipe(old)
    assert "unknown key 'data.split' for dataset 'synth-gamma'" in str(err.value)


def test_real_datasets_refuse_the_keys_their_official_splits_make_meaningless(minimal, tmp_path):
    for key, value in (("n", 600), ("test_fraction", 0.3)):
        with pytest.raises(UserError, match=f"key 'data.{key}': ucf101 has official test splits and does not use it"):
            load_recipe(minimal, ["data.name=ucf101", f"data.{key}={value}"])
    real = load_recipe(minimal, ["data.name=ucf101", "data.val_fraction=0.2"])
    assert "n" not in real.data.flat() and real.data.flat()["val_fraction"] == 0.2
    saved = tmp_path / "config.yaml"  # a run made before: both keys at their defaults
    saved.write_text("stage: train\ndata: {name: ucf101, n: null, test_fraction: 0.2, split: 2}\n")
    assert load_recipe(saved, saved=True).data.settings.split == 2
    with pytest.raises(UserError, match="data.test_fraction"):
        load_recipe(saved)


@pytest.mark.parametrize(
    "override, problem",
    [
        ("model.hidden=[8,0]", "model.hidden[1] must be >= 1, got 0"),
        ("ensemble.weights=[0.5,-1.0]", "ensemble.weights[1] must be >= 0, got -1.0"),
        ("model.encoders={audio: {hidden: [0]}}", "model.encoders.audio.hidden[0] must be >= 1, got 0"),
        ("optim.lr=.nan", "optim.lr must be a finite number > 0, got nan"),
        ("optim.lr=.inf", "optim.lr must be a finite number > 0, got inf"),
    ],
)
def test_tuples_nested_encoders_and_non_finite_numbers(minimal, override, problem):
    with pytest.raises(UserError) as err:
        load_recipe(minimal, [override])
    assert str(err.value) == f"{minimal}: {problem}"


def test_every_default_passes_its_own_check():
    for cls in SECTIONS:
        for f in dataclasses.fields(cls):
            check = f.metadata.get("check")
            if check is None:
                continue
            values = f.default if isinstance(f.default, tuple) else (f.default,)
            assert all(check.problem(v) is None for v in values), f"{cls.__name__}.{f.name}"


def test_every_numeric_field_declares_a_check():
    """Every numeric recipe field states its range next to its declaration."""
    for cls in SECTIONS:
        for f in dataclasses.fields(cls):
            if f.type in ("int", "float", "int | None", "tuple[int, ...]", "tuple[float, ...]"):
                assert isinstance(f.metadata.get("check"), Check), f"{cls.__name__}.{f.name} has no check"


FIVE = """
    # five problems at once
    stage: train
    data: {name: synth-gamma, n: 600}
    train: {epochs: -5, eval_every: 0}
    optim: {lr: -1.0, lrr: 0.1}
    method: {name: naive, extra: 1}
"""
FIVE_PROBLEMS = [
    "train.epochs must be >= 1, got -5",
    "train.eval_every must be >= 1, got 0",
    "optim.lr must be > 0, got -1.0",
    "unknown key 'optim.lrr' (known: l1, lr, momentum, name, nesterov, norm_weight_decay, weight_decay); "
    "did you mean 'optim.lr'?",
    "unknown key 'method.extra' (known: none)",
]


def test_all_problems_of_a_recipe_in_one_message(tmp_path):
    path = write(tmp_path / "five.yaml", FIVE)
    with pytest.raises(UserError) as err:
        load_recipe(path)
    first, *rest = str(err.value).splitlines()
    assert first == f"{path}: 5 problems:"
    assert [line.strip() for line in rest] == FIVE_PROBLEMS


def test_types_unknown_keys_stage_and_method_are_all_collected(tmp_path):
    path = write(tmp_path / "r.yaml", "stage: bake\ntrain: {epochs: 2.5}\nmodel: 3\nmethod: {name: nope}\nfoo: 1\n")
    with pytest.raises(UserError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: 5 problems:\n")
    for part in ("key 'stage' must be one of", "key 'train.epochs': expected an integer (int), got 2.5 (float)",
                 "key 'model': expected a mapping, got 3 (int)",
                 "unknown method 'nope'", "unknown key 'foo'"):  # fmt: skip
        assert part in msg


def test_a_type_hint_is_given_only_for_numbers_written_as_strings(minimal):
    with pytest.raises(UserError, match="a number in quotes is a string: drop the quotes"):
        load_recipe(minimal, ["optim.lr='1e-2'"])
    with pytest.raises(UserError) as err:
        load_recipe(minimal, ["optim.lr=lots"])
    assert "quotes" not in str(err.value)


def test_method_params_that_declare_checks_are_range_checked(minimal, monkeypatch):
    """The generic rule: a method's parameter dataclass using ``checked`` gets the same checks."""
    from mmtool.methods.params import METHOD_PARAMS

    @dataclasses.dataclass(frozen=True)
    class Params:
        rate: float = checked(0.5, Check(lo=0.0, hi=1.0))
        plain: int = -1  # no check declared: only the type is checked

    monkeypatch.setitem(METHOD_PARAMS, "fake-checked", Params)
    recipe = load_recipe(minimal, ["method.name=fake-checked", "method.plain=-7"])
    assert recipe.method.params == {"rate": 0.5, "plain": -7}
    with pytest.raises(UserError, match=r": method.rate must be in \[0.0, 1.0\], got 2.0$"):
        load_recipe(minimal, ["method.name=fake-checked", "method.rate=2.0"])


# ---------------------------------------------------------------------------------------------- the CLI
def test_cli_validate_lists_all_five_problems_and_exits_2(tmp_path):
    path = write(tmp_path / "five.yaml", FIVE)
    proc = mmtool(tmp_path, "validate", str(path), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"error: {path}: 5 problems:"
    assert [line.strip() for line in lines[1:]] == FIVE_PROBLEMS
    assert "Traceback" not in proc.stderr


def test_cli_train_with_eval_every_0_exits_2_and_leaves_no_run(tmp_path):
    proc = mmtool(tmp_path, "train", "naive", "-d", "tiny", "train.eval_every=0", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {Path(__file__).resolve().parents[2] / 'recipes' / 'tiny' / 'naive.yaml'}: "
        "train.eval_every must be >= 1, got 0"
    ]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_decide_hands_on_list_and_bool_data_settings_as_yaml_the_next_recipe_reads():
    """`decide | train --from-decision -` re-applies the teachers' data.* settings as KEY=VALUE overrides:
    a list must read back as a list (not the string "(0, 6)") and a bool as a bool."""
    import yaml

    from mmtool.stages.decide import _yaml_value

    assert yaml.safe_load(_yaml_value((0, 6))) == [0, 6] and yaml.safe_load(_yaml_value(["a b", "c"])) == ["a b", "c"]
    assert yaml.safe_load(_yaml_value(False)) is False and yaml.safe_load(_yaml_value(1e-3)) == 1e-3
