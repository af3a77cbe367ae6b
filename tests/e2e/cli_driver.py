"""Runs several mmtool commands in one Python process, each through the real CLI (``mmtool.cli.app``).

``python tests/e2e/cli_driver.py COMMANDS.json`` or, for distributed runs,
``torchrun --standalone --nproc_per_node 2 tests/e2e/cli_driver.py COMMANDS.json``: one launch (one
interpreter and one process group per rank) for a list of commands, instead of one launch each. The JSON
holds a list of argument lists, e.g. ``[["train", "naive", "-d", "tiny", "--run-dir", "a"]]``.
"""

import json
import sys

from mmtool.cli import app


def main(path: str) -> None:
    for args in json.loads(open(path).read()):
        app(args, standalone_mode=False)


if __name__ == "__main__":
    main(sys.argv[1])
