"""Missing modalities (mmtool.data.missing): masks are data (the same for every method and run on the same data
settings), a missing modality never reaches a prediction, rate 0 changes nothing, and what cannot leave a modality
out refuses in one line. The modality gap (mmtool.analysis.modality_gap) on features with a known gap."""

from __future__ import annotations

import pytest
import torch

from mmtool.analysis.modality_gap import modality_gap, modality_gaps
from mmtool.config import load_recipe
from mmtool.data import ArraySource, load_dataset
from mmtool.data.missing import draw_masks
from mmtool.data_config import DataConfig
from mmtool.engine.inference import run_inference
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError
from mmtool.models import build_model
from mmtool.models.base import refuse_missing
from tests.e2e.cli import REPO

CPU = Runtime(torch.device("cpu"))
DIMS = {"a": 6, "b": 6, "c": 6}


def _masks(tmp_path, recipe: str, rate: float = 0.4, where: str = "all") -> dict:
    keys = [f"data.root={tmp_path}", "data.n=300", f"data.missing_rate={rate}", f"data.missing_in={where}"]
    cfg = load_recipe(REPO / "recipes" / "synth-tri" / recipe, keys)
    data = load_dataset(cfg.data)
    return {k: s.present for k, s in data.splits.items()}


def test_same_data_settings_same_masks_for_every_method(tmp_path):
    naive, mla = _masks(tmp_path, "naive.yaml"), _masks(tmp_path, "mla.yaml")
    for split in ("train", "val", "test"):
        assert naive[split].keys() == mla[split].keys() == {"m1", "m2", "m3"}
        for m in naive[split]:
            assert torch.equal(naive[split][m], mla[split][m])
    train = torch.stack(list(naive["train"].values()))  # (M, N)
    assert train.any(0).all()  # never every modality of one sample missing
    assert 0.25 < 1 - train.float().mean() < 0.4  # about eta, a little less (one kept where all were drawn)
    only_train = _masks(tmp_path, "naive.yaml", where="train")
    assert only_train["test"] is None and only_train["val"] is None
    assert all(torch.equal(only_train["train"][m], naive["train"][m]) for m in naive["train"])


def test_masks_depend_on_seed_and_split_and_nest_in_the_rate():
    a = draw_masks(500, ["x", "y"], 0.3, seed=0, split="train")
    assert torch.equal(a["x"], draw_masks(500, ["x", "y"], 0.3, seed=0, split="train")["x"])
    assert not torch.equal(a["x"], draw_masks(500, ["x", "y"], 0.3, seed=1, split="train")["x"])
    assert not torch.equal(a["x"], draw_masks(500, ["x", "y"], 0.3, seed=0, split="test")["x"])
    only_x = draw_masks(500, ["x", "y"], 0.5, seed=0, split="train", maskable=["x"])
    assert only_x["y"].all() and not only_x["x"].all()
    lower = draw_masks(500, ["x", "y", "z"], 0.2, seed=0, split="train")
    higher = draw_masks(500, ["x", "y", "z"], 0.2 + 0.3, seed=0, split="train")
    # a higher rate masks what a lower one masked (apart from the one kept modality of emptied samples)
    emptied = ~torch.stack([higher[m] for m in "xyz"]).any(0)
    assert emptied.sum() == 0
    assert sum(int((~lower[m] & higher[m]).sum()) for m in "xyz") < 25


def _model(head: str, encoder: str = "mlp"):
    spec = {"modalities": DIMS, "num_classes": 4, "encoder": encoder, "encoder_args": {"hidden": [5]}
            if encoder == "mlp" else {}, "head": head, "head_args": {}}  # fmt: skip
    torch.manual_seed(0)
    return build_model(spec).eval()


@pytest.mark.parametrize("head", ["linear", "shared", "ensemble", "sum", "concat", "qmf"])
def test_a_masked_modality_never_contributes(head):
    model = _model(head)
    g = torch.Generator().manual_seed(1)
    x = {m: torch.randn(32, d, generator=g) for m, d in DIMS.items()}
    present = {"a": torch.arange(32) % 2 == 0, "b": torch.arange(32) % 3 != 0, "c": torch.ones(32, dtype=torch.bool)}
    perturbed = {m: torch.where(present[m].unsqueeze(1), t, t + 100 * torch.randn(t.shape, generator=g))
                 for m, t in x.items()}  # fmt: skip
    out, again = model(x, present=present), model(perturbed, present=present)
    assert torch.equal(out["logits"], again["logits"])
    assert not torch.allclose(out["logits"], model(x)["logits"])  # the masks do change the prediction


def test_linear_head_sums_the_present_blocks():
    model = _model("linear", "identity")
    x = {m: torch.randn(8, d) for m, d in DIMS.items()}
    yes, no = torch.ones(8, dtype=torch.bool), torch.zeros(8, dtype=torch.bool)
    present = {"a": torch.tensor([True, False] * 4), "b": yes, "c": no}
    h = model.head
    want = torch.where(present["a"].unsqueeze(1), h.proj["a"](x["a"]), 0) + h.proj["b"](x["b"]) + h.bias
    assert torch.allclose(model(x, present=present)["logits"], want)


def test_ensemble_head_renormalises_the_average():
    model = _model("ensemble", "identity")
    x = {m: torch.randn(4, d) for m, d in DIMS.items()}
    yes, no = torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)
    present = {"a": yes, "b": yes, "c": no}
    p = [torch.softmax(model.head.proj[m](x[m]), 1) for m in ("a", "b")]
    assert torch.allclose(model(x, present=present)["logits"].exp(), (p[0] + p[1]) / 2, atol=1e-6)


def test_rate_zero_is_bit_identical(tmp_path):
    cfg = DataConfig.of(name="synth-tri", root=str(tmp_path), n=200, missing_rate=0.0, missing_in="train")
    assert "missing_rate" not in cfg.flat()  # run identities and feature caches of complete data are unchanged
    assert cfg.sample_keys() == DataConfig.of(name="synth-tri", root=str(tmp_path), n=200).sample_keys()
    data = load_dataset(cfg)
    assert all(s.present is None for s in data.splits.values())
    assert next(iter(data.splits["train"].loader(16, train=True, seed=0))).present is None
    x = {m: torch.randn(16, d) for m, d in DIMS.items()}
    ones = {m: torch.ones(16, dtype=torch.bool) for m in DIMS}
    for head in ("linear", "shared", "ensemble", "sum", "concat", "qmf"):
        model = _model(head)
        assert torch.equal(model(x)["logits"], model(x, present=ones)["logits"]), head


@pytest.mark.parametrize("head", ["mlp", "attention"])
def test_mixing_heads_refuse(head):
    model = _model(head)
    with pytest.raises(UserError, match=f"data.missing_rate > 0: model.head {head} mixes"):
        refuse_missing(model)
    refuse_missing(model, head=False)  # its encoders' features alone are fine
    source = ArraySource({m: torch.randn(5, d) for m, d in DIMS.items()}, torch.zeros(5, dtype=torch.long))
    source.present = {m: torch.ones(5, dtype=torch.bool) for m in DIMS}
    with pytest.raises(UserError, match="model.head"):
        run_inference(model, source, CPU)


def test_inference_hands_the_masks_on():
    model = _model("linear")
    source = ArraySource({m: torch.randn(10, d) for m, d in DIMS.items()}, torch.zeros(10, dtype=torch.long))
    source.present = draw_masks(10, list(DIMS), 0.5, seed=0, split="test")
    out = run_inference(model, source, CPU, batch_size=3)
    assert all(torch.equal(out["present"][m], source.present[m]) for m in DIMS)
    assert torch.allclose(out["logits"], model(source.inputs, present=source.present)["logits"], atol=1e-6)
    feats = out["features"]
    for m in DIMS:  # a missing modality's features are zeros, never its encoder's output
        assert (feats[m][~source.present[m]] == 0).all()


def test_refusals_on_the_command_line(tmp_path):
    from mmtool.engine.train import refuse_missing_method
    from mmtool.methods import METHODS

    with pytest.raises(UserError, match="method gblending does not handle missing modalities"):
        refuse_missing_method("gblending", METHODS.get("gblending").__new__(METHODS.get("gblending")))
    with pytest.raises(UserError, match="missing_rate"):
        DataConfig.of(name="synth-tri", missing_rate=1.0)
    with pytest.raises(UserError, match="missing_in"):
        DataConfig.of(name="synth-tri", missing_rate=0.2, missing_in="test")
    with pytest.raises(UserError, match=r"data.missing_modalities: \['zz'\]"):
        load_dataset(DataConfig.of(name="synth-tri", root=str(tmp_path), n=200, missing_rate=0.2,
                                   missing_modalities=["zz"]))  # fmt: skip


# ------------------------------------------------------------------------------------------------ modality gap
def test_modality_gap_of_constructed_features():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 3, generator=g).abs() * 0.01 + torch.tensor([1.0, 0.0, 0.0])  # all near e1
    y = torch.randn(4000, 3, generator=g).abs() * 0.01 + torch.tensor([0.0, 1.0, 0.0])  # all near e2
    assert modality_gap(x, y) == pytest.approx(2**0.5, abs=0.02)  # |e1 - e2|
    assert modality_gap(x, 5 * x) == pytest.approx(0.0, abs=1e-9)  # scale does not matter: normalised first
    z = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # unit rows (0.6, 0.8), (0, 1): centre (0.3, 0.9)
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # centre (1, 0)
    assert modality_gap(z, w) == pytest.approx(((0.7) ** 2 + 0.9**2) ** 0.5)
    mask = torch.tensor([True, False])  # only the first row: centre (0.6, 0.8)
    assert modality_gap(z, w, mask_x=mask) == pytest.approx((0.4**2 + 0.8**2) ** 0.5)


def test_modality_gap_refuses_unequal_sizes():
    with pytest.raises(UserError, match="do not share a space"):
        modality_gap(torch.ones(3, 4), torch.ones(3, 5), names=("text", "image"))
    out = modality_gaps({"a": torch.ones(3, 4), "b": torch.ones(3, 4), "c": torch.ones(3, 5)})
    assert out["modality_gap"] == {"a-b": pytest.approx(0.0)}
    assert set(out["modality_gap_undefined"]) == {"a-c", "b-c"}


class _IdReader:
    """Sample i reads as the value i (its views as i + view / 10): batches say which rows they hold."""

    def read(self, index, modalities, train, rng):
        return {m: torch.tensor([float(index)]) for m in modalities}

    def read_view(self, index, view, modalities):
        return {m: torch.tensor([index + view / 10]) for m in modalities}


@pytest.mark.parametrize("workers", [0, 1])
def test_on_disk_batches_carry_the_masks_of_their_own_samples(workers):
    """Shuffled training batches, worker processes and multi-view evaluation ids all get the rows of the split's
    masks that belong to their samples."""
    from mmtool.data.source import DiskSource

    n = 10
    masks = {"a": torch.arange(n) % 3 != 0, "b": torch.arange(n) % 2 == 0}
    for views in (1, 2):
        source = DiskSource(_IdReader(), torch.zeros(n, dtype=torch.long), ["a", "b"], views=views)
        source.present = masks
        for train in (True, False):
            seen = []
            for batch in source.loader(4, train=train, seed=3, workers=workers):
                rows = batch.inputs["a"][:, 0].floor().long()  # the sample each row was read from
                assert torch.equal(rows, batch.ids // (1 if train else views))
                for m in ("a", "b"):
                    assert torch.equal(batch.present[m], masks[m][rows])
                seen += rows.tolist()
            assert sorted(set(seen)) == list(range(n))


def _teachers() -> dict:
    out = {}
    for m, d in DIMS.items():
        torch.manual_seed(10)
        out[m] = build_model({"modalities": {m: d}, "num_classes": 4, "encoder": "mlp", "encoder_args": {"hidden": [5]},
                              "head": "linear", "head_args": {}}).eval()  # fmt: skip
    return out


@pytest.mark.parametrize(("method", "head"), [("naive", "linear"), ("umt", "linear"), ("aux_ce", "linear"),
                                              ("qmf", "qmf"), ("mla", "shared"), ("ogm_ge", "linear")])  # fmt: skip
def test_a_methods_losses_ignore_the_inputs_of_missing_modalities(method, head):
    """Every loss a method returns is the same when the inputs of the masked (modality, sample) pairs are replaced
    by noise: per-modality terms count only the samples that have the modality, fused terms only what is there."""
    from mmtool.data import Batch
    from mmtool.methods import MethodContext, build_method

    g = torch.Generator().manual_seed(2)
    x = {m: torch.randn(24, d, generator=g) for m, d in DIMS.items()}
    present = {"a": torch.arange(24) % 2 == 0, "b": torch.arange(24) % 3 != 0, "c": torch.arange(24) % 4 != 1}
    noisy = {m: torch.where(present[m].unsqueeze(1), t, t + 50 * torch.randn(t.shape, generator=g))
             for m, t in x.items()}  # fmt: skip
    target, ids = torch.randint(0, 4, (24,), generator=g), torch.arange(24)

    def losses(inputs, masks=present):
        model = _model(head).train()
        context = MethodContext(teachers=_teachers(), num_classes=4, modalities=tuple(DIMS), batches_per_epoch=1,
                                runtime=CPU)  # fmt: skip
        strategy = build_method(method, {}, context)
        strategy.setup(model)
        out = strategy.training_step(model, Batch(inputs, target, ids, masks))
        return {k: float(v) for k, v in out.items()}

    clean, again = losses(x), losses(noisy)
    assert clean and clean == again
    assert losses(x, None) != losses(noisy, None)  # without the masks the noise does reach the losses
