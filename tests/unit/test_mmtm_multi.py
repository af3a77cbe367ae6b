"""MMTM with more than two modalities (Joze et al. 2020; paper 002, Sec. 7): shapes, gradients, every
excitation depending on every squeeze, per-modality overrides; the two-modality layout unchanged."""

from __future__ import annotations

import pytest
import torch

from mmtool.config import ModelConfig
from mmtool.models import build_model, model_spec
from mmtool.models.mmtm import MMTM, MMTMNet

MODS = ("m1", "m2", "m3")


def three(encoder="cnn", running_mean="none", seed=0) -> MMTMNet:
    dims = {"m1": [3, 8, 8], "m2": [1, 8, 8], "m3": [2, 8, 8]} if encoder == "cnn" else {"m1": 6, "m2": 5, "m3": 4}
    cfg = ModelConfig(encoder=encoder, hidden=(8, 8) if encoder == "cnn" else (8, 4), head="ensemble", fusion="mmtm")
    spec = model_spec(cfg, dims, 3, list(MODS))
    torch.manual_seed(seed)
    return build_model({**spec, "fusion_args": {"running_mean": running_mean}})


def inputs(seed=1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"m1": torch.rand(5, 3, 8, 8, generator=g), "m2": torch.rand(5, 1, 8, 8, generator=g),
            "m3": torch.rand(5, 2, 8, 8, generator=g)}  # fmt: skip


def test_three_modality_forward_and_backward_shapes():
    model = three()
    assert isinstance(model, MMTMNet) and model.modalities == list(MODS)
    assert [[t.out_features for t in mmtm.to_w] for mmtm in model.mmtm] == [[8, 8, 8], [8, 8, 8]]
    assert model.mmtm[0].shared[0].in_features == 24 and model.mmtm[0].shared[0].out_features == 6  # 24 / 4
    out = model(inputs())
    assert out["logits"].shape == (5, 3) and sorted(out["unimodal_logits"]) == list(MODS)
    assert all(f.shape == (5, 8) for f in out["features"].values())
    out["logits"].sum().backward()
    for mmtm in model.mmtm:
        assert mmtm.shared[0].weight.grad.abs().sum() > 0
        assert all(t.weight.grad.abs().sum() > 0 for t in mmtm.to_w)


@pytest.mark.parametrize("moved", MODS)
def test_every_excitation_depends_on_every_squeeze(moved):
    model = three().eval()
    x = inputs()
    other = {**x, moved: torch.rand_like(x[moved])}
    with torch.no_grad():
        rec_a, rec_b = {}, {}
        base = model(x, excite_record=rec_a)["unimodal_logits"]
        changed = model(other, excite_record=rec_b)["unimodal_logits"]
    for m in MODS:  # each branch (its excitation at the first MMTM, and its prediction) sees the moved input
        assert not torch.allclose(rec_a[m][0], rec_b[m][0])
        assert not torch.allclose(base[m], changed[m])


def test_squeeze_override_of_the_two_others_cuts_them_off_one_branch():
    model = three().eval()
    x = inputs()
    means = {m: [torch.rand(8), torch.rand(8)] for m in ("m2", "m3")}
    other = {**x, "m2": torch.rand_like(x["m2"]), "m3": torch.rand_like(x["m3"])}
    with torch.no_grad():
        a = model(x, squeeze_override=means)["unimodal_logits"]
        b = model(other, squeeze_override=means)["unimodal_logits"]
        one = model(other, squeeze_override={"m2": means["m2"]})["unimodal_logits"]
    assert torch.allclose(a["m1"], b["m1"])  # branch m1 sees m1 only
    assert not torch.allclose(a["m1"], one["m1"])  # one override leaves m3's path open


def test_excite_override_and_running_means_per_modality():
    model = three(running_mean="each")
    assert [b.shape for b in model.mmtm[0].means()] == [(8,), (8,), (8,)]
    x = inputs()
    rec: dict = {}
    model(x, excite_record=rec)
    assert float(model.mmtm[0].forwards) == 1
    assert torch.allclose(model.mmtm[0].mean2, torch.sigmoid(rec["m3"][0]).mean(0), atol=1e-6)
    fixed = [torch.zeros(8), torch.zeros(8)]
    moved = {**x, "m1": torch.rand_like(x["m1"]), "m2": torch.rand_like(x["m2"])}
    with torch.no_grad():
        a = model(x, excite_override={"m3": fixed})["features"]["m3"]
        b = model(moved, excite_override={"m3": fixed})["features"]["m3"]
    assert torch.allclose(a, b)  # m3's excitations fixed: nothing of m1 and m2 reaches it


def test_two_modality_layout_and_numbers_are_the_two_input_module():
    """The parameter names two-modality checkpoints hold; the M-input module at M = 2 is Eq. 1 on [h0, h1]."""
    mmtm = MMTM(4, 6, bottleneck=2, running_mean="each")
    assert list(mmtm.state_dict()) == ["mean0", "mean1", "forwards", "shared.0.weight", "shared.0.bias",
                                       "to_w.0.weight", "to_w.0.bias", "to_w.1.weight", "to_w.1.bias"]  # fmt: skip
    h0, h1 = torch.rand(3, 4), torch.rand(3, 6)
    z = torch.relu(torch.cat([h0, h1], 1) @ mmtm.shared[0].weight.T + mmtm.shared[0].bias)
    w0, w1 = mmtm(h0, h1)
    assert torch.equal(w0, mmtm.to_w[0](z)) and torch.equal(w1, mmtm.to_w[1](z))


def test_utilization_of_three_cuts_the_two_others_off_each_branch(train_cfgs, tmp_path):
    """u(rest|m) recomputed by hand: training means of m's two others' squeezes fed to every MMTM."""
    from mmtool.analysis.utilization import utilization_rates
    from mmtool.data import Split
    from mmtool.data.tri import DIMS, NUM_CLASSES, generate_tri
    from mmtool.engine.evaluate import accuracy
    from mmtool.engine.loop import fit
    from mmtool.engine.runtime import Runtime
    from mmtool.methods import MethodContext, build_method

    arrays = generate_tri(0, 1000)
    split = lambda idx: Split({m: torch.from_numpy(arrays[m][idx]) for m in MODS},  # noqa: E731
                              torch.from_numpy(arrays["y"][idx]))  # fmt: skip
    train, test = split(slice(0, 800)), split(slice(800, 1000))
    cfg = ModelConfig(encoder="mlp", hidden=(16, 8), head="ensemble", fusion="mmtm")
    spec = model_spec(cfg, dict(DIMS), NUM_CLASSES, list(MODS))
    torch.manual_seed(0)
    model = build_model(spec)
    optim, schedule, tcfg = train_cfgs(epochs=20, lr=0.2, batch_size=50)  # branches that use the others
    fit(model, build_method("ume", {}, MethodContext(num_classes=NUM_CLASSES, modalities=MODS)), train, test, spec,
        tmp_path, optim, schedule, tcfg, Runtime.cpu(tcfg))  # fmt: skip
    model.eval()
    rates = utilization_rates(model, train, test, Runtime.cpu())
    with torch.no_grad():
        record: dict = {}
        model.encode(train.inputs, record=record)  # one MMTM: one squeezed (800, 16) per modality
        means = {m: [record[m][0].mean(0)] for m in MODS}
        full = model(test.inputs)["unimodal_logits"]
        for m in MODS:
            rest = [o for o in MODS if o != m]
            cut = model(test.inputs, squeeze_override={o: means[o] for o in rest})["unimodal_logits"][m]
            a_full, a_cut = accuracy(full[m], test.target), accuracy(cut, test.target)
            expected = (a_full - a_cut) / a_full
            assert rates[f"u({','.join(rest)}|{m})"] == rates["utilization"][m] == pytest.approx(expected)
            assert rates[f"accuracy_only_{m}"] == pytest.approx(a_cut) and expected > 0.2
    values = [rates["utilization"][m] for m in MODS]
    assert rates["d_util"] == pytest.approx(max(values) - min(values)) and rates["d_util"] > 0
    assert rates["d_util_pair"] == [MODS[values.index(max(values))], MODS[values.index(min(values))]]
