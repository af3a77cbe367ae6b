"""The commands of the ``mmtool`` command line, one module per group: :mod:`~mmtool.commands.data` (prep),
:mod:`~mmtool.commands.training` (pretrain-unimodal, train), :mod:`~mmtool.commands.analyse` (probe, decide,
ensemble, utilization), :mod:`~mmtool.commands.results` (reproduce, runs, report) and
:mod:`~mmtool.commands.recipes` (recipes, validate); what they share is in :mod:`~mmtool.commands.common`.
:mod:`mmtool.cli` registers them on its Typer app."""
