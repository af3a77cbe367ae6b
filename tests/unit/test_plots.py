"""Figures a person looks at: every curve of curves.png stays visible; probe and utilization draw theirs."""

from __future__ import annotations

import math

from mmtool.analysis import plots


def _records(losses: dict[str, list[float]]) -> list[dict]:
    n = len(next(iter(losses.values())))
    return [{"epoch": 5 * (i + 1), **{k: v[i] for k, v in losses.items()}, "val_accuracy": 50.0 + i, "best_epoch": 5}
            for i in range(n)]  # fmt: skip


def _loss_lines(fig):
    ax = fig.axes[0]
    return ax, {line.get_label(): line for line in ax.get_lines()}


def test_equal_curves_get_different_line_styles_and_every_term_is_drawn():
    plt = plots._pyplot()
    same = [1.0, 0.8, 0.6]
    losses = {"train_task_loss": same, "train_aux_loss": same, "train_loss": [2.0, 1.6, 1.2], "val_loss": same}
    fig = plots.curves_figure(plt, _records(losses), "t")
    ax, lines = _loss_lines(fig)
    assert set(lines) == {"aux", "task", "total", "val loss (CE)"}
    styles = [lines[k].get_linestyle() for k in ("aux", "task", "val loss (CE)")]
    assert len(set(styles)) == 3  # the three equal curves do not hide one another
    assert all(len(line.get_xdata()) == 3 for line in lines.values())
    legend = ax.get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1  # beside, not over
    plt.close(fig)


def test_a_zero_or_negative_loss_keeps_a_linear_axis():
    """A log axis would drop the points at or below zero; a wide positive range gets a log axis."""
    plt = plots._pyplot()
    fig = plots.curves_figure(
        plt, _records({"train_task_loss": [1.0, 0.5, 0.2], "train_kl_loss": [0.1, 0.0, -0.01]}), "t"
    )
    assert fig.axes[0].get_yscale() == "linear"
    plt.close(fig)
    fig = plots.curves_figure(
        plt, _records({"train_task_loss": [1.0, 0.5, 0.2], "train_kl_loss": [0.1, 0.01, 0.001]}), "t"
    )
    ax, lines = _loss_lines(fig)
    assert ax.get_yscale() == "log" and all(all(y > 0 for y in line.get_ydata()) for line in lines.values())
    plt.close(fig)


def test_probe_and_utilization_figures_are_written(tmp_path):
    probe = plots.grouped_bars({"m1": {"train": 72.5, "test": 68.3}, "m2": {"train": 62.3, "test": math.nan}},
                               tmp_path / "probe.png", "probes")  # fmt: skip
    rates = {"modalities": ["a", "b"], "accuracy": 80.0, "accuracy_only_a": 70.0, "accuracy_only_b": 40.0,
             "u(b|a)": 0.1, "u(a|b)": 0.4, "d_util": -0.3}  # fmt: skip
    util = plots.utilization(rates, tmp_path / "util.png", "utilization")
    undefined = plots.utilization({**rates, "accuracy_only_a": 0.0, "u(b|a)": None, "d_util": None},
                                  tmp_path / "undefined.png", "a branch never right")  # fmt: skip
    for path in (probe, util, undefined):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
