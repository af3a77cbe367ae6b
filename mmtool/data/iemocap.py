"""IEMOCAP (Busso et al. 2008; paper 003, MLA, Sec. 4.1): acted dyadic conversations, three modalities per
utterance: ``audio`` (the sentence wav), ``visual`` (frames of the dialog video) and ``text`` (the transcript).

``mmtool prep iemocap --raw DIR data.tokenizer=TOK`` reads the release's layout::

    DIR/Session{1..5}/sentences/wav/<dialog>/<utt>.wav        # one wav per utterance (16 kHz mono)
    DIR/Session{n}/dialog/avi/DivX/<dialog>.avi               # the whole dialog's video
    DIR/Session{n}/dialog/transcriptions/<dialog>.txt         # "<utt> [start-end]: text"
    DIR/Session{n}/dialog/EmoEvaluation/<dialog>.txt          # "[start - end]<TAB><utt><TAB><code><TAB>[V, A, D]"

Parsing, the raw layout and prep are in :mod:`mmtool.data.iemocap_prep`; this module loads a prepared cache and
registers the dataset. ``data_prep/iemocap.md`` lists the choices with their sources.

What paper 003 says and what it does not: IEMOCAP is its audio-image-text set (Sec. 4.1, Table 1) with M3AE for
image and text and CAV-MAE for audio on fbank features (App. A.3); it names neither the emotions used nor the split.
Both come from MLA's code (github Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation @4735bbc):

* **Classes.** ``data/stat_iemo.txt``: Neutral, Angry, Sad, Happy; its loader sorts them (class i = i-th of
  angry, happy, neutral, sad). Utterances with any other EmoEvaluation code (frustrated, surprised, fear,
  disgust, other, ``xxx`` = no majority) are filtered, counted per code in the manifest (``filtered_labels``),
  not failures. ``exc`` (excited) joins happy by default (``data.merge_excited``), the common 4-class IEMOCAP
  setting: MLA's lists label Happy utterances of the improvisations annotated mostly excited, so we read its
  Happy as both (an inference from the lists; the code that built them is not released).
* **Split** (load time, ``data.split``). ``random`` (default): MLA's ``data/gen_iemo_txt.py`` shuffles all
  utterances of the five sessions and cuts 60/20/20 (train/dev/test) at the utterance level (speakers overlap);
  its shuffle is unseeded, so ours is drawn from ``data.seed``: test = the last ``n - int(0.6 n) - int(0.2 n)``
  of a permutation, validation = ``data.val_fraction`` of the rest (0.25 in the recipes: MLA's 20% dev).
  ``session``: speaker-independent, Session 5 is test, validation carved from sessions 1-4 likewise.
* **Audio.** The sentence wav at ``sample_rate`` (16 kHz, the files' rate), cropped or tiled at load to
  ``audio_seconds`` (10.24 s: MLA's ``data/extract_fbank.py`` keeps 1024 frames of 10 ms, zero-padding shorter
  ones; we tile, as the clip cache does everywhere). The features are the audio encoder's input transform.
* **Visual.** MLA reads one pre-extracted face image per utterance, the middle one (``dataset/dataset.py``
  Modal3Dataset, ``allimages[len // 2]``); the face crops are not part of the release. We read ``clip_frames``
  (1: the centre frame) whole frames of the dialog video sampled uniformly in the utterance's [start, end] of its
  EmoEvaluation line, resized to ``store_size`` squared, stacked on channels (3 * T, S, S) as CREMA-D's.
* **Text.** The transcript line, tokenized once at prep with ``data.tokenizer`` (MLA: bert-base-uncased,
  ``max_length=256``, no special tokens for M3AE; ours adds [CLS]/[SEP] for BERT, :mod:`mmtool.data.text`).

Broken inputs are skipped into ``skipped.jsonl`` against the failure budget: an utterance without its transcript
line (``no_transcript``), a missing wav or video (``missing_view``), a video that does not decode (the decoder
reasons of :mod:`mmtool.data.clips`), a time span outside its video (``outside_video``), a blank transcript
(``empty_text``), an utterance too short for the frames or audio (``too_short``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmtool.data import Dataset, DiskSource
from mmtool.data.clips_cache import EVAL_BATCH, StackedClipReader, audio_samples, read_checked, validation_rows
from mmtool.data.cremad import VisualAudioReader
from mmtool.data.iemocap_prep import CLASSES, FORMAT, NAME, cache_key, prepare
from mmtool.data.registry import DATASETS, DatasetSpec, dataset_settings
from mmtool.data.settings import IemocapSettings
from mmtool.data.text import TokenStore
from mmtool.data_config import DataConfig

MODALITIES = ("audio", "visual", "text")
FIX = f"re-run `mmtool prep {NAME} --raw DIR --force` with the same data.* settings"


class UtteranceReader:
    """Reads an utterance as ``audio`` (L,) float32, ``visual`` (3 * T, S, S) float32 and ``text`` (L,) int64.

    ``clips`` (a :class:`VisualAudioReader`) reads the first two; ``positions[i]`` is sample ``i``'s row in the
    cache's token arrays. Picklable (the token arrays open in the process that reads).
    """

    def __init__(self, clips: VisualAudioReader, tokens: TokenStore, positions: Sequence[int]) -> None:
        self.clips, self.tokens, self.positions = clips, tokens, list(positions)

    def read(self, index: int, modalities: Sequence[str], train: bool, rng: np.random.Generator) -> dict[str, Any]:
        out = self.clips.read(index, [m for m in modalities if m != "text"], train, rng)
        if "text" in modalities:
            out["text"] = torch.from_numpy(self.tokens.ids(self.positions[index]))
        return out


def split_positions(rows: Sequence[dict], split: str, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """Row positions of train, val and test. ``random``: MLA's 60/20/20 cut of a permutation drawn from ``seed``
    (test = its tail), ``session``: test = Session 5; validation is ``val_fraction`` of the rest, either way."""
    n = len(rows)
    if split == "random":
        order = np.random.default_rng([seed, 5]).permutation(n)
        n_test = n - int(0.6 * n) - int(0.2 * n)  # gen_iemo_txt.py: train_len = int(0.6 n), dev = int(0.2 n)
        test = sorted(order[n - n_test :].tolist())
    else:
        test = [i for i, r in enumerate(rows) if r["split"] == "test"]
    taken = set(test)
    rest = [i for i in range(n) if i not in taken]
    val_at = set(validation_rows(len(rest), val_fraction, seed).tolist())
    return {"train": [p for j, p in enumerate(rest) if j not in val_at],
            "val": [p for j, p in enumerate(rest) if j in val_at], "test": test}  # fmt: skip


def load(cfg: DataConfig, folder: Path) -> Dataset:
    """The prepared cache as train/val/test :class:`DiskSource` splits with ``audio``, ``visual`` and ``text``."""
    s = dataset_settings(cfg, IemocapSettings)
    manifest, rows = read_checked(cfg, folder, FORMAT)
    tokens = TokenStore(folder)
    tokens.check(len(rows), FIX)
    stored = manifest["settings"]
    n_audio = audio_samples(cfg)
    splits = {}
    for name, positions in split_positions(rows, s.split, cfg.val_fraction, cfg.seed).items():
        part = [rows[i] for i in positions]
        clips = StackedClipReader(str(folder), [r["frames"] for r in part], [r["audio"] for r in part],
                                  stored_frames=stored["clip_frames"], store_size=stored["store_size"],
                                  image_size=s.image_size, audio_samples=n_audio, augment=s.augment,
                                  seed=cfg.seed)  # fmt: skip
        targets = torch.tensor([r["label"] for r in part], dtype=torch.long)
        splits[name] = DiskSource(UtteranceReader(VisualAudioReader(clips), tokens, positions), targets, MODALITIES,
                                  eval_batch_size=EVAL_BATCH)  # fmt: skip
    dims = {"audio": [n_audio], "visual": [3 * stored["clip_frames"], s.image_size, s.image_size],
            "text": [int(manifest["tokenizer"]["max_tokens"])]}  # fmt: skip
    return Dataset(NAME, MODALITIES, len(CLASSES), dims, splits, list(manifest["class_names"]))


DATASETS.register(NAME)(
    DatasetSpec(
        prepare=prepare,
        load=load,
        cache_key=cache_key,
        description="IEMOCAP (paper 003, MLA): audio, video frames and transcript per utterance, 4 emotions",
        settings=IemocapSettings,
        data_format=FORMAT,
        raw_doc="data_prep/iemocap.md",
    )
)
