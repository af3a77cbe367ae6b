"""Text inputs: tokenizer folders, cached token ids, per-batch padding, and the BERT encoder with its weights
folders (tiny random configs; nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmtool.data.source import DiskSource, _collate
from mmtool.data.text import PAD_ID, TokenStore, encode, load_tokenizer, pack, tokenizer_fingerprint
from mmtool.errors import UserError
from mmtool.models import ENCODERS
from mmtool.models.pretrained import load_pretrained
from tests.fixtures.food101 import TINY_BERT, write_tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")


def tiny_bert(pool: str = "cls") -> torch.nn.Module:
    torch.manual_seed(0)
    return ENCODERS.get("bert")([16], config=dict(TINY_BERT), pool=pool).eval()


# --------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_from_a_local_folder_adds_cls_and_sep_and_truncates(tokenizer_dir):
    tok = load_tokenizer(str(tokenizer_dir))
    ids = encode(tok, "Apple pie with cream", 16)
    assert ids.dtype == np.int32
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and PAD_ID not in ids.tolist()
    assert tok.convert_ids_to_tokens(ids.tolist()[1:-1]) == ["apple", "pie", "with", "cream"]
    long = encode(tok, "apple " * 40, 8)
    assert len(long) == 8 and long[-1] == tok.sep_token_id


def test_tokenizer_fingerprint_follows_the_files_not_the_place(tokenizer_dir, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in tokenizer_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "model.safetensors").write_bytes(b"weights are not part of it")
    assert tokenizer_fingerprint(copy) == tokenizer_fingerprint(tokenizer_dir)
    (copy / "vocab.txt").write_text((copy / "vocab.txt").read_text() + "extra\n")
    assert tokenizer_fingerprint(copy) != tokenizer_fingerprint(tokenizer_dir)


def test_a_folder_without_tokenizer_or_padding_elsewhere_is_one_clear_error(tmp_path, tokenizer_dir):
    with pytest.raises(UserError, match="no tokenizer could be read"):
        load_tokenizer(str(tmp_path))
    odd = tmp_path / "odd"
    lines = (tokenizer_dir / "vocab.txt").read_text().splitlines()
    write_tokenizer(odd, vocab=[lines[1], lines[0], *lines[2:]])  # [PAD] at id 1
    with pytest.raises(UserError, match="pads with id 1"):
        load_tokenizer(str(odd))


def test_token_store_reads_back_each_sample_at_its_length(tmp_path):
    seqs = [np.array([2, 5, 3], np.int32), np.array([2, 3], np.int32), np.array([2, 7, 8, 9, 3], np.int32)]
    tokens, offsets = pack(seqs)
    np.save(tmp_path / "tokens.npy", tokens)
    np.save(tmp_path / "offsets.npy", offsets)
    store = TokenStore(tmp_path)
    store.check(3, "fix")
    assert [store.ids(i).tolist() for i in range(3)] == [s.tolist() for s in seqs]
    assert store.ids(0).dtype == np.int64
    with pytest.raises(UserError, match="does not describe 4 samples"):
        store.check(4, "fix")


# --------------------------------------------------------------------------------------------- padding
def test_collate_right_pads_integer_sequences_with_zero_and_leaves_the_rest():
    items = [({"text": torch.tensor([2, 5, 3]), "image": torch.ones(3, 2, 2)}, 0, 0),
             ({"text": torch.tensor([2, 6, 7, 8, 3]), "image": torch.zeros(3, 2, 2)}, 1, 1)]  # fmt: skip
    batch = _collate(items)
    assert batch.inputs["text"].tolist() == [[2, 5, 3, 0, 0], [2, 6, 7, 8, 3]]
    assert batch.inputs["text"].dtype == torch.int64 and batch.inputs["image"].shape == (2, 3, 2, 2)
    floats = [({"x": torch.ones(3)}, 0, 0), ({"x": torch.ones(4)}, 0, 1)]
    with pytest.raises(RuntimeError):  # float vectors of different lengths are a bug, never padded
        _collate(floats)


class _Reader:
    def __init__(self, seqs):
        self.seqs = seqs

    def read(self, index, modalities, train, rng):
        return {"text": torch.tensor(self.seqs[index])}


@pytest.mark.parametrize("workers", [0, 1])
def test_disk_source_batches_pad_to_the_batch_longest(workers):
    source = DiskSource(_Reader([[2, 3], [2, 4, 4, 3], [2, 9, 3]]), torch.tensor([0, 1, 0]), ["text"])
    batches = [b.inputs["text"].tolist() for b in source.loader(2, train=False, workers=workers)]
    assert batches == [[[2, 3, 0, 0], [2, 4, 4, 3]], [[2, 9, 3]]]


# --------------------------------------------------------------------------------------------- encoder
def test_bert_feature_of_a_sample_does_not_depend_on_the_padding_of_its_batch():
    for pool in ("cls", "mean"):
        enc = tiny_bert(pool)
        assert enc.out_dim == 32
        short, long = [2, 11, 12, 3], [2, 13, 14, 15, 16, 17, 3]
        alone = enc(torch.tensor([short]))
        batch = enc(torch.tensor([short + [0] * 3, long]))
        assert torch.allclose(alone[0], batch[0], atol=1e-5), pool
        assert not torch.allclose(batch[0], batch[1], atol=1e-3)
        shifted = enc(torch.tensor([[2, 12, 11, 3]]))  # the ids matter: another order, another feature
        assert not torch.allclose(alone, shifted, atol=1e-4)


def test_bert_weights_load_by_name_from_save_pretrained_folders(tmp_path):
    from transformers import BertForPreTraining, BertModel

    for cls, name in ((BertModel, "bare"), (BertForPreTraining, "pretraining")):
        torch.manual_seed(1)
        config = transformers.BertConfig(**TINY_BERT)
        source = (BertModel(config, add_pooling_layer=False) if cls is BertModel else cls(config)).eval()
        source.save_pretrained(tmp_path / name)
        enc = tiny_bert()
        report = load_pretrained(enc, tmp_path / name, "model.encoders.text.pretrained")
        theirs = (source if cls is BertModel else source.bert).state_dict()
        own = enc.bert.state_dict()
        assert set(own) <= set(theirs)
        assert all(torch.equal(own[k], theirs[k]) for k in own)
        if cls is BertModel:  # the encoder's own layout: every weight by name, nothing missing, nothing left over
            assert set(own) == set(theirs) and report["ignored"] == []
        else:  # the pre-training heads and the pooler are reported as left out
            assert report["ignored"] and all(k.startswith(("cls.", "bert.pooler.")) for k in report["ignored"]), report
        ids = torch.tensor([[2, 11, 12, 3]])
        bert = source if cls is BertModel else source.bert
        assert torch.allclose(enc(ids), bert(input_ids=ids).last_hidden_state[:, 0], atol=1e-6)


def test_bert_weights_of_another_architecture_or_a_folder_for_a_cnn_are_refused(tmp_path):
    from transformers import BertModel

    other = BertModel(transformers.BertConfig(**{**TINY_BERT, "num_hidden_layers": 3}))
    other.save_pretrained(tmp_path / "three")
    with pytest.raises(UserError, match="num_hidden_layers 3, the encoder 2"):
        load_pretrained(tiny_bert(), tmp_path / "three", "model.encoders.text.pretrained")
    cnn = ENCODERS.get("mlp")(4, hidden=(3,))
    with pytest.raises(UserError, match="weights folders are for the text encoder"):
        load_pretrained(cnn, tmp_path / "three", "model.encoders.x.pretrained")


def test_bert_config_typos_and_too_long_inputs_are_user_errors():
    with pytest.raises(UserError, match="no field 'hiden_size'"):
        ENCODERS.get("bert")([16], config={"hiden_size": 32})
    with pytest.raises(UserError, match="more than its 64 positions"):
        ENCODERS.get("bert")([65], config=dict(TINY_BERT))
