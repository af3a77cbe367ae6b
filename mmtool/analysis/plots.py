"""PNG figures for run directories (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(metrics_path: Path, out: Path, title: str) -> Path | None:
    """Training losses and validation accuracy against epochs, from ``metrics.jsonl``."""
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    if not records:
        return None
    plt = _pyplot()
    epochs = [r["epoch"] for r in records]
    speeds = sorted({k for r in records for k in r if k == "d_speed" or k.startswith("s(")})
    fig, axes = plt.subplots(1, 3 if speeds else 2, figsize=(15 if speeds else 10, 4))
    ax_loss, ax_acc = axes[:2]
    parts = sorted({k for r in records for k in r if k.startswith("train_") and k.endswith("_loss")} - {"train_loss"})
    loss_keys = parts + (["train_loss"] if len(parts) > 1 else [])  # the total only when it differs
    for key in loss_keys:
        name = key.removeprefix("train_").removesuffix("loss").strip("_") or "total"
        ax_loss.plot(epochs, [r.get(key, float("nan")) for r in records], label=name)
    if "val_loss" in records[-1]:
        ax_loss.plot(epochs, [r.get("val_loss", float("nan")) for r in records], "--", label="val loss (CE)")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="losses", yscale="log")
    ax_loss.legend(fontsize=8)
    if "val_accuracy" in records[-1]:
        ax_acc.plot(epochs, [r.get("val_accuracy", float("nan")) for r in records], label="validation")
        best = records[-1].get("best_epoch")
        if best:
            ax_acc.axvline(best, color="grey", linestyle=":", label=f"selected (epoch {best})")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy")
    ax_acc.legend(fontsize=8)
    if speeds:  # conditional learning speeds (paper 002, Def. 5.1), logged by method `balanced`
        for key in speeds:
            ax = axes[2]
            ax.plot(epochs, [r.get(key, float("nan")) for r in records], "k-" if key == "d_speed" else "--", label=key)
        axes[2].axhline(0, color="grey", linestyle=":")
        axes[2].set(xlabel="epoch", ylabel="log ratio", title="conditional learning speed")
        axes[2].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, plt, out)


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
    from mmtool.runs import is_writer

    out = Path(out)
    if not is_writer():  # another rank of a distributed run: rank 0 draws the same figure
        plt.close(fig)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def bars(values: dict[str, float], out: Path, title: str, ylabel: str = "test accuracy (%)") -> Path:
    """One bar per named number, value printed on top."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.3 * len(values) + 2, 4))
    names = list(values)
    ax.bar(range(len(names)), [values[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(i, values[n], f"{values[n]:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel=ylabel, title=title)
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
