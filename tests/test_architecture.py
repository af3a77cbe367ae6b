"""Structural rules of the code base, checked by reading the source."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mmtool"
READERS = {"data", "engine/inference.py", "engine/loop.py"}  # where a split's batches may be iterated


def _allowed(path: Path) -> bool:
    rel = path.relative_to(PACKAGE).as_posix()
    return any(rel == r or rel.startswith(r + "/") for r in READERS)


def test_splits_are_iterated_only_by_the_loop_and_the_inference_pass():
    """Every evaluation goes through mmtool.engine.inference.run_inference: no stage, method or analysis
    keeps a loop of its own over a split (which would hold the split, skip the workers, or forget autocast)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.batches\(", line) or (re.search(r"\.loader\(", line) and not _allowed(path)):
                offenders.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert offenders == []


def test_whole_split_tensors_are_read_only_by_the_data_layer():
    """Outside mmtool/data a split is a source: targets() and loader(), never its tensors."""
    pattern = re.compile(r"splits\[[^]]+\]\.(inputs|target)\b|\bsplit\.(inputs|target)\b")
    offenders = [
        f"{p.relative_to(PACKAGE)}:{n}"
        for p in sorted(PACKAGE.rglob("*.py"))
        if not p.relative_to(PACKAGE).as_posix().startswith("data/")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


# ------------------------------------------------------------------------------------ one owner of the run folder
# A run folder's layout is spelt in mmtool/runs.py only. The rule, on the syntax tree of every other module:
# - a file of the layout (below) is never a string constant, nor a "/"-separated part of one (f-string pieces
#   included): these names mean nothing else, so any use is a path composed outside the Run;
# - a folder of the layout is never joined onto a path: not an operand of "/", not an argument of Path(),
#   joinpath(), os.path.join(), glob() or rglob(), not part of a constant path ("checkpoints/best.pt"), and
#   not bound to a name (which would be joined later). "features" and "plots" are also plain words (a model's
#   output key), which stay allowed.
LAYOUT_FILES = {"config.yaml", "env.json", "metrics.jsonl", "best.pt", "last.pt", "COMPLETE", "results.json",
                "sessions.json", "failed.json"}  # fmt: skip
LAYOUT_FOLDERS = {"checkpoints", "plots", "features"}
LAYOUT_NAMES = {"CONFIG", "ENV", "METRICS", "RESULTS", "PLOTS", "CHECKPOINTS", "FEATURES", "SESSIONS", "FAILED",
                "LOCK", "LAST", "BEST", "COMPLETE", "PREVIOUS"}  # their constants in mmtool/runs.py  # fmt: skip
RUN_OWNER = {"runs.py"}
PATH_CALLS = {"Path", "PurePath", "joinpath", "join", "glob", "rglob"}
NOT_YET: set[str] = set()  # modules still exempt from the layout rule (none)


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), filename=str(path))


def _strings(node):
    return [n for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _joined_strings(tree):
    """String constants used as a path component: operands of "/", arguments of path calls, bound names."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found += [n for n in (node.left, node.right) if isinstance(n, ast.Constant)]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in PATH_CALLS:
                found += [a for a in node.args if isinstance(a, ast.Constant)]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
            found.append(node.value)
    return [n for n in found if isinstance(n.value, str)]


def test_only_the_run_spells_the_run_layout():
    offenders = []
    for rel, tree in _modules():
        if rel in RUN_OWNER or rel in NOT_YET:
            continue
        for node in _strings(tree):
            parts = node.value.split("/")
            if LAYOUT_FILES & set(parts) or (len(parts) > 1 and LAYOUT_FOLDERS & set(parts)):
                offenders.append(f"{rel}:{node.lineno}: {node.value!r}")
        for node in _joined_strings(tree):
            if node.value in LAYOUT_FOLDERS:
                offenders.append(f"{rel}:{node.lineno}: {node.value!r} joined onto a path")
        for node in ast.walk(tree):  # the Run's own names, imported to compose paths elsewhere
            if isinstance(node, ast.ImportFrom) and node.module == "mmtool.runs":
                offenders += [f"{rel}:{node.lineno}: imports {a.name}" for a in node.names if a.name in LAYOUT_NAMES]
    assert offenders == []


# ---------------------------------------------------------------------------------------- one runtime per command
RUNTIME_MAKERS = {"cli.py", "runs.py", "engine/runtime.py"}
# the command layer is mmtool/cli.py and the commands it registers, which live in mmtool/commands/ (the
# run plumbing they share, mmtool/commands/common.py, builds each command's one Runtime)
COMMAND_LAYER = "commands/"


def _builds_a_runtime(node) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    if isinstance(func, ast.Name) and func.id == "Runtime":
        return "Runtime("
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        if func.value.id == "Runtime" and func.attr in ("from_config", "cpu"):
            return f"Runtime.{func.attr}("
        if func.value.id == "torch" and func.attr == "device":
            return "torch.device("
    return None


def test_only_the_command_builds_the_runtime():
    """A device, a precision or a Runtime is made once per command (mmtool/cli.py and mmtool/commands/),
    never below it."""
    offenders = [
        f"{rel}:{node.lineno}: {what}"
        for rel, tree in _modules()
        if rel not in RUNTIME_MAKERS and not rel.startswith(COMMAND_LAYER)
        for node in ast.walk(tree)
        if (what := _builds_a_runtime(node))
    ]
    assert offenders == []


# ------------------------------------------------------------------------------------------ stages receive a Run
FOLDER_PARAMETERS = {"run_dir", "out_dir", "ckpt_dir", "out_path"}


def test_stages_receive_the_run_and_the_runtime_and_nothing_takes_a_bare_folder():
    """`train` and every other stage get ``run(recipe, run: Run, runtime: Runtime)``; below them the training
    code takes the Run's layout, never a folder to compose paths in."""
    stages = PACKAGE / "stages"
    for path in sorted(stages.glob("*.py")):
        if path.name in ("__init__.py", "prep.py"):  # prep writes a dataset cache, not a run
            continue
        tree = ast.parse(path.read_text())
        run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run")
        annotations = [ast.unparse(a.annotation) for a in run.args.args[:3]]
        assert annotations == ["Recipe", "Run", "Runtime"], f"{path.name}: run{annotations}"
    offenders = []
    for rel, tree in _modules():
        if not rel.startswith(("stages/", "engine/", "analysis/", "methods/")):  # cli.py: --run-dir is a flag
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = {a.arg for a in [*node.args.args, *node.args.kwonlyargs]}
                offenders += [f"{rel}:{node.lineno}: {node.name}({n})" for n in names & FOLDER_PARAMETERS]
    assert offenders == []


# ------------------------------------------------------------------------------------------ layer order
# module prefix -> layer; the longest matching prefix wins. A module may import from its own layer and
# the ones below, never from a higher one (not even inside a function).
LAYERS: dict[str, int] = {
    # 0 foundations: no mmtool import beyond each other
    "mmtool": 0,  # the package's __init__ (version)
    "mmtool.errors": 0,
    "mmtool.faults": 0,
    "mmtool.registry": 0,
    "mmtool.paths": 0,
    "mmtool.procs": 0,
    "mmtool.files": 0,  # atomic writes, one-line errors for refused writes, metrics.jsonl
    "mmtool.runs": 0,  # the run folder's one owner (layout, lock, sessions): every layer reads and writes through it
    # the parts of recipe handling that know no recipe section
    "mmtool.checks": 0,  # range checks declared on dataclass fields (checked(100, at_least(1)))
    "mmtool.coercion": 0,  # raw values into typed dataclass fields; problems worded and reported in one error
    "mmtool.recipe_files": 0,  # finding and reading recipe files: YAML, base chains, deep merge, key=value overrides
    # 1 recipes, and the torch-free declarations their validation reads
    "mmtool.config": 1,
    "mmtool.data_config": 1,  # the data: section (DataConfig): validated against the dataset registry's settings
    "mmtool.methods.params": 1,
    "mmtool.data.registry": 1,
    "mmtool.data.settings": 1,
    # 2 data and models (they do not know each other)
    "mmtool.data": 2,
    "mmtool.models": 2,
    # 3 the one training loop, evaluation pass, checkpoints and runtime
    "mmtool.engine": 3,
    # 4 methods: strategies the loop runs (they read checkpoints and the runtime of the engine)
    "mmtool.methods": 4,
    # 5 plans: graphs of runs and their executors (no torch; the paper's plans are declared in analysis)
    "mmtool.plans": 5,
    # 6 analysis: probes, utilization, tables, the paper's plans
    "mmtool.analysis": 6,
    # 7 stages: one module per command, and the training orchestration they share (model, method, loop,
    # scores, curves: it builds methods and draws plots, so it sits above both)
    "mmtool.stages": 7,
    "mmtool.engine.train": 7,
    # 8 entry points
    "mmtool.cli": 8,
    "mmtool.commands": 8,  # the commands mmtool.cli registers, one module per group
    "mmtool.chain": 8,
    "mmtool.__main__": 8,
}

# (importer, imported): edges that go up on purpose, each with a comment saying why. None today; an entry
# point that must reach up (a plugin loader, say) is listed here rather than hidden in a string import.
ALLOWED_UPWARD: set[tuple[str, str]] = {
    # the Run reads and saves the recipe of its run (config.yaml), deferred to the calls that need it
    ("mmtool.runs", "mmtool.config"),
    # the Run's CheckpointStore names the files; how a checkpoint is written and read (torch) stays in the
    # engine, imported by the calls that save or load one
    ("mmtool.runs", "mmtool.engine.checkpoint"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _imports(path: Path, module: str) -> set[str]:
    """Every mmtool module ``path`` imports, at module level or inside a function (absolute or relative)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x / from ..data import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # "from pkg import name": name may be a submodule; the package's layer decides either way
            found.add(base)
    return {m for m in found if m == "mmtool" or m.startswith("mmtool.")}


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                yield child
                yield from _runtime_nodes(child)
            continue
        yield node
        yield from _runtime_nodes(node)


def test_no_module_imports_from_a_higher_layer():
    """Layers, low to high: foundations (errors, faults, registry, paths, procs, runs) -> recipes (config
    and the torch-free declarations it validates against: methods.params, data.registry, data.settings) ->
    data, models -> engine -> methods -> plans -> analysis -> stages -> entry points (cli, commands, chain). Imports
    go down or sideways only, including those deferred inside functions; ALLOWED_UPWARD lists exceptions.
    The built-in dataset families are imported by name (importlib) from mmtool.data.registry's table, the
    one dynamic edge, which by design this test does not see."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for imported in sorted(_imports(path, module)):
            if _layer(imported) > _layer(module) and (module, imported) not in ALLOWED_UPWARD:
                offenders.append(f"{module} (layer {_layer(module)}) imports {imported} (layer {_layer(imported)})")
    assert offenders == []


def test_the_layer_table_places_every_module_explicitly():
    """A new top-level module or package gets its row in LAYERS (it does not fall into layer 0 unseen)."""
    named = [k for k in LAYERS if k != "mmtool"]
    unplaced = [m for m in map(_module_name, PACKAGE.rglob("*.py"))
                if m != "mmtool" and not any(m == k or m.startswith(k + ".") for k in named)]
    assert unplaced == []


# ------------------------------------------------------------------------------------------------ sizes
MODULE_LINES = 400  # a module longer than this says why in its docstring ("longer than the house's 400 lines")
FUNCTION_LINES = 50


def test_modules_and_functions_stay_small_or_say_why():
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        rel = path.relative_to(PACKAGE).as_posix()
        if len(text.splitlines()) > MODULE_LINES and "longer than the house's 400 lines" not in (
            ast.get_docstring(tree) or ""
        ):
            long_modules.append(rel)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name} ({lines} lines)")
    assert long_modules == [] and long_functions == []
