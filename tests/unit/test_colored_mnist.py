"""Colored-and-gray MNIST (paper 002): prep from IDX files, colour-label correlation, refused files, the
four-conv encoder with SE blocks, RUBi's loss by hand, and the command-line chains."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmtool.data import cache_dir, load_dataset, prepare
from mmtool.data.colored_mnist_prep import COLOURS, read_idx
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from tests.e2e.cli import run_cli
from tests.fixtures.mnist import idx_bytes, write_mnist
from tests.fixtures.modelnet40 import write_modelnet40

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "recipes" / "_base" / "smoke" / "colored-mnist.yaml")
MN40_SMOKE = str(REPO / "recipes" / "_base" / "smoke" / "modelnet40.yaml")


def cfg_for(root: Path, raw: Path, **settings) -> DataConfig:
    return DataConfig.of(name="colored-mnist", root=str(root), raw=str(raw), val_fraction=0.2, seed=3, **settings)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> DataConfig:
    base = tmp_path_factory.mktemp("cm")
    write_mnist(base / "raw", train_per_class=20, test_per_class=20, gz=True)
    # little jitter: the nearest palette colour is the drawn one
    cfg = cfg_for(base / "data", base / "raw", color_var=0.001)
    prepare(cfg)
    return cfg


def colour_index(color: torch.Tensor, gray: torch.Tensor) -> np.ndarray:
    """The palette colour nearest to each image's colour (colour channels over the gray digit, where it is bright)."""
    bright = gray[:, 0] > 0.9  # (N, 28, 28): the bar, 255 in the fixture
    rgb = torch.stack([(color[:, c] * bright).sum((1, 2)) / bright.sum((1, 2)) for c in range(3)], 1)  # (N, 3)
    return torch.cdist(rgb, torch.from_numpy(COLOURS)).argmin(1).numpy()


def test_prep_builds_both_modalities_with_strong_train_and_weak_test_correlation(prepared):
    manifest = json.loads((cache_dir(prepared) / "manifest.json").read_text())
    assert manifest["split_sizes"] == {"train": 200, "test": 200} and manifest["n"] == 400
    data = load_dataset(prepared)
    assert data.modalities == ("color", "gray") and data.input_dims == {"color": [3, 28, 28], "gray": [1, 28, 28]}
    sizes = {k: len(s) for k, s in data.splits.items()}
    assert sizes == {"train": 160, "val": 40, "test": 200}
    agree = {}
    for name, split in data.splits.items():
        color, gray = split.inputs["color"], split.inputs["gray"]
        assert color.dtype == torch.float32 and color.shape[1:] == (3, 28, 28) and gray.shape[1:] == (1, 28, 28)
        # the colored image is the gray digit times one colour: the colour read where the digit is white (255)
        row = 2 + 2 * split.target  # (N,): the fixture's bar of digit d starts at row 2 + 2d, columns 4..23
        rgb = color[torch.arange(len(row)), :, row, 10]  # (N, 3)
        assert torch.allclose(gray[torch.arange(len(row)), 0, row, 10], torch.ones(len(row)))
        assert torch.allclose(color, gray * rgb[:, :, None, None], atol=1e-6)
        agree[name] = float((colour_index(color, gray) == split.target.numpy()).mean())
    assert agree["train"] == 1.0  # train_correlation 1: every training digit in its label's colour
    assert agree["test"] < 0.3 and agree["val"] < 0.4  # 0.1 expected: test and (val_colors: test) validation
    assert manifest["color_label_agreement"]["train"] == 1.0


def test_validation_is_seeded_from_train_and_can_wear_training_colours(prepared):
    a, b = load_dataset(prepared), load_dataset(prepared)
    assert torch.equal(a.splits["val"].ids, b.splits["val"].ids)
    other = load_dataset(DataConfig.of(**{**prepared.flat(), "seed": 4}))
    assert not torch.equal(a.splits["val"].ids, other.splits["val"].ids)
    test_ids = set(a.splits["test"].ids.tolist())
    assert not test_ids & set(a.splits["val"].ids.tolist()) and not test_ids & set(a.splits["train"].ids.tolist())
    strong = load_dataset(DataConfig.of(**{**prepared.flat(), "val_colors": "train"})).splits["val"]
    assert (colour_index(strong.inputs["color"], strong.inputs["gray"]) == strong.target.numpy()).all()


def test_bad_idx_files_are_refused_with_one_line(tmp_path):
    paths = write_mnist(tmp_path / "raw")
    good = paths["train_images"].read_bytes()
    cases = {
        "truncated": (good[:-5], "truncated"),
        "magic": (b"\x00\x00\x08\x01" + good[4:], "magic number 0x00000801"),
    }
    for data, words in cases.values():
        paths["train_images"].write_bytes(data)
        with pytest.raises(UserError, match=words):
            read_idx(paths["train_images"], 3)
    paths["train_images"].write_bytes(good)
    paths["train_labels"].write_bytes(idx_bytes(np.zeros(7, dtype=np.uint8)))  # 60 images, 7 labels
    proc = run_cli(tmp_path, "prep", "colored-mnist", "--raw", str(tmp_path / "raw"), "--root", "d", check=False)
    assert proc.returncode == 2 and "60 images but" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(good)[:20])
    with pytest.raises(UserError, match="cannot be read"):
        read_idx(tmp_path / "gz" / "train-images-idx3-ubyte.gz", 3)


def test_convnet4_with_se_blocks_after_the_first_three_convolutions():
    from mmtool.models.cnn import SqueezeExcite
    from mmtool.models.encoders import ENCODERS

    torch.manual_seed(0)
    plain, se = ENCODERS.get("convnet4")([3, 28, 28]), ENCODERS.get("convnet4")([3, 28, 28], se=True)
    x = torch.rand(4, 3, 28, 28)
    assert plain(x).shape == se(x).shape == (4, 64) and plain.mmtm_after == (0, 1, 2)
    assert [type(b[-1]).__name__ for b in se.blocks] == ["SqueezeExcite"] * 3 + ["ReLU"]
    assert [s.fc[0].in_features for s in se.se] == [32, 32, 64]
    assert [s.fc[0].out_features for s in se.se] == [16, 16, 32]
    h = x
    for block in se.blocks:
        h = block(h)
    assert torch.allclose(se.pool(h), se(x))  # blocks compose to forward, SE included
    block = SqueezeExcite(2, reduction=1, scale=2.0)
    a = torch.rand(1, 2, 3, 3)
    w = 2.0 * torch.sigmoid(block.fc(a.mean((2, 3))))  # (1, 2): Hu et al.'s gate, MMTM's factor 2
    assert torch.allclose(block(a), a * w[:, :, None, None])


def test_rubi_loss_is_cadene_et_al_eq4_by_hand_and_its_branch_stops_at_the_features():
    from mmtool.methods.rubi import RUBiBranches, rubi_losses

    torch.manual_seed(0)
    branches = RUBiBranches({"a": 3, "b": 2}, num_classes=2, end_classif=True)
    fa = torch.tensor([[1.0, -1.0, 0.5], [0.2, 0.3, -0.4]], requires_grad=True)
    fb = torch.tensor([[0.5, 2.0], [-1.0, 0.0]], requires_grad=True)
    logits = torch.tensor([[2.0, -1.0], [0.5, 1.5]], requires_grad=True)
    target = torch.tensor([0, 1])
    out = branches({"a": fa, "b": fb})
    losses = rubi_losses(logits, out, target, branch_weight=0.5)
    qa, qb = (branches.c[m](f) for m, f in (("a", fa), ("b", fb)))
    mask = torch.sigmoid(qa) * torch.sigmoid(qb)
    masked = logits * mask
    by_hand = -torch.log_softmax(masked, 1)[[0, 1], [0, 1]].mean()
    assert torch.allclose(losses["task_loss"], by_hand)
    assert not torch.allclose(losses["task_loss"], F.cross_entropy(logits, target))  # the mask changes the loss
    za = branches.c_end["a"](qa)
    assert torch.allclose(losses["rubi_a_loss"], 0.5 * F.cross_entropy(za, target))
    sum(losses.values()).backward()
    assert fa.grad is None and fb.grad is None  # no gradient into the encoders through the branches
    assert logits.grad is not None and branches.c["a"].weight.grad.abs().sum() > 0


def test_rubi_trains_on_the_modelnet40_fixture(tmp_path):
    info = write_modelnet40(tmp_path / "raw", train_objects=4, test_objects=2)
    run_cli(tmp_path, "prep", "modelnet40", "--raw", str(info["root"]), "--root", "data/smoke")
    run_cli(tmp_path, "train", "-r", str(REPO / "recipes/modelnet40/rubi.yaml"), "-r", MN40_SMOKE, "train.epochs=1",
            "model.encoders.front.name=cnn", "model.encoders.rear.name=cnn", "--run-dir", "run")  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = {k for r in rows for k in r}
    assert {"train_rubi_front_loss", "train_rubi_rear_loss", "train_task_loss"} <= logged
    assert (tmp_path / "run" / "results.json").is_file()


def test_cli_chain_prep_then_train_mmtm(tmp_path):
    write_mnist(tmp_path / "raw")
    run_cli(tmp_path, "prep", "colored-mnist", "--raw", str(tmp_path / "raw"), "--root", "data/smoke")
    run_cli(tmp_path, "train", "-r", str(REPO / "recipes/colored-mnist/mmtm.yaml"), "-r", SMOKE, "train.epochs=1",
            "--run-dir", "run")  # fmt: skip
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "test_accuracy" in json.dumps(results)
