"""Distilled uni-modal models and encoder evaluation over training: paper 000's Table 18 (App. A.8) and
Figure 2, and paper 001's Table 1 (``ws-table1``), on VGG-Sound (and UCF101 for Figure 2).

* ``table18``: uni-modal models distilled from the uni-modal teachers (`pretrain-unimodal` with
  ``recipes/vggsound/pretrain_distill.yaml``: CE + 50 x MSE to its own modality's teacher) combined by a
  multi-modal linear classifier (`decide` on that run), against UMT. "RGB" and "Audio" are the uni-modal
  evaluation of each row's encoders, "R+A" its multi-modal score: for "Linear Clf" the linear probes of the
  distilled encoders and decide's multi-modal linear classifier; for "UMT" the linear probes of UMT's encoders
  (the paper's 24.43 / 45.89 are Table 7's UMT probes) and UMT's own test accuracy (53.46, Table 5's 53.5).
  The paper does not say whether the distilled models' RGB/Audio are linear probes or the models' own heads; we
  take linear probes, the evaluation the UMT row uses.
* ``ws-table1``: linear probes, train and test accuracy, of the encoders of naive fusion, uni-modal training,
  G-Blending, audio-only and video-only distillation (UMT with one teacher, ``method.modalities``) and UMT.
* ``fig2``: the RGB encoders on VGG-Sound and the optical-flow encoders on UCF101 probed at every epoch of
  each late-fusion method and of uni-modal training (``train.snapshot_every=1``, then `probe` with
  ``recipes/<dataset>/probe_curve.yaml``: ``probe.over_training``). The paper draws the curves without
  printing their values, so the table lists ours only and checks the claim its text makes. The figure
  (``fig2.png``) goes beside the table: ``results/`` (``results/smoke/`` with ``--smoke``).
"""

from __future__ import annotations

from pathlib import Path

from mmtool.analysis.paper_defs import SMOKE_BANNER, Located, PaperTable, Run, Source, TablePlan

# --------------------------------------------------------------------------------------------- the runs
UNIMODAL = Run("unimodal", "pretrain-unimodal", "pretrain")
TEACHERS = (("teachers", "unimodal"),)
DISTILLED = Run("distilled", "pretrain-unimodal", "pretrain_distill", TEACHERS)
DECIDE_DISTILLED = Run("decide-distilled", "decide", "decide", (("teachers", "distilled"),))
UMT = Run("umt", "train", "umt", TEACHERS)
# paper 001, Sec. 4.1: "video-only distillation and audio-only distillation": UMT with one modality's teacher
# recipes/vggsound/umt_audio.yaml, umt_video.yaml (UMT with method.modalities): the runs of paper 001's Table 2 too
UMT_AUDIO = Run("umt_audio", "train", "umt_audio", TEACHERS)
UMT_VIDEO = Run("umt_video", "train", "umt_video", TEACHERS)
SNAPSHOTS = ("train.snapshot_every=1",)  # a probe per epoch (20 points: Table 11's 20 epochs)
FIG2_METHODS = {  # the paper's name -> our run (Table 1's methods: Fig. 2's legend is not in the text)
    "Uni-Modal Training": "unimodal",
    "Linear-Fusion": "naive",
    "MLP-Fusion": "naive_mlp",
    "Attention-Fusion": "naive_attention",
    "G-Blending": "gblending",
    "OGM-GE": "ogm_ge",
}
FIG2_PANELS = {  # dataset -> (modality, the paper's panel)
    "vggsound": ("video", "(a) RGB encoder evaluation on VGG-Sound"),
    "ucf101": ("flow", "(b) Optical flow encoder evaluation on UCF101"),
}


def _train(name: str) -> Run:
    return Run(name, "train", name)


def _probes(*names: str) -> tuple[Run, ...]:
    return tuple(Run(f"probe-{n}", "probe", "probe", (("run", n),)) for n in names)


def _snapshot_runs() -> tuple[Run, ...]:
    """Per method, its training with a snapshot every epoch and the probe of every snapshot."""
    runs: list[Run] = []
    for name in FIG2_METHODS.values():
        command, recipe = ("pretrain-unimodal", "pretrain") if name == "unimodal" else ("train", name)
        runs.append(Run(f"{name}-snapshots", command, recipe, (), SNAPSHOTS))
        runs.append(Run(f"curve-{name}", "probe", "probe_curve", (("run", f"{name}-snapshots"),)))
    return tuple(runs)


TABLES: dict[str, TablePlan] = {
    "table18": TablePlan(("vggsound",), (UNIMODAL, DISTILLED, DECIDE_DISTILLED, UMT, *_probes("distilled", "umt")),
                         "vggsound"),  # fmt: skip
    "ws-table1": TablePlan(
        ("vggsound",),
        (UNIMODAL, _train("naive"), _train("gblending"), UMT, UMT_AUDIO, UMT_VIDEO,
         *_probes("unimodal", "naive", "gblending", "umt", "umt_audio", "umt_video")),  # fmt: skip
        "vggsound",
    ),
    "fig2": TablePlan(tuple(FIG2_PANELS), _snapshot_runs(), None),
}

# --------------------------------------------------------------------------------------------- the papers
PAPER: dict[str, PaperTable] = {
    "table18": PaperTable(
        "Table 18. Comparison of UMT with combining uni-modal models trained by distillation on VGG-Sound.",
        "Method",
        ("RGB", "Audio", "R+A"),
        {"Linear Clf": (25.99, 46.00, 52.98), "UMT": (24.43, 45.89, 53.46)},
        digits=2,
        notes=(
            "Linear Clf: uni-modal models distilled from the uni-modal teachers (CE + 50 x MSE to their own "
            "modality's features; App. A.8 names no weight, we take UMT's), combined by a multi-modal linear "
            "classifier on their frozen encoders (`decide`). RGB, Audio: linear probes of each row's encoders "
            "(the paper's UMT values are Table 7's probes; for the distilled models it does not say, we probe "
            "them too). R+A: the multi-modal test accuracy (decide's classifier; UMT's own).",
            "Ours: the first seed (the paper's UMT 53.46 is paper 001's mean of 3 seeds).",
        ),
    ),
    "ws-table1": PaperTable(
        "Table 1 (paper 001). Modality Failure: encoders of each modality from various training methods, "
        "evaluated with the encoder fixed and a fine-tuned classifier (top-1 accuracy in %).",
        "Method",
        ("Audio Test", "Video Test", "Audio Training", "Video Training"),
        {
            "Naive Fusion": (43.48, 15.86, 88.58, 34.69),
            "Audio-only Training": ("46", "/", 99.95, "/"),
            # the extracted text reads "<b>99.4</b> 7": a bold 99.47
            "Video-only Training": ("/", 23.78, "/", 99.47),
            "Gradient-Blending [44]": (44.42, 16.85, 95.03, "36.9"),
            "Audio-only Distillation": (46.28, 8.96, 95.72, 16.45),
            "Video-only Distillation": (40.76, "24.5", 70.95, "82.7"),
            "Uni-Modal Teacher": (46.66, 24.84, 86.21, "61.8"),
        },
        digits=2,
        notes=(
            "Paper: bold (best) and underlined (worst) marks are lost in the extracted text; values as printed "
            "(46, 36.9, 24.5, 82.7, 61.8 with fewer digits). \"/\": the model has no encoder of that modality.",
            "Ours: linear probes (`probe`) of each run's encoders, accuracy on the training split (without the "
            "10% held out for validation) and on the test split. Audio-only / video-only distillation: UMT with "
            "the teacher of that modality only (method.modalities); the other modality learns from the fused CE.",
        ),
    ),
}


def _probe(run: str, modality: str, split: str) -> Source:
    return Source("vggsound", f"probe-{run}", ("probes", modality, f"{split}_accuracy"))


def _ws_row(run: str, modalities: tuple[str, ...] = ("audio", "video")) -> tuple[Source | None, ...]:
    """Audio and video test accuracy, then train accuracy; None where ``run`` has no such encoder."""
    return tuple(
        _probe(run, m, split) if m in modalities else None for split in ("test", "train") for m in ("audio", "video")
    )


OURS: dict[str, dict[str, tuple[Source | None, ...]]] = {
    "table18": {
        "Linear Clf": (
            _probe("distilled", "video", "test"),
            _probe("distilled", "audio", "test"),
            Source("vggsound", "decide-distilled", ("mm_linear_accuracy",)),
        ),
        "UMT": (_probe("umt", "video", "test"), _probe("umt", "audio", "test"), Source("vggsound", "umt",
                ("test_accuracy",))),  # fmt: skip
    },
    "ws-table1": {
        "Naive Fusion": _ws_row("naive"),
        "Audio-only Training": _ws_row("unimodal", ("audio",)),
        "Video-only Training": _ws_row("unimodal", ("video",)),
        "Gradient-Blending [44]": _ws_row("gblending"),
        "Audio-only Distillation": _ws_row("umt_audio"),
        "Video-only Distillation": _ws_row("umt_video"),
        "Uni-Modal Teacher": _ws_row("umt"),
    },
}


# --------------------------------------------------------------------------------------------- Figure 2
def fig2_curves(root: Path, runs: Located | None) -> dict[str, dict[str, list[dict]]]:
    """dataset -> the paper's method name -> the probe points (epoch, train/val/test accuracy) of the
    figure's modality, from the first finished ``curve-<run>`` folder (empty where none finished)."""
    from mmtool.analysis.paper_tables import run_dirs
    from mmtool.runs import is_finished, results_of

    out: dict[str, dict[str, list[dict]]] = {}
    for dataset, (modality, _) in FIG2_PANELS.items():
        for label, name in FIG2_METHODS.items():
            done = [f for f in run_dirs(root, dataset, f"curve-{name}", runs) if is_finished(f)]
            if done:
                out.setdefault(dataset, {})[label] = results_of(done[0])["curves"].get(modality, [])
    return out


def _claim(curves: dict[str, list[dict]]) -> str:
    """Does every fusion encoder stay below the uni-modal one at every epoch both were probed?"""
    uni = {p["epoch"]: p["test_accuracy"] for p in curves.get("Uni-Modal Training", [])}
    if not uni:
        return "no uni-modal curve: the claim cannot be checked."
    above = [
        f"{label} at epoch {p['epoch']}"
        for label, points in curves.items()
        if label != "Uni-Modal Training"
        for p in points
        if p["epoch"] in uni and p["test_accuracy"] >= uni[p["epoch"]]
    ]
    if not above:
        return "holds: every fusion method's encoder is below the uni-modal one at every epoch."
    more = f" and {len(above) - 5} more" if len(above) > 5 else ""
    return f"does not hold everywhere: at or above the uni-modal encoder: {', '.join(above[:5])}{more}."


def _panel_lines(dataset: str, curves: dict[str, list[dict]]) -> list[str]:
    """One panel as a Markdown table: test accuracy per epoch (train accuracy in brackets), one row a method."""
    modality, title = FIG2_PANELS[dataset]
    epochs = sorted({p["epoch"] for points in curves.values() for p in points})
    lines = [f"## {title} (ours: the {modality} encoder)", ""]
    if not epochs:
        return [*lines, f"Ours on {dataset}: not run.", ""]
    lines += ["| Method | " + " | ".join(f"epoch {e}" for e in epochs) + " |", "|---" * (1 + len(epochs)) + "|"]
    for label, points in curves.items():
        at = {p["epoch"]: p for p in points}
        cells = [f"{at[e]['test_accuracy']:.1f} ({at[e]['train_accuracy']:.1f})" if e in at else "—" for e in epochs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, "", f"The paper's claim on this panel, in ours: {_claim(curves)}", ""]


def render_fig2(root: Path, smoke: bool = False, runs: Located | None = None) -> str:
    """Figure 2 as tables of our probe accuracies per epoch, the paper's claim checked, and ``fig2.png``."""
    from mmtool.analysis import plots

    found = fig2_curves(root, runs)
    lines = [SMOKE_BANNER, ""] if smoke else []
    lines += [
        "# Figure 2. By building a linear classifier on encoders and checking the top-1 accuracy in the training "
        "process, we evaluate the RGB encoders in VGG-Sound and the optical flow encoders in UCF101 from different "
        "multi-modal late-fusion methods.",
        "",
        "Paper: the curves' values are not printed (a figure only). Its text (Sec. 3.1): \"throughout the training "
        "process, the two encoders mentioned above not only cannot achieve comparable performance to their "
        "uni-modal counterparts but are far worse than them.\" Its legend is not in the extracted text; we draw "
        "Table 1's methods.",
        "",
        "Ours: linear-probe test accuracy in % at the end of each epoch (train accuracy in brackets), first seed.",
        "",
    ]
    for dataset in FIG2_PANELS:
        lines += _panel_lines(dataset, found.get(dataset, {}))
    if found:
        out = Path("results/smoke" if smoke else "results") / "fig2.png"
        panels = {
            FIG2_PANELS[d][1]: {label: [(p["epoch"], p["test_accuracy"]) for p in pts] for label, pts in c.items()}
            for d, c in found.items()
        }
        plots.method_curves(panels, out, "Linear-probe test accuracy over training")
        lines += [f"![Figure 2, ours]({out.name})", ""]
    lines.append(f"Runs in {root}; how they are made: docs/tables.md.")
    return "\n".join(lines) + "\n"


RENDER = {"fig2": render_fig2}
