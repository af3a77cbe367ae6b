"""The one evaluation pass: a model over a split, streamed, returning what was asked for in sample order.

Every stage and method that needs a model's outputs on data — validation in the training loop, test
scores, probes' features, decide's and the ensemble's predictions, utilization rates, G-Blending's loss
measurements, MMTM statistics — goes through :func:`run_inference`. It reads the split batch by batch
through the split's own loader (so on-disk data is decoded by workers and never held whole), runs the
forward under the runtime's autocast, and gathers the requested outputs on the CPU in float32. Under
torchrun each rank reads its shard of the split and the results are gathered: every rank returns the
whole split, in sample order.

``forward(model, inputs) -> dict`` replaces ``model(inputs)`` where an analysis needs another view of the
model (features with a modality replaced by its mean, MMTM overrides); by default the model's own
forward. Each entry of its output named in ``want`` is collected: a tensor (B, ...) or a dict of tensors
``{m: (B, ...)}`` (features, unimodal_logits).

Missing modalities (:mod:`mmtool.data.missing`): a split with presence masks hands each batch's masks to the
forward as ``present=`` (the model's own forward and :func:`encode_only` take it; a model that cannot leave
a modality out is refused first, in one line), and the result holds them as ``present`` {m: (N,) bool}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from mmtool.engine.runtime import Runtime
from mmtool.models.base import refuse_missing

Forward = Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, Any]]
DEFAULT_WANT = ("logits", "features", "unimodal_logits")


def _model_forward(model: nn.Module, inputs: dict[str, torch.Tensor], **present: Any) -> dict[str, Any]:
    return model(inputs, **present)


def encode_only(model: nn.Module, inputs: dict[str, torch.Tensor], **present: Any) -> dict[str, Any]:
    """A forward for frozen features: the encoders of the modalities in ``inputs``, no head."""
    return {"features": model.encode(inputs, **present)}


@torch.no_grad()
def run_inference(
    model: nn.Module,
    source: Any,
    runtime: Runtime,
    *,
    want: Iterable[str] = DEFAULT_WANT,
    forward: Forward | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Outputs of ``model`` on every sample of ``source`` (a :class:`~mmtool.data.source.SplitSource`).

    Returns ``{"target": (N,), "ids": (N,)}`` plus each name in ``want`` that the forward produced:
    ``logits`` (N, C), ``features`` {m: (N, D)}, ``unimodal_logits`` {m: (N, C)}, ... — float32 on the
    CPU, in sample order. A source with several views per sample (``source.views``, multi-view testing)
    gives one row per sample, the views folded (:class:`_Folded`; logits become log mean probabilities),
    and ``clip_accuracy``: the accuracy of single views of each logits output.
    The model is put in eval mode and restored afterwards. ``runtime`` is the
    command's: device, autocast, workers and ranks.
    """
    if not isinstance(runtime, Runtime):
        raise TypeError(f"run_inference needs the command's Runtime, got {type(runtime).__name__}")
    forward = forward or _model_forward
    if getattr(source, "present", None) is not None:
        refuse_missing(model, head=forward is not encode_only)
    want = tuple(want)
    size = batch_size or runtime.eval_batch_size or source.eval_batch_size
    was_training = model.training
    model.eval()
    folded = _Folded(len(source), source.views) if getattr(source, "views", 1) > 1 else None
    try:
        parts, targets, ids = _read(model, source, runtime, forward, want, size, folded)
    finally:
        model.train(was_training)
    if folded is not None:
        return _bool_masks(folded.result(runtime, source.targets()))
    result: dict[str, Any] = {k: _cat(v) for k, v in parts.items()}
    empty = torch.empty(0, dtype=torch.long)  # a rank whose shard of a tiny split is empty
    result["target"], result["ids"] = torch.cat(targets) if targets else empty, torch.cat(ids) if ids else empty
    if runtime.distributed:  # each rank read its shard: every rank gets the whole split
        result = _merge(runtime.gather_objects(result))
    return _bool_masks(_in_id_order(result))


def _bool_masks(result: dict[str, Any]) -> dict[str, Any]:
    """Presence masks were gathered as floats with everything else: back to bool."""
    if "present" in result:
        result["present"] = {m: p > 0.5 for m, p in result["present"].items()}
    return result


class _Folded:
    """The views of each sample (``source.views`` > 1) folded into one row as batches stream past: per output,
    the sum over a sample's views (of softmax probabilities for outputs named ``*logits``), and the count of
    correct single views of each logits output (:mod:`mmtool.data.views`). Holds (N, ...) sums, never views."""

    def __init__(self, n: int, views: int) -> None:
        self.n, self.views = n, views
        self.sums: dict[tuple[str, ...], torch.Tensor] = {}
        self.hits: dict[tuple[str, ...], int] = {}
        self.count = torch.zeros(n)

    def add(self, out: dict[str, Any], ids: torch.Tensor, target: torch.Tensor) -> None:
        sample = ids // self.views
        self.count.index_add_(0, sample, torch.ones(len(ids)))
        for key, value in out.items():
            for name, t in value.items() if isinstance(value, dict) else [(None, value)]:
                self._add((key,) if name is None else (key, name), t.detach().float().cpu(), sample, target)

    def _add(self, name: tuple[str, ...], t: torch.Tensor, sample: torch.Tensor, target: torch.Tensor) -> None:
        if name[0].endswith("logits"):
            self.hits[name] = self.hits.get(name, 0) + int((t.argmax(dim=1) == target).sum())
            t = t.softmax(dim=1)
        if name not in self.sums:
            self.sums[name] = torch.zeros((self.n, *t.shape[1:]))
        self.sums[name].index_add_(0, sample, t)

    def result(self, runtime: Runtime, target: torch.Tensor) -> dict[str, Any]:
        """run_inference's result, one row per sample, plus ``clip_accuracy`` {output: % of correct views}."""
        parts = [(self.sums, self.hits, self.count)]
        if runtime.distributed:  # each rank saw some views of some samples: add the ranks' sums up
            parts = runtime.gather_objects(parts[0])
        sums: dict[tuple[str, ...], torch.Tensor] = {}
        hits: dict[tuple[str, ...], int] = {}
        for part_sums, part_hits, _ in parts:
            for name, s in part_sums.items():
                sums[name] = sums[name] + s if name in sums else s.clone()
            for name, h in part_hits.items():
                hits[name] = hits.get(name, 0) + h
        count = sum(c for _, _, c in parts)
        views_read = max(float(count.sum()), 1.0)
        count = count.clamp_min(1)
        out: dict[str, Any] = {"target": target, "ids": torch.arange(self.n), "clip_accuracy": {}}
        for name, s in sums.items():
            mean = s / count.view(-1, *([1] * (s.dim() - 1)))
            value = mean.clamp_min(1e-12).log() if name[0].endswith("logits") else mean
            _put(out, name, value)
        for name, h in hits.items():
            _put(out["clip_accuracy"], name, 100.0 * h / views_read)
        return out


def _put(out: dict[str, Any], name: tuple[str, ...], value: Any) -> None:
    if len(name) == 1:
        out[name[0]] = value
    else:
        out.setdefault(name[0], {})[name[1]] = value


def _read(model: nn.Module, source: Any, runtime: Runtime, forward: Forward, want: tuple[str, ...], size: int,
          folded: _Folded | None) -> tuple[dict[str, Any], list, list]:  # fmt: skip
    """One pass over ``source``: the wanted outputs per batch, targets and ids (or, folding views, nothing:
    ``folded`` keeps the sums)."""
    parts: dict[str, Any] = {}
    targets, ids = [], []
    loader = source.loader(size, train=False, workers=runtime.workers, shard=runtime.shard,
                           pin_memory=runtime.pin_memory)  # fmt: skip
    for batch in loader:
        batch = runtime.to_device(batch)
        with runtime.autocast():
            out = (
                forward(model, batch.inputs)
                if batch.present is None
                else forward(model, batch.inputs, present=batch.present)
            )
        if batch.present is not None:
            out = {**out, "present": batch.present}
            want = (*want, "present") if "present" not in want else want
        if folded is not None:
            folded.add({k: out[k] for k in want if k in out}, batch.ids, batch.target.cpu())
            continue
        for key in want:
            if key in out:
                _collect(parts, key, out[key])
        targets.append(batch.target.cpu())
        ids.append(batch.ids)
    return parts, targets, ids


def _merge(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from every rank's: each entry concatenated in rank order (ranks without samples have
    only ``target`` and ``ids``)."""
    out: dict[str, Any] = {}
    for k in dict.fromkeys(k for s in shards for k in s):
        parts = [s[k] for s in shards if k in s]
        out[k] = (
            {m: torch.cat([p[m] for p in parts]) for m in parts[0]} if isinstance(parts[0], dict) else torch.cat(parts)
        )
    return out


def _collect(parts: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        slot = parts.setdefault(key, {})
        for m, t in value.items():
            slot.setdefault(m, []).append(t.detach().float().cpu())
    else:
        parts.setdefault(key, []).append(value.detach().float().cpu())


def _cat(value: Any) -> Any:
    return {m: torch.cat(v) for m, v in value.items()} if isinstance(value, dict) else torch.cat(value)


def _in_id_order(result: dict[str, Any]) -> dict[str, Any]:
    ids = result["ids"]
    if len(ids) < 2 or bool((ids[1:] > ids[:-1]).all()):
        return result
    order = torch.argsort(ids)
    return {k: ({m: t[order] for m, t in v.items()} if isinstance(v, dict) else v[order]) for k, v in result.items()}


def unimodal_predictions(models: dict[str, nn.Module], split: Any, runtime: Runtime) -> dict[str, torch.Tensor]:
    """Logits of each one-modality model on its own modality: ``{m: (N, C)}``."""
    return {
        m: run_inference(runtime.prepare_model(model), split.select([m]), runtime, want=("logits",))["logits"]
        for m, model in models.items()
    }
