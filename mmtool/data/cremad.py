"""CREMA-D: audio-visual emotion clips (Cao et al. 2014; paper 003, MLA), prepared from a local copy.

``mmtool prep cremad --raw DIR`` reads the published copy (github.com/CheyneyComputerScience/CREMA-D, files in
Git LFS: clone, then ``git lfs pull``)::

    DIR/AudioWAV/<key>.wav      # 7,442 clips: 16 kHz mono 16-bit PCM
    DIR/VideoFlash/<key>.flv    # the same clips as Flash video; the frames are read from here
    DIR/VideoMP4/<key>.mp4      # optional: read for a clip only when its .flv is absent

where ``<key>`` is ``<actor>_<sentence>_<emotion>_<level>`` (``1001_DFA_ANG_XX``: actor 1001-1091, one of 12
sentences, emotion ANG/DIS/FEA/HAP/NEU/SAD, intensity LO/MD/HI for sentence IEO, else XX). Other folders of
the repository (``AudioMP3/``, ``processedResults/``, ...) are not read. Prep writes the cache of
:mod:`mmtool.data.clips` (one stacked JPEG of ``clip_frames`` frames and a mono ``.npy`` per clip); here the
frames come from the video file and the waveform from the ``.wav`` of the same clip.

Choices, and why (MLA, paper 003, App. A.3, follows the CREMA-D code of OGM-GE, github
GeWu-Lab/OGM-GE_CVPR2022, ``dataset/CramedDataset.py`` and ``main.py``):

* **Split.** OGM-GE's ``data/CREMAD/train.csv`` (6,698 clips) and ``test.csv`` (744), a clip-level random
  split over all 91 actors (not actor-disjoint), which MLA's Table 1 numbers use. The test list is stored here
  as a bit mask over :func:`published_clips` (:data:`_TEST_MASK`; checked on first use against
  :data:`TEST_LIST_SHA256`); every other published clip is a train clip. val = ``data.val_fraction`` of the
  train clips, drawn with ``data.seed`` at load time (OGM-GE selects on the test set; we never do).
* **Labels.** From the emotion code of the file name; class ``i`` is the ``i``-th of :data:`EMOTIONS`, the
  codes sorted alphabetically (ANG, DIS, FEA, HAP, NEU, SAD). OGM-GE numbers them NEU, HAP, SAD, FEA, DIS, ANG;
  accuracies do not depend on the order.
* **Clips prepared.** The 7,442 published names (:func:`published_clips`). A listed clip with neither file is
  *missing* (``missing.jsonl``, outside the failure budget); one with only its ``.wav`` or only its video is
  skipped as ``missing_view``; a broken file gets the decoder reason of :mod:`mmtool.data.clips`, its detail
  naming the file (a Git LFS pointer left by a clone without ``git lfs pull`` is ``not_media``). Files under
  other names are not prepared; the manifest counts and lists them (``source.unlisted_files``).
* **Frames.** OGM-GE extracts 1 frame per second and MLA feeds "a concatenation of three transformed images"
  (App. A.3): ``clip_frames`` (3) frames sampled uniformly over the clip (the centres of three equal
  segments), resized to ``store_size`` (256) squared. Training takes one random ``image_size`` (224) crop for
  all frames and a random flip; evaluation resizes to 224x224, as OGM-GE's ``Resize((224, 224))``.
* **Visual input.** The modality ``visual`` is the frames concatenated along channels, frame-major:
  (3 * clip_frames, S, S), which mmtool's 2D ``resnet18`` reads with ``3 * clip_frames`` input channels.
* **Audio.** The ``.wav`` resampled to ``sample_rate`` (22,050 Hz, OGM-GE's ``librosa.load(sr=22050)``), mono,
  float32; the loader crops or tiles it to ``audio_seconds`` (3 s, OGM-GE's ``np.tile(samples, 3)[:22050 * 3]``).
  The spectrogram is the audio encoder's ``stft`` input transform with OGM-GE's 512-point DFT and 353-sample
  hop (``recipes/_base/cremad.yaml``).

Deviations, stated plainly: OGM-GE's visual ResNet-18 runs on each frame and averages over time; mmtool's
``resnet18`` sees the frames stacked on channels (MLA's wording). Training crops are plain random crops of
the 256x256 frame, not ``RandomResizedCrop``. The audio window is drawn at random in training (OGM-GE always
tiles from the start) and its spectrogram is ``log1p(|STFT|)`` rather than ``log(|STFT| + 1e-7)``. MLA names
"fbank" features without parameters; the recipes keep OGM-GE's STFT. See ``data_prep/cremad.md``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from mmtool.data import Dataset, DiskSource, PrepOptions
from mmtool.data.clips import ClipSettings, decode_audio, decode_video, output_size, probe, read_head, write_clip
from mmtool.data.clips_cache import cache_key, clip_manifest, clip_settings, load_clips, sweep
from mmtool.data.pipeline import run_pipeline
from mmtool.data.pipeline_io import PrepItem, SkipSample, file_sha256, write_jsonl
from mmtool.data.registry import DATASETS, DatasetSpec, dataset_settings
from mmtool.data.settings import CremadSettings
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

FORMAT = 1  # bump when the cache layout changes: `prep` rebuilds caches of another format
MODALITIES = ("audio", "visual")
EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")  # class i = EMOTIONS[i]: the codes sorted alphabetically
EMOTION_NAMES = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
SENTENCES = ("DFA", "IEO", "IOM", "ITH", "ITS", "IWL", "IWW", "MTI", "TAI", "TIE", "TSI", "WSI")
ACTORS = range(1001, 1092)  # 91 actors
AUDIO_DIR = ("AudioWAV", ".wav")
VIDEO_DIRS = (("VideoFlash", ".flv"), ("VideoMP4", ".mp4"))  # preference order
_NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>XX|LO|MD|HI)$")
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
UNLISTED_SHOWN = 20  # unlisted file names the manifest lists (all are counted)

# The 20 (actor, sentence, emotion) combinations of the recording grid that the published copy lacks.
_ABSENT = frozenset({
    "1002_TIE_NEU_XX", "1008_WSI_ANG_XX", "1008_WSI_DIS_XX", "1008_WSI_FEA_XX", "1008_WSI_HAP_XX",
    "1008_WSI_NEU_XX", "1008_WSI_SAD_XX", "1009_MTI_ANG_XX", "1009_MTI_DIS_XX", "1009_MTI_FEA_XX",
    "1009_MTI_HAP_XX", "1009_MTI_NEU_XX", "1009_MTI_SAD_XX", "1019_ITH_ANG_XX", "1019_ITH_DIS_XX",
    "1019_ITH_FEA_XX", "1019_ITH_HAP_XX", "1019_ITH_NEU_XX", "1019_ITH_SAD_XX", "1076_ITS_NEU_XX",
})  # fmt: skip

# OGM-GE's data/CREMAD/test.csv (commit 65a8324; the file's sha256 is
# 14866c99301fd56fb4a16f8a7048a8a6372a47069aee9f216443bc718be45f1f): bit i (little-endian within each byte) is set
# when published_clips()[i] is a test clip. TEST_LIST_SHA256 is the sha256 of the
# sorted test names, one per line, each followed by a newline.
_TEST_MASK = (
    "KAAAAIAAACAAIAEAAIAgUgACAIAAghIAAAAACAIQIAgAgACEAQIhAEAQCApEAggAACAJAACAEBAGACgAAAAAAIQCIIAACAAAACRC"
    "CAACEBAAIAAiiADAAAggiAAEQIAIYAgAIEEABAYAhBMQAAAQICAYAEKQAAQAgwgAAEgQAACUAIgQAgAAAAQAAAFBAAEAACAAAABI"
    "QEAAAgIAAACAAECAAEAAAABAAAgBAAAAAAAAAQQAOMDASAAAAUGACAASBQQAQAQEICEBCAIAIAAAAAAGACoICANAIACAABBQAAAQ"
    "ACIFAAgABACAAgAQAAAAAAAFQAkMAAIABAAAAAQAECJAABACAQMQADAQCAEikAAQAAAQABgIAEaABIQFgAABQYEACUBAAAQAIAII"
    "QYEkgJAgAAAAQAACIAAAgCABAEBgcAggIAAIAAIMgAAEQAAAUAEDAAIARAIAAVgAQkAAggAAgQTAAAADQEBAICAAlAAAAAIAIEIZ"
    "QQAAAAAAgAAACAAAAAAQVIAQAAIBgAAAYABABABAQAQABAISEUoAAAACBwAAAAAAIUAQAAAAEIAQAAAAEAECARDAQGAAIACgIAQQ"
    "AAGABAAAAAAIiAoAAAgRIIAACAAEAIABBAAgAQwMAAEBAAAACyAABAIAAAgAgBAAAEEAACAAABICAAAEAQAEAAAAAAIAgCiIAACA"
    "IwCAAECyCgEgAAAMAECgCgAEAQCICCAgBBkAAjBAwAwAIAEAICAEIKgAAAAAACEoAAAAADgAEgAgAYAAQiEAkEAIAgCAAAECAAAA"
    "AACAAAACIAMQAAIgIAAAQAAIMAAIAQAAEggABAyQAAACBABSAAQAAAQAgAAEgAEAIBBkAAAAAAAIAAMAAAAEEgQBAAEHiAQAACCA"
    "AgAAEAgAlAAABJEAQEIAAAAgAAAAASBAAQAAAEAAKAYEAIACQCIAAAAAASlSAQAFAEASCABBABBoAgBAQFQAQAAAYAAAAAEAAAAA"
    "EABABAAIIAAhFAAAAAIFAIEAIAEAIBEAAACQAQAAAAAAgGQAAggQAAABAEIABAAgQCAAgACAQgAgAAgAAAAAEAACAgABAEAAEACQ"
    "CAAAAAAAIQABAQoCAAAAACAAAQIBIAECEAEIBCAAAkAAQBAAKAgCBAAACIAACGCAAEIAAACAImAAAAAAAACAABAUAAAIAIBBABSQ"
    "gAkBAIQCABAEAgBECAACAIAAAAAIIIMAgAQAgUAEAA=="
)
TEST_LIST_SHA256 = "55a0050c535df1b68cbff90bdb632a6ddf3f1d178c9ac17cfc7bdd6f8b843286"
SPLIT_SOURCE = "github.com/GeWu-Lab/OGM-GE_CVPR2022 data/CREMAD/train.csv (6698) and test.csv (744)"


# ------------------------------------------------------------------------------------------ the clip list
def grid_names() -> list[str]:
    """Every name of the recording design: 91 actors x (11 sentences x 6 emotions at XX + sentence IEO with
    NEU at XX and the 5 other emotions at LO, MD, HI), 82 a actor, 7,462 in all."""
    names = []
    for actor in ACTORS:
        for sentence in SENTENCES:
            if sentence == "IEO":
                names.append(f"{actor}_IEO_NEU_XX")
                names += [f"{actor}_IEO_{e}_{lv}" for e in EMOTIONS if e != "NEU" for lv in ("LO", "MD", "HI")]
            else:
                names += [f"{actor}_{sentence}_{e}_XX" for e in EMOTIONS]
    return names


@cache
def published_clips() -> tuple[str, ...]:
    """The 7,442 clip names of the published copy, sorted."""
    return tuple(sorted(set(grid_names()) - _ABSENT))


@cache
def test_clips() -> frozenset[str]:
    """The 744 clips of OGM-GE's ``test.csv``."""
    mask = np.unpackbits(np.frombuffer(base64.b64decode(_TEST_MASK), dtype=np.uint8), bitorder="little")
    names = published_clips()
    test = sorted(n for n, bit in zip(names, mask[: len(names)], strict=True) if bit)
    if hashlib.sha256("".join(f"{n}\n" for n in test).encode()).hexdigest() != TEST_LIST_SHA256:
        raise RuntimeError("mmtool.data.cremad: the stored test list does not match its checksum")
    return frozenset(test)


def split_of(key: str) -> str:
    """``test`` for a clip of OGM-GE's test.csv, else ``train``."""
    return "test" if key in test_clips() else "train"


def parse_name(key: str) -> dict[str, Any]:
    """The actor, sentence, emotion and level a clip name encodes; a :class:`UserError` for a malformed one."""
    match = _NAME.match(key)
    if not match or match["emotion"] not in EMOTIONS or match["sentence"] not in SENTENCES:
        raise UserError(f"{key!r} is not a CREMA-D clip name (<actor>_<sentence>_<emotion>_<level>: 1001_DFA_ANG_XX)")
    return {"actor": int(match["actor"]), "sentence": match["sentence"], "emotion": match["emotion"],
            "level": match["level"]}  # fmt: skip


# ----------------------------------------------------------------------------------------- finding files
def _folder_files(folder: Path, suffix: str) -> dict[str, Path]:
    """{stem: path} of the entries of ``folder`` ending in ``suffix`` (any case; folders so named included:
    such a path exists, so its clip is ``unreadable``, not missing)."""
    if not folder.is_dir():
        return {}
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries)
    return {n[: -len(suffix)]: folder / n for n in names if n.lower().endswith(suffix) and len(n) > len(suffix)}


def find_files(raw: Path) -> tuple[dict[str, Path], dict[str, Path], list[str]]:
    """The audio and video file of each published clip under ``raw`` ({key: path} each; the first of
    ``VIDEO_DIRS`` that holds a clip wins) and the sorted names of the files that are not published clips."""
    listed = set(published_clips())
    audio_all = _folder_files(raw / AUDIO_DIR[0], AUDIO_DIR[1])
    video: dict[str, Path] = {}
    unlisted = [f"{AUDIO_DIR[0]}/{p.name}" for k, p in audio_all.items() if k not in listed]
    for folder, suffix in VIDEO_DIRS:
        for key, path in _folder_files(raw / folder, suffix).items():
            if key in listed:
                video.setdefault(key, path)
            else:
                unlisted.append(f"{folder}/{path.name}")
    audio = {k: p for k, p in audio_all.items() if k in listed}
    return audio, video, sorted(unlisted)


def plan_items(raw: Path) -> tuple[list[PrepItem], list[dict], dict[str, Any]]:
    """Match the published clips with their files: (items to prepare, missing clips, what the layout held)."""
    audio, video, unlisted = find_files(raw)
    items, missing = [], []
    folders: Counter = Counter()
    for key in published_clips():
        info = parse_name(key)
        label, split = EMOTIONS.index(info["emotion"]), split_of(key)
        wav, clip = audio.get(key), video.get(key)
        if wav is None and clip is None:
            missing.append({"key": key, "label": label, "split": split,
                            "expected": f"{AUDIO_DIR[0]}/{key}.wav + {VIDEO_DIRS[0][0]}/{key}.flv"})  # fmt: skip
            continue
        rel = {k: p.relative_to(raw).as_posix() for k, p in (("audio", wav), ("video", clip)) if p is not None}
        folders.update(r.split("/")[0] for r in rel.values())
        sources = tuple(rel[k] for k in ("video", "audio") if k in rel)
        meta = {**info, **{f"{k}_path": str(p) for k, p in (("audio", wav), ("video", clip)) if p is not None}, **rel}
        items.append(PrepItem(key, split, label, sources, meta))
    layout = {"folders": dict(sorted(folders.items())), "unlisted_files": len(unlisted),
              "unlisted_shown": unlisted[:UNLISTED_SHOWN]}  # fmt: skip
    return items, missing, layout


# ------------------------------------------------------------------------------------------- one clip
def _open_view(path: Path, rel: str, need: str):
    """Read and probe one file of a clip for its ``need`` stream; a broken file's skip names it."""
    try:
        head, size = read_head(path)
        if head.startswith(_LFS_POINTER):
            raise SkipSample("not_media", "a Git LFS pointer, not the media file (run `git lfs pull` in the copy)")
        return probe(path, head, size, needs=(need,))
    except SkipSample as err:
        raise SkipSample(err.reason, f"{rel}: {err.detail}") from None


def prepare_clip(item: PrepItem, out: Path, settings: ClipSettings) -> dict:
    """Decode one clip's frames (from its video file) and waveform (from its ``.wav``) and write them under
    ``out``; return its index row. Raises :class:`SkipSample` with the reason a clip cannot be used."""
    meta, key = item.meta, item.key
    if "audio" not in meta or "video" not in meta:
        if "audio" not in meta:
            lacking = f"{AUDIO_DIR[0]}/{key}{AUDIO_DIR[1]}"
        else:
            lacking = " nor ".join(f"{folder}/{key}{suffix}" for folder, suffix in VIDEO_DIRS)
        raise SkipSample("missing_view", f"no {lacking} for {meta.get('audio') or meta.get('video')}")
    video, audio = Path(meta["video_path"]), Path(meta["audio_path"])
    found = _open_view(video, meta["video"], "video")
    try:
        frames, decoder = decode_video(video, settings, output_size(settings, found.height, found.width))
    except SkipSample as err:
        raise SkipSample(err.reason, f"{meta['video']}: {err.detail}") from None
    _open_view(audio, meta["audio"], "audio")
    try:
        wave = decode_audio(audio, settings)  # (N,) float32, resampled to sample_rate
    except SkipSample as err:
        raise SkipSample(err.reason, f"{meta['audio']}: {err.detail}") from None
    files = write_clip(out, key, frames, wave)
    return {"actor": meta["actor"], "sentence": meta["sentence"], "emotion": meta["emotion"], "level": meta["level"],
            "label": item.label, "split": item.split, "source": meta["video"], "audio_source": meta["audio"],
            "audio_samples": len(wave), "video_decoder": decoder, **files}  # fmt: skip


# ----------------------------------------------------------------------------------------------- prep
def _raw_root(cfg: DataConfig) -> Path:
    where = "the CREMA-D copy: AudioWAV/ and VideoFlash/ (or VideoMP4/)"
    if cfg.raw is None:
        raise UserError(f"{cfg.name}: give --raw DIR, {where}")
    raw = Path(cfg.raw).expanduser().resolve()
    if not raw.is_dir():
        raise UserError(f"--raw {cfg.raw}: not a folder (expected {where})")
    if not (raw / AUDIO_DIR[0]).is_dir():
        raise UserError(f"{raw / AUDIO_DIR[0]}: not found (--raw DIR holds {where})")
    if not any((raw / folder).is_dir() for folder, _ in VIDEO_DIRS):
        raise UserError(f"{raw / VIDEO_DIRS[0][0]}: not found, nor {VIDEO_DIRS[1][0]}/ (--raw DIR holds {where})")
    return raw


def prepare(cfg: DataConfig, out: Path, options: PrepOptions) -> dict:
    """Prepare every published CREMA-D clip found under ``cfg.raw`` into ``out``; returns the manifest."""
    settings = clip_settings(cfg)
    raw = _raw_root(cfg)
    (out / "manifest.json").unlink(missing_ok=True)  # incomplete until the new manifest is written
    items, missing, layout = plan_items(raw)
    result = run_pipeline(items, partial(prepare_clip, settings=settings), out, workers=options.workers,
                          max_skip_frac=options.max_skip_frac, missing=missing, label=f"prep {cfg.name}",
                          max_missing_frac=options.max_missing_frac, raw=raw)  # fmt: skip
    write_jsonl(out / "index.jsonl", result.records)
    sweep(out, result.records)
    manifest = clip_manifest(
        cfg, data_format=FORMAT, classes=list(EMOTIONS), records=result.records, skipped=result.skipped,
        missing=len(missing), source={"split": SPLIT_SOURCE, "listed_clips": len(published_clips()), **layout},
        checksums={"index.jsonl": file_sha256(out / "index.jsonl")},
        label_order="class i = i-th of the emotion codes sorted alphabetically (ANG, DIS, FEA, HAP, NEU, SAD)",
        split_note="train/test = OGM-GE's train.csv/test.csv; val = data.val_fraction of train, drawn with "
        "data.seed at load",
    )  # fmt: skip
    manifest["class_descriptions"] = [EMOTION_NAMES[e] for e in EMOTIONS]
    stored = manifest["modalities"]
    frames = dataset_settings(cfg, CremadSettings).clip_frames
    stored["visual"] = {**stored.pop("video"), "source": "VideoFlash/<key>.flv (else VideoMP4/<key>.mp4)",
                        "delivered": "frames concatenated on channels, frame-major"}  # fmt: skip
    stored["audio"]["source"] = "AudioWAV/<key>.wav"
    manifest["input_dims"] = {"audio": manifest["input_dims"]["audio"],
                              "visual": [3 * frames, "image_size", "image_size"]}  # fmt: skip
    manifest["run"] = {"reused": result.reused, "decoded": len(items) - result.reused,
                       "workers": options.workers, "seconds": result.seconds}  # fmt: skip
    return manifest


# ------------------------------------------------------------------------------------------- loading
class VisualAudioReader:
    """Reads a clip of the cache as ``audio`` (L,) and ``visual`` (3 * T, S, S): the clip reader's
    ``video`` (3, T, S, S) with its frames concatenated on channels (frame-major). Picklable."""

    def __init__(self, clips: Any) -> None:
        self.clips = clips  # a StackedClipReader

    def read(self, index: int, modalities: Sequence[str], train: bool, rng: np.random.Generator) -> dict:
        wanted = [{"visual": "video"}.get(m, m) for m in modalities]
        got = self.clips.read(index, wanted, train, rng)  # its rng draws do not depend on the modalities
        out = {}
        if "audio" in got:
            out["audio"] = got["audio"]
        if "video" in got:
            clip = got["video"]  # (3, T, S, S)
            out["visual"] = clip.transpose(0, 1).reshape(-1, *clip.shape[-2:]).contiguous()  # (T * 3, S, S)
        return out


def load(cfg: DataConfig, folder: Path) -> Dataset:
    """The prepared cache as a :class:`Dataset` of :class:`DiskSource` splits (train, val, test) with the
    modalities ``audio`` and ``visual``."""
    clips = load_clips(cfg, folder, FORMAT)
    splits = {name: DiskSource(VisualAudioReader(source.reader), source.targets(), MODALITIES,
                               eval_batch_size=source.eval_batch_size, views=source.views)
              for name, source in clips.splits.items()}  # fmt: skip
    _, frames, size, _ = clips.input_dims["video"]
    dims = {"audio": clips.input_dims["audio"], "visual": [3 * frames, size, size]}
    return Dataset(cfg.name, MODALITIES, clips.num_classes, dims, splits, clips.class_names)


DATASETS.register("cremad")(
    DatasetSpec(
        prepare=prepare,
        load=load,
        cache_key=cache_key,
        description="CREMA-D: 6 acted emotions, face video frames + speech of 7,442 clips (prepared from --raw)",
        data_format=FORMAT,
        raw_doc="data_prep/cremad.md",
        # its defaults are recipes/_base/cremad.yaml's prep-time sizes (MLA / OGM-GE: 3 frames, 3 s of 22.05 kHz
        # audio), so `mmtool prep cremad` builds the cache its recipes read (a test checks the two agree)
        settings=CremadSettings,
    )
)
