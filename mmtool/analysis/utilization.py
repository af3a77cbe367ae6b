"""Conditional utilization rates (Wu et al. 2022, Def. 4.1): as written for MMTM intermediate fusion,
and adapted to late fusion, for two modalities and for more.

The paper derives single-modality variants of an intermediate-fusion network by feeding every fusion
module the training-set mean of the other branch's activations. In a late-fusion network the only place
the modalities meet is the head, so we do the same there: the variant relying on modality a alone sees the
other modality's encoder features replaced by their training-set mean. With one fused prediction
``f0 = f1 = f``, so for modalities (a, b):

    u(b|a) = (A(f) - A(f with b's features := mean)) / A(f)
    u(a|b) = (A(f) - A(f with a's features := mean)) / A(f)
    d_util = u(b|a) - u(a|b)

where (a, b) are the dataset's first and second modality (the paper's m0, m1).

M > 2 modalities, late fusion. Def. 4.1 conditions one modality on the other; with more, we condition each
modality m on all the others (our generalisation; the paper has two):

    u(m|rest) = (A(f) - A(f with m's features := mean)) / A(f)

the relative accuracy lost when m alone is removed while every other modality stays present. For M = 2 it
is exactly u(b|a) (m = b, rest = {a}). Reported per modality as ``u(m|r1,r2,...)`` and in
``utilization: {m: rate}``, beside ``accuracy_without_<m>`` (m := mean) and ``accuracy_only_<m>`` (every
other modality := mean). ``d_util`` is a difference of two rates and is reported for M = 2 only.

M > 2 modalities, MMTM (paper 002, Sec. 7: "The conditional utilization rate would be computed analogously to
the bimodal case, by passing the averaged feature maps of all other modalities to the fusion modules"). Each
branch m has its own prediction f_m; its single-modality variant f_m' feeds every MMTM the training-set means
of the squeezed activations of ALL OTHER modalities (their averaged feature maps), so branch m sees m alone:

    u(rest|m) = (A(f_m) - A(f_m')) / A(f_m)

one rate per modality, reported as ``u(r1,r2|m)``, in ``utilization: {m: u(rest|m)}`` (keyed by the branch;
with two modalities the keys stay the paper's: ``utilization[b] = u(b|a)``) and beside ``accuracy_branch_<m>``
and ``accuracy_only_<m>`` (= A(f_m')). For M = 2 it is u(b|a) for m = a. ``d_util`` = the largest minus the
smallest rate, ``d_util_pair`` = [that modality, this one]: the paper defines d_speed "by the two most different
conditional learning speeds" for M > 2 and d_util has no definition there; we take the same rule, so d_util >= 0
and it measures the spread of how much the branches rely on the others (for M = 2, |d_util| is the paper's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from mmtool.engine.evaluate import accuracy
from mmtool.engine.inference import encode_only, run_inference
from mmtool.models import MultiModalNet
from mmtool.models.mmtm import MMTMNet

if TYPE_CHECKING:
    from mmtool.engine.runtime import Runtime


def mean_features(model: MultiModalNet, split, runtime: Runtime) -> dict[str, torch.Tensor]:
    """Training-set mean of every modality's encoder features: ``{m: (D,)}``."""
    feats = run_inference(model, split, runtime, want=("features",), forward=encode_only)["features"]
    return {m: f.sum(0) / len(f) for m, f in feats.items()}


def accuracy_with_mean(
    model: MultiModalNet, split, runtime, replace: str | Sequence[str] | None, means: dict[str, torch.Tensor]
) -> float:
    """Accuracy when the features of ``replace`` (a modality or several; None: none) are set to their
    training mean."""
    replaced = [replace] if isinstance(replace, str) else list(replace or ())

    def forward(net: MultiModalNet, inputs: dict) -> dict:
        feats = net.encode(inputs)
        for m in replaced:
            feats[m] = means[m].to(feats[m].device, feats[m].dtype).expand_as(feats[m])
        return net.fuse(feats)

    pred = run_inference(model, split, runtime, want=("logits",), forward=forward)
    return accuracy(pred["logits"], pred["target"])


def _branch_accuracies(model: MMTMNet, split, runtime, override: dict | None) -> dict[str, float]:
    """Accuracy of each branch's own prediction, with some modalities' MMTM inputs overridden."""

    def forward(net: MMTMNet, inputs: dict) -> dict:
        return net.fuse(net.encode(inputs, squeeze_override=override))

    pred = run_inference(model, split, runtime, want=("unimodal_logits",), forward=forward)
    return {m: accuracy(z, pred["target"]) for m, z in pred["unimodal_logits"].items()}


def rate(full: float, cut: float) -> float | None:
    """``(A - A') / A``; None where ``A`` is 0 (a branch that never predicts right has no rate to lose: undefined,
    reported as null and left out of d_util, instead of stopping the analysis)."""
    return None if full == 0 else (full - cut) / full


def difference(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None else x - y


def squeeze_means(model: MMTMNet, split, runtime: Runtime) -> dict[str, list[torch.Tensor]]:
    """Training-set mean of every MMTM's squeezed input, per modality: ``{m: [(C_k,) per MMTM]}``."""
    squeezed = run_inference(model, split, runtime, want=("squeezed",), forward=MMTMNet.squeezed)["squeezed"]
    return {m: [squeezed[f"{m}/{k}"].mean(0) for k in range(len(model.points))] for m in model.modalities}


def intermediate_rates(model: MMTMNet, train, test, runtime: Runtime) -> dict:
    """Paper 002, Def. 4.1 as written: ``f_a'`` is branch a's prediction when every MMTM sees the training
    mean of the other modality's squeezed activations (Eq. 7), ``u(b|a) = (A(f_a) - A(f_a')) / A(f_a)``.
    More than two modalities: :func:`intermediate_rates_multi`."""
    if len(model.modalities) > 2:
        return intermediate_rates_multi(model, train, test, runtime)
    a, b = model.modalities
    means = squeeze_means(model, train, runtime)
    full = _branch_accuracies(model, test, runtime, None)
    only_a = _branch_accuracies(model, test, runtime, {b: means[b]})[a]  # branch a, b's information cut
    only_b = _branch_accuracies(model, test, runtime, {a: means[a]})[b]
    u_b_given_a = rate(full[a], only_a)
    u_a_given_b = rate(full[b], only_b)
    return {
        "modalities": [a, b],
        "fusion": "mmtm",
        "accuracy": accuracy_with_mean(model, test, runtime, None, {}),
        f"accuracy_branch_{a}": full[a],
        f"accuracy_branch_{b}": full[b],
        f"accuracy_only_{a}": only_a,
        f"accuracy_only_{b}": only_b,
        f"u({b}|{a})": u_b_given_a,
        f"u({a}|{b})": u_a_given_b,
        "utilization": {a: u_a_given_b, b: u_b_given_a},
        "d_util": difference(u_b_given_a, u_a_given_b),
    }


def intermediate_rates_multi(model: MMTMNet, train, test, runtime: Runtime) -> dict:
    """M > 2 (paper 002, Sec. 7): branch m's single-modality variant feeds every MMTM the training means of
    ALL OTHER modalities' squeezed activations, ``u(rest|m) = (A(f_m) - A(f_m')) / A(f_m)``; ``d_util`` is the
    largest minus the smallest of these rates, ``d_util_pair`` names them (module docstring)."""
    mods = list(model.modalities)
    means = squeeze_means(model, train, runtime)
    full = _branch_accuracies(model, test, runtime, None)
    others = {m: [o for o in mods if o != m] for m in mods}
    only = {m: _branch_accuracies(model, test, runtime, {o: means[o] for o in others[m]})[m] for m in mods}
    rates = {m: rate(full[m], only[m]) for m in mods}
    defined = [m for m in mods if rates[m] is not None] or mods[:1]
    high, low = max(defined, key=lambda m: rates[m] or 0.0), min(defined, key=lambda m: rates[m] or 0.0)
    return {
        "modalities": mods,
        "fusion": "mmtm",
        "accuracy": accuracy_with_mean(model, test, runtime, None, {}),
        **{f"accuracy_branch_{m}": full[m] for m in mods},
        **{f"accuracy_only_{m}": only[m] for m in mods},
        **{f"u({','.join(others[m])}|{m})": rates[m] for m in mods},
        "utilization": rates,  # keyed by the branch m: u(rest|m)
        "d_util": difference(rates[high], rates[low]),
        "d_util_pair": [high, low],
    }


def utilization_rates(model: MultiModalNet, train, test, runtime: Runtime) -> dict:
    """The rates of the module docstring on ``test``, with feature means taken on ``train``."""
    if isinstance(model, MMTMNet):
        return intermediate_rates(model, train, test, runtime)
    mods = list(model.modalities)
    means = mean_features(model, train, runtime)
    acc = accuracy_with_mean(model, test, runtime, None, means)
    without = {m: accuracy_with_mean(model, test, runtime, m, means) for m in mods}  # m's features := mean
    others = {m: [o for o in mods if o != m] for m in mods}
    only = {m: accuracy_with_mean(model, test, runtime, others[m], means) for m in mods}  # the others := mean
    rates = {m: rate(acc, without[m]) for m in mods}
    result = {
        "modalities": mods,
        "accuracy": acc,
        **{f"accuracy_only_{m}": a for m, a in only.items()},
        **{f"accuracy_without_{m}": a for m, a in without.items()},
        **{f"u({m}|{','.join(others[m])})": u for m, u in rates.items()},
        "utilization": rates,
    }
    if len(mods) == 2:
        a, b = mods
        result["d_util"] = difference(rates[b], rates[a])  # u(b|a) - u(a|b)
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m mmtool.analysis.utilization OUT.png RUN...``: histogram of d_util over utilization runs
    (paper 002, Fig. 2), e.g. one `mmtool utilization` run per seed or learning rate. When the analysed
    training runs logged d_speed (method ``balanced``), its value at their selected epoch is shown beside."""
    import json
    import sys
    from pathlib import Path

    from mmtool.analysis.plots import histograms
    from mmtool.runs import results_of

    args = argv if argv is not None else sys.argv[1:]
    if len(args) < 2:
        raise SystemExit("usage: python -m mmtool.analysis.utilization OUT.png UTILIZATION_RUN...")
    results = [results_of(run) for run in args[1:]]
    several = [str(r.get("source")) for r in results if "d_util" not in r or len(r.get("modalities", ())) > 2]
    if several:
        raise SystemExit(f"d_util compares two modalities; these runs have more: {', '.join(several)}")
    values = [r["d_util"] for r in results if r["d_util"] is not None]  # null: a branch at 0% (undefined)
    if len(values) < len(results):
        print(f"left out: {len(results) - len(values)} run(s) whose d_util is undefined (a branch at 0% test "
              "accuracy)", file=sys.stderr)  # fmt: skip
    speeds = [s for s in (_d_speed_at_best(r.get("source")) for r in results) if s is not None]
    panels = {"d_util = u(m2|m1) - u(m1|m2)": values}
    if speeds:
        panels["d_speed = s(m2|m1) - s(m1|m2), at the selected epoch"] = speeds
    histograms(panels, Path(args[0]), f"imbalance in utilization over {len(values)} runs")
    print(json.dumps({"d_util": values, "d_speed": speeds, "plot": args[0]}))


def _d_speed_at_best(source: str | None) -> float | None:
    """d_speed logged by a training run at its selected (best-validation) epoch, if it logged one."""
    from mmtool.runs import Run, is_finished

    if not source or not is_finished(source) or not Run(source).has_metrics():
        return None
    best = Run(source).results().get("best_epoch")
    for row in Run(source).metrics().read():
        if row.get("epoch") == best and "d_speed" in row:
            return float("nan") if row["d_speed"] is None else float(row["d_speed"])  # null: not finite when logged
    return None


if __name__ == "__main__":
    main()
