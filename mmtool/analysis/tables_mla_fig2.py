"""Paper 003's (MLA) Figure 2 as a target, ``mla-fig2``: Kinetics-Sounds test accuracy as a modality goes missing
from the training data.

Sec. 4.3.2: "we selectively masked either the audio or video modality during training, employing various modality
masking ratios", MLA against QMF; the figure plots, per ratio, the accuracy of each modality alone and of both
(its caption: "test accuracy (%) on the KS dataset, varying with the ratio of missing modality in audio or video
training data"). The claim: "the performance of unimodal learning in MLA remains unaffected by the absence of other
modalities. In contrast, in QMF, the absence of one modality negatively impacts the performance of another".

The figure prints no numbers, and neither the text nor the caption names the ratios: ours are 10%, 30%, 50% and
70% (:data:`RATIOS`, our choice: every other rate of the range Sec. 4.2 uses, 10%-70%) and the complete data (0%,
the ``mla`` and ``qmf`` runs of Table 1's KS rows). Each run is KS in MLA's setting
(``recipes/_base/kinetics-sounds_mla.yaml``, the table's fragment) with ``data.missing_rate`` = the ratio,
``data.missing_in: train`` and ``data.missing_modalities: [audio]`` or ``[video]``: each training clip lacks the
modality with that probability (:mod:`mmtool.data.missing`); validation and test clips are complete. A modality's
accuracy is the fused model's head on that modality's test features (``unimodal_head_accuracy``, as Table 1).

How MLA's code masks (dataset/dataset.py @11ae1ee, ``AVDataset``, QMF only): the last ``mask_percent`` of the
training list have the masked modality's input zeroed; here the clips are drawn at random (``data.seed``, the same
for both methods) and a missing modality's input is left out of the losses rather than zeroed.
One seed (the figure shows no spread); SMOKE runs one ratio (30%) per modality.

The check printed under the table: MLA "unaffected" = the present modality's accuracy at the largest ratio within
:data:`TOLERANCE` points of the complete data's (our threshold); QMF "negatively impacts" = it falls by more than
that.
"""

from __future__ import annotations

from pathlib import Path

from mmtool.analysis.paper_defs import Located, Run, Source, TablePlan

DATASET = "kinetics-sounds"
RATIOS = (0.1, 0.3, 0.5, 0.7)  # our choice: the paper names none (module docstring)
SMOKE_RATIO = 0.3
MODALITIES = ("audio", "video")  # the modality missing from the training data; the other one is present
METHODS = {"MLA": "mla", "QMF": "qmf"}  # name in the figure -> recipe (and run) in recipes/kinetics-sounds/
TOLERANCE = 2.0  # points: our threshold for "unaffected"
FRAGMENT = "recipes/_base/kinetics-sounds_mla.yaml"
SMOKE_FRAGMENT = "recipes/_base/smoke/kinetics-sounds_mla.yaml"
CAPTION = ("Paper 003, Figure 2. Visualization of test accuracy (%) on the KS dataset, varying with the ratio of "
           "missing modality in audio or video training data.")  # fmt: skip


def run_name(recipe: str, missing: str, rate: float) -> str:
    """``mla`` on complete data (rate 0), ``mla-noaudio-m30`` with audio missing from 30% of the training clips."""
    return recipe if rate == 0 else f"{recipe}-no{missing}-m{round(rate * 100)}"


def missing_runs(missing: str, rate: float) -> tuple[Run, ...]:
    """MLA and QMF trained with ``missing`` absent from a ``rate`` of the training clips."""
    over = (f"data.missing_rate={rate}", "data.missing_in=train", f"data.missing_modalities=[{missing}]")
    return tuple(Run(run_name(recipe, missing, rate), "train", recipe, overrides=over) for recipe in METHODS.values())


COMPLETE = tuple(Run(recipe, "train", recipe) for recipe in METHODS.values())
_SMOKE = (*COMPLETE, *(r for m in MODALITIES for r in missing_runs(m, SMOKE_RATIO)))
TABLES = {
    "mla-fig2": TablePlan(
        (DATASET,),
        (*COMPLETE, *(r for m in MODALITIES for rate in RATIOS for r in missing_runs(m, rate))),
        DATASET,
        smoke=tuple(r.name for r in _SMOKE),
        fragments=((DATASET, FRAGMENT),),
        smoke_fragments=((DATASET, SMOKE_FRAGMENT),),
    )
}


# ------------------------------------------------------------------------------------------ rendering
Curves = dict[str, dict[str, dict[float, float]]]  # method -> "audio" | "video" | "multi" -> {rate: accuracy}


def _mean(values: list) -> float | None:
    numbers = [float(v) for v in values]
    return sum(numbers) / len(numbers) if numbers else None


def curves(root: Path, missing: str, runs: Located | None) -> Curves:
    """Mean test accuracies (over the seeds found) per method, modality and ratio, with ``missing`` masked."""
    from mmtool.analysis.paper_tables import collect

    keys = {m: ("unimodal_head_accuracy", m, "test") for m in ("audio", "video")} | {"multi": ("test_accuracy",)}
    out: Curves = {}
    for method, recipe in METHODS.items():
        out[method] = {"audio": {}, "video": {}, "multi": {}}
        for rate in (0.0, *RATIOS):
            name = run_name(recipe, missing, rate)
            for what, key in keys.items():
                value = _mean(collect(root, Source(DATASET, name, key), runs))
                if value is not None:
                    out[method][what][rate] = value
    return out


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _rows(missing: str, data: Curves) -> list[str]:
    rows = []
    for rate in (0.0, *RATIOS):
        cells = [_cell(data[m][w].get(rate)) for m in METHODS for w in ("audio", "video", "multi")]
        rows.append(f"| {missing} | {round(rate * 100)}% | " + " | ".join(cells) + " |")
    return rows


def check(missing: str, data: Curves) -> str | None:
    """The paper's claim on the present modality at the largest ratio with both methods' results; None without."""
    present = next(m for m in MODALITIES if m != missing)
    rates = [r for r in RATIOS if all(r in data[m][present] and 0.0 in data[m][present] for m in METHODS)]
    if not rates:
        return None
    rate = max(rates)
    change = {m: data[m][present][rate] - data[m][present][0.0] for m in METHODS}
    unaffected = abs(change["MLA"]) <= TOLERANCE
    drops = change["QMF"] < -TOLERANCE
    return (f"{missing.capitalize()} missing from {round(rate * 100)}% of the training clips, {present} accuracy "
            f"against complete data: MLA {change['MLA']:+.1f}, QMF {change['QMF']:+.1f} points. \"MLA remains "
            f"unaffected\" (within ±{TOLERANCE:g}): {'holds' if unaffected else 'does not hold'}; \"in QMF, the "
            f"absence of one modality negatively impacts\" the other (a drop of more than {TOLERANCE:g}): "
            f"{'holds' if drops else 'does not hold'} on ours.")  # fmt: skip


def _plot(all_curves: dict[str, Curves], smoke: bool) -> Path | None:
    from mmtool.analysis import plots

    panels = {f"{missing} missing in training": {f"{method} {what}": sorted(points.items())
                                                  for method, by in data.items() for what, points in by.items()
                                                  if points}  # fmt: skip
              for missing, data in all_curves.items()}  # fmt: skip
    if not any(panels.values()):
        return None
    for name, lines in panels.items():
        if not lines:
            panels[name] = {"(no runs)": []}
    out = Path("results/smoke" if smoke else "results") / "mla-fig2.png"
    pct = {n: {k: [(100 * x, y) for x, y in v] for k, v in c.items()} for n, c in panels.items()}
    return plots.xy_curves(pct, out, "Kinetics-Sounds (MLA's setting)", "missing ratio in training (%)")


def render_fig2(root: Path, smoke: bool, runs: Located | None) -> str:
    """Our accuracies per ratio (MLA and QMF: audio alone, video alone, both), the paper's claim checked on them,
    and the curves in ``results/[smoke/]mla-fig2.png``."""
    from mmtool.analysis.paper_tables import SMOKE_BANNER

    all_curves = {missing: curves(root, missing, runs) for missing in MODALITIES}
    lines = [SMOKE_BANNER, ""] if smoke else []
    header = " | ".join(f"{m} {w}" for m in METHODS for w in ("audio", "video", "multi"))
    lines += [f"# {CAPTION}", "",
              "The figure prints no numbers (nor its ratios): the columns are ours; the claim is checked below.",
              "", f"| Missing in training | ratio | {header} |", "|---|---|" + "---|" * 3 * len(METHODS)]  # fmt: skip
    for missing in MODALITIES:
        lines += _rows(missing, all_curves[missing])
    lines.append("")
    for missing in MODALITIES:
        verdict = check(missing, all_curves[missing])
        lines.append(verdict if verdict else f"{missing.capitalize()} missing: no runs to check the claim on yet.")
    figure = _plot(all_curves, smoke)
    if figure is not None:
        lines.append(f"Figure: {figure}")
    lines += ["", "Ours: Kinetics-Sounds in MLA's setting (recipes/_base/kinetics-sounds_mla.yaml); a modality's "
              "column is the head on that modality's test features alone, \"multi\" the fused test accuracy; 0% is "
              "complete training data. Training clips lack the modality at random with the ratio's probability "
              "(data.missing_rate, missing_in: train); validation and test are complete.",
              "How the runs are made: docs/tables.md."]  # fmt: skip
    return "\n".join(lines) + "\n"


RENDER = {"mla-fig2": render_fig2}
