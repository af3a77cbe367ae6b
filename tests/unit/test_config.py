"""Recipes: loading into frozen dataclasses, base inheritance, overrides, strict validation, round-trip."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from mmtool.config import ModelConfig, OptimConfig, Recipe, TrainConfig, load_recipe, save_recipe
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from mmtool.recipe_files import deep_merge

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


def test_a_later_layer_naming_another_encoder_or_transform_replaces_its_arguments():
    base = {"model": {"encoders": {"audio": {"name": "resnet18", "args": {"width": 2}, "transform": "logmel",
                                             "transform_args": {"n_fft": 512, "n_mels": 64}, "pretrained": "a.pt"}},
                      "head_args": {"hidden": 3}}}  # fmt: skip
    same = deep_merge(base, {"model": {"encoders": {"audio": {"transform_args": {"n_mels": 32}}}}})
    assert same["model"]["encoders"]["audio"]["transform_args"] == {"n_fft": 512, "n_mels": 32}  # merged as ever
    later = {"transform": "fbank", "transform_args": {"n_mels": 8}}
    fbank = deep_merge(base, {"model": {"encoders": {"audio": later}}})
    assert fbank["model"]["encoders"]["audio"] == {"name": "resnet18", "args": {"width": 2}, "transform": "fbank",
                                                   "transform_args": {"n_mels": 8}, "pretrained": "a.pt"}  # fmt: skip
    other = deep_merge(base, {"model": {"encoders": {"audio": {"name": "cav_mae_audio", "transform": "fbank"}}}})
    assert other["model"]["encoders"]["audio"] == {"name": "cav_mae_audio", "transform": "fbank"}
    assert other["model"]["head_args"] == {"hidden": 3}  # elsewhere a dict named like that still merges
    assert deep_merge({"optim": {"name": "sgd", "momentum": 0.9}}, {"optim": {"name": "adam"}}) == {
        "optim": {"name": "adam", "momentum": 0.9}}


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


def test_unknown_override_key_is_blamed_on_the_override_with_the_closest_key(tmp_path):
    """The recipe file is not at fault for a key typed on the command line: the override is named."""
    path = write(tmp_path / "r.yaml", "stage: train\n")
    with pytest.raises(UserError) as err:
        load_recipe(path, ["optim.lrr=0.1"])
    assert str(err.value) == "override 'optim.lrr=0.1': unknown key 'optim.lrr'; did you mean 'optim.lr'?"
    with pytest.raises(UserError) as err:  # an unknown section: the override that wrote it
        load_recipe(path, ["train.epochs=3", "optimm.lr=0.1"])
    assert str(err.value) == "override 'optimm.lr=0.1': unknown key 'optimm'; did you mean 'optim'?"
    with pytest.raises(UserError) as err:  # nothing close: the known keys instead
        load_recipe(path, ["optim.zzz=1"])
    known = "l1, lr, momentum, name, nesterov, norm_weight_decay, weight_decay"
    assert str(err.value) == f"override 'optim.zzz=1': unknown key 'optim.zzz' (known: {known})"
    with pytest.raises(UserError) as err:  # with a problem of the file, both are listed under the file
        load_recipe(write(tmp_path / "two.yaml", "stage: train\ntrain: {epochs: 0}\n"), ["optim.lrr=0.1"])
    assert sorted(str(err.value).splitlines()[1:]) == [
        "  override 'optim.lrr=0.1': unknown key 'optim.lrr'; did you mean 'optim.lr'?",
        "  train.epochs must be >= 1, got 0",
    ]


def test_unknown_key_in_a_file_gets_the_closest_key(tmp_path):
    path = write(tmp_path / "r.yaml", "stage: train\noptim: {lrr: 0.1}\nmethod: {name: umt, distil_weight: 5}\n")
    with pytest.raises(UserError) as err:
        load_recipe(path)
    msg = str(err.value)
    known = "l1, lr, momentum, name, nesterov, norm_weight_decay, weight_decay"
    assert f"unknown key 'optim.lrr' (known: {known}); did you mean 'optim.lr'?" in msg
    assert "unknown key 'method.distil_weight' (known: " in msg and "did you mean 'method.distill_weight'?" in msg
    with pytest.raises(UserError, match=r"unknown method 'umtt' \(known: .*\); did you mean 'umt'\?$"):
        load_recipe(write(tmp_path / "m.yaml", "stage: train\nmethod: {name: umtt}\n"))


def test_an_override_given_twice_is_refused_naming_both_values():
    from mmtool.recipe_files import check_overrides

    with pytest.raises(UserError) as err:
        check_overrides(["optim.lr=0.1", "train.epochs=3", "optim.lr=0.3"])
    assert str(err.value) == "override 'optim.lr' given twice: optim.lr=0.1 and optim.lr=0.3; give it once"
    with pytest.raises(UserError, match="expected key=value"):
        check_overrides(["optim.lr"])
    check_overrides(["optim.lr=0.1", "optim.momentum=0.9"])  # different keys: fine
    check_overrides(None)


def test_a_fragment_validates_without_a_stage_but_with_its_keys_checked(tmp_path):
    from mmtool.recipe_files import is_fragment, recipe_bases

    frag = write(tmp_path / "frag.yaml", "optim: {lr: 0.5}\n")
    recipe = write(tmp_path / "sub" / "r.yaml", "base: ../frag.yaml\nstage: train\n")
    with pytest.raises(UserError, match="missing key 'stage'"):
        load_recipe(frag)
    assert load_recipe(frag, fragment=True).optim.lr == 0.5
    assert recipe_bases(recipe) == {frag.resolve()}
    assert is_fragment(frag, recipe_bases(recipe)) and not is_fragment(frag, set())
    assert not is_fragment(recipe, set())
    assert is_fragment(REPO / "recipes" / "_base" / "tiny.yaml", set())
    write(frag, "optim: {lrr: 0.5}\n")
    with pytest.raises(UserError, match="unknown key 'optim.lrr'"):
        load_recipe(frag, fragment=True)


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
        ("stage: train\ntrain: {epochs: 2.5}\n", "'train.epochs'"),
        ("stage: train\ntrain: {epochs: true}\n", "'train.epochs'"),  # bool is not an int here
        ("stage: train\ntrain: {channels_last: 1}\n", "'train.channels_last'"),
        ("stage: train\nmodel: {hidden: x}\n", "'model.hidden'"),
        ("stage: train\nmodel: {hidden: {a: 8}}\n", "'model.hidden'"),
        ("stage: train\nmodel: {hidden: [8, x]}\n", "'model.hidden[1]'"),  # the item, as range checks do
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


def test_number_in_quotes_gets_a_hint(tmp_path):
    path = write(tmp_path / "r.yaml", 'stage: train\noptim: {lr: "1e-2"}\n')
    with pytest.raises(UserError) as err:
        load_recipe(path)
    assert str(err.value) == (
        f"{path}: key 'optim.lr': expected a number (float), got '1e-2' (str); "
        "a number in quotes is a string: drop the quotes"
    )


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
    from mmtool.recipe_files import resolve_recipe

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


# ------------------------------------------------------------------------- numbers and lists as people write them
EXPONENTS = [("1e-3", 1e-3), ("1E-3", 1e-3), ("5e+2", 500.0), ("-2e-4", -2e-4), ("1.0e3", 1000.0), (".5e1", 5.0)]


@pytest.mark.parametrize("text, value", EXPONENTS, ids=[t for t, _ in EXPONENTS])
def test_exponent_numbers_are_floats_in_files_and_overrides(tmp_path, text, value):
    # gblending's eps is a float without a range check, so negative exponents load too
    path = write(tmp_path / "r.yaml", f"stage: train\nmethod: {{name: gblending, eps: {text}}}\n")
    from_file = load_recipe(path).method.params["eps"]
    plain = write(tmp_path / "s.yaml", "stage: train\n")
    from_override = load_recipe(plain, ["method.name=gblending", f"method.eps={text}"]).method.params["eps"]
    for got in (from_file, from_override):
        assert got == pytest.approx(value) and type(got) is float


def test_exponent_numbers_reach_every_float_field_and_untyped_values(tmp_path):
    path = write(
        tmp_path / "r.yaml",
        """
        stage: train
        optim: {lr: 1e-3, weight_decay: 5E-4}
        model: {encoders: {m1: {args: {eps: 1e-5}}}}
        method: {name: finetune, encoder_lr_scale: 1e-3}
        """,
    )
    r = load_recipe(path, ["probe.lr=2e-2", "schedule.gamma=5e-1"])
    assert (r.optim.lr, r.optim.weight_decay) == (0.001, 0.0005)
    assert (r.probe.lr, r.schedule.gamma) == (0.02, 0.5)
    assert r.model.encoders["m1"].args == {"eps": 1e-5}  # an untyped mapping reads numbers the same way
    assert r.method.params == {"encoder_lr_scale": 0.001}
    sd = load_recipe(path, ["method=null", "method.name=self_distill", "method.weight=5e+1"])
    assert sd.method.params["weight"] == 50.0 and type(sd.method.params["weight"]) is float  # float | None


def test_exponent_number_is_refused_where_an_int_is_expected(tmp_path):
    path = write(tmp_path / "r.yaml", "stage: train\ntrain: {epochs: 1e3}\n")
    with pytest.raises(UserError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}: key 'train.epochs': expected an integer (int), got 1000.0 (float)"


def test_loader_keeps_strings_ints_and_duplicate_key_refusal(tmp_path):
    from mmtool.recipe_files import parse_yaml

    assert parse_yaml("e5") == "e5" and parse_yaml("1e") == "1e" and parse_yaml("1e-3x") == "1e-3x"
    assert parse_yaml("12") == 12 and type(parse_yaml("12")) is int
    assert parse_yaml("0.25") == 0.25 and parse_yaml("1.0e-3") == 0.001
    with pytest.raises(UserError, match="duplicate key 'lr'"):
        load_recipe(write(tmp_path / "r.yaml", "stage: train\noptim: {lr: 1e-3, lr: 1e-2}\n"))


def test_a_string_that_looks_like_an_exponent_number_survives_save_and_load(tmp_path):
    r = load_recipe(write(tmp_path / "r.yaml", 'stage: train\ndescription: "1e-3"\noptim: {lr: 1e-5}\n'))
    assert r.description == "1e-3" and r.optim.lr == 1e-5
    save_recipe(r, tmp_path / "config.yaml")
    again = load_recipe(tmp_path / "config.yaml")
    assert again.description == "1e-3" and again.optim.lr == 1e-5


def test_int_is_taken_as_float_where_a_float_is_expected(tmp_path):
    path = write(tmp_path / "r.yaml", "stage: train\n")
    r = load_recipe(path, ["optim.lr=1", "ensemble.weights=[1, 3]"])
    assert r.optim.lr == 1.0 and type(r.optim.lr) is float
    assert r.ensemble.weights == (1.0, 3.0) and all(type(w) is float for w in r.ensemble.weights)
    sd = load_recipe(path, ["method.name=self_distill", "method.weight=2", "method.temperature=3"])
    assert (sd.method.params["weight"], sd.method.params["temperature"]) == (2.0, 3.0)
    assert type(sd.method.params["weight"]) is float and type(sd.method.params["temperature"]) is float


@pytest.mark.parametrize(
    "overrides, problem",
    [
        (["optim.lr=true"], "key 'optim.lr' (set on the command line): expected a number (float), got True (bool)"),
        (["train.epochs=false"], "key 'train.epochs' (set on the command line): expected an integer (int), "
                                 "got False (bool)"),
        (["data.n=true"], "key 'data.n' (set on the command line): expected an integer (int) or null, got True (bool)"),
        (["ensemble.weights=[0.5, true]"], "key 'ensemble.weights[1]' (set on the command line): "
                                           "expected a number (float), got True (bool)"),
        (["train.channels_last=1"], "key 'train.channels_last' (set on the command line): "
                                    "expected true or false (bool), got 1 (int)"),
        (["method.name=ume", "method.from_teachers=0"], "key 'method.from_teachers' (set on the command line): "
                                                        "expected true or false (bool), got 0 (int)"),
    ],
)  # fmt: skip
def test_bool_is_not_a_number_and_a_number_is_not_a_bool(tmp_path, overrides, problem):
    path = write(tmp_path / "r.yaml", "stage: train\n")
    with pytest.raises(UserError) as err:
        load_recipe(path, overrides)
    assert str(err.value) == f"{path}: {problem}"


def test_one_value_stands_for_a_list_of_one(tmp_path):
    path = write(
        tmp_path / "r.yaml",
        """
        stage: train
        model: {hidden: 32, encoders: {m2: {hidden: 16}}}
        modalities: m1
        """,
    )
    r = load_recipe(path)
    assert r.model.hidden == (32,) and r.model.encoders["m2"].hidden == (16,)
    assert r.modalities == ("m1",)
    o = load_recipe(
        write(tmp_path / "s.yaml", "stage: train\n"),
        ["model.hidden=64", "modalities=m2", "ensemble.weights=1", "method.name=umt", "method.modalities=m1"],
    )
    assert (o.model.hidden, o.modalities, o.ensemble.weights) == ((64,), ("m2",), (1.0,))
    assert type(o.ensemble.weights[0]) is float
    assert o.method.params["modalities"] == ("m1",)


def test_a_list_of_one_gets_the_items_checks_and_types(tmp_path):
    path = write(tmp_path / "r.yaml", "stage: train\n")
    with pytest.raises(UserError) as err:
        load_recipe(path, ["model.hidden=0"])
    assert str(err.value) == f"{path}: model.hidden[0] must be >= 1, got 0"
    with pytest.raises(UserError) as err:
        load_recipe(path, ["model.hidden=wide"])
    assert str(err.value) == (
        f"{path}: key 'model.hidden' (set on the command line): "
        "expected an integer (int) or a list of them, got 'wide' (str)"
    )
    with pytest.raises(UserError) as err:
        load_recipe(path, ["modalities="])  # nothing after '=' is not a modality named ''
    assert str(err.value).endswith("or a list of them, got '' (str); write [] for an empty list")
    assert load_recipe(path, ["modalities=[]"]).modalities == ()


def test_wrong_type_in_the_file_names_file_key_type_in_words_and_value(tmp_path):
    path = write(tmp_path / "r.yaml", "stage: train\noptim: {lr: abc}\n")
    with pytest.raises(UserError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}: key 'optim.lr': expected a number (float), got 'abc' (str)"


def test_wrong_type_names_the_base_file_or_command_line_that_wrote_it(tmp_path):
    write(tmp_path / "_base" / "common.yaml", "stage: train\noptim: {momentum: high}\nmodel: {hidden: [8, x]}\n")
    child = write(tmp_path / "child.yaml", "base: _base/common.yaml\ntrain: {epochs: 2.5}\nmodel: {head: mlp}\n")
    with pytest.raises(UserError) as err:
        load_recipe(child, ["optim.lr=abc", "data.n=many"])
    first, *rest = str(err.value).splitlines()
    assert first == f"{child}: 5 problems:"  # all problems of the recipe in one message
    base = tmp_path / "_base" / "common.yaml"
    assert sorted(line.strip() for line in rest) == sorted([
        f"key 'optim.momentum' (set in {base}): expected a number (float), got 'high' (str)",
        f"key 'model.hidden[1]' (set in {base}): expected an integer (int), got 'x' (str)",
        "key 'train.epochs': expected an integer (int), got 2.5 (float)",  # in the reported file itself
        "key 'optim.lr' (set on the command line): expected a number (float), got 'abc' (str)",
        "key 'data.n' (set on the command line): expected an integer (int) or null, got 'many' (str)",
    ])  # fmt: skip


def test_override_over_a_file_value_is_the_one_blamed(tmp_path):
    path = write(tmp_path / "r.yaml", "stage: train\noptim: {lr: 0.1, momentum: 0.5}\n")
    with pytest.raises(UserError) as err:
        load_recipe(path, ["optim.momentum=lots"])
    assert str(err.value) == (
        f"{path}: key 'optim.momentum' (set on the command line): expected a number (float), got 'lots' (str)"
    )
    # a second --recipe file is named as well
    other = write(tmp_path / "other.yaml", "optim: {lr: fast}\n")
    with pytest.raises(UserError) as err:
        load_recipe([path, other])
    assert str(err.value) == f"{path}: key 'optim.lr' (set in {other}): expected a number (float), got 'fast' (str)"


def test_recipe_built_from_the_command_line_names_it(tmp_path):
    from mmtool.config import build_recipe
    from mmtool.recipe_files import apply_overrides

    raw = apply_overrides({"stage": "prep", "data": {"name": "synth-gamma"}}, ["data.seed=1e3"], "command line")
    with pytest.raises(UserError) as err:
        build_recipe(raw, "command line")
    assert str(err.value) == "command line: key 'data.seed': expected an integer (int), got 1000.0 (float)"
    assert build_recipe(apply_overrides(raw, ["data.seed=7"], "command line"), "command line").data.seed == 7
