"""The modules that declare paper tables of their own, in the order they join :mod:`~mmtool.analysis.paper_plans`
(their ``TABLES``) and :mod:`~mmtool.analysis.paper_tables` (their ``PAPER``, ``OURS`` and ``RENDER``)."""

from __future__ import annotations

from mmtool.analysis import (
    tables_cited,
    tables_classes,
    tables_distilled,
    tables_greedy,
    tables_greedy_studies,
    tables_greedy_views,
    tables_mla,
    tables_mla_clip,
    tables_mla_fig2,
    tables_sweeps,
)

EXTRA: tuple = (tables_classes, tables_cited, tables_distilled, tables_sweeps, tables_mla, tables_mla_clip,
                tables_mla_fig2, tables_greedy, tables_greedy_views, tables_greedy_studies)  # fmt: skip
