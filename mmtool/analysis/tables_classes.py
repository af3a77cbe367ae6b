"""Per-class tables: paper 000's Tables 2 (VGG-Sound), 16 (Kinetics-400) and 17 (UCF101), and paper 001's
Figure 2 (VGG-Sound), from finished runs.

Each compares several models class by class on a handful of classes. The paper's classes are its own ids,
and a user's class ids need not match them (another download of VGG-Sound or Kinetics-400 has other
clips, even other classes), so every table shows three things: the paper's numbers as printed, ours on
the paper's class ids, and ours on the classes that the paper's selection rule picks from our runs.

Where our per-class numbers come from (test confusion matrices, summed over the seeds found):

* Uni-RGB / Uni-Audio / Uni-Flow: the `unimodal` run, ``modalities.<m>.test_confusion``;
* Avg Pred: decide's averaged uni-modal predictions (``test_confusion.average``, Table 2) or the `ume`
  ensemble run (``test_confusion``: the same averaged softmax, Tables 16 and 17);
* Linear Clf: decide's multi-modal linear classifier on the frozen encoders (``test_confusion.mm_linear``);
* Naive Fusion: the `naive` train run (``test_confusion``);
* paper 001's video encoders: the linear probe of each run's video encoder (``probe-<run>``,
  ``probes.video.test_confusion``), as paper 001's Table 1 evaluates encoders.

The selection rules (:class:`Rule`) are our reading of the text; each table says its rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmtool.analysis.paper_defs import SMOKE_BANNER, Located, Run, TablePlan

# The runs, named as paper_plans names them (a run with the same name and recipe is reused across tables).
UNIMODAL = Run("unimodal", "pretrain-unimodal", "pretrain")
DECIDE = Run("decide", "decide", "decide", (("teachers", "unimodal"),))
NAIVE = Run("naive", "train", "naive")
UME = Run("ume", "ensemble", "ensemble", (("teachers", "unimodal"), ("run", "naive")))
FIG2_RUNS = (Run("gblending", "train", "gblending"), Run("umt", "train", "umt", (("teachers", "unimodal"),)))
FIG2_PROBED = ("unimodal", "naive", "gblending", "umt")

TABLES: dict[str, TablePlan] = {
    "table2": TablePlan(("vggsound",), (UNIMODAL, DECIDE, NAIVE), "vggsound"),
    "table16": TablePlan(("kinetics400",), (UNIMODAL, NAIVE, UME), "kinetics400"),
    "table17": TablePlan(("ucf101",), (UNIMODAL, NAIVE, UME), "ucf101"),
    "ws-fig2": TablePlan(
        ("vggsound",),
        (UNIMODAL, NAIVE, *FIG2_RUNS, *(Run(f"probe-{n}", "probe", "probe", (("run", n),)) for n in FIG2_PROBED)),
        "vggsound",
    ),
}

PerClass = dict[str, list[float]]  # row -> accuracy (%) of each class, NaN where a class has no test sample


# --------------------------------------------------------------------------------------------- selection
@dataclass(frozen=True)
class Rule:
    """Pick ``k`` classes by a score computed from the rows; ``positive``: only classes scoring above 0."""

    text: str
    score: Callable[[PerClass], list[float]]
    k: int = 10
    positive: bool = False

    def select(self, rows: PerClass) -> list[int]:
        """The chosen class ids, highest score first (ties: lower id first); classes with a NaN are skipped."""
        scores = self.score(rows)
        ok = [c for c, s in enumerate(scores) if not math.isnan(s) and (s > 0 or not self.positive)]
        return sorted(ok, key=lambda c: (-scores[c], c))[: self.k]


def beyond_sum(fusion: str, unimodal: tuple[str, ...]) -> Callable[[PerClass], list[float]]:
    """``fusion`` minus the sum of the uni-modal accuracies, per class."""
    return lambda rows: [f - sum(rows[u][c] for u in unimodal) for c, f in enumerate(rows[fusion])]


def beyond_best(fusion: str, unimodal: tuple[str, ...]) -> Callable[[PerClass], list[float]]:
    """``fusion`` minus the best uni-modal accuracy, per class (NaN where any is NaN)."""
    return lambda rows: [f - _best([rows[u][c] for u in unimodal]) for c, f in enumerate(rows[fusion])]


def _best(values: list[float]) -> float:
    return math.nan if any(math.isnan(v) for v in values) else max(values)  # max alone would skip a NaN


def row_score(name: str) -> Callable[[PerClass], list[float]]:
    return lambda rows: list(rows[name])


def per_class(cm: list[list[int]]) -> list[float]:
    """Accuracy (%) of each class from a confusion matrix (rows: actual class); NaN for an empty row."""
    return [100.0 * row[c] / sum(row) if sum(row) else math.nan for c, row in enumerate(cm)]


# --------------------------------------------------------------------------------------------- the tables
@dataclass(frozen=True)
class ClassTable:
    """A per-class table: the paper's classes and rows as printed, where each row of ours comes from
    ((run, key path to a test confusion matrix)), the rule that picks our classes, and how the paper
    numbers its classes (our label = paper id - ``id_offset``)."""

    caption: str
    dataset: str
    classes: tuple[int, ...]  # the paper's class ids, in its order
    paper: dict[str, tuple[float, ...]]  # row -> one number per class, then the mean the paper prints
    rows: dict[str, tuple[str, tuple[str, ...]]]
    rule: Rule
    id_offset: int = 0
    notes: tuple[str, ...] = ()


def _uni(m: str) -> tuple[str, tuple[str, ...]]:
    return ("unimodal", ("modalities", m, "test_confusion"))


NAIVE_ROW = ("naive", ("test_confusion",))
# App. A.7.2 names the classes of Table 2 and sorts Kinetics-400's names alphabetically, without saying whether ids
# count from 0 or 1: we read 0-based positions in the sorted names, which is how mmtool labels both datasets
VGG_NOTE = (
    "Paper ids read as 0-based positions in the sorted class names (mmtool's labels; our reading). App. A.7.2 names "
    "them: 164 People Sniggering, 303 Wood Thrush Calling, 33 Cat Meowing, 255 Sea Waves, 91 Footsteps On Snow, "
    "4 Alligators Crocodiles Hissing, 152 People Gargling, 127 Mynah Bird Singing, 68 Door Slamming, 155 People "
    "Humming: check them against your class list."
)
K400_NOTE = ("Paper ids read as 0-based positions in the alphabetically sorted class names (App. A.7.2 sorts them; "
             "whether it counts from 0 or 1 it does not say: our reading, mmtool's labels).")  # fmt: skip
CLASS_TABLES: dict[str, ClassTable] = {
    "table2": ClassTable(
        "Table 2. Top-1 test accuracy of multi-modal models with different freedom of cross-modal interactions and "
        "uni-modal models on certain classes of VGG-Sound.",
        "vggsound",
        (164, 303, 33, 255, 91, 4, 152, 127, 68, 155),
        {
            "Uni-RGB": (3, 2, 4, 3, 4, 12, 2, 0, 15, 5, 5),
            "Uni-Audio": (30, 7, 34, 10, 43, 50, 18, 0, 53, 32, 27.7),
            "Avg Pred": (37, 10, 37, 7, 28, 63, 21, 0, 51, 30, 28.4),
            "Linear Clf": (35, 15, 33, 27, 60, 65, 26, 2, 53, 49, 36.5),
            "Naive Fusion": (43, 18, 48, 22, 55, 67, 26, 4, 72, 40, 39.5),
        },
        {
            "Uni-RGB": _uni("video"),
            "Uni-Audio": _uni("audio"),
            "Avg Pred": ("decide", ("test_confusion", "average")),
            "Linear Clf": ("decide", ("test_confusion", "mm_linear")),
            "Naive Fusion": NAIVE_ROW,
        },
        # Sec. 3.2 shows classes where "naive fusion exceeds the sum of the accuracy of the two uni-modal models"
        # and does not say how it chose ten of them; the paper's ten fall roughly in the order of that margin
        Rule("the 10 classes where Naive Fusion exceeds Uni-RGB + Uni-Audio by most (Sec. 3.2; how the paper picked "
             "its ten is not said: our reading)", beyond_sum("Naive Fusion", ("Uni-RGB", "Uni-Audio")), positive=True),
        notes=(VGG_NOTE,),
    ),
    "table16": ClassTable(
        "Table 16. Top-1 test accuracy of different models on some classes of Kinetics. The accuracy of naive fusion "
        "model outperforms averaging the uni-modal models' predictions, and even outperforms the sum of the accuracy "
        "of the uni-audio model and uni-video model.",
        "kinetics400",
        (53, 90, 184, 2, 368, 158, 113, 263, 287, 4),
        {
            "Uni-Audio": (0, 0, 0, 4, 0, 0, 0, 0, 4, 2, 1),
            "Uni-RGB": (42, 50, 22, 28, 39, 43, 29, 82, 76, 50, 46.1),
            "Avg Pred": (42, 50, 22, 28, 39, 43, 29, 82, 78, 50, 46.3),
            "Naive Fusion": (56, 62, 32, 40, 45, 49, 35, 84, 86, 58, 54.7),
        },
        {"Uni-Audio": _uni("audio"), "Uni-RGB": _uni("video"), "Avg Pred": ("ume", ("test_confusion",)),
         "Naive Fusion": NAIVE_ROW},  # fmt: skip
        Rule("the 10 classes where Naive Fusion exceeds Uni-Audio + Uni-RGB by most (the caption's property; how the "
             "paper picked its ten is not said: our reading)", beyond_sum("Naive Fusion", ("Uni-Audio", "Uni-RGB")),
             positive=True),  # fmt: skip
        notes=(K400_NOTE,),
    ),
    "table17": ClassTable(
        "Table 17. Top-1 test accuracy of different models on selected classes of UCF101. We select the top-10 "
        "classes according to the gap of accuracy between the multi-modal and uni-modal models.",
        "ucf101",
        (6, 10, 12, 22, 29, 31, 48, 57, 67, 71),
        {
            "Uni-RGB": (74, 84, 76, 61, 67, 32, 78, 21, 75, 57, 62.5),
            "Uni-Flow": (60, 82, 58, 47, 61, 41, 64, 24, 78, 63, 57.8),
            "Avg Pred": (70, 95, 79, 64, 86, 46, 89, 36, 98, 83, 74.6),
            "Naive Fusion": (86, 95, 87, 72, 83, 59, 92, 42, 88, 73, 77.7),
        },
        {"Uni-RGB": _uni("rgb"), "Uni-Flow": _uni("flow"), "Avg Pred": ("ume", ("test_confusion",)),
         "Naive Fusion": NAIVE_ROW},  # fmt: skip
        # App. A.7.2: "sorting the differences of accuracy between naive fusion and the best uni-modal model"
        Rule("the 10 classes with the largest Naive Fusion minus best uni-modal accuracy (App. A.7.2)",
             beyond_best("Naive Fusion", ("Uni-RGB", "Uni-Flow"))),  # fmt: skip
        id_offset=1,  # App. A.7.2: UCF101's ids are classInd.txt's, which counts from 1
        notes=("Paper ids are classInd.txt's (from 1); our labels count from 0: ours = paper id - 1.",),
    ),
}

# Paper 001, Figure 2: per-class linear-probe accuracy of four video encoders on the uni-modal audio model's
# top-20 classes. The figure prints no numbers; the text gives the four means "33.79%, 36.92%, 49.05%, and
# 53.13%" and "the gap between naive fusion video and uni-video is 15.26%" (= 49.05 - 33.79). Which mean is
# G-Blending's and which UMT's is our reading (UMT "considerably alleviates" the failure: the highest).
FIG2_MEANS = {"Uni-Video": 49.05, "Naive Fusion video": 33.79, "G-Blending video": 36.92, "UMT video": 53.13}
FIG2_ROWS = {
    "Uni-Audio": _uni("audio"),  # the uni-modal audio model itself: it picks the classes
    **{
        row: (f"probe-{run}", ("probes", "video", "test_confusion"))
        for row, run in zip(FIG2_MEANS, FIG2_PROBED, strict=True)
    },
}
FIG2_RULE = Rule("the 20 classes where the uni-modal audio model is most accurate (Figure 2's caption)",
                 row_score("Uni-Audio"), k=20)  # fmt: skip
FIG2_CAPTION = (
    "Figure 2 (paper 001). Video modality failure in multi-modal fusion training. We first select the top 20 test "
    "accuracy classes from uni-audio training, then evaluate different video encoders on these classes."
)


# --------------------------------------------------------------------------------------------- rendering
def _matrix(root: Path, runs: Located | None, dataset: str, run: str, key: tuple[str, ...]) -> list[list[int]] | None:
    """The confusion matrix at ``key`` of every finished seed folder of ``run``, summed; None where none has it."""
    from mmtool.analysis.paper_tables import run_dirs
    from mmtool.runs import is_finished, results_of

    total = None
    for folder in run_dirs(root, dataset, run, runs):
        value = results_of(folder) if is_finished(folder) else None
        for part in key:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            total = value if total is None else [[a + b for a, b in zip(r, s, strict=True)] for r, s in
                                                 zip(total, value, strict=True)]  # fmt: skip
    return total


def collect(root: Path, runs: Located | None, dataset: str, rows: dict[str, tuple[str, tuple[str, ...]]]) -> PerClass:
    """Our per-class accuracies of every row that has a run with a test confusion matrix."""
    out = {}
    for row, (run, key) in rows.items():
        cm = _matrix(root, runs, dataset, run, key)
        if cm is not None:
            out[row] = per_class(cm)
    return out


def _fmt(value: float | None) -> str:
    return "—" if value is None else "n/a" if math.isnan(value) else f"{value:.1f}"


def grid(ids: list[str], rows: dict[str, list[float | None]], header: str = "Class ID") -> list[str]:
    """A Markdown table: one column per class, then the mean over the classes with a number."""
    lines = [f"| {header} | " + " | ".join(ids) + " | mean acc |", "|---" * (len(ids) + 2) + "|"]
    for row, values in rows.items():
        known = [v for v in values if v is not None and not math.isnan(v)]
        mean = sum(known) / len(known) if known else None
        lines.append(f"| {row} | " + " | ".join(_fmt(v) for v in values) + f" | {_fmt(mean)} |")
    return lines


def _at(acc: list[float] | None, c: int) -> float | None:
    return acc[c] if acc is not None and 0 <= c < len(acc) else None


def chosen_section(rule: Rule, ours: PerClass, names: list[str], id_offset: int = 0) -> tuple[list[str], list[int]]:
    """Ours on the classes ``rule`` picks (ids with the paper's numbering where it differs), or why none."""
    head = [f"## Ours on the classes the rule picks: {rule.text}", ""]
    absent = [n for n in names if n not in ours]
    if absent:
        return [*head, f"Not chosen: no per-class results for {', '.join(absent)}."], []
    chosen = rule.select(ours)
    if not chosen:
        return [*head, "No class satisfies the rule in our runs."], []
    ids = [f"{c}" + (f" (paper {c + id_offset})" if id_offset else "") for c in chosen]
    return [*head, *grid(ids, {n: [ours[n][c] for c in chosen] for n in names}, "Our class id")], chosen


def _footer(root: Path, dataset: str, ours: PerClass, rows: dict) -> list[str]:
    found = ", ".join(f"{r} ← `{run}`" for r, (run, _) in rows.items() if r in ours) or "none"
    missing = [r for r in rows if r not in ours]
    lines = [f"Ours on {dataset}: test confusion matrices summed over the seeds found (runs in {root / dataset}); "
             f"rows from runs: {found}."]  # fmt: skip
    if missing:
        lines.append(f"No per-class results (run missing, or made before it stored them) for: {', '.join(missing)}.")
    return [*lines, "Per-class top-1 test accuracy in %; n/a: no test sample of that class. docs/tables.md."]


def render_table(name: str, root: Path, smoke: bool = False, runs: Located | None = None) -> str:
    """Table 2, 16 or 17: the paper's classes as printed, ours on those ids, ours on the classes the rule picks."""
    t = CLASS_TABLES[name]
    ours = collect(root, runs, t.dataset, t.rows)
    ids = [str(c) for c in t.classes]
    lines = [SMOKE_BANNER, ""] if smoke else []
    lines += [f"# {t.caption}", "", "## The paper's classes, as printed (paper)", ""]
    lines += [f"| Class ID | {' | '.join(ids)} | mean acc |", "|---" * (len(ids) + 2) + "|"]
    lines += [f"| {r} | " + " | ".join(f"{v:g}" for v in values) + " |" for r, values in t.paper.items()]
    lines += ["", "## Ours on the paper's class ids", ""]
    lines += grid(ids, {r: [_at(ours.get(r), c - t.id_offset) for c in t.classes] for r in t.rows})
    lines += ["", *chosen_section(t.rule, ours, list(t.rows), t.id_offset)[0], "", *t.notes]
    return "\n".join([*lines, *_footer(root, t.dataset, ours, t.rows)]) + "\n"


def render_fig2(root: Path, smoke: bool = False, runs: Located | None = None) -> str:
    """Paper 001's Figure 2: the means the text gives beside ours, our per-class grid and a bar chart PNG."""
    ours = collect(root, runs, "vggsound", FIG2_ROWS)
    section, chosen = chosen_section(FIG2_RULE, ours, list(FIG2_ROWS))
    lines = [SMOKE_BANNER, ""] if smoke else []
    lines += [f"# {FIG2_CAPTION}", "", "| Video encoder | mean acc, chosen classes: paper | ours |", "|---|---|---|"]
    for row, paper in FIG2_MEANS.items():
        known = [ours[row][c] for c in chosen if row in ours and not math.isnan(ours[row][c])]
        lines.append(f"| {row} | {paper:.2f} | {_fmt(sum(known) / len(known) if known else None)} |")
    lines += ["", *section, ""]
    if chosen:
        worse = sum(ours["Naive Fusion video"][c] < ours["Uni-Video"][c] for c in chosen)
        lines.append(f"Naive Fusion video below Uni-Video on {worse} of {len(chosen)} classes (paper: about 16 of 20).")
        lines.append(f"Figure: {_fig2_png(ours, chosen, smoke)}")
    lines += [
        "Video encoders: linear probes of the frozen video encoder of each run (`probe-<run>`), as paper 001's "
        "Table 1 evaluates encoders; Uni-Audio: the uni-modal audio model. Which paper mean belongs to G-Blending "
        "and which to UMT is our reading of the text (the figure prints no numbers).",
        *_footer(root, "vggsound", ours, FIG2_ROWS),
    ]
    return "\n".join(lines) + "\n"


def _fig2_png(ours: PerClass, chosen: list[int], smoke: bool) -> Path:
    from mmtool.analysis import plots

    groups = {str(c): {row: ours[row][c] for row in FIG2_MEANS} for c in chosen}
    out = Path("results/smoke" if smoke else "results") / "ws-fig2.png"  # beside the table `mmtool reproduce` writes
    return plots.grouped_bars(groups, out, "Per-class test accuracy of video encoders (linear probes)",
                              "test accuracy (%)")  # fmt: skip


RENDER: dict[str, Callable] = {
    **{name: (lambda root, smoke, runs, name=name: render_table(name, root, smoke, runs)) for name in CLASS_TABLES},
    "ws-fig2": render_fig2,
}
