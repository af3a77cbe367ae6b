"""Text as an input: a tokenizer read from a local folder, token ids cached once at prep, read back per sample.

A text modality is a 1-D sequence of token ids. Prep tokenizes each text once with the tokenizer of
``data.tokenizer`` (a local folder in Hugging Face's layout, read by ``transformers.AutoTokenizer`` with
``local_files_only=True``: nothing is downloaded) and stores the ids of every sample in the cache as two
arrays: ``tokens.npy`` (int32, all samples' ids end to end) and ``offsets.npy`` (int64, N + 1 starts), so a
sample is ``tokens[offsets[i]:offsets[i + 1]]`` at its own length. The loader pads per batch
(:func:`mmtool.data.source._collate`: 1-D integer inputs of different lengths are right-padded to the batch's
longest with the split's pad id, 0 unless the dataset says otherwise), and the text encoder masks the padding.

Design notes
  * Padding id: the tokenizer's own, recorded in the cache's manifest (``tokenizer.pad_id``, read back by
    :func:`pad_id`; the files it comes from are in the cache key through :func:`tokenizer_fingerprint`). BERT's
    ``[PAD]`` is id 0 in every released BERT vocabulary (the first line of its ``vocab.txt``), and the datasets
    whose loaders pad with 0 (MVSA, IEMOCAP) read the tokenizer with :func:`load_tokenizer`, which refuses any
    other pad id. Food-101 reads it with :func:`read_tokenizer` (any pad id) and pads its batches with the
    recorded one: CLIP's BPE tokenizer pads with ``<|endoftext|>`` (49407), and its id 0 is the token "!", which
    must stay. The encoders mask what they must: BERT positions whose id is the pad id, CLIP every position after
    the first end-of-text token (:mod:`mmtool.models.clip`).
  * Prep drops the pad id from a text's ids wherever the tokenizer did not put it itself: a literal "[PAD]" in a
    BERT text would read as padding, a literal "<|endoftext|>" in a CLIP text as its end.
  * Special tokens are added (``[CLS] ... [SEP]`` for BERT), the form BERT was pre-trained on; ``max_tokens``
    counts them. (MLA's data/extract_token.py tokenizes without special tokens for M3AE, whose inputs carry
    none.)
  * The cache depends on the tokenizer's files, not on where they are: :func:`tokenizer_fingerprint` hashes
    the folder's tokenizer files (weights are skipped), and the cache key carries it.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from mmtool.errors import UserError

PAD_ID = 0  # BERT's [PAD]: what the collate function pads 1-D integer inputs with unless a split names its own
TOKENS, OFFSETS = "tokens.npy", "offsets.npy"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".ckpt")


def resolve_tokenizer(path: str | None, dataset: str) -> Path:
    """The tokenizer folder ``data.tokenizer`` names (relative to the working directory).

    Raises:
        UserError: none given, or not a folder.
    """
    if not path:
        raise UserError(
            f"{dataset} needs a tokenizer: data.tokenizer=DIR, a local folder with a Hugging Face tokenizer "
            "(e.g. bert-base-uncased's vocab.txt and tokenizer_config.json; nothing is downloaded)"
        )
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"data.tokenizer: {folder} is not a folder (a local Hugging Face tokenizer folder)")
    return folder


def tokenizer_fingerprint(folder: Path) -> str:
    """sha256 (16 hex digits) of the names and bytes of the folder's files, model weights left out: what the
    token ids depend on, wherever the folder lies."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix in WEIGHT_SUFFIXES:
            continue
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def read_tokenizer(folder: str) -> Any:
    """``AutoTokenizer.from_pretrained(folder, local_files_only=True)``, once per process, whatever id it pads with
    (checked to have one: a batch is padded with it).

    Raises:
        UserError: transformers missing, the folder holds no readable tokenizer, or the tokenizer has no pad token.
    """
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError("text inputs need transformers: pip install -e '.[text]'") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as err:  # noqa: BLE001  (transformers raises several types for a bad folder)
        raise UserError(f"data.tokenizer: no tokenizer could be read from {folder} ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''})") from None  # fmt: skip
    if tokenizer.pad_token_id is None:
        raise UserError(f"data.tokenizer: {folder} has no pad token (tokenizer_config.json: pad_token); text batches "
                        "are padded with it")  # fmt: skip
    return tokenizer


def load_tokenizer(folder: str) -> Any:
    """:func:`read_tokenizer`, checked to pad with :data:`PAD_ID` (the datasets whose batches pad with 0: MVSA,
    IEMOCAP).

    Raises:
        UserError: as :func:`read_tokenizer`, or its pad id is not 0.
    """
    tokenizer = read_tokenizer(folder)
    if tokenizer.pad_token_id != PAD_ID:
        raise UserError(
            f"data.tokenizer: {folder} pads with id {tokenizer.pad_token_id}; mmtool pads text batches with "
            f"{PAD_ID} (BERT's [PAD]) and masks that id"
        )
    return tokenizer


def encode(tokenizer: Any, text: str, max_tokens: int) -> np.ndarray:
    """(L,) int32 token ids of ``text`` with the tokenizer's special tokens, truncated to ``max_tokens``."""
    ids = tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_tokens)["input_ids"]
    return np.asarray(ids, dtype=np.int32)


def content_tokens(tokenizer: Any, ids: np.ndarray) -> int:
    """How many of ``ids`` are not special tokens ([CLS], [SEP], [PAD], ...)."""
    special = set(tokenizer.all_special_ids)
    return sum(1 for i in ids.tolist() if i not in special)


def text_ids(tokenizer: str, text: str, max_tokens: int, any_pad: bool = False) -> np.ndarray | None:
    """(L,) int32 ids of ``text`` as prep stores them (:func:`encode`, then the pad id dropped wherever the
    tokenizer did not put it itself: a literal "[PAD]" in a BERT text would read as padding, a literal
    "<|endoftext|>" in a CLIP text as its end), or None when they hold no token but special ones (an empty text).
    ``any_pad``: the tokenizer may pad with any id (:func:`read_tokenizer`); otherwise with 0 only."""
    tok = read_tokenizer(tokenizer) if any_pad else load_tokenizer(tokenizer)
    ids = encode(tok, text, max_tokens)
    pad = tok.pad_token_id
    keep = ids != pad
    if pad in _framing_ids(tok):  # CLIP: pad = <|endoftext|>, which the tokenizer itself appends
        added = tok(text, add_special_tokens=True, truncation=True, max_length=max_tokens,
                    return_special_tokens_mask=True)["special_tokens_mask"]  # fmt: skip
        keep |= np.asarray(added, dtype=bool)
    ids = ids[keep]
    return ids if content_tokens(tok, ids) else None


def _framing_ids(tok: Any) -> set[int]:
    """The ids the tokenizer adds around a text ([CLS]/[SEP], <|startoftext|>/<|endoftext|>)."""
    return {getattr(tok, f"{k}_token_id", None) for k in ("bos", "eos", "cls", "sep")} - {None}


def tokenizer_info(folder: Path, max_tokens: int, lengths: np.ndarray, any_pad: bool = False) -> dict[str, Any]:
    """The manifest's ``tokenizer`` and ``token_lengths`` entries: what the ids were made with (``pad_id``: what a
    batch pads them with, :func:`pad_id`), and how long the stored texts are (``lengths``: one per sample, the
    special tokens included)."""
    tok = read_tokenizer(str(folder)) if any_pad else load_tokenizer(str(folder))
    lengths = np.asarray(lengths if len(lengths) else [0])
    return {
        "tokenizer": {"folder": str(folder), "fingerprint": tokenizer_fingerprint(folder), "class": type(tok).__name__,
                      "vocab_size": len(tok), "pad_id": int(tok.pad_token_id), "special_tokens": True,
                      "max_tokens": max_tokens},
        "token_lengths": {"min": int(lengths.min()), "max": int(lengths.max()), "mean": round(float(lengths.mean()), 2),
                          "at_max_tokens": int((lengths == max_tokens).sum())},
    }  # fmt: skip


def pad_id(manifest: dict) -> int:
    """The id a cache's texts are padded with in a batch: its manifest's ``tokenizer.pad_id`` (0 where absent)."""
    return int(manifest.get("tokenizer", {}).get("pad_id", PAD_ID))


def pack(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length id sequences -> (tokens int32 (sum L,), offsets int64 (N + 1,))."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.concatenate(sequences).astype(np.int32) if sequences else np.zeros(0, dtype=np.int32)
    return tokens, offsets


class TokenStore:
    """Reads sample ``i``'s ids from a cache's ``tokens.npy``/``offsets.npy``; picklable, opened (memory-mapped)
    on first use in the process that reads."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "_arrays": None}

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = (np.load(self.folder / TOKENS, mmap_mode="r"), np.load(self.folder / OFFSETS))
        return self._arrays

    def __len__(self) -> int:
        return len(self._open()[1]) - 1

    def ids(self, index: int) -> np.ndarray:
        """(L,) int64 ids of sample ``index`` (int64: what embedding lookups take)."""
        tokens, offsets = self._open()
        return np.asarray(tokens[offsets[index] : offsets[index + 1]], dtype=np.int64)

    def check(self, n: int, fix: str) -> None:
        """The arrays agree with each other and with ``n`` samples (shapes only: no data is hashed).

        Raises:
            UserError: a missing file or inconsistent shapes.
        """
        try:
            tokens, offsets = self._open()
        except (OSError, ValueError) as err:
            raise UserError(f"{self.folder}: token arrays unreadable ({type(err).__name__}) ({fix})") from None
        ok = offsets.ndim == 1 and len(offsets) == n + 1 and offsets[0] == 0 and int(offsets[-1]) == len(tokens)
        if not ok or bool(np.any(np.diff(offsets) <= 0)):
            raise UserError(f"{self.folder / OFFSETS} does not describe {n} samples of {self.folder / TOKENS} ({fix})")
