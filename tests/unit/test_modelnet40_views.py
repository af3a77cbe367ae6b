"""ModelNet40 with three views (paper 002, Sec. 7): ``data.side_view`` adds the modality ``side`` beside front
and rear; its own cache; batches of three (3, S, S) inputs of one object."""

from __future__ import annotations

import pytest

from mmtool.data import cache_dir, load_dataset, prepare
from mmtool.errors import UserError
from tests.fixtures.modelnet40 import view_code, write_modelnet40
from tests.unit.test_modelnet40 import SIZE, codes, data_cfg

VIEWS = ("front", "rear", "side")


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    raw = write_modelnet40(tmp_path_factory.mktemp("mn3") / "raw")
    cfg = data_cfg(tmp_path_factory.mktemp("data3"), raw["root"], side_view=3)
    prepare(cfg)
    return cfg, raw


def test_three_view_batches_hold_one_object_seen_three_ways(three):
    cfg, raw = three
    data = load_dataset(cfg)
    assert data.modalities == VIEWS and data.input_dims == {m: [3, SIZE, SIZE] for m in VIEWS}
    assert "v001-v007-v004" in str(cache_dir(cfg))
    by_code = {o["code"]: o for o in raw["objects"].values()}
    for source in data.splits.values():
        for train in (False, True):
            batch = next(iter(source.loader(4, train=train, seed=0, epoch=1)))
            b = min(4, len(source))  # val holds 3 objects
            assert {m: tuple(x.shape) for m, x in batch.inputs.items()} == {m: (b, 3, SIZE, SIZE) for m in VIEWS}
            objects = {m: codes(batch.inputs[m]) for m in VIEWS}
            assert objects["front"][0] == objects["rear"][0] == objects["side"][0]  # one object per sample
            assert batch.target.tolist() == [by_code[c]["label"] for c in objects["front"][0]]
            if not train:  # flips leave the green view code; the evaluation read is exact
                assert [set(objects[m][1]) for m in VIEWS] == [{view_code(0)}, {view_code(6)}, {view_code(3)}]


def test_two_of_three_select_and_a_repeated_side_is_refused(three, tmp_path):
    cfg, raw = three
    pair = load_dataset(cfg).splits["train"].select(["front", "side"])
    batch = next(iter(pair.loader(2, train=False)))
    assert sorted(batch.inputs) == ["front", "side"]
    with pytest.raises(UserError, match="side_view"):
        prepare(data_cfg(tmp_path, raw["root"], side_view=6))
