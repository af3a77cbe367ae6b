"""`mmtool prep`: build a dataset's loader-ready cache and manifest."""

from __future__ import annotations

from typing import Annotated

import typer

from mmtool.commands.common import JsonOpt, Overrides, emit
from mmtool.errors import UserError


def prep(
    dataset: Annotated[
        str, typer.Argument(metavar="DATASET", help="Dataset name (see `mmtool recipes`).", show_default=False)
    ],
    root: Annotated[
        str,
        typer.Option(
            metavar="DIR", help="Where prepared datasets live (default: data/ of the project, or $MMTOOL_DATA)."
        ),
    ] = "data",
    raw: Annotated[
        str | None,
        typer.Option("--raw", metavar="DIR", help="Folder with the dataset's published layout (real datasets)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(metavar="N", help="Worker processes decoding in parallel (real datasets).")
    ] = 0,
    max_skip_frac: Annotated[
        float,
        typer.Option(
            "--max-skip-frac", metavar="FRACTION", help="Broken inputs allowed before prep fails, as a fraction."
        ),
    ] = 0.05,
    max_missing_frac: Annotated[
        float,
        typer.Option(
            "--max-missing-frac",
            metavar="FRACTION",
            help="Listed samples absent on disk allowed before prep fails, as a fraction (real datasets).",
        ),
    ] = 0.5,
    force: Annotated[bool, typer.Option(help="Rebuild even if a complete cache exists.")] = False,
    overrides: Overrides = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a dataset's loader-ready cache and manifest.

    Example: mmtool prep synth-gamma data.seed=1   (real data: mmtool prep ucf101 --raw DIR --workers 8)
    """
    from mmtool.config import build_recipe
    from mmtool.data import DATASETS, PrepOptions
    from mmtool.recipe_files import apply_overrides
    from mmtool.stages import prep as stage

    _check_prep_dataset(dataset, DATASETS.names(), overrides)
    data = {"name": dataset, "root": root, **({"raw": raw} if raw is not None else {})}
    raw_cfg = apply_overrides({"stage": "prep", "data": data}, overrides, "command line")
    options = PrepOptions(workers=workers, max_skip_frac=max_skip_frac, max_missing_frac=max_missing_frac)
    emit(stage.run(build_recipe(raw_cfg, "command line"), force=force, options=options), as_json)


def _check_prep_dataset(dataset: str, known: list[str], overrides: list[str] | None) -> None:
    """Refuse an unregistered dataset in one line with the closest names (and a key given twice)."""
    from mmtool.coercion import did_you_mean
    from mmtool.recipe_files import check_overrides

    if dataset not in known:
        raise UserError(f"unknown dataset {dataset!r}{did_you_mean(dataset, known)} (known: {', '.join(known)})")
    check_overrides(overrides)
