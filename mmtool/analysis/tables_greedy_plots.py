"""The figures of paper 002's studies (:mod:`mmtool.analysis.tables_greedy_render`): histograms with a density
estimate and the means marked (Figs. 2, 5, 7), and points against a value (Figs. 3, 4, 8, 9)."""

from __future__ import annotations

import math
from pathlib import Path

from mmtool.analysis.plots import STYLES, _pyplot, _save


def kde(values: list[float], xs: list[float]) -> list[float]:
    """A Gaussian kernel density estimate of ``values`` at ``xs`` (Silverman's bandwidth; a floor of 1e-3 for
    equal values); empty for fewer than two values."""
    n = len(values)
    if n < 2:
        return []
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    h = max(1.06 * std * n ** (-1 / 5), 1e-3)
    norm = n * h * math.sqrt(2 * math.pi)
    return [sum(math.exp(-0.5 * ((x - v) / h) ** 2) for v in values) / norm for x in xs]


def histograms(panels: dict[str, dict[str, list[float]]], out: Path, title: str) -> Path:
    """One panel per name, one histogram (with its density estimate and a dashed line at its mean) per series;
    a dotted line at zero."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 3.8), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items(), strict=False):
        found = [v for vs in series.values() for v in vs if math.isfinite(v)]
        lo, hi = (min(found + [-0.1]), max(found + [0.1])) if found else (-1.0, 1.0)
        xs = [lo + (hi - lo) * i / 200 for i in range(201)]
        for i, (label, values) in enumerate(series.items()):
            values = [v for v in values if math.isfinite(v)]
            if not values:
                continue
            colour = f"C{i}"
            ax.hist(values, bins=min(20, max(3, len(values))), range=(lo, hi), density=True, alpha=0.35,
                    color=colour, label=f"{label} (n={len(values)})")  # fmt: skip
            density = kde(values, xs)
            if density:
                ax.plot(xs, density, color=colour)
            ax.axvline(sum(values) / len(values), color=colour, linestyle="--")
        ax.axvline(0.0, color="black", linestyle=":")
        ax.set(title=name, ylabel="density")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, plt, out)


def points(panels: dict[str, dict[str, list[tuple[float, float]]]], out: Path, title: str, xlabel: str,
           logx: bool = False) -> Path:  # fmt: skip
    """One panel per name (its y label), one series of (x, y) points per label; a log x axis with ``logx``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 3.8), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items(), strict=False):
        for i, (label, xy) in enumerate(series.items()):
            xy = sorted((x, y) for x, y in xy if math.isfinite(x) and math.isfinite(y))
            ax.plot([x for x, _ in xy], [y for _, y in xy], "o" + STYLES[i % len(STYLES)], label=label, markersize=4)
        if logx:
            ax.set_xscale("log")
        ax.set(xlabel=xlabel, ylabel=name)
        if series:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, plt, out)
