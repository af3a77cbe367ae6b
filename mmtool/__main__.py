"""``python -m mmtool``: the command line, also as torchrun's module (``torchrun ... -m mmtool train ...``)."""

from mmtool.cli import main

main()
