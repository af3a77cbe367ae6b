"""`mmtool recipes` and `mmtool validate`: the shipped recipes listed, and recipe files checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mmtool.errors import UserError


def recipes(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the table.")] = False,
) -> None:
    """List the shipped recipes with their first comment line.

    Example: mmtool recipes
    """
    from mmtool.recipe_files import recipes_dir

    root = recipes_dir()
    rows = []
    for path in sorted(root.rglob("*.yaml")):
        if "_base" in path.relative_to(root).parts:  # fragments that other recipes build on
            continue
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        rows.append((str(path.relative_to(root)), first))
    if as_json:  # a listing stays a table when piped; --json for scripts
        typer.echo(json.dumps([{"recipe": r, "about": a} for r, a in rows], indent=2))
        return
    for rel, about in rows:
        typer.echo(f"{rel:<34} {about}")


def validate(
    paths: Annotated[
        list[Path], typer.Argument(metavar="RECIPE...", help="Recipe files to check.", show_default=False)
    ],
    overrides: Annotated[
        list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="An override to apply (repeatable).")
    ] = None,
) -> None:
    """Check recipes: unknown keys, wrong types and missing files. Every file given is checked, with one
    line each (ok, or error and its problem); a fragment (under _base/, or a base of another file given)
    is checked key by key without needing a stage. Exits 2 if any file failed.

    Example: mmtool validate recipes/*/*.yaml recipes/_base/*.yaml
    """
    from mmtool.recipe_files import check_overrides, recipe_bases

    check_overrides(overrides)
    included = set().union(*(recipe_bases(p) for p in paths))
    if len(paths) == 1:  # one file: its problem is the command's error, as for any other command
        typer.echo(_validated(paths[0], overrides, included))
        return
    failed = 0
    for path in paths:
        try:
            line = _validated(path, overrides, included)
        except UserError as err:
            failed += 1
            message = str(err).removeprefix(f"{path}: ")
            line = f"error {path}: {message}"
        typer.echo(line)
    if failed:
        raise UserError(f"{failed} of {len(paths)} recipes failed validation")


def _validated(path: Path, overrides: list[str] | None, included: set[Path]) -> str:
    """The ``ok`` line of a recipe or fragment that validates (else its :class:`UserError`)."""
    from mmtool.config import load_recipe
    from mmtool.recipe_files import is_fragment

    if is_fragment(path, included):
        load_recipe(path, overrides, fragment=True)
        return f"ok  {path}  (fragment)"
    cfg = load_recipe(path, overrides)
    return f"ok  {path}  (stage {cfg.stage}, method {cfg.method.name})"
