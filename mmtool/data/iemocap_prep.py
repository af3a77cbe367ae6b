"""IEMOCAP prep: the EmoEvaluation and transcription files read and matched with the sentence wavs and the dialog
videos, each utterance's frames, waveform and token ids made once, then the index, the token arrays and the
manifest. The dataset, its choices and its loader are described in :mod:`mmtool.data.iemocap`.
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmtool.data import PrepOptions
from mmtool.data.clips import ClipSettings, decode_audio, decode_video, output_size, probe, read_head, write_clip
from mmtool.data.clips_cache import cache_key as clip_key
from mmtool.data.clips_cache import clip_manifest, clip_settings, sweep
from mmtool.data.pipeline import run_pipeline
from mmtool.data.pipeline_io import PrepItem, SkipSample, file_sha256, save_npy, write_jsonl
from mmtool.data.registry import dataset_settings
from mmtool.data.settings import IemocapSettings
from mmtool.data.text import (
    OFFSETS,
    PAD_ID,
    TOKENS,
    content_tokens,
    encode,
    load_tokenizer,
    pack,
    resolve_tokenizer,
    tokenizer_fingerprint,
)
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

FORMAT = 1  # bump when the index, the clip files or the token arrays change
NAME = "iemocap"
SESSIONS = (1, 2, 3, 4, 5)
TEST_SESSION = 5  # split=session: the last session's two speakers are the test speakers
CLASSES = ("angry", "happy", "neutral", "sad")  # MLA data/stat_iemo.txt, sorted as its loader sorts them
CODES = {"ang": "angry", "hap": "happy", "neu": "neutral", "sad": "sad"}  # EmoEvaluation code -> class
VIDEO_SLACK = 0.5  # seconds an utterance may end after the video's announced duration (container rounding)
EXAMPLES = 20
INDEX = "index.jsonl"
# EmoEvaluation: "[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]"
_EMO = re.compile(r"^\[\s*(?P<start>\d+(?:\.\d*)?)\s*-\s*(?P<end>\d+(?:\.\d*)?)\s*\]\s+(?P<utt>Ses\S+)\s+"
                  r"(?P<code>[a-z]{3})\s+\[")  # fmt: skip
# transcriptions: "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me."
_TRANS = re.compile(r"^(?P<utt>Ses\S+)\s+\[(?P<start>[\d.]+)-(?P<end>[\d.]+)\]:\s?(?P<text>.*)$")


def class_map(merge_excited: bool) -> dict[str, str]:
    """EmoEvaluation code -> class name; ``exc`` joins ``happy`` when ``merge_excited``."""
    return {**CODES, "exc": "happy"} if merge_excited else dict(CODES)


def parse_evaluation(text: str) -> list[dict[str, Any]]:
    """The utterance lines of an EmoEvaluation file: [{utt, start, end, code}], in file order (the
    annotators' lines, ``C-E1:`` ..., and the header are not utterance lines)."""
    rows = []
    for line in text.splitlines():
        match = _EMO.match(line.strip())
        if match:
            rows.append({"utt": match["utt"], "start": float(match["start"]), "end": float(match["end"]),
                         "code": match["code"]})  # fmt: skip
    return rows


def parse_transcription(text: str) -> dict[str, str]:
    """{utterance: text} of a transcription file (lines of other speakers' noises, ``M: ...``, are not read)."""
    return {m["utt"]: m["text"].strip() for m in map(_TRANS.match, (ln.strip() for ln in text.splitlines())) if m}


def dialog_of(utt: str) -> str:
    """``Ses01F_impro01_F000`` -> ``Ses01F_impro01`` (the utterance's dialog: its name less the speaker turn)."""
    return utt.rsplit("_", 1)[0]


def session_of(utt: str) -> int:
    """``Ses03M_...`` -> 3."""
    match = re.match(r"^Ses(\d{2})", utt)
    if not match:
        raise UserError(f"{utt!r} is not an IEMOCAP utterance name (Ses<NN><F|M>_<dialog>_<turn>)")
    return int(match[1])


def session_split(utt: str) -> str:
    """``test`` for an utterance of Session 5, else ``train`` (the speaker-independent split)."""
    return "test" if session_of(utt) == TEST_SESSION else "train"


# --------------------------------------------------------------------------------------------- raw layout
def resolve_raw(raw: str | None) -> Path:
    """The folder holding ``Session1/`` ... ``Session5/``.

    Raises:
        UserError: none given, not a folder, or no session folder with ``dialog/EmoEvaluation/`` in it.
    """
    where = "Session{1..5}/ of the IEMOCAP release (see data_prep/iemocap.md)"
    if not raw:
        raise UserError(f"{NAME} needs its raw folder: `mmtool prep {NAME} --raw DIR`, DIR holding {where}")
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"--raw {raw}: not a folder (expected {where})")
    if not any((path / f"Session{n}" / "dialog" / "EmoEvaluation").is_dir() for n in SESSIONS):
        raise UserError(f"{path}: no Session<n>/dialog/EmoEvaluation/ (expected {where})")
    return path


@dataclass
class Scan:
    """What the raw folder holds: the utterances of every EmoEvaluation file and their transcripts."""

    raw: Path
    utterances: list[dict[str, Any]] = field(default_factory=list)  # EmoEvaluation rows + session, dialog
    texts: dict[str, str] = field(default_factory=dict)  # utterance -> transcript
    sessions: list[int] = field(default_factory=list)


def _txt_files(folder: Path) -> list[Path]:
    """The ``.txt`` files of a folder (not its sub-folders; not the ``._`` files a macOS copy leaves)."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if e.is_file() and e.name.endswith(".txt")
                      and not e.name.startswith("."))  # fmt: skip


def scan(raw: Path) -> Scan:
    """Every utterance of the EmoEvaluation files and every transcript line under ``raw``."""
    found = Scan(raw)
    for n in SESSIONS:
        dialog = raw / f"Session{n}" / "dialog"
        if not dialog.is_dir():
            continue
        found.sessions.append(n)
        for path in _txt_files(dialog / "EmoEvaluation"):
            rows = parse_evaluation(path.read_text(encoding="utf-8", errors="replace"))
            found.utterances += [{**r, "session": n, "dialog": path.stem} for r in rows]
        for path in _txt_files(dialog / "transcriptions"):
            found.texts.update(parse_transcription(path.read_text(encoding="utf-8", errors="replace")))
    return found


def plan(found: Scan, merge_excited: bool) -> tuple[list[PrepItem], Counter]:
    """One item per utterance of the class set (sorted by name), and the count of the others per code (filtered:
    not a failure)."""
    classes, filtered, items = class_map(merge_excited), Counter(), {}
    for u in found.utterances:
        if u["code"] not in classes:
            filtered[u["code"]] += 1
            continue
        n, dialog = u["session"], u["dialog"]
        wav = f"Session{n}/sentences/wav/{dialog}/{u['utt']}.wav"
        avi = f"Session{n}/dialog/avi/DivX/{dialog}.avi"
        meta = {**u, "class": classes[u["code"]], "wav": wav, "avi": avi, "text": found.texts.get(u["utt"])}
        items[u["utt"]] = PrepItem(u["utt"], session_split(u["utt"]), CLASSES.index(meta["class"]), (wav, avi), meta)
    return [items[k] for k in sorted(items)], filtered


# --------------------------------------------------------------------------------------------- one utterance
def process_utterance(item: PrepItem, out: Path, *, raw: str, settings: ClipSettings, tokenizer: str,
                      max_tokens: int) -> dict:  # fmt: skip
    """Tokenize one utterance's transcript, decode its frames from the dialog video and its waveform from its
    sentence wav, write them under ``out``; returns its index row with its token ids.

    Raises:
        SkipSample: ``no_transcript``, ``empty_text``, ``missing_view`` (no wav or no video file),
            ``outside_video``, or a decoder reason of :mod:`mmtool.data.clips` naming the file.
    """
    meta, root = item.meta, Path(raw)
    if meta["text"] is None:
        raise SkipSample("no_transcript", f"{item.key}: no line in Session{meta['session']}/dialog/transcriptions/"
                         f"{meta['dialog']}.txt")  # fmt: skip
    ids = _token_ids(item.key, meta["text"], tokenizer, max_tokens)
    for kind in ("wav", "avi"):
        if not (root / meta[kind]).exists():
            raise SkipSample("missing_view", f"{item.key}: {meta[kind]} does not exist")
    window = _window(item.key, root / meta["avi"], meta)
    frames = _decoded(meta["avi"], lambda p: decode_video(p, settings, output_size(settings, *window[1]), window[0])[0],
                      root)  # fmt: skip
    wave = _decoded(meta["wav"], lambda p: decode_audio(p, settings), root, needs="audio")
    files = write_clip(out, item.key, frames, wave)
    return {"split": item.split, "label": item.label, "class": meta["class"], "emotion": meta["code"],
            "session": meta["session"], "dialog": meta["dialog"], "start": meta["start"], "end": meta["end"],
            "source": meta["wav"], "video": meta["avi"], "audio_samples": len(wave), "tokens": ids.tolist(),
            **files}  # fmt: skip


def _token_ids(key: str, text: str, tokenizer: str, max_tokens: int) -> np.ndarray:
    tok = load_tokenizer(tokenizer)
    ids = encode(tok, text, max_tokens)
    ids = ids[ids != PAD_ID]  # a literal "[PAD]" in a text would read as padding
    if content_tokens(tok, ids) == 0:
        raise SkipSample("empty_text", f"{key}: the transcript holds no token but special ones: {text[:80]!r}")
    return ids


def _window(key: str, avi: Path, meta: dict) -> tuple[tuple[float, float], tuple[int, int]]:
    """The utterance's (start, end) seconds in the dialog video and the video's (H, W); ``outside_video`` when the
    span is empty or ends past the video."""
    try:
        head, size = read_head(avi)
        found = probe(avi, head, size, needs=("video",))
    except SkipSample as err:
        raise SkipSample(err.reason, f"{meta['avi']}: {err.detail}") from None
    start, end = meta["start"], meta["end"]
    if not 0 <= start < end or (found.seconds is not None and end > found.seconds + VIDEO_SLACK):
        length = f"{found.seconds:.2f} s" if found.seconds is not None else "unknown length"
        raise SkipSample("outside_video", f"{key}: [{start:.4f}, {end:.4f}] s, the video {meta['avi']} {length}")
    return (start, end), (found.height, found.width)


def _decoded(rel: str, decode, root: Path, needs: str = "video"):
    """``decode(path)`` of a raw file, its skip detail naming the file."""
    path = root / rel
    try:
        if needs == "audio":
            head, size = read_head(path)
            probe(path, head, size, needs=("audio",))
        return decode(path)
    except SkipSample as err:
        raise SkipSample(err.reason, f"{rel}: {err.detail}") from None


# --------------------------------------------------------------------------------------------- prep
def cache_key(cfg: DataConfig) -> str:
    """The clip settings, the tokenizer's fingerprint, ``max_tokens`` and the class mapping: what the bytes of the
    cache depend on (the split is drawn at load time)."""
    s = dataset_settings(cfg, IemocapSettings)
    tok = tokenizer_fingerprint(resolve_tokenizer(s.tokenizer, NAME))
    return f"{clip_key(cfg)}-tok-{tok}-L{s.max_tokens}-{'exc' if s.merge_excited else 'hap'}"


def prepare(cfg: DataConfig, out: Path, options: PrepOptions) -> dict:
    """Prepare every utterance of the class set found under ``data.raw`` into ``out``; returns the manifest."""
    s = dataset_settings(cfg, IemocapSettings)
    tokenizer = resolve_tokenizer(s.tokenizer, NAME)
    load_tokenizer(str(tokenizer))  # a bad folder fails here, once, not in every item
    found = scan(resolve_raw(cfg.raw))
    items, filtered = plan(found, s.merge_excited)
    if not items:
        raise UserError(f"{found.raw}: no utterance of the classes {', '.join(CLASSES)} in the EmoEvaluation files")
    (out / "manifest.json").unlink(missing_ok=True)  # incomplete until the new manifest is written
    process = functools.partial(process_utterance, raw=str(found.raw), settings=clip_settings(cfg),
                                tokenizer=str(tokenizer), max_tokens=s.max_tokens)  # fmt: skip
    result = run_pipeline(items, process, out, workers=options.workers, max_skip_frac=options.max_skip_frac,
                          label=f"prep {NAME}", raw=found.raw)  # fmt: skip
    records = sorted(result.records, key=lambda r: r["key"])
    tokens, offsets = pack([np.asarray(r["tokens"], dtype=np.int32) for r in records])
    save_npy(out / TOKENS, tokens)
    save_npy(out / OFFSETS, offsets)
    rows = [{**r, "tokens": len(r["tokens"])} for r in records]
    write_jsonl(out / INDEX, rows)
    sweep(out, rows)
    return _manifest(cfg, out, rows, result, found, filtered, tokenizer, options)


def _manifest(cfg: DataConfig, out: Path, rows: list[dict], result: Any, found: Scan, filtered: Counter,
              tokenizer: Path, options: PrepOptions) -> dict:  # fmt: skip
    s = dataset_settings(cfg, IemocapSettings)
    manifest = clip_manifest(
        cfg, data_format=FORMAT, classes=list(CLASSES), records=rows, skipped=result.skipped, missing=0,
        source={"sessions": found.sessions, "utterances": len(found.utterances), "transcribed": len(found.texts),
                "layout": {"wav": "Session<n>/sentences/wav/<dialog>/<utt>.wav",
                           "video": "Session<n>/dialog/avi/DivX/<dialog>.avi",
                           "labels": "Session<n>/dialog/EmoEvaluation/<dialog>.txt",
                           "text": "Session<n>/dialog/transcriptions/<dialog>.txt"}},
        checksums={name: file_sha256(out / name) for name in (INDEX, TOKENS, OFFSETS)},
        label_order=f"class i = i-th of {', '.join(CLASSES)} (MLA data/stat_iemo.txt, sorted)",
        split_note="stored split: Session 5 = test; the split used is drawn at load (data.split, data.seed, "
        "data.val_fraction)",
    )  # fmt: skip
    stored = manifest["modalities"]
    stored["visual"] = {
        **stored.pop("video"),
        "source": "Session<n>/dialog/avi/DivX/<dialog>.avi, the utterance's [start, end] of its EmoEvaluation line",
        "delivered": "frames concatenated on channels",
    }
    stored["audio"]["source"] = "Session<n>/sentences/wav/<dialog>/<utt>.wav"
    lengths = np.array([r["tokens"] for r in rows] or [0])
    tok = load_tokenizer(str(tokenizer))
    manifest.update(
        input_dims={"audio": manifest["input_dims"]["audio"], "visual": [3 * s.clip_frames, "image_size",
                    "image_size"], "text": [s.max_tokens]},  # fmt: skip
        classes_merged={"happy": ["hap", "exc"] if s.merge_excited else ["hap"]},
        filtered_labels=dict(sorted(filtered.items())),  # utterances outside the class set: not failures
        tokenizer={"folder": str(tokenizer), "fingerprint": tokenizer_fingerprint(tokenizer),
                   "class": type(tok).__name__, "vocab_size": len(tok), "pad_id": PAD_ID, "max_tokens": s.max_tokens},
        token_lengths={"min": int(lengths.min()), "max": int(lengths.max()), "mean": round(float(lengths.mean()), 2)},
        session_counts={str(n): sum(r["session"] == n for r in rows) for n in SESSIONS},
        raw=str(found.raw),
        run={"items": len(result.records) + len(result.skipped), "reused": result.reused,
             "workers": options.workers, "seconds": result.seconds},
    )  # fmt: skip
    return manifest
