"""Audio-visual clips from video files: probing, decoding, the cache files and reading them back.

Shared by the families that prepare clips of a video dataset into one cache layout (VGG-Sound, CREMA-D,
Kinetics-400, Kinetics-Sounds); what differs between them (the annotation files, file naming, splits)
stays in their own modules. For one clip, prep

* reads the file's first bytes and tells a broken download from other damage (:func:`probe`): an MP4 is a
  chain of (size, type) boxes, and an interrupted download ends inside one or lacks the ``moov`` index box
  that encoders write last; so ``truncated`` is told from ``corrupt`` (opens but does not decode) and from
  ``not_media`` (no known container signature at all);
* decodes ``clip_frames`` frames sampled uniformly over the clip, resized by the decoder either to
  ``store_size`` squared (VGG-Sound) or so that the short side is ``store_size`` with the aspect ratio kept
  (Kinetics, as PySlowFast resizes), and the audio track at ``sample_rate``, mono, float32;
* writes the frames as ONE vertically stacked JPEG (``frames/<xx>/<key>.jpg``, fixed settings) and the
  audio as ``.npy`` (``audio/<xx>/<key>.npy``), each atomically.

A clip with fewer than ``MIN_FRAMES`` frames or ``MIN_AUDIO_SECONDS`` of audio is ``too_short``. Outputs are
deterministic: the video decoder runs one thread, JPEGs are written with fixed settings, ``.npy`` files carry
no timestamps, and skip details are scrubbed of decord's time-of-day stamps and of absolute paths.

Loading: :func:`load_clips` checks a cache cheaply (format, the index's checksum, label counts, that index
paths stay inside the cache, and the files of a few clips) and returns train/val/test
:class:`~mmtool.data.source.DiskSource` splits read by :class:`StackedClipReader`; the validation split is
drawn from the train clips with ``data.seed`` at load time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmtool.data import Dataset, DiskSource, RootGuard, check_labels
from mmtool.data.pipeline import SkipSample, file_sha256, save_npy
from mmtool.data.registry import dataset_settings
from mmtool.data.settings import AudioVisualSettings
from mmtool.data.transforms import IMAGENET_MEAN, IMAGENET_STD, center_crop, hflip, normalize, random_crop, resize
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from mmtool.files import atomic_write_bytes

MODALITIES = ("video", "audio")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv")  # preference order
JPEG_QUALITY = 90
JPEG_SUBSAMPLING = 2  # PIL's code for 4:2:0 chroma, the JPEG default; fixed so the bytes are
MIN_FRAMES = 8
MIN_AUDIO_SECONDS = 1.0
MAX_AUDIO_FACTOR = 2.0  # stored audio is at most this many times audio_seconds
EVAL_BATCH = 24  # the paper's batch size; a (24, 3, 32, 224, 224) float32 batch is 460 MB
SPOT_CHECKS = 8  # cached clips whose files `load` checks (existence and size, no hashing)
SPLITS = ("train", "test")  # stored in a clip cache; val is drawn from train at load time
_BMFF_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp"}


# ------------------------------------------------------------------------------------------- one clip
@dataclass(frozen=True)
class ClipSettings:
    """What prep makes of one clip (the cache key's settings)."""

    store_size: int
    clip_frames: int
    sample_rate: int
    max_audio_samples: int
    keep_aspect: bool = False  # True: short side = store_size, aspect ratio kept; False: store_size squared


@dataclass(frozen=True)
class Probe:
    """What the container says before decoding: the first video stream's frame size and the duration."""

    height: int
    width: int
    seconds: float | None  # None where the container does not say


UNTRIMMED_SLACK = 2.0  # seconds a file may run past its clip's bounds before it is read as the whole video


def decode_clip(path: Path, out: Path, key: str, settings: ClipSettings,
                bounds: tuple[float, float] | None = None) -> dict:  # fmt: skip
    """Decode the clip file ``path`` and write its frames JPEG and audio ``.npy`` under ``out`` as ``key``.

    ``bounds``: (start, end) seconds of the clip in its source video, where the annotations give them. A
    file that runs more than ``UNTRIMMED_SLACK`` seconds longer than that and reaches ``end`` is the whole
    video (an untrimmed download): only [start, end) of it is read, and the row records ``cut``.
    Returns the files' part of an index row. Raises :class:`SkipSample` with the reason a broken clip
    cannot be used.
    """
    head, size = read_head(path)
    found = probe(path, head, size)
    window = untrimmed_window(found.seconds, bounds)
    shape = output_size(settings, found.height, found.width)
    frames, decoder = decode_video(path, settings, shape, window)  # (T, H, W, 3) uint8
    wave = decode_audio(path, settings, window)  # (N,) float32
    files = write_clip(out, key, frames, wave)
    cut = {"cut": list(window)} if window else {}
    return {"audio_samples": len(wave), "video_decoder": decoder, **cut, **files}


def untrimmed_window(seconds: float | None, bounds: tuple[float, float] | None) -> tuple[float, float] | None:
    """``bounds`` when a file of ``seconds`` is the whole source video rather than the clip, else None."""
    if bounds is None or seconds is None:
        return None
    start, end = bounds
    return bounds if seconds > end - start + UNTRIMMED_SLACK and seconds >= end - UNTRIMMED_SLACK else None


def read_head(path: Path) -> tuple[bytes, int]:
    """The first bytes and the size of a clip file; unreadable and empty files are skipped here."""
    if path.is_dir():
        raise SkipSample("unreadable", "a directory, not a file")
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(4096)
    except OSError as err:
        raise SkipSample("unreadable", f"{type(err).__name__}: {err.strerror}") from None
    if size == 0:
        raise SkipSample("zero_byte", "0 bytes")
    return head, size


def container_family(head: bytes) -> str | None:
    """The container a file's first bytes announce (``isobmff`` for mp4/mov/m4v), or None."""
    if head[4:8] in _BMFF_BOXES:
        return "isobmff"
    signatures = {b"\x1a\x45\xdf\xa3": "matroska", b"FLV": "flv", b"OggS": "ogg", b"\x30\x26\xb2\x75": "asf",
                  b"\x00\x00\x01\xba": "mpeg-ps"}  # fmt: skip
    for magic, family in signatures.items():
        if head.startswith(magic):
            return family
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:1] == b"\x47" and head[188:189] == b"\x47":
        return "mpeg-ts"
    return None


def bmff_truncated(path: Path, size: int) -> bool:
    """True when an ISO BMFF file's top-level boxes run past its end or its ``moov`` index is absent:
    the signs of an interrupted download (encoders write ``moov`` last unless the file was optimised)."""
    pos, has_index = 0, False
    with open(path, "rb") as handle:
        while pos < size:
            handle.seek(pos)
            head = handle.read(16)
            length = int.from_bytes(head[:4], "big") if len(head) >= 8 else -1
            if length == 1:  # a 64-bit size follows the type
                length = int.from_bytes(head[8:16], "big") if len(head) == 16 else -1
            elif length == 0:  # the last box, running to the end of the file
                length = size - pos
            if length < 0:
                return True  # the file ends inside a box header
            if length < 8:
                return False  # not a box chain this walk understands: the decoders will judge
            has_index |= head[4:8] == b"moov"
            pos += length
    return pos > size or not has_index


def probe(path: Path, head: bytes, size: int, needs: Sequence[str] = MODALITIES) -> Probe:
    """Skip a clip whose container is not media, cut short, undecodable, or lacks a stream we need; else
    return the frame size and duration the container announces.

    ``needs``: the streams the file must hold, ``video`` and/or ``audio`` (both by default; a dataset whose
    audio and video come in separate files probes each file for its own stream).
    """
    import av

    family = container_family(head)
    truncated = family == "isobmff" and bmff_truncated(path, size)
    try:
        with av.open(str(path)) as box:
            n_video, n_audio = len(box.streams.video), len(box.streams.audio)
            context = box.streams.video[0].codec_context if n_video else None
            found = Probe(context.height if context else 0, context.width if context else 0,
                          box.duration / 1e6 if box.duration else None)  # fmt: skip
    except (av.error.FFmpegError, ValueError, OSError) as err:
        if family is None:
            raise SkipSample("not_media", "no audio/video container signature") from None
        if truncated:
            raise SkipSample("truncated", f"{family}: the file ends inside its boxes or has no 'moov' index") from None
        raise SkipSample("corrupt", f"{family} container does not open: {av_message(err)}") from None
    if truncated:
        raise SkipSample("truncated", f"{family}: the file ends inside its boxes or has no 'moov' index")
    if n_video == 0 and n_audio == 0:
        raise SkipSample("not_media", f"{family or 'container'} without audio or video streams")
    if n_video == 0 and "video" in needs:
        raise SkipSample("no_video", f"{n_audio} audio stream(s), no video stream")
    if n_audio == 0 and "audio" in needs:
        raise SkipSample("no_audio", f"{n_video} video stream(s), no audio stream")
    return found


def av_message(err: Exception) -> str:
    return f"{type(err).__name__}: {getattr(err, 'strerror', None) or 'error'}"


def decoder_message(err: Exception, path: Path) -> str:
    """A decoder error without what varies between runs: decord's time-of-day stamp, build paths, the
    clip's absolute path (skip records must be byte-identical across runs and machines)."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[-1]
    text = re.sub(r"\[\d{2}:\d{2}:\d{2}\]\s*", "", text)
    text = re.sub(r"\S*/src/", "", text.replace(str(path), "<clip>"))
    return f"{type(err).__name__}: {text}"[:300]


def uniform_indices(n: int, count: int) -> np.ndarray:
    """``count`` frame indices spread evenly over ``n`` frames: the centre of each of ``count`` equal
    segments (frames repeat when ``n < count``)."""
    return np.minimum(((np.arange(count) + 0.5) * n / count).astype(np.int64), n - 1)


def window_frames(n: int, fps: float, window: tuple[float, float] | None) -> tuple[int, int]:
    """The [first, last) frames of ``window`` (seconds) among ``n`` frames at ``fps``; all of them without one."""
    if window is None or not fps > 0:
        return 0, n
    first = min(n, max(0, math.floor(window[0] * fps)))
    return first, min(n, max(first, math.ceil(window[1] * fps)))


def output_size(settings: ClipSettings, height: int, width: int) -> tuple[int, int]:
    """(H, W) the decoder resizes frames to: ``store_size`` squared, or the short side ``store_size`` with
    the source's aspect ratio (rounded to whole pixels)."""
    s = settings.store_size
    if not settings.keep_aspect:
        return s, s
    if height <= 0 or width <= 0:
        raise SkipSample("corrupt", f"video stream without a frame size ({width}x{height})")
    if height <= width:
        return s, max(1, round(width * s / height))
    return max(1, round(height * s / width)), s


def decode_video(path: Path, settings: ClipSettings, shape: tuple[int, int],
                 window: tuple[float, float] | None = None) -> tuple[np.ndarray, str]:  # fmt: skip
    """(T, H, W, 3) uint8 frames sampled uniformly (within ``window`` seconds when given), resized by the
    decoder to ``shape`` (H, W); and which decoder made them.

    decord 0.6 cannot copy frames out for a few small output widths (8, 12, 16, 24, 48, 72 with current
    FFmpeg: "DECORDArrayCopyFromTo: The size must exactly match"); PyAV decodes those.
    """
    from decord import VideoReader

    try:
        reader = VideoReader(str(path), width=shape[1], height=shape[0], num_threads=1)
        first, last = window_frames(len(reader), reader.get_avg_fps(), window)
        check_frames(last - first)
        picked = (first + uniform_indices(last - first, settings.clip_frames)).tolist()
        return reader.get_batch(picked).asnumpy(), "decord"
    except SkipSample:
        raise
    except Exception as err:  # noqa: BLE001  (decord raises DECORDError and RuntimeError alike)
        if "DECORDArrayCopyFromTo" not in str(err):
            raise SkipSample("corrupt", f"video: {decoder_message(err, path)}") from None
    return decode_video_pyav(path, settings, shape, window), "pyav"


def decode_video_pyav(path: Path, settings: ClipSettings, shape: tuple[int, int],
                      window: tuple[float, float] | None = None) -> np.ndarray:  # fmt: skip
    import av

    height, width = shape
    try:
        with av.open(str(path)) as box:
            stream = box.streams.video[0]
            stream.thread_count = 1
            fps = float(stream.average_rate or 0)
            images = [f.to_ndarray(width=width, height=height, format="rgb24") for f in box.decode(stream)]
    except (av.error.FFmpegError, ValueError, OSError) as err:
        raise SkipSample("corrupt", f"video: {av_message(err)}") from None
    first, last = window_frames(len(images), fps, window)
    check_frames(last - first)
    return np.stack([images[first + i] for i in uniform_indices(last - first, settings.clip_frames)])


def check_frames(n: int) -> None:
    if n < MIN_FRAMES:
        raise SkipSample("too_short", f"{n} video frames (at least {MIN_FRAMES} needed)")


def decode_audio(path: Path, settings: ClipSettings, window: tuple[float, float] | None = None) -> np.ndarray:
    """(N,) float32 mono audio at ``sample_rate`` (within ``window`` seconds when given), at most
    ``max_audio_samples`` long."""
    from decord import AudioReader

    try:
        reader = AudioReader(str(path), sample_rate=settings.sample_rate, mono=True)
        wave = reader[:].asnumpy().reshape(-1)
    except Exception as err:  # noqa: BLE001  (decord raises DECORDError and RuntimeError alike)
        raise SkipSample("corrupt", f"audio: {decoder_message(err, path)}") from None
    if window is not None:
        wave = wave[round(window[0] * settings.sample_rate) : round(window[1] * settings.sample_rate)]
    seconds = len(wave) / settings.sample_rate
    if seconds < MIN_AUDIO_SECONDS:
        raise SkipSample("too_short", f"{seconds:.2f} s of audio (at least {MIN_AUDIO_SECONDS:g} s needed)")
    return np.ascontiguousarray(wave[: settings.max_audio_samples], dtype=np.float32)


def shard(key: str) -> str:
    """Sub-folder of a clip's files: 256 folders keep directory listings short for 200k clips."""
    return hashlib.sha1(key.encode()).hexdigest()[:2]


def write_clip(out: Path, key: str, frames: np.ndarray, wave: np.ndarray) -> dict:
    """Write the (T, H, W, 3) frames as one vertically stacked JPEG and the audio as ``.npy``, each atomically."""
    import io

    from PIL import Image

    t, h, w = frames.shape[:3]
    buf = io.BytesIO()
    stacked = Image.fromarray(np.ascontiguousarray(frames.reshape(t * h, w, 3)))  # (T*H, W, 3)
    stacked.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING, optimize=False)
    jpeg = buf.getvalue()
    frames_rel = f"frames/{shard(key)}/{key}.jpg"
    audio_rel = f"audio/{shard(key)}/{key}.npy"
    atomic_write_bytes(out / frames_rel, jpeg)
    audio_sha = save_npy(out / audio_rel, wave)
    return {"frames": frames_rel, "frames_sha256": hashlib.sha256(jpeg).hexdigest(), "frames_bytes": len(jpeg),
            "audio": audio_rel, "audio_sha256": audio_sha, "audio_bytes": (out / audio_rel).stat().st_size}  # fmt: skip


# ----------------------------------------------------------------------------------------------- prep
def walk_names(raw: Path) -> Iterator[tuple[str, str]]:
    """(folder, name) of every file and folder under ``raw``, in sorted order, following links but entering
    each folder once (a link loop, or two links to one folder, is walked once). Folder names are given too:
    a folder named like a clip is a path that exists, so its row is ``unreadable``, not missing."""
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(raw, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs.sort()
        for name in sorted(files) + dirs:
            yield folder, name


def av_settings(cfg: DataConfig) -> AudioVisualSettings:
    """The clip settings of ``cfg`` (VGG-Sound, Kinetics, CREMA-D: :class:`AudioVisualSettings`)."""
    return dataset_settings(cfg, AudioVisualSettings)


def cache_key(cfg: DataConfig) -> str:
    """Prep-time settings only: frames stored, their size, audio rate and length."""
    s = av_settings(cfg)
    return f"s{s.store_size}-t{s.clip_frames}-sr{s.sample_rate}-a{s.audio_seconds:g}"


def audio_samples(cfg: DataConfig) -> int:
    """Samples of the waveform the loader delivers: ``audio_seconds`` at ``sample_rate``."""
    s = av_settings(cfg)
    return round(s.audio_seconds * s.sample_rate)


def clip_settings(cfg: DataConfig, keep_aspect: bool = False) -> ClipSettings:
    """The checked prep settings of ``cfg``."""
    s = check_settings(cfg)
    return ClipSettings(s.store_size, s.clip_frames, s.sample_rate,
                        round(MAX_AUDIO_FACTOR * s.audio_seconds * s.sample_rate), keep_aspect)  # fmt: skip


def check_settings(cfg: DataConfig) -> AudioVisualSettings:
    """The clip settings of ``cfg``, refused in one line where prep cannot use them (beyond their ranges)."""
    s = av_settings(cfg)
    if s.store_size < 8 or s.clip_frames < 1 or s.sample_rate < 1000 or s.audio_seconds <= 0:
        raise UserError(
            f"data.store_size >= 8, data.clip_frames >= 1, data.sample_rate >= 1000 and data.audio_seconds > 0 "
            f"needed, got {s.store_size}, {s.clip_frames}, {s.sample_rate}, {s.audio_seconds}"
        )
    if s.store_size * s.clip_frames > 65500:  # the JPEG format's limit on the stacked image's height
        raise UserError(
            f"data.clip_frames x data.store_size must be at most 65500, got {s.clip_frames} x {s.store_size}"
        )
    return s


def sweep(out: Path, records: list[dict]) -> None:
    """Delete files no index row names: temporaries of a killed run, clips of an earlier annotation list."""
    keep = {r["frames"] for r in records} | {r["audio"] for r in records}
    for top in ("frames", "audio"):
        if not (out / top).is_dir():
            continue
        for folder in (out / top).iterdir():
            for entry in os.scandir(folder):
                if f"{top}/{folder.name}/{entry.name}" not in keep:
                    os.unlink(entry.path)
            if not any(folder.iterdir()):
                folder.rmdir()
    for entry in os.scandir(out):
        if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
            os.unlink(entry.path)


def _stored_modalities(av: AudioVisualSettings, keep_aspect: bool) -> dict:
    """How a clip cache stores each modality (the manifest's ``modalities``)."""
    s, t = av.store_size, av.clip_frames
    if keep_aspect:
        layout = "frames stacked vertically, uint8 RGB; aspect ratio kept, min(H, W) = short_side"
        video = {"file": "frames/<xx>/<key>.jpg", "stored_shape": [t, "H", "W", 3], "frames": t, "short_side": s,
                 "layout": layout}  # fmt: skip
    else:
        video = {"file": "frames/<xx>/<key>.jpg", "stored_shape": [t * s, s, 3], "frames": t, "size": s,
                 "layout": "frames stacked vertically, uint8 RGB"}  # fmt: skip
    audio = {"file": "audio/<xx>/<key>.npy", "dtype": "float32", "channels": 1, "sample_rate": av.sample_rate,
             "max_seconds": MAX_AUDIO_FACTOR * av.audio_seconds, "min_seconds": MIN_AUDIO_SECONDS}  # fmt: skip
    return {"video": {**video, "jpeg_quality": JPEG_QUALITY, "min_source_frames": MIN_FRAMES}, "audio": audio}


def clip_manifest(
    cfg: DataConfig, *, data_format: int, classes: list[str], records: list[dict], skipped: list[dict], missing: int,
    source: dict, checksums: dict, label_order: str, split_note: str, keep_aspect: bool = False,
) -> dict:  # fmt: skip
    """The manifest of a clip cache: sizes and label counts per split, how each modality is stored, the
    settings, what was skipped (key and reason) and the checksums."""
    per_split = {split: [0] * len(classes) for split in SPLITS}
    for r in records:
        per_split[r["split"]][r["label"]] += 1
    av = av_settings(cfg)
    s, t = av.store_size, av.clip_frames
    return {
        "dataset": cfg.name,
        "format": data_format,
        "n": len(records),
        "num_classes": len(classes),
        "class_names": classes,
        "label_order": label_order,
        "class_counts": [a + b for a, b in zip(per_split["train"], per_split["test"], strict=True)],
        "split_counts": per_split,
        "split_sizes": {k: sum(v) for k, v in per_split.items()},
        "split_note": split_note,
        "modalities": _stored_modalities(av, keep_aspect),
        # what the model sees before input transforms; the crop size is a load-time setting
        "input_dims": {"video": [3, t, "image_size", "image_size"], "audio": [audio_samples(cfg)]},
        "settings": {
            "store_size": s,
            "clip_frames": t,
            "sample_rate": av.sample_rate,
            "audio_seconds": av.audio_seconds,
        },
        "skipped": [{"key": e["key"], "reason": e["reason"]} for e in skipped],
        "skipped_counts": dict(sorted(Counter(e["reason"] for e in skipped).items())),
        "missing": missing,
        "source": source,
        "files": checksums,  # sha256
    }


# ------------------------------------------------------------------------------------------- loading
def fit_audio(wave: np.ndarray, length: int, train: bool, rng: np.random.Generator) -> np.ndarray:
    """``length`` samples of ``wave``: a random window in training, the centred one otherwise; a shorter
    track is tiled (from a random offset in training, from its start otherwise)."""
    n = len(wave)
    if n >= length:
        start = int(rng.integers(0, n - length + 1)) if train else (n - length) // 2
        return np.array(wave[start : start + length], dtype=np.float32)  # a copy: off the memory map
    offset = int(rng.integers(0, n)) if train else 0
    tiled = np.tile(np.asarray(wave, dtype=np.float32), math.ceil((length + offset) / n))
    return tiled[offset : offset + length]


class StackedClipReader:
    """Reads clips of one split of a prepared cache (see :class:`mmtool.data.source.SampleReader`).

    Holds paths and numbers only (it is pickled into loader workers) and opens a clip's two files per read.
    Video: the stored (T, H0, W0) frames -> float32 (3, T, S, S), in training one random S x S crop for all
    frames and a random horizontal flip; in evaluation resized to S x S (VGG-Sound's square frames) or, with
    ``eval_crop``, the centred S x S crop (frames stored with their aspect ratio: the scale training crops
    see). ImageNet-normalised. Audio: float32 (L,) with :func:`fit_audio`: a random window per epoch in
    training, the centred one in evaluation. Each modality draws from its own child of the sample's ``rng``,
    so its augmentation is the same whichever modalities are read. Without ``augment`` (VGG-Sound's setting:
    "we do not use any kinds of data augmentation", paper 001 Sec. 4.1) training reads the evaluation view
    of the video, and each clip keeps one random audio window, drawn from ``seed`` and the clip, in every
    epoch and at test: the paper's "randomly cropped or tiled" preprocessing, done once per clip.
    """

    def __init__(
        self, folder: str, frames: Sequence[str], audio: Sequence[str], *, stored_frames: int, store_size: int,
        image_size: int, audio_samples: int, augment: bool = True, seed: int = 0, eval_crop: bool = False,
    ) -> None:  # fmt: skip
        self.folder, self.frames, self.audio = folder, list(frames), list(audio)
        self.stored_frames, self.store_size = stored_frames, store_size
        self.image_size, self.audio_samples = image_size, audio_samples
        self.augment, self.seed, self.eval_crop = augment, seed, eval_crop

    def read(self, index: int, modalities: Sequence[str], train: bool, rng: np.random.Generator) -> dict:
        video_rng, audio_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**62, size=2))
        out = {}
        if "video" in modalities:
            out["video"] = self.video(index, train, video_rng)
        if "audio" in modalities:
            if self.augment:
                out["audio"] = self.audio_wave(index, train, audio_rng)
            else:  # the paper's preprocessing: one random window per clip, the same in every epoch and at test
                out["audio"] = self.audio_wave(index, True, self._clip_rng(index))
        return out

    def _clip_rng(self, index: int) -> np.random.Generator:
        """A stream fixed per clip (by its file name, not its position in a split) and ``data.seed``."""
        return np.random.default_rng([self.seed, zlib.crc32(self.audio[index].encode())])

    def video(self, index: int, train: bool, rng: np.random.Generator) -> torch.Tensor:
        """(3, T, S, S) float32, normalised."""
        from PIL import Image

        with Image.open(os.path.join(self.folder, self.frames[index])) as image:
            stacked = np.array(image.convert("RGB"))  # (T*H0, W0, 3), writable for torch
        t, s = self.stored_frames, self.image_size
        h0, w0 = stacked.shape[0] // t, stacked.shape[1]
        clip = torch.from_numpy(stacked.reshape(t, h0, w0, 3)).permute(3, 0, 1, 2)  # (3, T, H0, W0) uint8
        if train and self.augment:
            clip = random_crop(clip, (s, s), rng)
            clip = hflip(clip) if rng.random() < 0.5 else clip
        elif self.eval_crop:
            clip = centre_crop(clip, s)
        else:
            clip = resize(clip, (s, s))
        clip = clip.float().div_(255.0)  # (3, T, S, S)
        return normalize(clip, IMAGENET_MEAN, IMAGENET_STD)

    def audio_wave(self, index: int, train: bool, rng: np.random.Generator) -> torch.Tensor:
        """(L,) float32 waveform."""
        wave = np.load(os.path.join(self.folder, self.audio[index]), mmap_mode="r")  # reads only the window
        return torch.from_numpy(fit_audio(wave, self.audio_samples, train, rng))


def centre_crop(clip: torch.Tensor, s: int) -> torch.Tensor:
    """The centred s x s crop of (..., H, W); frames with a side under s are first resized up, aspect kept."""
    h, w = clip.shape[-2:]
    if h < s or w < s:
        scale = max(s / h, s / w)
        clip = resize(clip, (max(s, round(h * scale)), max(s, round(w * scale))))
    return center_crop(clip, (s, s))


def fix_hint(name: str, folder: Path) -> str:
    """How to rebuild the cache in ``folder`` (``<root>/<name>/<key>``), for error messages."""
    return f"re-run `mmtool prep {name} --raw DIR --root {folder.parents[1]} --force` with the same data.* settings"


def read_checked(cfg: DataConfig, folder: Path, data_format: int) -> tuple[dict, list[dict]]:
    """The manifest and index rows of a clip cache, after cheap consistency checks (no hashing of clip files)."""
    fix = fix_hint(cfg.name, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("format") != data_format:
        raise UserError(f"{folder / 'manifest.json'}: data format {manifest.get('format')}, this mmtool reads "
                        f"format {data_format} ({fix})")  # fmt: skip
    index = folder / "index.jsonl"
    if not index.is_file() or file_sha256(index) != manifest.get("files", {}).get("index.jsonl"):
        raise UserError(f"{index}: missing or does not match manifest.json ({fix})")
    rows = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    said, names = folder / "manifest.json", manifest.get("class_names")
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    known = len(names) if isinstance(names, list) else None
    check_labels(said, manifest, labels, fix, str(index), known, "its field 'class_names'")
    sizes = {k: sum(r["split"] == k for r in rows) for k in SPLITS}
    if manifest.get("split_sizes") != sizes:
        raise UserError(f"{said}: field 'split_sizes' is {manifest.get('split_sizes')}, but {index} holds {sizes} "
                        f"({fix})")  # fmt: skip
    check_paths(rows, folder, Path(manifest.get("raw") or "the raw folder"), index, fix)
    for i in np.unique(np.linspace(0, len(rows) - 1, min(SPOT_CHECKS, len(rows))).astype(int)):
        for kind in ("frames", "audio"):
            path = folder / rows[i][kind]
            if not path.is_file() or path.stat().st_size != rows[i][f"{kind}_bytes"]:
                raise UserError(f"{path}: missing or not the size index.jsonl records ({fix})")
    return manifest, rows


def check_paths(rows: list[dict], folder: Path, raw: Path, index: Path, fix: str) -> None:
    """Every file an index row names stays in its folder of the cache (``frames/``, ``audio/``), links
    included; ``source``, the raw clip's path under ``raw`` (recorded, never opened), has no absolute path
    or ``..`` (links under the raw folder are followed by design). One lstat a file."""
    cache, recorded = RootGuard(folder, fix), RootGuard(raw, fix)
    for line, row in enumerate(rows, start=1):
        for key in ("frames", "audio"):
            cache.check(row[key], f"{index}:{line} {key}", within=key)
        recorded.check(row["source"], f"{index}:{line} source", links=False)


def validation_rows(n_train: int, val_fraction: float, seed: int) -> np.ndarray:
    """Positions among the train rows (sorted by key) that form the validation split."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng([seed, 2]).permutation(n_train)
    return np.sort(order[: round(n_train * val_fraction)])


def load_clips(cfg: DataConfig, folder: Path, data_format: int, eval_crop: bool = False) -> Dataset:
    """The prepared clip cache as a :class:`Dataset` of :class:`DiskSource` splits (train, val, test)."""
    av = av_settings(cfg)
    if av.image_size < 1:
        raise UserError(f"data.image_size must be positive, got {av.image_size}")
    manifest, rows = read_checked(cfg, folder, data_format)
    settings = manifest["settings"]
    train = [r for r in rows if r["split"] == "train"]
    val_at = set(validation_rows(len(train), cfg.val_fraction, cfg.seed).tolist())
    parts = {"train": [r for i, r in enumerate(train) if i not in val_at],
             "val": [r for i, r in enumerate(train) if i in val_at],
             "test": [r for r in rows if r["split"] == "test"]}  # fmt: skip
    n_audio = audio_samples(cfg)
    splits = {}
    for name, part in parts.items():
        reader = StackedClipReader(str(folder), [r["frames"] for r in part], [r["audio"] for r in part],
                                   stored_frames=settings["clip_frames"], store_size=settings["store_size"],
                                   image_size=av.image_size, audio_samples=n_audio, augment=av.augment,
                                   seed=cfg.seed, eval_crop=eval_crop)  # fmt: skip
        targets = torch.tensor([r["label"] for r in part], dtype=torch.long)
        splits[name] = DiskSource(reader, targets, MODALITIES, eval_batch_size=EVAL_BATCH)
    dims = {"video": [3, settings["clip_frames"], av.image_size, av.image_size], "audio": [n_audio]}
    return Dataset(cfg.name, MODALITIES, manifest["num_classes"], dims, splits, manifest["class_names"])
