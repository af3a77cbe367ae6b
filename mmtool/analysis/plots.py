"""PNG figures for run directories (matplotlib, headless).

A figure is written atomically (temp file, then rename); a write the file system refuses is one line
naming the file. ``metrics.jsonl`` holds ``null`` where a number was not finite: it is drawn as a gap.
"""

from __future__ import annotations

import math
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


STYLES = ("-", "--", "-.", ":")  # cycled with the colours: a line drawn over an equal one still shows


def training_curves(metrics_path: Path, out: Path, title: str) -> Path | None:
    """Training losses and validation accuracy against epochs, from ``metrics.jsonl``."""
    from mmtool.files import MetricsWriter

    records = MetricsWriter(metrics_path).read()
    if not records:
        return None
    plt = _pyplot()
    fig = curves_figure(plt, records, title)
    return _save(fig, plt, out)


def curves_figure(plt, records: list[dict], title: str):
    """The figure of :func:`training_curves`. Every line stays visible: line styles cycle with the
    colours (equal curves drawn over each other still show), markers mark each logged epoch when there
    are few, the loss axis is logarithmic only when every plotted loss is positive (a zero or negative
    value would vanish from a log axis) and spans more than a decade, and legends sit outside the axes."""
    epochs = [r["epoch"] for r in records]
    speeds = sorted({k for r in records for k in r if k == "d_speed" or k.startswith("s(")})
    fig, axes = plt.subplots(1, 3 if speeds else 2, figsize=(17 if speeds else 12, 4.2))
    ax_loss, ax_acc = axes[:2]
    marker = "o" if len(epochs) <= 30 else None
    parts = sorted({k for r in records for k in r if k.startswith("train_") and k.endswith("_loss")} - {"train_loss"})
    series = {}
    for key in parts + (["train_loss"] if len(parts) > 1 else []):  # the total only when it differs
        series[key.removeprefix("train_").removesuffix("loss").strip("_") or "total"] = [r.get(key) for r in records]
    if any("val_loss" in r for r in records):
        series["val loss (CE)"] = [r.get("val_loss") for r in records]
    plotted = []
    series = {k: [_number(v) for v in vs] for k, vs in series.items()}
    series = {k: ys for k, ys in series.items() if any(y == y for y in ys)}  # never logged: no empty legend entry
    for i, (name, ys) in enumerate(series.items()):
        plotted += [y for y in ys if y == y]
        ax_loss.plot(epochs, ys, STYLES[i % len(STYLES)], marker=marker, markersize=3, label=name)
    positive = [y for y in plotted if y > 0]
    if plotted and len(positive) == len(plotted) and max(positive) / min(positive) > 10:
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="losses")
    if any("val_accuracy" in r for r in records):
        ax_acc.plot(epochs, [_number(r.get("val_accuracy")) for r in records], "-", marker=marker, markersize=3,
                    label="validation")  # fmt: skip
        best = records[-1].get("best_epoch")
        if best:
            ax_acc.axvline(best, color="grey", linestyle=":", label=f"selected (epoch {best})")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy")
    if speeds:  # conditional learning speeds (paper 002, Def. 5.1), logged by method `balanced`
        for i, key in enumerate(speeds):
            style = "k-" if key == "d_speed" else STYLES[1 + i % (len(STYLES) - 1)]
            axes[2].plot(epochs, [_number(r.get(key)) for r in records], style, label=key)
        axes[2].axhline(0, color="grey", linestyle=":")
        axes[2].set(xlabel="epoch", ylabel="log ratio", title="conditional learning speed")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _number(value) -> float:
    """A logged number as a float; a missing one, or ``null`` (not finite when logged), as NaN (a gap)."""
    return math.nan if value is None else float(value)


def confusion(cm: list[list[int]], out: Path, title: str) -> Path:
    """Row-normalised confusion matrix (rows: actual class, columns: predicted class)."""
    plt = _pyplot()
    rows = [[c / max(sum(row), 1) * 100 for c in row] for row in cm]
    k = len(rows)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.2 * k + 2))
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=100)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{rows[i][j]:.1f}", ha="center", va="center", color="white" if rows[i][j] > 60 else "black")
    ax.set(xlabel="predicted class", ylabel="actual class", title=title, xticks=range(k), yticks=range(k))
    fig.colorbar(image, ax=ax, label="% of actual class")
    fig.tight_layout()
    return _save(fig, plt, out)


def _save(fig, plt, out: Path) -> Path:
    from mmtool.faults import fault_point
    from mmtool.files import atomic_write

    out = Path(out)

    def write(fh) -> None:
        fault_point("plot_write")  # tests: MMTOOL_FAULT=plot_write:1:enospc
        fig.savefig(fh, dpi=110, format=out.suffix.lstrip(".") or "png")

    try:
        atomic_write(out, write)  # a no-op in other ranks of a distributed run: rank 0 draws the same figure
    finally:
        plt.close(fig)
    return out


def bars(values: dict[str, float], out: Path, title: str, ylabel: str = "test accuracy (%)", fmt: str = ".1f") -> Path:
    """One bar per named number, value printed on top."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.3 * len(values) + 2, 4))
    names = list(values)
    ax.bar(range(len(names)), [values[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(i, values[n], f"{values[n]:{fmt}}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    fig.tight_layout()
    return _save(fig, plt, out)


def grouped_bars(groups: dict[str, dict[str, float]], out: Path, title: str, ylabel: str = "accuracy (%)") -> Path:
    """Bars per group (e.g. per modality), one per named number in it (e.g. train / val / test), values
    printed on top."""
    plt = _pyplot()
    names = list(dict.fromkeys(k for g in groups.values() for k in g))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 3, 4))
    for j, name in enumerate(names):
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(groups))]
        ys = [g.get(name, float("nan")) for g in groups.values()]
        ax.bar(xs, ys, width, label=name)
        for x, y in zip(xs, ys, strict=True):
            if y == y:
                ax.text(x, y, f"{y:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return _save(fig, plt, out)


def utilization(rates: dict, out: Path, title: str) -> Path:
    """Accuracy of the fusion model with every modality and with each one alone, and the conditional
    utilization rate of each modality given the others (with d_util = u(b|a) - u(a|b) for two)."""
    plt = _pyplot()
    mods = rates["modalities"]
    accs = {"all": rates["accuracy"], **{f"only {m}": rates[f"accuracy_only_{m}"] for m in mods}}
    utils = {k: v for k, v in rates.items() if k.startswith("u(")}
    if "d_util" in rates:
        utils["d_util"] = rates["d_util"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, values, fmt in ((left, accs, "{:.1f}"), (right, utils, "{:+.3f}")):
        names = list(values)  # an undefined rate (None: its accuracy was 0) is a gap marked "undefined"
        ax.bar(range(len(names)), [values[n] or 0.0 for n in names], color=[f"C{i}" for i in range(len(names))])
        for i, n in enumerate(names):
            v = values[n]
            ax.text(i, v or 0.0, "undefined" if v is None else fmt.format(v), ha="center",
                    va="bottom" if (v or 0.0) >= 0 else "top", fontsize=8)  # fmt: skip
        ax.set_xticks(range(len(names)), names)
        ax.axhline(0, color="grey", linewidth=0.8)
    left.set(ylabel="test accuracy (%)", title="fusion model, modalities kept")
    right.set(ylabel="rate", title="conditional utilization")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, plt, out)


def probe_curves(points: list[dict], reference: list[dict], out: Path, title: str) -> Path:
    """Linear-probe test accuracy of an encoder over training, beside a uni-modal reference."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["epoch"] for p in points], [p["test_accuracy"] for p in points], "o-", label="encoder of this run")
    if len(reference) == 1 and reference[0]["epoch"] is None:
        ax.axhline(
            reference[0]["test_accuracy"], color="tab:orange", linestyle="--", label="uni-modal training (final)"
        )
    elif reference:
        epochs = [p["epoch"] for p in reference]
        ax.plot(epochs, [p["test_accuracy"] for p in reference], "s--", color="tab:orange", label="uni-modal training")
    ax.set(xlabel="epoch", ylabel="linear-probe test accuracy (%)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, out)


def method_curves(panels: dict[str, dict[str, list[tuple[int, float]]]], out: Path, title: str) -> Path:
    """One panel per named set of curves, one line per method of (epoch, accuracy) points (paper 000, Fig. 2)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items(), strict=True):
        for i, (label, points) in enumerate(curves.items()):
            style = "s--" if i == 0 else "o-"  # the first curve is the reference (uni-modal training)
            ax.plot([e for e, _ in points], [a for _, a in points], style, label=label)
        ax.set(xlabel="epoch", ylabel="linear-probe test accuracy (%)", title=name)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, plt, out)


def histogram(values: list[float], out: Path, title: str, xlabel: str, bins: int = 20) -> Path:
    """Histogram of a per-run quantity (e.g. d_util over seeds or learning rates, paper 002 Fig. 2)."""
    return histograms({xlabel: values}, out, title, bins)


def histograms(panels: dict[str, list[float]], out: Path, title: str, bins: int = 20) -> Path:
    """One histogram per named per-run quantity, side by side (paper 002, Fig. 2: d_util and d_speed)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (xlabel, values) in zip(axes[0], panels.items(), strict=True):
        finite = [v for v in values if v == v]  # drop NaN
        low, high = min([-1.0, *finite]), max([1.0, *finite])
        ax.hist(finite, bins=bins, range=(low, high), color="tab:blue", edgecolor="white", label=f"{len(finite)} runs")
        ax.axvline(0, color="grey", linestyle=":")
        ax.set(xlabel=xlabel, ylabel="runs")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, plt, out)


def greedy_summary(
    curves: dict[str, list[tuple[list[int], list[float]]]], d_util: dict[str, list[float]], out: Path, title: str = ""
) -> Path:
    """Left: d_speed over training, one line per run, coloured by algorithm. Right: d_util of every run
    per algorithm (paper 002, Fig. 5 and 6)."""
    plt = _pyplot()
    fig, (ax_speed, ax_util) = plt.subplots(1, 2, figsize=(11, 4))
    colors = dict(zip(d_util, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"], strict=False))
    for name, runs in curves.items():
        for k, (epochs, values) in enumerate(runs):
            ax_speed.plot(epochs, values, color=colors.get(name, "black"), alpha=0.8, label=name if k == 0 else None)
    ax_speed.axhline(0, color="grey", linestyle=":")
    ax_speed.set(xlabel="epoch", ylabel="d_speed", title="imbalance in conditional learning speed")
    ax_speed.legend(fontsize=8)
    for i, (name, values) in enumerate(d_util.items()):
        label = f"{name} ({len(values)} runs)"
        ax_util.plot([i] * len(values), values, "o", color=colors[name], alpha=0.8, label=label)
    ax_util.axhline(0, color="grey", linestyle=":")
    ax_util.set_xticks(range(len(d_util)), list(d_util))
    ax_util.set(xlabel="algorithm", ylabel="d_util", title="imbalance in conditional utilization (test)")
    ax_util.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, plt, out)


def xy_curves(panels: dict[str, dict[str, list[tuple[float, float]]]], out: Path, title: str, xlabel: str,
              ylabel: str = "test accuracy (%)") -> Path:  # fmt: skip
    """One panel per named set of curves, one line per name of (x, y) points (paper 003, Fig. 2)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items(), strict=True):
        for i, (label, points) in enumerate(curves.items()):
            ax.plot([x for x, _ in points], [y for _, y in points], "o" + STYLES[i % len(STYLES)], label=label)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=name)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, plt, out)
