"""User-facing errors.

A :class:`UserError` is raised for anything the user can fix (a bad recipe key, a missing run directory,
an unknown method). The CLI prints its message on one line and exits with code 2; every other exception
is an internal error and keeps its traceback.
"""


class UserError(Exception):
    """An error caused by user input; the CLI prints ``str(err)`` and exits 2."""


class Interrupted(Exception):
    """SIGTERM or SIGINT stopped training after a resumable checkpoint was written. The CLI prints the
    message with the command that resumes the run, and exits ``128 + signum`` (143 for SIGTERM, 130 for
    SIGINT), as a process killed by that signal would."""

    def __init__(self, signum: int, checkpoint, epoch: int, step: int | None) -> None:
        import signal
        from pathlib import Path

        self.signum, self.checkpoint, self.epoch, self.step = signum, Path(checkpoint), epoch, step
        self.exit_code = 128 + signum
        where = f"epoch {epoch}, step {step}" if step is not None else f"the end of epoch {epoch}"
        super().__init__(f"interrupted by {signal.Signals(signum).name} at {where}; saved {self.checkpoint}")

    def run_dir(self):
        """The run folder holding the checkpoint (:func:`mmtool.runs.interrupted_run`)."""
        from mmtool.runs import interrupted_run

        return interrupted_run(self.checkpoint)


class PrepInterrupted(Exception):
    """SIGTERM or SIGINT stopped a prep between two items; what was finished is journaled. The CLI prints
    the message with how to continue, and exits ``128 + signum`` like :class:`Interrupted`."""

    def __init__(self, signum: int, message: str) -> None:
        import signal

        self.signum, self.exit_code = signum, 128 + signum
        super().__init__(f"{message} (stopped by {signal.Signals(signum).name})")
