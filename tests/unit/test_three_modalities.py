"""M >= 3 modalities: the synth-tri construction, utilization rates per modality, MLA's round-robin over three
modalities and its three-way fusion, OGM-GE's ratio against the others' mean, and the one-line refusal of
what is defined for two modalities only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmtool.analysis.utilization import utilization_rates
from mmtool.commands.training import check_two_modality_only
from mmtool.config import load_recipe
from mmtool.data import Batch, Split
from mmtool.data.tri import DIMS, generate_tri
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.methods import MethodContext, build_method
from mmtool.methods.ogm_ge import modulation_coefficients
from mmtool.models import ModelConfig, MultiModalNet, build_model, model_spec
from mmtool.models.encoders import IdentityEncoder
from mmtool.models.heads import LinearHead, SharedHead
from tests.e2e.cli import REPO

MODS = ("m1", "m2", "m3")


# ------------------------------------------------------------------------------------------ synth-tri
def _fit_r2(x: np.ndarray, target: np.ndarray) -> float:
    """Share of the variance of ``target`` a least-squares linear fit on ``x`` explains (held-out half)."""
    half = len(x) // 2
    xa = np.c_[x, np.ones(len(x))]
    w, *_ = np.linalg.lstsq(xa[:half], target[:half], rcond=None)
    residual = target[half:] - xa[half:] @ w
    return 1 - residual.var() / target[half:].var()


def test_synth_tri_each_modality_holds_its_part_of_the_label():
    arrays = generate_tri(0, 20000)
    assert {m: arrays[m].shape for m in MODS} == {m: (20000, DIMS[m]) for m in MODS}
    assert arrays["y"].dtype == np.int64 and set(np.unique(arrays["y"])) == {0, 1, 2, 3}
    small, again = generate_tri(0, 50), generate_tri(0, 50)
    assert all(np.array_equal(small[k], again[k]) for k in small)  # one seed, one set
    a, b = (arrays["y"] // 2) * 2.0 - 1, (arrays["y"] % 2) * 2.0 - 1
    r2 = {m: (_fit_r2(arrays[m], a), _fit_r2(arrays[m], b)) for m in MODS}
    # the best linear fit of a +-1 bit on x = s (+-1) u + N(0, I) explains s^2 / (s^2 + 1): 0.69 for m1's 1.5,
    # 0.5 for m2's 1.0; m3 holds both bits at 0.5, each explaining about 0.25 / 1.5 = 0.17
    assert r2["m1"][0] == pytest.approx(1.5**2 / (1.5**2 + 1), abs=0.03) and abs(r2["m1"][1]) < 0.01
    assert r2["m2"][1] == pytest.approx(0.5, abs=0.03) and abs(r2["m2"][0]) < 0.01
    assert 0.12 < r2["m3"][0] < 0.25 and 0.12 < r2["m3"][1] < 0.25


# ------------------------------------------------------------------------------------------ utilization
def test_utilization_of_three_modalities_by_hand():
    rng = np.random.default_rng(2)
    c, dims = 3, {"m1": 4, "m2": 3, "m3": 2}
    w = {m: rng.normal(size=(c, d)) * s for (m, d), s in zip(dims.items(), (1.0, 0.7, 0.4), strict=True)}
    bias = rng.normal(size=c) * 0.1
    train = {m: rng.normal(size=(200, d)) + 0.3 for m, d in dims.items()}
    test = {m: rng.normal(size=(300, d)) for m, d in dims.items()}
    y = sum(test[m] @ w[m].T for m in dims).argmax(1)
    y = np.where(rng.random(300) < 0.8, y, rng.integers(0, c, 300))

    head = LinearHead(dims, c)
    with torch.no_grad():
        for m in dims:
            head.proj[m].weight.copy_(torch.tensor(w[m], dtype=torch.float32))
        head.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    model = MultiModalNet({m: IdentityEncoder(d) for m, d in dims.items()}, head)
    f32 = {k: {m: torch.tensor(v[m], dtype=torch.float32) for m in dims} for k, v in (("tr", train), ("te", test))}
    rates = utilization_rates(model, Split(f32["tr"], torch.zeros(200, dtype=torch.long)),
                              Split(f32["te"], torch.tensor(y)), Runtime.cpu())  # fmt: skip

    def acc(mean_of: set[str]) -> float:  # accuracy with the modalities in mean_of at their training mean
        z = sum((train[m].mean(0) if m in mean_of else test[m]) @ w[m].T for m in dims) + bias
        return float((z.argmax(1) == y).mean() * 100)

    full = acc(set())
    assert rates["modalities"] == list(MODS) and "d_util" not in rates
    assert rates["accuracy"] == pytest.approx(full, abs=1e-4)
    for m in MODS:
        rest = [o for o in MODS if o != m]
        assert rates[f"accuracy_without_{m}"] == pytest.approx(acc({m}), abs=1e-4)
        assert rates[f"accuracy_only_{m}"] == pytest.approx(acc(set(rest)), abs=1e-4)
        assert rates[f"u({m}|{','.join(rest)})"] == rates["utilization"][m]
        assert rates["utilization"][m] == pytest.approx((full - acc({m})) / full, abs=1e-6)
    assert rates["utilization"]["m1"] > rates["utilization"]["m3"]  # the heaviest block matters most


# ------------------------------------------------------------------------------------------ MLA
def _tri_model(head: str = "shared"):
    spec = model_spec(ModelConfig(encoder="mlp", hidden=(8,), head=head), {"m1": 5, "m2": 4, "m3": 3}, 2, list(MODS))
    torch.manual_seed(0)
    return build_model(spec)


def test_mla_updates_one_modality_per_step_round_robin_over_three():
    model = _tri_model()
    method = build_method("mla", {}, MethodContext(num_classes=2, modalities=MODS))
    method.setup(model)
    g = torch.Generator().manual_seed(0)
    batch = Batch({m: torch.randn(12, d, generator=g) for m, d in (("m1", 5), ("m2", 4), ("m3", 3))},
                  torch.randint(0, 2, (12,), generator=g))  # fmt: skip
    method.on_epoch_start(model, 1)
    seen, losses = [], {}
    for step in range(7):
        model.zero_grad(set_to_none=True)
        m = method.current()
        loss = method.training_step(model, batch)["task_loss"]
        loss.backward()
        seen.append([k for k in MODS if model.encoders[k].net[0].weight.grad is not None])
        losses.setdefault(m, []).append(loss.item())
        method.after_backward(model, step)
    assert seen == [["m1"], ["m2"], ["m3"], ["m1"], ["m2"], ["m3"], ["m1"]]  # m_t = t mod 3 (Eq. 1)
    logged = method.epoch_metrics()
    assert logged == pytest.approx({f"mla_ce_{m}": np.mean(v) for m, v in losses.items()})
    state = method.state_dict()
    again = build_method("mla", {}, MethodContext(num_classes=2, modalities=MODS))
    again.setup(model)
    again.load_state_dict(state)
    assert again.current() == "m2" and again.epoch_metrics() == pytest.approx(logged)  # a mid-epoch resume


def test_shared_head_fuses_three_modalities_by_entropy():
    head = SharedHead({m: 4 for m in MODS}, 3)
    g = torch.Generator().manual_seed(1)
    feats = {m: torch.randn(5, 4, generator=g) for m in MODS}
    out = head(feats)
    z = [head.linear(feats[m]) for m in MODS]
    p = [torch.softmax(x, 1) for x in z]
    entropy = torch.stack([-(q * q.log()).sum(1) for q in p])  # (3, B)
    lam = torch.exp(entropy.max(0).values - entropy) / torch.exp(entropy.max(0).values - entropy).sum(0)  # Eq. 8
    assert torch.allclose(out["logits"], sum(lam[i, :, None] * z[i] for i in range(3)), atol=1e-6)
    fixed = SharedHead({m: 4 for m in MODS}, 3, fusion="fixed", weights=[0.2, 0.3, 0.5])
    with pytest.raises(UserError, match="one weight per modality \\(3\\)"):
        SharedHead({m: 4 for m in MODS}, 3, fusion="fixed", weights=[0.5, 0.5])
    fixed.load_state_dict(head.state_dict())
    assert torch.allclose(fixed(feats)["logits"], 0.2 * z[0] + 0.3 * z[1] + 0.5 * z[2], atol=1e-6)


# ------------------------------------------------------------------------------------------ two-only methods
def test_ogm_ge_compares_each_of_three_scores_with_the_others_mean():
    coeffs = modulation_coefficients({"m1": 6.0, "m2": 2.0, "m3": 4.0}, alpha=0.5)
    assert coeffs["m1"] == pytest.approx(1 - np.tanh(0.5 * 6 / 3))  # rho = 6 / mean(2, 4) = 2
    assert coeffs["m2"] == 1.0 and coeffs["m3"] == 1.0  # rho 2/5 and 4/4: not above 1


def test_ogm_ge_says_in_one_line_that_three_modalities_are_its_generalisation(capsys):
    cfg = ModelConfig(encoder="mlp", hidden=(4,), head="linear")
    spec = model_spec(cfg, {"m1": 5, "m2": 4, "m3": 3}, 2, list(MODS))
    context = MethodContext(num_classes=2, modalities=MODS, runtime=Runtime.cpu())
    build_method("ogm_ge", {}, context).setup(build_model(spec))
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and "defined for two modalities" in note[0] and "with 3" in note[0]
    two = model_spec(cfg, {"m1": 5, "m2": 4}, 2, ["m1", "m2"])
    build_method("ogm_ge", {}, MethodContext(num_classes=2, modalities=MODS[:2], runtime=Runtime.cpu())).setup(
        build_model(two))
    assert capsys.readouterr().err == ""


def _recipe(name: str, *overrides: str):
    return load_recipe([REPO / "recipes" / name], ["data.name=synth-tri", *overrides])


def test_two_modality_only_option_refused_on_three_chosen_two_pass():
    code = ["method.variant=code", "method.bug_compatible=true"]
    with pytest.raises(UserError) as err:
        check_two_modality_only(_recipe("digits-colored/balanced.yaml", "modalities=[m1,m2,m3]", *code))
    message = str(err.value)
    assert "method 'balanced' with method.bug_compatible" in message and "trains 3" in message and "\n" not in message
    check_two_modality_only(_recipe("digits-colored/balanced.yaml", "modalities=[m1,m3]", *code))  # two: accepted
    for any_number in ("digits-colored/balanced.yaml", "digits-colored/mmtm.yaml", "synth-tri/ogm_ge.yaml",
                       "synth-tri/mla.yaml", "synth-tri/naive.yaml"):  # fmt: skip
        check_two_modality_only(_recipe(any_number, "modalities=[m1,m2,m3]"))


def test_mmtm_model_links_three_at_construction():
    spec = model_spec(ModelConfig(encoder="mlp", hidden=(8, 4), head="ensemble", fusion="mmtm"),
                      {"m1": 5, "m2": 4, "m3": 3}, 2, list(MODS))  # fmt: skip
    model = build_model(spec)
    assert [len(t.to_w) for t in model.mmtm] == [3] and model.mmtm[0].shared[0].in_features == 8 + 8 + 8
