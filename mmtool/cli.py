"""Command-line interface: one thin function per subcommand.

Each command resolves a recipe, applies ``key=value`` overrides, builds the command's one
:class:`~mmtool.engine.runtime.Runtime`, creates (or, with ``--resume``, reopens) its
:class:`~mmtool.runs.Run` and hands both to ``mmtool.stages.<stage>.run``; the run writes the results.
torch is imported only inside commands, so ``mmtool --help`` is instant.
A stage's results print as a table on a terminal and as JSON when stdout is piped (or with ``--json``), so
``decide | train --from-decision -`` works; listings (``runs``, ``recipes``, ``train --list``) stay tables
when piped, as ``gh`` and ``kubectl`` do, and print JSON with ``--json``. Logs and summaries go to stderr.
A user error prints one line and exits 2.

The commands live in :mod:`mmtool.commands`, grouped by what they work on; this module holds the Typer app,
registers them in the order ``mmtool --help`` lists them, and the console entry point :func:`main`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mmtool.commands.analyse import decide, ensemble, probe, utilization
from mmtool.commands.data import prep
from mmtool.commands.recipes import recipes, validate
from mmtool.commands.results import list_runs, report_runs, reproduce
from mmtool.commands.training import pretrain_unimodal, train
from mmtool.errors import Interrupted, PrepInterrupted, UserError
from mmtool.procs import stop_with_owner

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="mmtool: measure and fix modality laziness in multi-modal learning (UMT / UME).",
)


def _version(value: bool) -> None:
    if value:
        from mmtool import __version__

        typer.echo(f"mmtool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """mmtool: measure and fix modality laziness in multi-modal learning (UMT / UME)."""


app.command()(prep)
app.command("pretrain-unimodal")(pretrain_unimodal)
app.command()(train)
app.command()(probe)
app.command()(decide)
app.command()(ensemble)
app.command()(utilization)
app.command()(reproduce)
app.command("runs")(list_runs)
app.command("report")(report_runs)
app.command()(recipes)
app.command()(validate)


def _all_ranks_done() -> None:
    """Under torchrun, wait until every rank got here (a no-op in one process)."""
    if "WORLD_SIZE" not in os.environ:
        return
    from mmtool.engine.runtime import barrier_all

    barrier_all()


def _resume_command(run_dir: Path) -> str:
    """The command that continues ``run_dir`` (read from its config.yaml), as it was launched."""
    from mmtool.runs import run_stage

    stage = run_stage(run_dir)
    command = {"pretrain": "pretrain-unimodal", "train": "train"}.get(stage or "")
    if command is None:
        return f"run the command again (a {stage or 'this'} run does not resume)"
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    launcher = f"torchrun --nproc_per_node {world} -m mmtool" if world > 1 else "mmtool"
    return f"{launcher} {command} --resume {run_dir}"


def release_workers() -> None:
    """Stop the data loader worker processes a command left running (without importing torch for a
    command that never loaded data)."""
    source = sys.modules.get("mmtool.data.source")
    if source is not None:
        source.release_workers()


def main() -> None:
    """Console entry point: user errors print one line on stderr and exit 2."""
    stop_with_owner()  # a command a plan started ends with the plan (mmtool.procs)
    try:
        try:
            app()
        finally:
            release_workers()
    except UserError as err:
        rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
        typer.echo(f"error{f' (rank {rank})' if rank != '0' else ''}: {err}", err=True)
        raise SystemExit(2) from None
    except Interrupted as err:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one line for the whole job
            typer.echo(f"{err}; resume with: {_resume_command(err.run_dir())}", err=True)
        _all_ranks_done()  # torchrun stops every rank when one exits: none leaves before rank 0 has said it
        raise SystemExit(err.exit_code) from None
    except PrepInterrupted as err:
        typer.echo(f"{err}; run the same command again to continue", err=True)
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
