"""Plans: a result (a paper table) as a graph of runs, each reused exactly when nothing it depends on changed.

* :mod:`mmtool.plans.graph`: a :class:`~mmtool.plans.graph.Node` is (command, recipe files, overrides,
  inputs); its identity hashes the resolved recipe (run paths and bookkeeping left out) with its inputs'
  identities (a prepared cache's manifest, a teacher run's identity). The run folder's name carries it
  (``<name>-<id12>``), so a finished run with the same identity is reused and a changed value makes a new run.
* :mod:`mmtool.plans.task`: what one node's job does: its commands as ``python -m mmtool.cli ...``
  processes, continuing an interrupted training run with ``--resume`` instead of starting it again.
* :mod:`mmtool.plans.driver`: walks the graph, hands ready nodes to an executor and says at the end which
  runs failed (with their logs) and which were not run because an input failed.
* Executors: :mod:`mmtool.plans.local` (N runs at a time, each with its own threads or GPU) and
  :mod:`mmtool.plans.slurm` (one SLURM job per run through submitit, ``afterok`` dependencies or waits in
  the driver, requeued with ``--resume`` on preemption or timeout).

Nothing here imports torch: the driver only starts processes and reads run folders.
"""
