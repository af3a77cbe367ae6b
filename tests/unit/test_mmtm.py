"""MMTM intermediate fusion: information crosses branches, and can be cut with squeeze overrides."""

from __future__ import annotations

import pytest
import torch

from mmtool.analysis.utilization import squeeze_means, utilization_rates
from mmtool.config import EncoderConfig, ModelConfig
from mmtool.engine.evaluate import accuracy
from mmtool.engine.loop import fit
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.methods import MethodContext, build_method
from mmtool.models import build_model, model_spec
from mmtool.models.mmtm import MMTMNet, excite

DIMS = {"m1": 200, "m2": 100}


def mmtm_model(hidden=(16, 8), num_classes=2, seed=0):
    cfg = ModelConfig(encoder="mlp", hidden=hidden, head="ensemble", fusion="mmtm")
    spec = model_spec(cfg, DIMS, num_classes, ["m1", "m2"])
    torch.manual_seed(seed)
    return build_model(spec), spec


def test_branches_exchange_information_and_override_cuts_it(alpha_splits):
    model, spec = mmtm_model()
    assert isinstance(model, MMTMNet) and len(model.mmtm) == 1 and spec["fusion"] == "mmtm"
    x = alpha_splits["val"].inputs
    other = {"m1": x["m1"], "m2": torch.randn_like(x["m2"])}
    with torch.no_grad():
        base = model.fuse(model.encode(x))["unimodal_logits"]["m1"]
        moved = model.fuse(model.encode(other))["unimodal_logits"]["m1"]
        assert not torch.allclose(base, moved)  # m2 reaches branch m1 through the MMTM
        means = squeeze_means(model, alpha_splits["train"], Runtime.cpu())
        cut = model.fuse(model.encode(x, squeeze_override={"m2": means["m2"]}))["unimodal_logits"]["m1"]
        cut_moved = model.fuse(model.encode(other, squeeze_override={"m2": means["m2"]}))["unimodal_logits"]["m1"]
        assert torch.allclose(cut, cut_moved)  # with m2's squeeze at its mean, branch m1 sees m1 only


def test_squeeze_means_are_training_means(alpha_splits):
    model, _ = mmtm_model()
    train = alpha_splits["train"]
    with torch.no_grad():
        h1 = model.encoders["m1"].blocks[0](train.inputs["m1"])  # first block, before any MMTM
        means = squeeze_means(model, train, Runtime.cpu())
    assert torch.allclose(means["m1"][0], h1.mean(0), atol=1e-6)


def test_excite_at_zero_is_identity():
    a = torch.randn(4, 3, 5, 5)
    assert torch.allclose(excite(a, torch.zeros(4, 3)), a)


def test_utilization_follows_def_4_1(alpha_splits):
    model, _ = mmtm_model()
    train, test = alpha_splits["train"], alpha_splits["val"]
    rates = utilization_rates(model, train, test, Runtime.cpu())
    means = squeeze_means(model, train, Runtime.cpu())
    with torch.no_grad():
        full = model.fuse(model.encode(test.inputs))["unimodal_logits"]["m1"]
        cut = model.fuse(model.encode(test.inputs, squeeze_override={"m2": means["m2"]}))["unimodal_logits"]["m1"]
    a_full, a_cut = accuracy(full, test.target), accuracy(cut, test.target)
    assert rates["u(m2|m1)"] == pytest.approx((a_full - a_cut) / a_full)
    assert rates["d_util"] == pytest.approx(rates["u(m2|m1)"] - rates["u(m1|m2)"])


def test_a_branch_never_right_has_no_rate_and_no_d_util_instead_of_a_division_by_zero(alpha_splits):
    from mmtool.data import Split

    model, _ = mmtm_model()
    val = alpha_splits["val"]
    with torch.no_grad():
        pred = model.fuse(model.encode(val.inputs))["unimodal_logits"]["m1"].argmax(1)
    wrong = Split(val.inputs, 1 - pred)  # two classes: every m1 prediction is wrong, A(f_m1) = 0
    rates = utilization_rates(model, alpha_splits["train"], wrong, Runtime.cpu())
    assert rates["accuracy_branch_m1"] == 0.0 and rates["u(m2|m1)"] is None and rates["d_util"] is None
    assert (rates["u(m1|m2)"] is None) == (rates["accuracy_branch_m2"] == 0.0)  # the other branch: as it scores
    assert rates["utilization"]["m2"] is None  # u(m2|m1), keyed by the modality whose use it measures


def test_trains_with_the_sum_of_branch_losses(alpha_splits, train_cfgs, tmp_path):
    model, spec = mmtm_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = build_method("ume", {}, MethodContext(num_classes=2, modalities=("m1", "m2")))
    optim, schedule, cfg = train_cfgs(epochs=3, lr=0.1)
    fit(
        model,
        method,
        alpha_splits["train"],
        alpha_splits["val"],
        spec,
        tmp_path,
        optim,
        schedule,
        cfg,
        Runtime.cpu(cfg),
    )
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before if k.startswith("mmtm."))


def test_needs_two_blocks_and_two_modalities():
    with pytest.raises(UserError, match="fusion points"):
        mmtm_model(hidden=(16,))
    cfg = ModelConfig(encoder="identity", head="ensemble", fusion="mmtm")
    with pytest.raises(UserError, match="made of blocks"):
        build_model(model_spec(cfg, DIMS, 2, ["m1", "m2"]))
    cfg = ModelConfig(encoder="mlp", hidden=(8, 4), head="ensemble", fusion="mmtm")
    with pytest.raises(UserError, match="two modalities"):
        build_model(model_spec(cfg, DIMS, 2, ["m1"]))


def cnn_model(encoder="cnn", hidden=(8, 16), dims=None, seed=0):
    cfg = ModelConfig(encoder=encoder, hidden=hidden, head="ensemble", fusion="mmtm")
    spec = model_spec(cfg, dims or {"m1": [3, 8, 8], "m2": [1, 8, 8]}, 3, ["m1", "m2"])
    torch.manual_seed(seed)
    return build_model(spec), spec


def test_mmtm_on_cnn_feature_maps_exchanges_and_cuts_information():
    model, spec = cnn_model()
    assert spec["modalities"] == {"m1": [3, 8, 8], "m2": [1, 8, 8]}
    assert [t.to_w[0].out_features for t in model.mmtm] == [8, 16]  # one MMTM after each conv block
    model.eval()
    x = {"m1": torch.rand(6, 3, 8, 8), "m2": torch.rand(6, 1, 8, 8)}
    other = {"m1": x["m1"], "m2": torch.rand(6, 1, 8, 8)}
    with torch.no_grad():
        base = model.fuse(model.encode(x))["unimodal_logits"]["m1"]
        assert base.shape == (6, 3)
        assert not torch.allclose(base, model.fuse(model.encode(other))["unimodal_logits"]["m1"])
        record: dict = {}
        model.encode(x, record=record)
        assert [h.shape for h in record["m2"]] == [(6, 8), (6, 16)]  # squeezed: spatial means of the maps
        means = {"m2": [h.mean(0) for h in record["m2"]]}
        cut = [model.fuse(model.encode(v, squeeze_override=means))["unimodal_logits"]["m1"] for v in (x, other)]
        torch.testing.assert_close(cut[0], cut[1])
        fixed = {"m1": [torch.zeros(8), torch.zeros(16)]}
        cut = [model.fuse(model.encode(v, excite_override=fixed))["unimodal_logits"]["m1"] for v in (x, other)]
        torch.testing.assert_close(cut[0], cut[1])


def test_mmtm_on_resnet18_sits_after_layer2_3_4():
    model, _ = cnn_model("resnet18", dims={"m1": [3, 32, 32], "m2": [1, 32, 32]})
    widths = [(t.to_w[0].out_features, t.to_w[1].out_features) for t in model.mmtm]
    assert widths == [(128, 128), (256, 256), (512, 512)]
    model.eval()
    with torch.no_grad():
        out = model({"m1": torch.rand(2, 3, 32, 32), "m2": torch.rand(2, 1, 32, 32)})
    assert out["logits"].shape == (2, 3) and torch.isfinite(out["logits"]).all()


def test_mmtm_code_settings_match_the_released_module():
    """Golden values from nyukat/greedy_multimodal_learning at a190e03755bd8d0883b2c5c0cd7921d2561ce2ee,
    ``src/balanced_mmtm.py``, ``MMTM_mitigate(4, 6, ratio=4).forward`` (regular mode; its running averages
    moved to the CPU): ``sigmoid(w) * A`` and a hidden width of ``int(2 * (C0 + C1) / 4)`` = 5."""
    from mmtool.models.mmtm import MMTM

    mmtm = MMTM(4, 6, bottleneck=2)
    assert mmtm.shared[0].out_features == 5
    g = torch.Generator().manual_seed(0)
    layers = [mmtm.shared[0], mmtm.to_w[0], mmtm.to_w[1]]  # fc_squeeze, fc_visual, fc_skeleton
    with torch.no_grad():
        for p in [t for layer in layers for t in (layer.weight, layer.bias)]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x0, x1 = torch.randn(2, 4, 2, 2, generator=g), torch.randn(2, 6, generator=g)
    with torch.no_grad():
        w0, w1 = mmtm(x0.flatten(2).mean(-1), x1)
        out0, out1 = excite(x0, w0, factor=1.0), excite(x1, w1, factor=1.0)
    golden0 = [0.6243676543235779, 0.07593444734811783, 0.9087886214256287, 0.4513106644153595, 0.1100655123591423,
               -0.1658398061990738, 0.06539564579725266, 0.01764453575015068, 0.49030038714408875, -0.7311989665031433,
               -0.8745683431625366, -0.8794108033180237, 0.25066930055618286, -0.040094900876283646, 0.1493690311908722,
               0.18910515308380127, 0.07099437713623047, 0.36262550950050354, -0.11883550137281418, 0.4228924810886383,
               -0.28275495767593384, -0.948131263256073, -0.2821967303752899, -0.26273778080940247, 0.3283684253692627,
               -0.5981082916259766, 0.30118048191070557, -0.271291047334671, -0.3131192922592163, -0.20489776134490967,
               0.0033945851027965546, 0.09667553007602692]  # fmt: skip
    golden1 = [-0.07597128301858902, -0.299959272146225, -0.008188997395336628, 0.2304718941450119,
               -0.3360442519187927, -0.07904796302318573, -0.37959977984428406, -0.17435429990291595,
               -0.0725487619638443, -0.04511750862002373, -0.10163064301013947, -0.4656936526298523]  # fmt: skip
    assert out0.flatten().tolist() == pytest.approx(golden0, abs=1e-5)
    assert out1.flatten().tolist() == pytest.approx(golden1, abs=1e-5)


def test_fusion_args_are_saved_in_the_spec_and_rebuild_the_model():
    cfg = ModelConfig(encoder="mlp", hidden=(16, 8), head="ensemble", fusion="mmtm")
    spec = {**model_spec(cfg, DIMS, 2, ["m1", "m2"]), "fusion_args": {"excite_scale": 1.0, "bottleneck": 2}}
    model = build_model(spec)
    assert model.fusion_args == {"excite_scale": 1.0, "bottleneck": 2, "running_mean": "none"}
    assert model.mmtm[0].shared[0].out_features == 16
    assert build_model(model.spec).fusion_args == model.fusion_args


def _running_mean_model(running_mean: str) -> MMTMNet:
    """Two 4-wide MLP branches whose Linear layers are identities: an MMTM after block 0 sees the (non-negative)
    inputs themselves and the branch features are the rescaled inputs, so the MMTM can be compared alone."""
    cfg = ModelConfig(encoder="mlp", hidden=(4, 4), head="ensemble", fusion="mmtm")
    spec = model_spec(cfg, {"m1": 4, "m2": 4}, 2, ["m1", "m2"])
    model = build_model({**spec, "fusion_args": {"excite_scale": 1.0, "bottleneck": 2, "running_mean": running_mean}})
    g = torch.Generator().manual_seed(0)
    mmtm = model.mmtm[0]
    with torch.no_grad():
        for enc in model.encoders.values():
            for layer in [m for m in enc.modules() if isinstance(m, torch.nn.Linear)]:
                layer.weight.copy_(torch.eye(4))
                layer.bias.zero_()
        for layer in [mmtm.shared[0], mmtm.to_w[0], mmtm.to_w[1]]:  # fc_squeeze, fc_visual, fc_skeleton
            for t in (layer.weight, layer.bias):
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
    return model, g


def test_running_mean_and_rebalancing_forwards_match_the_released_module():
    """Golden values from nyukat/greedy_multimodal_learning at a190e03755bd8d0883b2c5c0cd7921d2561ce2ee,
    ``src/balanced_mmtm.py``, ``MMTM_mitigate(4, 4, ratio=4)`` (running averages on the CPU), these weights and
    four batches of ``torch.rand(3, 4)`` pairs: two plain forwards, then ``curation_mode=True`` with
    ``caring_modality`` 0 and 1. Its running averages of both modalities are fed from the first (``first``)."""
    model, g = _running_mean_model("first")
    xs = [(torch.rand(3, 4, generator=g), torch.rand(3, 4, generator=g)) for _ in range(4)]
    golden = [
        ([0.29187742, 0.07496078, 0.39312214, 0.34492964, 0.4045442, 0.26683724, 0.00291193, 0.05832097, 0.34317568,
          0.22764859, 0.06255614, 0.06934928],
         [0.70517617, 0.70487303, 0.10672431, 0.22948034, 0.0124903, 0.3058759, 0.05925375, 0.04860128, 0.25703016,
          0.38339856, 0.13866965, 0.35495365]),
        ([0.09590026, 0.38584399, 0.47635034, 0.02654978, 0.1752229, 0.20072329, 0.32539111, 0.20425914, 0.29430962,
          0.18529792, 0.14676306, 0.24571408],
         [0.0102724, 0.11432584, 0.18500246, 0.1021373, 0.17331766, 0.05763054, 0.18746002, 0.26245016, 0.10608975,
          0.36899421, 0.37244433, 0.23115684]),
        ([0.23275037, 0.1725298, 0.34173322, 0.28884128, 0.44096684, 0.30872962, 0.55404997, 0.16380079, 0.02302577,
          0.09930421, 0.47773623, 0.17542605],
         [0.13335501, 0.07379494, 0.01532918, 0.03346374, 0.27603963, 0.63577747, 0.30491614, 0.01035814, 0.46404764,
          0.07569802, 0.17954725, 0.13701256]),
        ([0.18711248, 0.15520313, 0.02919136, 0.02445115, 0.18237865, 0.18268865, 0.15618691, 0.24410369, 0.02123128,
          0.16240153, 0.53810877, 0.09324607],
         [0.42793927, 0.25506365, 0.02775651, 0.286127, 0.19892634, 0.10366046, 0.512124, 0.03363093, 0.24900605,
          0.14804591, 0.48778182, 0.22416756]),
    ]  # fmt: skip
    model.eval()  # the running mean is fed by evaluation forwards too
    with torch.no_grad():
        for (x0, x1), averaged, (g0, g1) in zip(xs, [[], [], ["m1"], ["m2"]], golden, strict=True):
            out = model.encode({"m1": x0, "m2": x1}, excite_average=averaged)
            assert out["m1"].flatten().tolist() == pytest.approx(g0, abs=1e-6)
            assert out["m2"].flatten().tolist() == pytest.approx(g1, abs=1e-6)
    avg = [0.44975153, 0.37450051, 0.56913626, 0.35049605]
    assert model.mmtm[0].mean0.tolist() == pytest.approx(avg, abs=1e-6)
    assert model.mmtm[0].mean1.tolist() == pytest.approx(avg, abs=1e-6)
    assert float(model.mmtm[0].forwards) == 4


def test_running_mean_each_follows_its_own_modality_and_survives_a_checkpoint():
    model, g = _running_mean_model("each")
    x = [(torch.rand(3, 4, generator=g), torch.rand(3, 4, generator=g)) for _ in range(2)]
    ws = []
    with torch.inference_mode():  # the evaluation pass's mode: the buffers stay usable by training steps
        for x0, x1 in x:
            ws.append(model.mmtm[0](x0, x1))
            model.encode({"m1": x0, "m2": x1})
    expected = [sum(torch.sigmoid(w[i]).mean(0) for w in ws) / 2 for i in (0, 1)]
    assert torch.allclose(model.mmtm[0].mean0, expected[0]) and torch.allclose(model.mmtm[0].mean1, expected[1])
    out = model({"m1": x[0][0], "m2": x[0][1]}, excite_average=["m2"])
    out["logits"].sum().backward()  # a re-balancing step trains with the buffers
    again = build_model(model.spec)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.mmtm[0].mean1, model.mmtm[0].mean1) and float(again.mmtm[0].forwards) == 3
    wide = ModelConfig(encoder="mlp", head="ensemble", fusion="mmtm",
                       encoders={"m2": EncoderConfig(name="mlp", hidden=(6, 4))}, hidden=(4, 4))  # fmt: skip
    spec = model_spec(wide, {"m1": 4, "m2": 4}, 2, ["m1", "m2"])
    with pytest.raises(UserError, match="running_mean: first needs equal widths"):
        build_model({**spec, "fusion_args": {"running_mean": "first"}})
