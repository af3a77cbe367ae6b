"""Plans: identities and reuse, failure isolation, the local slots, and the SLURM executor without a cluster
(a fake ``sbatch`` that keeps the scripts it is given; submitit's LocalExecutor for a preemption and its
requeue, compared with an uninterrupted run)."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from mmtool.analysis import paper_plans
from mmtool.errors import UserError
from mmtool.plans import graph
from mmtool.plans.driver import Driver, preview, report, run_plan
from mmtool.plans.graph import Input, Node, Plan
from mmtool.plans.local import LocalExecutor
from mmtool.plans.task import Task, command

REPO = Path(__file__).resolve().parents[2]


class FakeExecutor:
    """Runs a task at once in this process: prep writes its prep.json, a run its results.json; ``fail``
    lists the node keys that fail instead."""

    eager = False

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.fail, self.ran = fail, []

    def describe(self) -> str:
        return "fake"

    def submit(self, task: Task, after=()):
        self.ran.append(task.key)
        return Handle(task)

    def wait(self, handles):
        out = []
        for handle in handles:
            task = handle.task
            if task.key in self.fail:
                out.append((handle, 1))
                continue
            if task.output:
                Path(task.output).parent.mkdir(parents=True, exist_ok=True)
                Path(task.output).write_text(json.dumps({"cache": str(Path(task.cwd, "cache"))}))
            if task.run_dir:
                Path(task.run_dir).mkdir(parents=True, exist_ok=True)
                (Path(task.run_dir) / "results.json").write_text("{}")
            out.append((handle, 0))
        return out


class Handle:
    def __init__(self, task: Task) -> None:
        self.task = task


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A plan of five runs on one prepared cache: unimodal -> naive, umt (teachers) -> probes of both."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "manifest.json").write_text('{"n": 600}')
    for name in ("pretrain", "naive", "umt", "probe"):
        (tmp_path / f"{name}.yaml").write_text(f"base: {REPO}/recipes/tiny/{name}.yaml\n")

    def make() -> Plan:
        plan = Plan("tiny", Path("runs"))
        plan.add(Node("prep", "prep", args=("synth-gamma",), folder="runs", name="prep"))
        data = Input("", "prep")
        run = {"folder": "runs/seed0", "overrides": ("train.seed=0",)}
        plan.add(Node("unimodal", "pretrain-unimodal", ("pretrain.yaml",), inputs=(data,), name="unimodal", **run))
        plan.add(Node("naive", "train", ("naive.yaml",), inputs=(data,), name="naive", **run))
        plan.add(Node("umt", "train", ("umt.yaml",), inputs=(data, Input("teachers", "unimodal")), name="umt", **run))
        for r in ("naive", "umt"):
            plan.add(Node(f"probe-{r}", "probe", ("probe.yaml",), inputs=(data, Input("run", r)), name=f"probe-{r}",
                          **run))  # fmt: skip
        return plan

    return make


def test_a_second_walk_reuses_every_run_and_says_so(tiny):
    first = FakeExecutor()
    out = run_plan(tiny(), first, log=lambda line: None)
    assert out.ok and set(out.status.values()) == {"done"} and len(first.ran) == 6
    assert out.paths["umt"].name == f"umt-{out.identities['umt'][:12]}"
    said, again = [], FakeExecutor()
    out2 = run_plan(tiny(), again, log=said.append)
    assert again.ran == ["prep"]  # prep only checks its cache; every run is reused
    assert [s for k, s in out2.status.items() if k != "prep"] == ["reused"] * 5 and out2.paths == out.paths
    assert sum("reused" in line and "finished before" in line for line in said) == 5
    assert all(line.startswith("reuse ") for line in preview(tiny())[1:])


def test_a_changed_recipe_value_reruns_exactly_the_runs_that_read_it(tiny, tmp_path):
    before = run_plan(tiny(), FakeExecutor(), log=lambda line: None)
    with open(tmp_path / "pretrain.yaml", "a") as f:
        f.write("train: {epochs: 7}\n")
    (tmp_path / "naive.yaml").write_text((tmp_path / "naive.yaml").read_text() + "description: renamed\n")
    ex = FakeExecutor()
    after = run_plan(tiny(), ex, log=lambda line: None)
    assert ex.ran == ["prep", "unimodal", "umt", "probe-umt"]  # a description is no part of the identity
    assert after.status["naive"] == after.status["probe-naive"] == "reused"
    assert after.paths["unimodal"] != before.paths["unimodal"] and before.paths["unimodal"].is_dir()


def test_another_cache_makes_every_run_new(tiny, tmp_path):
    run_plan(tiny(), FakeExecutor(), log=lambda line: None)
    (tmp_path / "cache" / "manifest.json").write_text('{"n": 601}')
    ex = FakeExecutor()
    run_plan(tiny(), ex, log=lambda line: None)
    assert len(ex.ran) == 6


def test_a_failed_run_leaves_out_only_what_reads_it_and_is_reported_with_its_log(tiny):
    said = []
    out = run_plan(tiny(), FakeExecutor(fail=("naive",)), log=said.append)
    assert out.status["naive"] == "failed" and out.status["probe-naive"] == "skipped" and not out.ok
    assert out.status["umt"] == out.status["probe-umt"] == "done"
    report(tiny(), out, log=said.append)
    assert "tiny: failed: naive (exit status 1); log: runs/logs/naive.log" in said
    assert "tiny: not run: probe-naive (input naive did not finish)" in said
    assert said[-1] == "tiny: 4 run, 0 reused, 1 failed, 1 not run"
    ex = FakeExecutor()
    run_plan(tiny(), ex, log=lambda line: None)  # the next walk continues from there
    assert ex.ran == ["prep", "naive", "probe-naive"]


def test_an_interrupted_training_run_resumes_and_anything_else_starts_again(tmp_path):
    run = tmp_path / "train-abc"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("stage: train\n")
    task = Task("t", ("fresh",), "log", str(tmp_path), "train-abc", ("resume",))
    assert command(task) == ("fresh",) and not run.exists()  # nothing to continue: an empty start
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("stage: train\n")
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    assert command(task) == ("resume",)
    probe = Task("p", ("fresh",), "log", str(tmp_path), "train-abc", None)
    assert command(probe) == ("fresh",) and not run.exists()  # a probe does not resume


def test_local_slots_run_side_by_side_each_with_its_threads_and_gpu(tmp_path):
    ex = LocalExecutor(jobs=2, threads=3, gpus=["4", "5"])
    code = "import os,sys; print(os.environ['OMP_NUM_THREADS'], os.environ['CUDA_VISIBLE_DEVICES']); sys.exit({})"
    tasks = [Task(f"t{i}", (sys.executable, "-c", code.format(i)), f"t{i}.log", str(tmp_path),
                  output=f"t{i}.out") for i in range(3)]  # fmt: skip
    handles = {ex.submit(t): t.key for t in tasks}
    codes = {}
    while len(codes) < 3:
        for h, c in ex.wait([h for h in handles if handles[h] not in codes]):
            codes[handles[h]] = c
    ex.close()
    assert codes == {"t0": 0, "t1": 1, "t2": 2}  # a failure stops nothing else
    seen = {(tmp_path / f"t{i}.out").read_text().split()[1] for i in range(3)}
    assert all((tmp_path / f"t{i}.out").read_text().split()[0] == "3" for i in range(3)) and seen <= {"4", "5"}
    assert "$ " in (tmp_path / "t1.log").read_text()


def test_table_plans_are_data_and_the_command_line_is_checked():
    opts = paper_plans.Options("table9", {}, (0, 1), smoke=True)
    plan = paper_plans.build(opts)
    assert list(plan.nodes)[:2] == ["ucf101/prep", "ucf101/seed0/unimodal"] and len(plan.nodes) == 9
    ume = plan.nodes["ucf101/seed0/ume"]
    assert {(i.key, i.node) for i in ume.inputs} == {("", "ucf101/prep"), ("teachers", "ucf101/seed0/unimodal"),
                                                     ("run", "ucf101/seed0/naive")}  # fmt: skip
    assert ume.recipes == ("recipes/ucf101/ensemble.yaml", "recipes/_base/smoke/ucf101.yaml")
    t8 = paper_plans.build(paper_plans.Options("table8", {"vggsound": "/raw"}, (0, 1)))
    assert [k for k in t8.nodes if k.endswith("/umt")] == ["vggsound/seed0/umt", "vggsound/seed1/umt"]
    assert paper_plans.parse_data("table3", ["/u", "vggsound=/v"]) == {"ucf101": "/u", "vggsound": "/v"}
    assert paper_plans.parse_seeds("0 1,2") == (0, 1, 2)
    bad_calls = (lambda: paper_plans.parse_data("table1", ["/u"]), lambda: paper_plans.parse_data("table9", ["x=/u"]),
                 lambda: paper_plans.build(paper_plans.Options("table9", {}, (0,))),
                 lambda: paper_plans.parse_seeds("a"))
    for bad in bad_calls:
        with pytest.raises(UserError):
            bad()


# --------------------------------------------------------------------------------------------- SLURM
@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` that keeps each script it is given and answers with job ids 101, 102, ...; ``srun`` exists."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"""#!/bin/sh
n=$(( $(ls {tmp_path}/scripts 2>/dev/null | wc -l) + 101 ))
mkdir -p {tmp_path}/scripts && cp "$1" {tmp_path}/scripts/$n.sh && echo "Submitted batch job $n"
""")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "scripts"


def test_slurm_jobs_carry_partition_gpus_time_and_afterok_dependencies(tiny, tmp_path, fake_slurm):
    from mmtool.plans.slurm import SlurmExecutor, parse_settings

    settings = parse_settings(["partition=gpu", "gpus_per_run=2", "time_min=90", "account=lab"])
    plan = tiny()
    run_plan(Plan("prep-only", plan.root, {"prep": plan.nodes["prep"]}), FakeExecutor(), log=lambda line: None)
    driver = Driver(plan, SlurmExecutor(tmp_path / "slurm", settings), log=lambda line: None)
    driver.out.status["prep"] = "reused"
    driver.out.identities["prep"] = graph.prep_identity(plan.nodes["prep"])
    while driver._hand_over():  # afterok: everything is submitted before anything ran
        pass
    jobs = {key: h.job_id for key, h in driver.handles.items()}
    assert jobs == {"unimodal": "101", "naive": "102", "umt": "103", "probe-naive": "104", "probe-umt": "105"}
    scripts = {n: (fake_slurm / f"{n}.sh").read_text() for n in range(101, 106)}
    for text in scripts.values():
        for line in ("--partition=gpu", "--gpus-per-node=2", "--time=90", "--account=lab", "--kill-on-invalid-dep=yes",
                     "--signal=USR2@90"):  # fmt: skip
            assert f"#SBATCH {line}\n" in text, text
    assert "--dependency" not in scripts[101] and "--dependency" not in scripts[102]
    assert "#SBATCH --dependency=afterok:101\n" in scripts[103] and "#SBATCH --job-name=umt\n" in scripts[103]
    assert "#SBATCH --dependency=afterok:102\n" in scripts[104] and "afterok:103\n" in scripts[105]
    with pytest.raises(UserError, match="KEY one of"):
        parse_settings(["partitions=gpu"])


def test_a_preempted_job_is_requeued_and_resumes_exactly(tmp_path, monkeypatch):
    """The job's mmtool gets SIGTERM at step 3 of 5 (as a preemption would), saves and exits 143; submitit
    requeues the job, which continues with --resume; metrics and final weights equal an uninterrupted run's."""
    import submitit
    import torch

    from mmtool.plans.slurm import SlurmExecutor, parse_settings
    from tests.e2e.cli import base_env, run_cli

    monkeypatch.chdir(tmp_path)
    for key, value in base_env().items():
        monkeypatch.setenv(key, value)
    args = ("-r", f"{REPO}/recipes/tiny/naive.yaml", "train.epochs=5", "train.keep_optimizer=true",
            "train.eval_every=1")
    run_cli(tmp_path, "prep", "synth-gamma", "data.n=600")
    run_cli(tmp_path, "train", *args, "--run-dir", "plain")
    cli = (sys.executable, "-m", "mmtool.cli", "train")
    task = Task("t", (*cli, *args, "--run-dir", "job"), "job.log", str(tmp_path), "job", (*cli, "--resume", "job"),
                env={"MMTOOL_FAULT": "train_step:3:sigterm"})  # the resumed attempt has 2 steps left: no fault
    local = submitit.LocalExecutor(folder=str(tmp_path / "submitit"))
    local.update_parameters(timeout_min=10)
    job = SlurmExecutor(tmp_path / "submitit", parse_settings([]), executor=local).submit(task)
    assert job.result() == 0
    log = (tmp_path / "job.log").read_text()
    assert "--resume job" in log and "interrupted by SIGTERM" in log
    strip = [{k: v for k, v in r.items() if "time" not in k and "second" not in k} for r in _metrics(tmp_path / "job")]
    assert strip == [{k: v for k, v in r.items() if "time" not in k and "second" not in k}
                     for r in _metrics(tmp_path / "plain")]  # fmt: skip
    a, b = (torch.load(p / "checkpoints" / "last.pt", weights_only=True)["model"] for p in (tmp_path / "job",
                                                                                          tmp_path / "plain"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_a_run_reused_from_another_commit_says_so(tiny, monkeypatch):
    from mmtool.plans import driver

    out = run_plan(tiny(), FakeExecutor(), log=lambda line: None)
    (out.paths["naive"] / "env.json").write_text(json.dumps({"git_sha": "0123456" + "0" * 33}))
    (out.paths["umt"] / "env.json").write_text(json.dumps({"git_sha": "89abcde" + "0" * 33}))
    monkeypatch.setattr(driver, "_code_commit", lambda: "89abcde" + "0" * 33)
    said = []
    run_plan(tiny(), FakeExecutor(), log=said.append)
    naive = next(line for line in said if "reused naive" in line)
    assert "made at commit 0123456 (now 89abcde; delete the folder to make it again)" in naive
    assert not any("made at commit" in line for line in said if "reused umt" in line)
    assert graph.run_identity(tiny().nodes["naive"], out.identities) == out.identities["naive"]
    import mmtool

    monkeypatch.setattr(mmtool, "__version__", "99.0")  # a new release is another identity: every run again
    assert graph.run_identity(tiny().nodes["naive"], out.identities) != out.identities["naive"]


def test_a_command_the_local_executor_starts_stops_when_the_driver_ends(tmp_path):
    """kill -9 of `mmtool reproduce` must not leave its runs behind: each one gets SIGTERM (and a training run
    saves and stops as on a preemption). Here a stand-in driver (a sleeping process) is killed under a real
    `mmtool train` that would otherwise run for minutes."""
    import signal
    import subprocess

    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    env = {**os.environ, **LocalExecutor(1, 1).slot_env(0), "MMTOOL_STOP_WITH": str(driver.pid)}
    run = subprocess.Popen([sys.executable, "-m", "mmtool.cli", "train", "-r", str(REPO / "recipes/tiny/naive.yaml"),
                            "train.epochs=100000", "--run-dir", str(tmp_path / "run")], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        driver.kill()
        driver.wait()
        code = run.wait(timeout=120)
    finally:
        run.kill()
    assert code in (143, -signal.SIGTERM)  # stopped by the SIGTERM it sent itself (saved, or before it started)


def test_a_dataset_fragment_joins_that_datasets_runs_and_prep_only():
    recipes = paper_plans.parse_recipes("table5", ["kinetics400=recipes/_base/kinetics400_r3d18.yaml"])
    opts = paper_plans.Options("table5", {"vggsound": "/v", "kinetics400": "/k"}, (0,), recipes=recipes)
    plan = paper_plans.build(opts)
    k400 = plan.nodes["kinetics400/seed0/naive"]
    assert k400.recipes == ("recipes/kinetics400/naive.yaml", "recipes/_base/kinetics400_r3d18.yaml")
    assert plan.nodes["vggsound/seed0/naive"].recipes == ("recipes/vggsound/naive.yaml",)
    assert "data.clip_frames=32" in plan.nodes["kinetics400/prep"].overrides  # the variant's cache is prepared
    for bad in (["vggsound"], ["ucf101=recipes/_base/kinetics400_r3d18.yaml"], ["kinetics400=nope.yaml"]):
        with pytest.raises(UserError):
            paper_plans.parse_recipes("table5", bad)


def test_a_tables_own_fragments_come_between_the_recipe_and_the_command_lines(monkeypatch):
    base = paper_plans.TABLES["table5"]
    table = dataclasses.replace(base, fragments=(("kinetics400", "recipes/_base/kinetics400_r3d18.yaml"),),
                                smoke_fragments=(("vggsound", "recipes/_base/smoke/kinetics400.yaml"),))  # fmt: skip
    monkeypatch.setitem(paper_plans.TABLES, "table5", table)
    recipes = (("kinetics400", "recipes/_base/kinetics400_slowfast101.yaml"),)
    plan = paper_plans.build(paper_plans.Options("table5", {"vggsound": "/v", "kinetics400": "/k"}, (0,),
                                                 recipes=recipes))  # fmt: skip
    assert plan.nodes["kinetics400/seed0/umt"].recipes == (
        "recipes/kinetics400/umt.yaml", "recipes/_base/kinetics400_r3d18.yaml",
        "recipes/_base/kinetics400_slowfast101.yaml")  # fmt: skip
    assert "data.clip_frames=32" in plan.nodes["kinetics400/prep"].overrides  # the table's variant is prepared
    assert plan.nodes["vggsound/seed0/umt"].recipes == ("recipes/vggsound/umt.yaml",)  # SMOKE fragments: smoke only
    smoke = paper_plans.build(paper_plans.Options("table5", {}, (0,), smoke=True))
    assert smoke.nodes["vggsound/seed0/umt"].recipes == (
        "recipes/vggsound/umt.yaml", "recipes/_base/smoke/vggsound.yaml", "recipes/_base/smoke/kinetics400.yaml")


def test_a_prep_setting_left_unset_reaches_prep_as_null():
    prep = paper_plans.build(paper_plans.Options("table10", {}, (0,), smoke=True)).nodes["modelnet40/prep"]
    assert "data.side_view=null" in prep.overrides and not any(o.endswith("=None") for o in prep.overrides)
    from mmtool.recipe_files import apply_overrides

    assert apply_overrides({"data": {}}, ["data.side_view=null"], "test")["data"]["side_view"] is None


def test_quick_runs_the_smoke_subset_on_the_given_data_with_the_real_recipes_and_the_full_plan_reuses_it():
    data = {"colored-mnist": "/mnist"}
    quick = paper_plans.build(paper_plans.Options("greedy-fig7", data, (0, 1, 2), quick=True)).nodes
    full = paper_plans.build(paper_plans.Options("greedy-fig7", data, (0, 1, 2))).nodes
    table = paper_plans.TABLES["greedy-fig7"]
    runs = {k.split("/")[-1] for k in quick if "/seed" in k}
    assert runs and runs <= set(table.smoke) and len(full) > 4 * len(quick)  # the few points of the sweep
    for key, node in quick.items():  # the same nodes as the full plan's: reused by it, not run again
        assert key in full and (node.recipes, node.overrides) == (full[key].recipes, full[key].overrides)
        assert not any("smoke" in r for r in node.recipes)
    assert paper_plans.Options("greedy-fig7", data, (0,), quick=True).out.as_posix() == "results/quick/greedy-fig7.md"
