"""Nodes of a plan, their identities and their run folders.

A node's identity is the SHA-256 of its command, its resolved recipe and its inputs' identities. From the
recipe, what only says where things are or what they are called is left out (``description``,
``runs_root`` and the keys that carry input run folders, e.g. ``teachers``): moving the runs tree or
renaming a folder must not re-run anything, while any value that changes what is computed must.
A ``prep`` node's identity is the SHA-256 of the manifest of the cache it prepared, so runs made on
another cache (other data, other prep settings) are never reused.

mmtool's version is part of a run's identity: a new release makes every run again. Commits between two
releases are not (a fix of the docs would re-run a week of GPU time); a run reused from another commit
says so (:func:`mmtool.plans.driver.provenance`), and deleting its folder makes it again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ID_CHARS = 12  # of the identity in a run folder's name: collisions are out of reach at a table's few dozen runs
IGNORED = ("description", "runs_root", "teachers", "run")  # where and what-called, not what is computed
RESUMABLE = ("train", "pretrain-unimodal")  # commands whose interrupted runs continue with --resume


@dataclass(frozen=True)
class Input:
    """An earlier node this node reads: its run folder goes to recipe key ``key`` (``""``: only its identity,
    as for the prepared data every run loads)."""

    key: str
    node: str


@dataclass(frozen=True)
class Node:
    """One run of a plan (or one data preparation, ``command == "prep"``)."""

    key: str  # unique in its plan, e.g. "ucf101/seed0/naive"
    command: str  # the mmtool subcommand
    recipes: tuple[str, ...] = ()  # -r files, merged in order
    overrides: tuple[str, ...] = ()  # key=value
    inputs: tuple[Input, ...] = ()
    args: tuple[str, ...] = ()  # further arguments that do not change what is computed (prep: --raw, --workers)
    setup: tuple[tuple[str, ...], ...] = ()  # python -m ... argument lists run first (a fixture writer)
    folder: str = ""  # where the run folder <name>-<id12> goes (prep: where prep.json goes)
    name: str = ""
    estimate: str = ""  # a rough duration, for --dry-run

    @property
    def is_prep(self) -> bool:
        return self.command == "prep"


@dataclass
class Plan:
    """Nodes in an order where every input comes before the nodes that read it."""

    name: str
    root: Path  # the runs tree (logs go to <root>/logs)
    nodes: dict[str, Node] = field(default_factory=dict)

    def add(self, node: Node) -> Node:
        """Add ``node`` after its inputs; a key used twice or an unknown input is a bug of the plan."""
        if node.key in self.nodes:
            raise ValueError(f"plan {self.name}: node {node.key} twice")
        missing = [i.node for i in node.inputs if i.node not in self.nodes]
        if missing:
            raise ValueError(f"plan {self.name}: {node.key} reads {missing}, not (yet) in the plan")
        self.nodes[node.key] = node
        return node

    def dependents(self, key: str) -> list[str]:
        return [n.key for n in self.nodes.values() if any(i.node == key for i in n.inputs)]

    def log(self, key: str) -> Path:
        return self.root / "logs" / (key.replace("/", "-") + ".log")


def digest(obj: object) -> str:
    """SHA-256 of ``obj`` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def resolved_recipe(node: Node) -> dict:
    """The node's recipe as the command will resolve it, less paths and names (module docstring)."""
    from mmtool.config import load_recipe
    from mmtool.data_config import legacy_flat_data

    recipe = load_recipe([Path(r) for r in node.recipes], list(node.overrides)).to_dict()
    recipe["data"] = legacy_flat_data(recipe["data"])  # identities as before datasets owned their settings
    for key in (*IGNORED, *(i.key for i in node.inputs if i.key)):
        _drop(recipe, key.split("."))
    return recipe


def _drop(tree: dict, parts: list[str]) -> None:
    for part in parts[:-1]:
        tree = tree.get(part, {})
    tree.pop(parts[-1], None)


def run_identity(node: Node, inputs: dict[str, str]) -> str:
    """Identity of a run node given its inputs' identities (``inputs``: node key -> identity) and mmtool's
    version (module docstring)."""
    from mmtool import __version__

    ins = sorted((i.key, inputs[i.node]) for i in node.inputs)
    return digest({"command": node.command, "recipe": resolved_recipe(node), "inputs": ins, "mmtool": __version__})


def prep_identity(node: Node) -> str | None:
    """Identity of a prep node: its cache's manifest, once prep has said where it is (``prep.json``)."""
    try:
        cache = json.loads(prep_output(node).read_text())["cache"]
        return hashlib.sha256((Path(cache) / "manifest.json").read_bytes()).hexdigest()
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return None


def prep_output(node: Node) -> Path:
    return Path(node.folder) / "prep.json"


def run_dir(node: Node, identity: str) -> Path:
    return Path(node.folder) / f"{node.name}-{identity[:ID_CHARS]}"


def argv(node: Node, paths: dict[str, Path], run: Path | None) -> tuple[str, ...]:
    """The command line of ``node`` with its inputs' run folders (``paths``: node key -> folder)."""
    base = (sys.executable, "-m", "mmtool.cli", node.command)
    if node.is_prep:
        return (*base, *node.args, *node.overrides)
    recipes = tuple(x for r in node.recipes for x in ("-r", r))
    given = tuple(f"{i.key}={paths[i.node]}" for i in node.inputs if i.key)
    return (*base, *recipes, *node.overrides, *given, *node.args, "--run-dir", str(run))


def resume_argv(node: Node, run: Path) -> tuple[str, ...] | None:
    """How an interrupted run of ``node`` continues (None: it does not; it starts again)."""
    if node.command not in RESUMABLE:
        return None
    return (sys.executable, "-m", "mmtool.cli", node.command, "--resume", str(run))

