"""CLIP text through the data path: Food-101 prep with a CLIP BPE tokenizer keeps the tokenizer's own ids and
records its pad id, batches pad with it, and ``clip_text`` gives a sample the same feature padded or alone; CLIP
image normalisation; frozen towers. (Tiny tokenizer and towers; nothing is downloaded.)"""

from __future__ import annotations

import pytest
import torch

from mmtool.data import PrepOptions, load_dataset, prepare
from mmtool.data.source import DiskSource
from mmtool.data.text import load_tokenizer, read_tokenizer, text_ids
from mmtool.data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from mmtool.models import ENCODERS
from tests.fixtures.clip_tokenizer import TINY_CLIP_TEXT, VOCAB_SIZE, write_clip_tokenizer
from tests.fixtures.food101 import TINY_BERT, write_food101

pytest.importorskip("transformers")
BOS, EOS = VOCAB_SIZE - 2, VOCAB_SIZE - 1
BUDGET = PrepOptions(max_skip_frac=0.5)  # the fixture holds 7 broken inputs among 20


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("food")
    return {**write_food101(base / "raw"), "tokenizer": write_clip_tokenizer(base / "clip_tokenizer")}


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> DataConfig:
    cfg = DataConfig.of(name="food101", root=str(tmp_path_factory.mktemp("data")), raw=str(raw["root"]),
                        image_size=16, max_tokens=77, val_fraction=0.25, seed=3, tokenizer=str(raw["tokenizer"]),
                        image_norm="clip")  # fmt: skip
    prepare(cfg, options=BUDGET)
    return cfg


def test_clip_ids_keep_id_zero_and_the_end_of_text_the_tokenizer_appends(raw):
    tok = read_tokenizer(str(raw["tokenizer"]))
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (EOS, EOS, BOS)
    ids = text_ids(str(raw["tokenizer"]), "Apple pie!! <|endoftext|> ramen", 77, any_pad=True)
    assert tok.convert_ids_to_tokens(ids.tolist()) == ["<|startoftext|>", "apple</w>", "pie</w>", "!", "!</w>",
                                                      "ramen</w>", "<|endoftext|>"]  # fmt: skip
    assert ids[3] == 0  # CLIP's "!" is id 0: a token, not padding
    long = text_ids(str(raw["tokenizer"]), "apple " * 100, 77, any_pad=True)
    assert len(long) == 77 and (long[0], long[-1]) == (BOS, EOS) and (long == EOS).sum() == 1
    with pytest.raises(UserError, match=f"pads with id {EOS}"):  # the datasets that pad with 0 still refuse it
        load_tokenizer(str(raw["tokenizer"]))


def test_prep_records_the_pad_id_and_stores_the_tokenizers_ids(prepared, raw):
    data = load_dataset(prepared)
    assert data.input_dims["text"] == [77]
    tok = read_tokenizer(str(raw["tokenizer"]))
    test = data.splits["test"]
    assert test.pad == {"text": EOS}
    texts = {k: v["text"] for k, v in raw["samples"].items() if k not in raw["broken"]}
    expected = sorted(tuple(tok(t)["input_ids"]) for t in texts.values())
    stored = [tuple(test.reader.tokens.ids(i).tolist()) for i in range(len(test.reader.tokens))]
    assert sorted(stored) == expected  # every text's ids as CLIP's tokenizer gives them, BOS and EOS included
    batch = next(iter(test.loader(4, train=False)))
    rows = batch.inputs["text"].tolist()
    lengths = [row.index(EOS) + 1 for row in rows]
    assert len(set(lengths)) > 1 and len(rows[0]) == max(lengths)  # padded to the batch's longest ...
    assert all(set(row[n:]) <= {EOS} and row[0] == BOS for row, n in zip(rows, lengths, strict=True))  # ... with EOS


def test_a_clip_text_batch_gives_each_sample_its_unpadded_feature(prepared):
    torch.manual_seed(0)
    enc = ENCODERS.get("clip_text")([77], config=dict(TINY_CLIP_TEXT)).eval()
    test = load_dataset(prepared).splits["test"]
    ids = next(iter(test.loader(0, train=False))).inputs["text"]  # (B, L), padded with EOS
    lengths = (ids == EOS).int().argmax(-1) + 1
    assert lengths.min() < ids.shape[1]
    with torch.no_grad():
        batch = enc(ids)
        alone = torch.cat([enc(row[:n].unsqueeze(0)) for row, n in zip(ids, lengths.tolist(), strict=True)])
    assert torch.allclose(batch, alone, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1], atol=1e-3)


def test_clip_normalisation_is_the_same_picture_under_other_statistics(prepared):
    clip = load_dataset(prepared).splits["test"]
    imagenet = load_dataset(DataConfig.of(**{**prepared.flat(), "image_norm": "imagenet"})).splits["test"]
    a = next(iter(clip.loader(4, train=False))).inputs["image"]
    b = next(iter(imagenet.loader(4, train=False))).inputs["image"]

    def unnorm(x, mean, std):
        return x * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]

    assert torch.allclose(unnorm(a, CLIP_MEAN, CLIP_STD), unnorm(b, IMAGENET_MEAN, IMAGENET_STD), atol=1e-5)
    assert not torch.allclose(a, b, atol=1e-2)


def test_disk_source_pads_with_the_named_id_and_bert_masks_its_pad_id():
    class Reader:
        def read(self, index, modalities, train, rng):
            return {"text": torch.tensor([[2, 3], [2, 4, 4, 3]][index])}

    default = DiskSource(Reader(), torch.tensor([0, 1]), ["text"])
    seven = DiskSource(Reader(), torch.tensor([0, 1]), ["text"], pad={"text": 7}).select(["text"])
    assert next(iter(default.loader(2, train=False))).inputs["text"].tolist() == [[2, 3, 0, 0], [2, 4, 4, 3]]
    assert next(iter(seven.loader(2, train=False))).inputs["text"].tolist() == [[2, 3, 7, 7], [2, 4, 4, 3]]
    torch.manual_seed(0)
    bert = ENCODERS.get("bert")([16], config=dict(TINY_BERT), pool="mean", pad_id=7).eval()
    with torch.no_grad():
        assert torch.allclose(bert(torch.tensor([[2, 11, 3, 7, 7]])), bert(torch.tensor([[2, 11, 3]])), atol=1e-5)
        assert not torch.allclose(bert(torch.tensor([[2, 11, 3, 0, 0]])), bert(torch.tensor([[2, 11, 3]])), atol=1e-4)


def test_frozen_towers_take_no_gradient_and_stay_in_eval_mode():
    text = ENCODERS.get("clip_text")([77], config=dict(TINY_CLIP_TEXT), freeze=True)
    image = ENCODERS.get("clip_image")([3, 32, 32], freeze=True, config={
        "image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "projection_dim": 32})  # fmt: skip
    for enc, x in ((text, torch.tensor([[BOS, 515, EOS]])), (image, torch.randn(1, 3, 32, 32))):
        enc.train()
        assert not any(p.requires_grad for p in enc.parameters()) and not enc.model.training
        assert enc(x).requires_grad is False
    trainable = ENCODERS.get("clip_text")([77], config=dict(TINY_CLIP_TEXT))
    assert trainable(torch.tensor([[BOS, 515, EOS]])).requires_grad
    with pytest.raises(UserError, match="pool must be eos"):
        ENCODERS.get("clip_text")([77], config=dict(TINY_CLIP_TEXT), pool="cls")


