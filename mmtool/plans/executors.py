"""The executor a command line names: ``local`` (this machine) or ``slurm`` (a cluster, through submitit)."""

from __future__ import annotations

from pathlib import Path

from mmtool.errors import UserError


def make(kind: str, jobs: int, threads: int | None, slurm: list[str], root: Path):
    """``local`` with ``jobs`` slots of ``threads`` threads, or ``slurm`` with the ``KEY=VALUE`` settings."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: expected 1 or more")
    if kind == "local":
        if slurm:
            raise UserError("--slurm settings need --executor slurm")
        from mmtool.plans.local import LocalExecutor

        return LocalExecutor(jobs, threads)
    if kind == "slurm":
        from mmtool.plans.slurm import SlurmExecutor, parse_settings

        settings = parse_settings(slurm)
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise UserError("--executor slurm needs submitit: pip install 'mmtool[slurm]'") from None
        return SlurmExecutor(root / "slurm", settings)
    raise UserError(f"--executor {kind}: expected local or slurm")
