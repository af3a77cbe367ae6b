"""The method protocol (mmtool/methods/base.py): hooks called without ``hasattr``, no method inheriting
from another, misspelt hooks refused, every trainable parameter inside the model, schemas without torch,
and batch statistics combined across ranks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmtool.data import Batch
from mmtool.engine.runtime import Runtime
from mmtool.methods import METHODS, Method, MethodContext, build_method
from mmtool.methods.base import HOOKS
from mmtool.methods.params import METHOD_PARAMS, METHOD_REFERENCES, METHOD_SUMMARIES
from tests.unit.test_methods import setup_method

ROOT = Path(__file__).resolve().parents[2]
TWO = ("m1", "m2")


# ------------------------------------------------------------------------------------------ structure
def test_the_engine_finds_no_hook_by_hasattr():
    offenders = [
        f"{path.relative_to(ROOT)}:{i}"
        for path in sorted((ROOT / "mmtool" / "engine").rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if "hasattr(" in line
    ]
    assert not offenders, f"hasattr in the engine (call the protocol's hook instead): {offenders}"


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_subclasses_method_directly_and_no_other_method(name):
    cls = METHODS.get(name)
    assert cls.__bases__ == (Method,), f"{name}: {cls.__bases__}"
    others = {c for n, c in METHODS.items() if n != name}
    assert not others & set(cls.__mro__), f"{name} inherits from another method: {others & set(cls.__mro__)}"
    assert cls.Params is METHOD_PARAMS[name]
    assert (cls.summary, cls.reference) == (METHOD_SUMMARIES[name], METHOD_REFERENCES[name])


@pytest.mark.parametrize("name", METHODS.names())
def test_public_callables_of_a_method_are_hooks_or_declared_helpers(name):
    cls = METHODS.get(name)
    public = {k for k, v in vars(cls).items() if not k.startswith("_") and callable(v) and k != "Params"}
    assert public <= HOOKS | set(cls.helpers), public - HOOKS - set(cls.helpers)
    assert "training_step" in vars(cls)


def test_schemas_list_exactly_the_registered_methods():
    assert sorted(METHOD_PARAMS) == METHODS.names() == sorted(METHOD_SUMMARIES) == sorted(METHOD_REFERENCES)


def test_a_misspelt_hook_is_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match="after_backwards"):

        class Misspelt(Method):
            def training_step(self, model, batch):
                return {}

            def after_backwards(self, model, step):  # never called by the loop: refused
                pass

    with pytest.raises(TypeError, match="check_model"):

        class OldName(Method):
            def check_model(self, model):
                pass

    class Fine(Method):
        helpers = ("drop",)

        def training_step(self, model, batch):
            return {}

        def drop(self, features):
            return features

        def _private(self):
            return None

    assert Fine(None, MethodContext()).epoch_metrics() == {}


def test_registration_refuses_a_method_built_on_another():
    from mmtool.methods import MethodRegistry
    from mmtool.methods.naive import NaiveFusion

    registry = MethodRegistry()
    with pytest.raises(TypeError, match="subclass Method directly"):

        @registry.register("naive")
        class Derived(NaiveFusion):
            pass

    with pytest.raises(TypeError, match="Params"):

        @registry.register("naive")
        class OwnParams(Method):
            Params = dict

            def training_step(self, model, batch):
                return {}


def test_defaults_are_no_ops():
    method = Method(None, MethodContext())
    model = torch.nn.Linear(2, 2)
    method.setup(model)
    assert method.param_groups(model)[0]["params"] == list(model.parameters())
    assert method.epoch_metrics() == {} and method.state_dict() == {}
    method.load_state_dict({})
    with pytest.raises(ValueError, match="keeps no state"):
        method.load_state_dict({"aux": {}})
    with pytest.raises(NotImplementedError):
        method.training_step(model, None)


def test_schemas_and_protocol_import_without_torch():
    code = (
        "import sys, mmtool.methods.params, mmtool.methods.base, mmtool.methods\n"
        "from mmtool.methods import describe\n"
        "assert len(describe()) == len(mmtool.methods.params.METHOD_PARAMS)\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('mmtool.data', 'mmtool.models'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


# ------------------------------------------------------------------------------------------ parameters
def _module_tensors(obj, seen=None):
    """Every tensor reachable from a method's attributes (through containers and modules)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, torch.nn.Module):
        yield from obj.parameters()
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _module_tensors(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _module_tensors(v, seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type) and not callable(obj):
        for v in vars(obj).values():
            yield from _module_tensors(v, seen)


def _graph_leaves(loss: torch.Tensor) -> set[int]:
    """ids of the leaf tensors that back-propagation from ``loss`` would give a gradient."""
    leaves, stack, seen = set(), [loss.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):  # AccumulateGrad
            leaves.add(id(fn.variable))
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return leaves


@pytest.mark.parametrize("name", METHODS.names())
def test_every_trained_parameter_is_a_model_parameter(name, make_model, naive_run, alpha_splits):
    """What DDP needs: a training step's gradients reach the model's parameters only, and the method
    keeps no trainable tensor of its own."""
    model, _, method, _ = setup_method(name, make_model, naive_run, alpha_splits)
    method.setup(model)
    mine = {id(p) for p in model.parameters()}
    held = [t for t in _module_tensors(method) if t.requires_grad]
    assert not [t for t in held if id(t) not in mine], f"{name} holds trainable tensors outside the model"
    method.on_epoch_start(model, 1)
    split = alpha_splits["train"]
    losses = method.training_step(model, Batch(split.inputs, split.target, split.ids))  # ids: QMF's history
    total = sum(losses.values())
    leaves = _graph_leaves(total)
    assert leaves and leaves <= mine, f"{name}: the loss reaches tensors outside model.parameters()"
    total.backward()
    assert all(p.grad is None for p in held if id(p) not in mine)


@pytest.mark.parametrize("name", ["aux_ce", "gblending"])
def test_extras_are_model_parameters_used_in_forward(name, make_model, naive_run, alpha_splits):
    model, spec, method, _ = setup_method(name, make_model, naive_run, alpha_splits)
    plain = set(model.state_dict())
    method.setup(model)
    extras = {id(p) for p in model.extras.parameters()}
    assert extras and extras <= {id(p) for g in method.param_groups(model) for p in g["params"]}
    out = model(alpha_splits["val"].inputs)
    assert set(out["aux_logits"]) == set(TWO)
    assert set(model.weights()) == plain  # what best.pt gets: the plain model a spec rebuilds
    assert set(model.state_dict()) - plain == {k for k in model.state_dict() if k.startswith("extras.aux.")}


# ------------------------------------------------------------------------------------------ model options
def test_forward_options_match_encode_and_fuse(make_model, alpha_splits):
    model, _ = make_model(head="linear")
    x = alpha_splits["val"].inputs
    with torch.no_grad():
        halve = model(x, features_hook=lambda f: {m: v / 2 for m, v in f.items()})
        by_hand = model.fuse({m: v / 2 for m, v in model.encode(x).items()})
        torch.testing.assert_close(halve["logits"], by_hand["logits"])
        only = model(x, modalities=["m2"])
        assert set(only["features"]) == {"m2"}
        torch.testing.assert_close(only["logits"], model.fuse(model.encode({"m2": x["m2"]}))["logits"])


def test_shared_head_on_one_modality_is_exactly_its_classifier(make_model, alpha_splits):
    model, _ = make_model(head="shared")
    x = alpha_splits["val"].inputs
    with torch.no_grad():
        out = model(x, modalities=["m1"])
        assert torch.equal(out["logits"], model.head.classify(model.encoders["m1"](x["m1"])))


def test_mmtm_forward_takes_the_encode_options(alpha_splits):
    from tests.unit.test_mmtm import mmtm_model

    model, _ = mmtm_model()
    x = alpha_splits["val"].inputs
    fixed = {"m1": [torch.zeros(16)]}
    with torch.no_grad():
        record: dict = {}
        out = model(x, excite_record=record, excite_override=fixed)
        assert [w.shape for w in record["m2"]] == [(len(alpha_splits["val"]), 16)]
        by_hand = model.fuse(model.encode(x, excite_override=fixed))
        torch.testing.assert_close(out["unimodal_logits"]["m1"], by_hand["unimodal_logits"]["m1"])
    with pytest.raises(ValueError, match="encodes all of its modalities"):
        model(x, modalities=["m1"])


# ------------------------------------------------------------------------------------------ ranks
class TwoIdenticalRanks(Runtime):
    """A runtime whose all_reduce sums two ranks that saw the same batch (so sums double, means stay)."""

    def all_reduce(self, tensor, op="sum"):
        return tensor.mul_(2)


def test_all_reduce_is_the_identity_in_one_process():
    t = torch.arange(3.0)
    assert Runtime.cpu().all_reduce(t) is t and torch.equal(t, torch.arange(3.0))
    assert Runtime(torch.device("cpu"), world_size=2).all_reduce(t) is t  # no process group: nothing to reduce


def _statistics(runtime, make_model, alpha_splits):
    """OGM-GE's coefficients, MLA's mean feature and balanced's mean excitation after one step each."""
    from tests.unit.test_mmtm import mmtm_model

    split = alpha_splits["train"]
    batch = Batch(split.inputs, split.target)
    found = {}
    model, _ = make_model(head="linear")
    ogm = build_method("ogm_ge", {}, MethodContext(runtime=runtime))
    ogm.training_step(model, batch)
    found["ogm"] = ogm.coeffs
    model, _ = make_model(head="shared")
    mla = build_method("mla", {}, MethodContext(modalities=TWO, runtime=runtime))
    mla.setup(model)
    mla.training_step(model, batch)
    found["mla"] = mla._mean_feature
    model, _ = mmtm_model()
    bal = build_method("balanced", {"mode": "vanilla"}, MethodContext(runtime=runtime))
    bal.setup(model)
    sum(bal.training_step(model, batch).values()).backward()
    bal.after_step(model, 0)
    found["excite"] = [s / bal.excite_count for s in bal.excite_sum["m1"]]
    found["count"], found["sums"] = bal.excite_count, dict(bal.sums)
    return found


def test_statistics_are_summed_over_ranks_then_divided_by_summed_counts(make_model, alpha_splits):
    one = _statistics(None, make_model, alpha_splits)
    two = _statistics(TwoIdenticalRanks(torch.device("cpu"), world_size=2), make_model, alpha_splits)
    assert two["ogm"] == pytest.approx(one["ogm"])  # ratios of summed scores
    torch.testing.assert_close(two["mla"], one["mla"])  # summed sums over summed counts
    assert two["count"] == 2 * one["count"]
    for a, b in zip(two["excite"], one["excite"], strict=True):
        torch.testing.assert_close(a, b)
    assert two["sums"] == pytest.approx(one["sums"])  # μ averaged over the ranks
    assert all(math.isfinite(v) for v in one["sums"].values())


def _rank_main(rank: int, init: str, out_dir: str) -> None:
    """One of two gloo ranks: each sees half of the batch; writes its statistics as JSON."""
    import torch.distributed as dist

    from mmtool.data.synthetic import generate_alpha
    from tests.unit.conftest import _splits

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        split = _splits(generate_alpha(0, 400), 300)["train"]
        half = slice(rank * 150, (rank + 1) * 150)
        part = type(split)({m: v[half] for m, v in split.inputs.items()}, split.target[half])
        runtime = Runtime(torch.device("cpu"), world_size=2, rank=rank)
        found = _statistics(runtime, _factory(), {"train": part})
        summed = runtime.all_reduce(torch.tensor([float(rank + 1)]))
        result = {"ogm": found["ogm"], "mla": found["mla"].tolist(), "count": found["count"],
                  "excite": [t.tolist() for t in found["excite"]], "summed": summed.item()}  # fmt: skip
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _factory():
    from mmtool.config import ModelConfig
    from mmtool.models import build_model, model_spec
    from tests.unit.conftest import DIMS

    def make(head="linear", seed=0):
        spec = model_spec(ModelConfig(encoder="mlp", hidden=(16,), head=head, head_hidden=16), DIMS, 2, list(TWO))
        torch.manual_seed(seed)
        return build_model(spec), spec

    return make


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_two_gloo_ranks_with_half_batches_agree_with_one_process_on_the_whole(make_model, alpha_splits, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(f"file://{tmp_path / 'pg'}", str(tmp_path)), nprocs=2, join=True)
    one = _statistics(None, make_model, alpha_splits)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["summed"] == 3.0
        assert got["ogm"] == pytest.approx(one["ogm"], rel=1e-5)
        assert got["mla"] == pytest.approx(one["mla"].tolist(), rel=1e-5, abs=1e-6)
        assert got["count"] == one["count"] == 300
        for a, b in zip(got["excite"], one["excite"], strict=True):
            assert a == pytest.approx(b.tolist(), rel=1e-5, abs=1e-6)
