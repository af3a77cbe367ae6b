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
    "mmtool.runs": 0,  # run-folder files: atomic writes, locks, metrics (imports errors and faults only)
    # 1 recipes, and the torch-free declarations their validation reads
    "mmtool.config": 1,
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
    # 7 stages: one module per command
    "mmtool.stages": 7,
    # 8 entry points
    "mmtool.cli": 8,
    "mmtool.chain": 8,
    "mmtool.__main__": 8,
}

# (importer, imported): edges that go up on purpose, each with a comment saying why. None today; an entry
# point that must reach up (a plugin loader, say) is listed here rather than hidden in a string import.
ALLOWED_UPWARD: set[tuple[str, str]] = set()


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
    data, models -> engine -> methods -> plans -> analysis -> stages -> entry points (cli, chain). Imports
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
