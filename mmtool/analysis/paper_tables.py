"""Paper 000's Tables 1, 3, 4, 5, 7, 8, 9 and 10 on UCF101, VGG-Sound, Kinetics-400 and ModelNet40, from
finished runs.

Two parts, kept apart: ``PAPER`` holds the numbers the paper prints, transcribed table by table from the
extracted text (``/work/shared/papers/000_*.txt``) with the paper's row and column names; ``OURS`` says,
cell by cell, which run and which field of its ``results.json`` gives our number for that cell (a cell
without a source prints "—").

Run layout: ``<root>/<dataset>/seed<k>/<run>/results.json``, where `mmtool reproduce` (the plans of
:mod:`mmtool.analysis.paper_plans`) names each folder ``<run>-<id12>`` and passes the folders to :func:`render`,
with ``<dataset>`` ``ucf101``, ``vggsound``, ``kinetics400`` or ``modelnet40`` and ``<run>``:

* ``unimodal`` (`pretrain-unimodal`), ``decide`` (`decide`), ``ume`` (`ensemble`),
* a `train` run named after its recipe: ``naive`` (linear head), ``naive_mlp``, ``naive_attention``,
  ``aux_ce``, ``gblending``, ``ogm_ge``, ``umt``, ``self_distill``, ``self_distill_feature``,
* ``probe-<run>`` (`probe` of that run's encoders).

A cell averages every seed folder that holds its run: mean ± std where there are several, the value
where there is one, "—" where there is none (a dataset that was not run).

``--smoke`` (what ``make tableN SMOKE=1`` passes) opens the table with :data:`SMOKE_BANNER`: its runs were made
on generated fixture copies with tiny models, and a reader must not take them for a reproduction.

Usage: python -m mmtool.analysis.paper_tables [--smoke] table1|table3|...|table10 RUNS_ROOT OUT.md
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from mmtool.analysis import (
    tables_cited,
    tables_classes,
    tables_distilled,
    tables_greedy_studies,
    tables_mla,
    tables_mla_clip,
    tables_mla_fig2,
    tables_sweeps,
)
from mmtool.analysis.paper_defs import SMOKE_BANNER, Cell, Located, PaperTable, Source, decided, probe, test_acc
from mmtool.analysis.tables import mean_std
from mmtool.files import atomic_write_text
from mmtool.runs import config_of, is_finished, results_of

# --------------------------------------------------------------------------------------------- the paper
PAPER: dict[str, PaperTable] = {  # extended at the end of the module by the modules in EXTRA
    "table1": PaperTable(
        "Table 1. Top 1 test accuracy (in %) of linear evaluation on encoders from various multi-modal late-fusion "
        "training methods and uni-modal training on VGG-Sound and UCF101.",
        "Method",
        ("VGG-Sound RGB Encoder", "VGG-Sound Audio Encoder", "UCF101 RGB Encoder", "UCF101 Opt-Flow Encoder"),
        {
            "Linear-Fusion": (15.56, 43.44, 75.66, 48.08),
            "MLP-Fusion": (14.52, 40.01, 75.65, 51.89),
            # 7.72 is what the extracted text says; far below every other flow encoder (44-65) but not garbled-looking
            "Attention-Fusion": (13.31, 43.97, 74.84, 7.72),
            "G-Blending": (17.69, 43.90, 74.91, 44.49),
            "OGM-GE": (15.60, 41.95, 73.54, 65.03),
            "Uni-Modal Training": (23.17, 45.15, 77.08, 74.99),
        },
        digits=2,
        notes=("Linear evaluation: a linear classifier trained on the frozen encoder's features (probe).",),
    ),
    "table3": PaperTable(
        "Table 3. Top-1 test accuracy of averaging uni-modal predictions and multi-modal classifier trained on "
        "uni-modal pre-trained encoders.",
        "Dataset",
        ("MM Clf", "Avg Preds", "Choice"),
        {
            # "Choice" is Sec. 4.2's conclusion ("UMT on VGG-Sound and Kinetics-400, and UME on UCF101 and
            # ModelNet40"), not a column of Table 3; ours is decide's verdict
            "VGG-Sound": (51.0, 46.1, "UMT"),
            "Kinetics-400": (76.4, 74.8, "UMT"),
            "UCF101": (84.4, 86.8, "UME"),
            "ModelNet40": (91.7, 91.9, "UME"),
        },
        notes=(
            "Choice: the method Sec. 4.2 picks from this comparison (paper); the verdict of `mmtool decide` (ours).",
        ),
    ),
    "table4": PaperTable(
        "Table 4. Top-1 test accuracy of uni-modal classifiers from the multi-modal linear classifier trained on "
        "uni-modal pre-trained encoders in UCF101.",
        "Model",
        ("RGB", "Opt-flow"),
        {"Uni-Clf from MM Clf": (68.2, 52.9), "Uni-Modal Model": (77.1, 75.0)},
    ),
    "table5": PaperTable(
        "Table 5. Results of different late-fusion methods (top-1 test accuracy).",
        "Method",
        ("VGG-Sound", "Kinetics-400"),
        {
            "Linear-Head": (49.5, 74.3),
            "MLP-Head": (44.8, 74.8),
            "Atten-Head": (49.8, 74.1),
            "Aux-CELoss": (49.9, 73.2),
            "G-Blending": (50.4, "75.8*"),
            "OGM-GE": ("50.6*", 74.5),
            "UMT (ours)": (53.5, 76.8),
        },
        notes=("Paper: * means the result comes from its original paper.",),
    ),
    "table7": PaperTable(
        "Table 7. Top-1 test accuracy of the encoders trained by naive multi-modal training and UMT.",
        "Methods",
        ("VGG-Sound RGB", "VGG-Sound Audio", "Kinetics-400 RGB", "Kinetics-400 Audio"),
        {
            "Uni-Train": (23.2, 45.2, 74.1, 23.5),
            "MM Baseline": (15.9, 43.4, 72.9, 18.3),
            "UMT": (24.4, 45.9, 74.6, 21.6),
        },
        notes=("Linear evaluation: a linear classifier trained on the frozen encoder's features (probe).",),
    ),
    "table8": PaperTable(
        "Table 8. Self-Distillation vs UMT on VGG-Sound.",
        "Method",
        ("Top-1 Test Acc",),
        {
            "Baseline": (49.5,),
            "Self-Distill (label)": (49.7,),
            "Self-Distill (feature)": (49.9,),
            "UMT": (53.5,),
        },
    ),
    "table9": PaperTable(
        "Table 9. Comparison Uni-Modal Ensemble with other joint training methods on UCF101.",
        "Method",
        ("Top-1 Test Acc",),
        {
            "Linear-Head": (82.3,),
            "MLP-Head": (80.0,),
            "Atten-Head": (74.2,),
            "Aux-CELoss": (81.3,),
            "G-Blending": (83.0,),
            "OGM-GE": (84.0,),
            "UME (ours)": (86.8,),
        },
    ),
    "table10": PaperTable(
        "Table 10. Comparison between Uni-Modal Ensemble and balanced multi-modal learning algorithm "
        "(Wu et al., 2022) on ModelNet40.",
        "Method",
        ("Top-1 Test Acc",),
        {
            "multi-modal (vanilla)": ("90.09 ± 0.58*",),
            "+RUBi": ("90.45 ± 0.58*",),
            "+random": ("91.36 ± 0.10*",),
            "+guided": ("91.37 ± 0.28*",),
            "UME (ours)": ("91.92 ± 0.14",),
        },
        digits=2,
        notes=(
            "Paper: * means the result comes from (Wu et al., 2022). Ours: vanilla, random and guided train the MMTM "
            "model of paper 002 (recipes/modelnet40/mmtm.yaml, balanced_random.yaml, balanced.yaml); RUBi is not "
            "implemented in mmtool.",
        ),
    ),
}


# --------------------------------------------------------------------------------------------- our runs
def _probes(run: str) -> tuple[Source, ...]:
    """Table 1's four encoders of one training method (VGG-Sound's RGB encoder is its video encoder)."""
    return tuple(
        probe(d, run, m)
        for d, m in (("vggsound", "video"), ("vggsound", "audio"), ("ucf101", "rgb"), ("ucf101", "flow"))
    )


def _decision(dataset: str) -> tuple[Source, ...]:
    """Table 3's row of one dataset: decide's two accuracies and its verdict."""
    return tuple(decided(dataset, k) for k in ("mm_linear_accuracy", "average_accuracy", "verdict"))


def _ucf101_pair(field: str) -> tuple[Source, ...]:
    """Table 4's RGB and flow cells: one per-modality field of UCF101's decide run."""
    return tuple(decided("ucf101", field, m) for m in ("rgb", "flow"))


OURS: dict[str, dict[str, tuple[Source | None, ...]]] = {
    "table1": {
        "Linear-Fusion": _probes("naive"),
        "MLP-Fusion": _probes("naive_mlp"),
        "Attention-Fusion": _probes("naive_attention"),
        "G-Blending": _probes("gblending"),
        "OGM-GE": _probes("ogm_ge"),
        "Uni-Modal Training": _probes("unimodal"),
    },
    "table3": {
        "VGG-Sound": _decision("vggsound"),
        "Kinetics-400": _decision("kinetics400"),
        "UCF101": _decision("ucf101"),
        "ModelNet40": _decision("modelnet40"),
    },
    "table4": {
        "Uni-Clf from MM Clf": _ucf101_pair("split_classifier_accuracy"),
        "Uni-Modal Model": _ucf101_pair("unimodal_accuracy"),
    },
    "table5": {
        "Linear-Head": (test_acc("vggsound", "naive"), test_acc("kinetics400", "naive")),
        "MLP-Head": (test_acc("vggsound", "naive_mlp"), test_acc("kinetics400", "naive_mlp")),
        "Atten-Head": (test_acc("vggsound", "naive_attention"), test_acc("kinetics400", "naive_attention")),
        "Aux-CELoss": (test_acc("vggsound", "aux_ce"), test_acc("kinetics400", "aux_ce")),
        "G-Blending": (test_acc("vggsound", "gblending"), test_acc("kinetics400", "gblending")),
        "OGM-GE": (test_acc("vggsound", "ogm_ge"), test_acc("kinetics400", "ogm_ge")),
        "UMT (ours)": (test_acc("vggsound", "umt"), test_acc("kinetics400", "umt")),
    },
    "table7": {
        "Uni-Train": tuple(probe(d, "unimodal", m) for d in ("vggsound", "kinetics400") for m in ("video", "audio")),
        "MM Baseline": tuple(probe(d, "naive", m) for d in ("vggsound", "kinetics400") for m in ("video", "audio")),
        "UMT": tuple(probe(d, "umt", m) for d in ("vggsound", "kinetics400") for m in ("video", "audio")),
    },
    "table8": {
        "Baseline": (test_acc("vggsound", "naive"),),
        "Self-Distill (label)": (test_acc("vggsound", "self_distill"),),
        "Self-Distill (feature)": (test_acc("vggsound", "self_distill_feature"),),
        "UMT": (test_acc("vggsound", "umt"),),
    },
    "table9": {
        "Linear-Head": (test_acc("ucf101", "naive"),),
        "MLP-Head": (test_acc("ucf101", "naive_mlp"),),
        "Atten-Head": (test_acc("ucf101", "naive_attention"),),
        "Aux-CELoss": (test_acc("ucf101", "aux_ce"),),
        "G-Blending": (test_acc("ucf101", "gblending"),),
        "OGM-GE": (test_acc("ucf101", "ogm_ge"),),
        "UME (ours)": (test_acc("ucf101", "ume"),),
    },
    "table10": {
        "multi-modal (vanilla)": (test_acc("modelnet40", "mmtm"),),
        "+RUBi": (None,),
        "+random": (test_acc("modelnet40", "balanced_random"),),
        "+guided": (test_acc("modelnet40", "balanced"),),
        "UME (ours)": (test_acc("modelnet40", "ume"),),
    },
}


# --------------------------------------------------------------------------------------------- building
def run_dirs(root: Path, dataset: str, run: str, runs: Located | None = None) -> list[Path]:
    """The folders of ``run`` on ``dataset``, one per seed: from ``runs`` where given, else found by name."""
    if runs is not None:
        return list(runs.get((dataset, run), ()))
    return [seed_dir / run for seed_dir in sorted((root / dataset).glob("seed*"))]


def collect(root: Path, source: Source, runs: Located | None = None) -> list[float | str]:
    """The value at ``source.key`` in the ``results.json`` of each run folder of ``source`` that has one."""
    values = []
    for folder in run_dirs(root, source.dataset, source.run, runs):
        if is_finished(folder):
            value = results_of(folder)
            for part in source.key:
                value = value[part]
            values.append(value)
    return values


def ours_cell(values: Sequence[float | str]) -> str:
    """Mean ± std over seeds (the value alone for one seed); verdicts as counts; "—" for none."""
    if not values:
        return "—"
    if all(isinstance(v, str) for v in values):
        counts = Counter(values)
        if len(counts) == 1:
            return str(values[0])
        return ", ".join(f"{k} {n}/{len(values)}" for k, n in counts.most_common())
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return mean_std(list(values))


def paper_cell(value: Cell, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else value


def _seeds(root: Path, name: str, runs: Located | None = None) -> dict[str, int]:
    """How many seeds each dataset contributes to table ``name`` (most runs found for one cell)."""
    counts: dict[str, int] = {}
    for sources in OURS[name].values():
        for s in sources:
            if s is not None:
                counts[s.dataset] = max(counts.get(s.dataset, 0), len(collect(root, s, runs)))
    return counts


def _settings(root: Path, dataset: str, runs: Located | None = None) -> str:
    """Input size, epochs and batch of the dataset's uni-modal run: says at a glance whether these are SMOKE runs."""
    for folder in run_dirs(root, dataset, "unimodal", runs):
        cfg = config_of(folder)  # the resolved recipe the run saved
        if cfg is not None:
            data, train, optim = cfg["data"], cfg["train"], cfg["optim"]
            return (
                f"image_size {data['image_size']}, {train['epochs']} epochs, batch {train['batch_size']}, "
                f"{optim['name']} lr {optim['lr']:g}"
            )
    return "no uni-modal run found"


def render(name: str, root: Path, smoke: bool = False, runs: Located | None = None) -> str:
    """The Markdown table ``name``: each paper column beside ours, row names as in the paper; with ``smoke``
    its first line is :data:`SMOKE_BANNER`. ``runs``: where each run is (else found by name under ``root``).
    A table whose rows depend on the runs has a renderer of its own in ``RENDER``."""
    if name in RENDER:
        return RENDER[name](root, smoke, runs)
    table = PAPER[name]
    header = f"| {table.row_header} | " + " | ".join(f"{c}: paper | {c}: ours" for c in table.columns) + " |"
    lines = [SMOKE_BANNER, ""] if smoke else []
    lines += [f"# {table.caption}", "", header, "|---" * (1 + 2 * len(table.columns)) + "|"]
    for row, paper in table.rows.items():
        cells = []
        for value, source in zip(paper, OURS[name][row], strict=True):
            ours = "—" if source is None else ours_cell(collect(root, source, runs))
            cells += [paper_cell(value, table.digits), ours]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", *table.notes]
    seeds = _seeds(root, name, runs)
    for dataset, n in sorted(seeds.items()):
        if n == 0:
            lines.append(f"Ours on {dataset}: not run (no runs in {root / dataset}).")
            continue
        spread = "mean ± std over " if n > 1 else ""
        lines.append(
            f"Ours on {dataset}: {spread}{n} seed{'s' if n != 1 else ''} "
            f"({_settings(root, dataset, runs)}; runs in {root / dataset})."
        )
    lines.append("Top-1 test accuracy in %. How the runs are made: docs/tables.md.")
    return "\n".join(lines) + "\n"


# Tables declared in modules of their own add theirs here: PAPER and OURS entries, and RENDER for tables
# whose rows are chosen from the runs (Renderer: (root, smoke, runs) -> Markdown).
Renderer = Callable[[Path, bool, "Located | None"], str]
RENDER: dict[str, Renderer] = {}
EXTRA: tuple = (tables_classes, tables_cited, tables_distilled, tables_sweeps, tables_mla, tables_mla_clip,
                tables_mla_fig2, tables_greedy_studies)
for _module in EXTRA:
    PAPER.update(getattr(_module, "PAPER", {}))
    OURS.update(getattr(_module, "OURS", {}))
    RENDER.update(getattr(_module, "RENDER", {}))
TABLE_NAMES = tuple(dict.fromkeys((*PAPER, *RENDER)))


def main(argv: list[str] | None = None) -> None:
    """``python -m mmtool.analysis.paper_tables [--smoke] TABLE RUNS_ROOT OUT.md``: write the table and print it."""
    args = list(argv if argv is not None else sys.argv[1:])
    smoke = "--smoke" in args
    args = [a for a in args if a != "--smoke"]
    if len(args) != 3 or args[0] not in TABLE_NAMES:
        names = "|".join(TABLE_NAMES)
        raise SystemExit(f"usage: python -m mmtool.analysis.paper_tables [--smoke] {names} RUNS_ROOT OUT.md")
    text = render(args[0], Path(args[1]), smoke)
    atomic_write_text(Path(args[2]), text)
    print(text)


if __name__ == "__main__":
    main()
