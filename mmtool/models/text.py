"""Text encoders: BERT on token ids (``bert`` in ENCODERS), weights from a local transformers folder.

``bert`` is ``transformers.BertModel`` built from a config: BERT-base (``BertConfig()``'s defaults are
bert-base-uncased's: 12 layers, hidden 768, 12 heads, vocabulary 30,522, 512 positions) with the recipe's
``args: {config: {...}}`` fields over them (tests build a 2-layer, 32-wide one). Its input is a (B, L) batch
of token ids right-padded with 0 (:mod:`mmtool.data.text`); the attention mask is ``ids != 0``, so padding
never changes a sample's feature. ``out_dim`` is the hidden size.

Weights: ``pretrained: DIR`` on the encoder (the key the image encoders use for torchvision files), where DIR
is a transformers model folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``, e.g.
bert-base-uncased's). :func:`mmtool.models.pretrained.load_pretrained` hands a folder to :func:`load_folder`,
which reads it with ``BertModel.from_pretrained(DIR, local_files_only=True)`` (so the layouts transformers
knows load: a bare ``BertModel``, or ``BertForPreTraining``'s ``bert.`` prefix with its ``cls.`` heads left
out) and fails on a missing weight or an architecture other than the encoder's. As for the image encoders the
weights are read once, when a run starts; checkpoints carry them from then on, and the spec alone rebuilds
the model.

Feature (``pool``): ``cls`` (default) is the final hidden state of the [CLS] token, the sequence
representation BERT's classification fine-tuning feeds to its classifier (Devlin et al. 2019, Sec. 3);
``mean`` averages the final hidden states of the non-padding tokens. BERT's ``pooler`` (a tanh layer on
[CLS] trained for next-sentence prediction) is not used. MLA's code (github Cecile-hi/Multimodal-Learning-
with-Alternating-Unimodal-Adaptation @11ae1ee, models/basic_model.py M3AEClassifier) encodes Food-101's text
with M3AE, not BERT, and averages its token representations; ``mean`` is the closer analogue of that, ``cls``
is BERT's own (our choice, docs: data_prep/food101.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmtool.errors import UserError
from mmtool.models.encoders import ENCODERS

POOLS = ("cls", "mean")
ARCHITECTURE = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size")  # fmt: skip


def bert_config(overrides: dict[str, Any] | None) -> Any:
    """``BertConfig`` with ``overrides`` over BERT-base's defaults.

    Raises:
        UserError: transformers missing, or a field BertConfig does not have.
    """
    try:
        from transformers import BertConfig
    except ImportError:
        raise UserError("encoder 'bert' needs transformers: pip install -e '.[text]'") from None
    known = BertConfig().to_dict()
    unknown = sorted(set(overrides or {}) - set(known))
    if unknown:
        raise UserError(f"encoder 'bert': args.config has no field {unknown[0]!r} (BertConfig fields: "
                        f"{', '.join(k for k in ARCHITECTURE)}, hidden_dropout_prob, ...)")  # fmt: skip
    return BertConfig(**(overrides or {}))


@ENCODERS.register("bert")
class BertEncoder(nn.Module):
    """BERT on (B, L) token ids padded with 0 -> (B, hidden) features (module docstring).

    Args:
        in_dim: the per-sample input shape, ``[max_tokens]`` (the longest sequence the data holds).
        config: BertConfig fields over BERT-base's (e.g. ``{num_hidden_layers: 2, hidden_size: 32}``).
        pool: ``cls`` ([CLS]'s final hidden state) or ``mean`` (mean over non-padding tokens).
        pad_id: the id the batches are padded with (the tokenizer's, the cache manifest's ``tokenizer.pad_id``):
            0, BERT's [PAD], unless a tokenizer pads with another.
    """

    def __init__(self, in_dim: int | Sequence[int], config: dict[str, Any] | None = None, pool: str = "cls",
                 pad_id: int = 0) -> None:  # fmt: skip
        super().__init__()
        from transformers import BertModel

        if pool not in POOLS:
            raise UserError(f"encoder 'bert': pool must be one of {', '.join(POOLS)}, got {pool!r}")
        cfg = bert_config(config)
        length = int(in_dim) if isinstance(in_dim, int) else int(in_dim[-1])
        if length > cfg.max_position_embeddings:
            raise UserError(f"encoder 'bert': inputs of {length} tokens, more than its {cfg.max_position_embeddings} "
                            "positions (data.max_tokens)")  # fmt: skip
        self.bert = BertModel(cfg, add_pooling_layer=False)
        self.pool = pool
        self.pad_id = int(pad_id)
        self.out_dim = cfg.hidden_size

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) int64 -> (B, hidden)
        mask = ids != self.pad_id  # (B, L): padding is the tokenizer's pad id (mmtool.data.text)
        hidden = self.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, hidden)
        if self.pool == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def load_folder(encoder: nn.Module, folder: Path, where: str) -> dict[str, list[str]]:
    """Load the transformers model folder ``folder`` into a :class:`BertEncoder`; returns the folder's weights
    left out (``cls.*`` pre-training heads, the pooler) as ``ignored``.

    Raises:
        UserError: not a BERT encoder, another architecture, a missing weight or an unreadable folder.
    """
    if not isinstance(encoder, BertEncoder):
        raise UserError(f"{where}: {folder} is a folder; weights folders are for the text encoder 'bert' "
                        f"(this encoder is {type(encoder).__name__}: give a weights file)")  # fmt: skip
    own = encoder.bert.config
    _check_architecture(folder, own, where)
    from transformers import BertModel

    try:
        loaded, info = BertModel.from_pretrained(str(folder), config=own, local_files_only=True,
                                                 output_loading_info=True, add_pooling_layer=False)  # fmt: skip
    except Exception as err:  # noqa: BLE001  (transformers raises several types for a bad folder)
        raise UserError(f"{where}: no BERT weights could be read from {folder} ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''})") from None  # fmt: skip
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise UserError(f"{where}: {folder} lacks {len(missing)} of the encoder's weights, e.g. {missing[0]!r}")
    if info.get("mismatched_keys"):
        raise UserError(f"{where}: {folder} has weights of other shapes, e.g. {info['mismatched_keys'][0]!r}")
    encoder.bert.load_state_dict(loaded.state_dict())
    return {"ignored": sorted(info.get("unexpected_keys") or []), "adapted": []}


def _check_architecture(folder: Path, own: Any, where: str) -> None:
    """The folder's ``config.json`` names the encoder's architecture (a clear message before any shape error)."""
    import json

    path = Path(folder) / "config.json"
    if not path.is_file():
        return
    theirs = json.loads(path.read_text())
    for key in ARCHITECTURE:
        if key in theirs and theirs[key] != getattr(own, key):
            raise UserError(
                f"{where}: {path} has {key} {theirs[key]}, the encoder {getattr(own, key)} (set "
                f"model.encoders.<modality>.args.config.{key}: {theirs[key]})"
            )
