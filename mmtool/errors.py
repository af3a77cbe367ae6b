"""User-facing errors.

A :class:`UserError` is raised for anything the user can fix (a bad recipe key, a missing run directory,
an unknown method). The CLI prints its message on one line and exits with code 2; every other exception
is an internal error and keeps its traceback.
"""


class UserError(Exception):
    """An error caused by user input; the CLI prints ``str(err)`` and exits 2."""
