"""``--resume`` continues a run exactly as it was, through the real CLI: a recipe named with ``-r``/``-d``/METHOD
must be the run's own, a hand-edited config.yaml is refused; and the messages around recipes lead somewhere
(a key given twice, a mistyped override key or dataset, `validate` over many files, a run that trains nothing)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.e2e.cli import REPO, messages, run_cli

TINY = ["data.n=600"]  # recipes/tiny use a 600-sample gamma
RECIPES = REPO / "recipes"


@pytest.fixture(scope="module")
def cwd(tmp_path_factory) -> Path:
    """Prepared data, a 2-epoch fusion run ``r1`` and a 2-epoch uni-modal run ``pre``."""
    path = tmp_path_factory.mktemp("resume")
    run_cli(path, "prep", "synth-gamma", *TINY)
    run_cli(path, "train", "naive", "-d", "tiny", "train.epochs=2", "--run-dir", "r1")
    run_cli(path, "pretrain-unimodal", "-d", "tiny", "train.epochs=2", "--run-dir", "pre")
    return path


def refused(cwd: Path, *args: str) -> str:
    """The one line a refused command prints (exit 2, no run announced)."""
    proc = run_cli(cwd, *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert messages(proc.stderr) == proc.stderr.strip().splitlines()  # nothing started: no `run:` line
    (line,) = messages(proc.stderr)
    return line


def untouched(run: Path) -> tuple[str, ...]:
    return tuple((run / name).read_text() for name in ("metrics.jsonl", "config.yaml", "sessions.json"))


def test_resume_refuses_another_recipe_method_or_dataset_and_accepts_its_own(cwd):
    before = untouched(cwd / "r1")
    other = refused(cwd, "train", "-r", str(RECIPES / "tiny" / "umt.yaml"), "--resume", "r1")
    assert other.startswith(f"error: --resume r1: -r {RECIPES / 'tiny' / 'umt.yaml'} is not the recipe of the run (")
    assert "method.name: 'naive' -> 'umt'" in other and "method.distill_weight: unset -> 50.0" in other
    assert "train.epochs: 2 -> 60" in other and other.endswith("(mmtool train --resume r1), or start a new run")
    lazy = refused(cwd, "train", "naive", "-d", "synth-lazy", "--resume", "r1")
    assert "naive -d synth-lazy is not the recipe of the run" in lazy
    assert "data.name: 'synth-gamma' -> 'synth-lazy'" in lazy and "model.hidden: [32] -> [100]" in lazy
    assert "train.epochs: 2 -> 60" in refused(cwd, "train", "naive", "-d", "tiny", "--resume", "r1")
    assert "method: naive -> umt" in refused(cwd, "train", "umt", "--resume", "r1")
    assert "teachers: None -> 'pre'" in refused(cwd, "train", "--resume", "r1", "--teachers", "pre")
    assert "--run-dir" in refused(cwd, "train", "--resume", "r1", "--run-dir", "elsewhere")
    assert untouched(cwd / "r1") == before  # a refused resume leaves no trace in the run
    # the command line that made the run, with --resume added, continues it; so does its own config.yaml
    again = run_cli(cwd, "train", "naive", "-d", "tiny", "train.epochs=2", "--run-dir", "r1", "--resume", "r1")
    assert json.loads(again.stdout)["method"] == "naive"
    run_cli(cwd, "train", "-r", "r1/config.yaml", "--resume", "r1")


def test_pretrain_resume_refuses_another_dataset_and_accepts_its_own(cwd):
    lazy = refused(cwd, "pretrain-unimodal", "-d", "synth-lazy", "--resume", "pre")
    assert lazy.startswith("error: --resume pre: -d synth-lazy is not the recipe of the run (")
    assert "data.name: 'synth-gamma' -> 'synth-lazy'" in lazy and "mmtool pretrain-unimodal --resume pre" in lazy
    assert "train.epochs: 2 -> 3" in refused(cwd, "pretrain-unimodal", "-d", "tiny", "train.epochs=3",
                                             "--resume", "pre")  # fmt: skip
    run_cli(cwd, "pretrain-unimodal", "-d", "tiny", "train.epochs=2", "--resume", "pre")


def test_resume_refuses_a_config_yaml_edited_after_the_start(cwd):
    run_cli(cwd, "train", "naive", "-d", "tiny", "train.epochs=1", "--run-dir", "r2")
    config, env = cwd / "r2" / "config.yaml", cwd / "r2" / "env.json"
    started = json.loads(env.read_text())["config_sha256"]
    assert started == hashlib.sha256(config.read_bytes()).hexdigest()
    original = config.read_text()
    config.write_text(original.replace("epochs: 1\n", "epochs: 3\n"))
    line = refused(cwd, "train", "--resume", "r2")
    assert line.startswith(f"error: r2/config.yaml was edited after the run started (sha256 {started[:12]} then, ")
    assert line.endswith("now); put it back or start a new run with that recipe: mmtool train -r r2/config.yaml")
    assert "was edited" in refused(cwd, "train", "naive", "-d", "tiny", "train.epochs=3", "--resume", "r2")
    config.write_text(original)  # put back: resumes
    run_cli(cwd, "train", "--resume", "r2")
    record = json.loads(env.read_text())
    del record["config_sha256"]  # a run from before the hash was recorded is taken as it is
    env.write_text(json.dumps(record))
    config.write_text(original.replace("lr: 0.2", "lr: 0.1"))
    run_cli(cwd, "train", "--resume", "r2")


def test_an_override_given_twice_is_refused_with_both_values(cwd):
    expected = "error: override 'optim.lr' given twice: optim.lr=0.1 and optim.lr=0.3; give it once"
    assert refused(cwd, "train", "naive", "-d", "tiny", "optim.lr=0.1", "optim.lr=0.3") == expected
    assert refused(cwd, "train", "--resume", "r1", "optim.lr=0.1", "optim.lr=0.3") == expected
    assert refused(cwd, "pretrain-unimodal", "-d", "tiny", "optim.lr=0.1", "optim.lr=0.3") == expected
    assert refused(cwd, "validate", "recipes/tiny/naive.yaml", "--set", "optim.lr=0.1", "--set", "optim.lr=0.3") \
        == expected  # fmt: skip
    assert not (cwd / "runs").exists()


def test_an_unknown_override_key_is_blamed_on_the_command_line(cwd):
    line = refused(cwd, "train", "naive", "-d", "tiny", "optim.lrr=0.1")
    assert line == "error: override 'optim.lrr=0.1': unknown key 'optim.lrr'; did you mean 'optim.lr'?"
    assert refused(cwd, "train", "--resume", "r1", "train.epoch=3") == (
        "error: override 'train.epoch=3': unknown key 'train.epoch'; did you mean 'train.epochs'?"
    )


@pytest.mark.parametrize(
    "args",
    [("train", "naive", "-d", "synth-gama"), ("pretrain-unimodal", "-d", "synth-gama"), ("prep", "synth-gama")],
)
def test_a_mistyped_dataset_gets_the_closest_name(cwd, args):
    line = refused(cwd, *args)
    assert "; did you mean 'synth-gamma'? (" in line
    if args[0] == "prep":
        assert line.startswith("error: unknown dataset 'synth-gama'") and "tiny" not in line  # registered sets
    else:
        assert line.startswith("error: no recipes for dataset 'synth-gama'") and "tiny" in line  # recipes folders


def test_validate_checks_every_file_and_fragments_as_fragments(tmp_path):
    every = sorted(str(p.relative_to(REPO)) for p in RECIPES.rglob("*.yaml"))
    proc = run_cli(REPO, "validate", *every)
    lines = proc.stdout.splitlines()
    assert len(lines) == len(every) and all(line.startswith("ok  ") for line in lines)
    assert "ok  recipes/_base/tiny.yaml  (fragment)" in lines
    assert "ok  recipes/tiny/naive.yaml  (stage train, method naive)" in lines
    (tmp_path / "frag.yaml").write_text("optim: {lr: 0.5}\n")  # no stage, a base of r.yaml: a fragment
    (tmp_path / "r.yaml").write_text("base: frag.yaml\nstage: train\n")
    (tmp_path / "bad.yaml").write_text("stage: train\noptim: {lrr: 0.1}\n")
    (tmp_path / "loose.yaml").write_text("optim: {lr: 0.5}\n")  # no stage, nobody's base: not a recipe
    proc = run_cli(tmp_path, "validate", "bad.yaml", "frag.yaml", "r.yaml", "loose.yaml", check=False)
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        "error bad.yaml: unknown key 'optim.lrr' (known: l1, lr, momentum, name, nesterov, norm_weight_decay, "
        "weight_decay); did you mean 'optim.lr'?",
        "ok  frag.yaml  (fragment)",
        "ok  r.yaml  (stage train, method naive)",
        "error loose.yaml: missing key 'stage' (one of prep, pretrain, train, probe, decide, ensemble, utilization)",
    ]
    assert messages(proc.stderr) == ["error: 2 of 4 recipes failed validation"]


def test_a_run_that_trains_nothing_claims_no_best_epoch(cwd):
    proc = run_cli(cwd, "train", "ume", "-d", "tiny", "--teachers", "pre", "method.from_teachers=true",
                   "--run-dir", "ume")  # fmt: skip
    (summary,) = messages(proc.stderr)
    assert "trains nothing: averages the uni-modal models' predictions" in summary and "epoch" not in summary
    assert "best_epoch" not in json.loads((cwd / "ume" / "results.json").read_text())
    trained = run_cli(cwd, "train", "naive", "-d", "tiny", "train.epochs=1", "--run-dir", "trained")
    assert messages(trained.stderr)[-1].endswith(", best epoch 1)")
