"""Audio-visual clips from video files: probing, decoding, and writing each clip's cache files.

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

The cache these files make up (its key, settings and manifest, and reading it back) is
:mod:`mmtool.data.clips_cache`.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmtool.data.pipeline_io import SkipSample, save_npy
from mmtool.files import atomic_write_bytes

MODALITIES = ("video", "audio")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv")  # preference order
JPEG_QUALITY = 90
JPEG_SUBSAMPLING = 2  # PIL's code for 4:2:0 chroma, the JPEG default; fixed so the bytes are
MIN_FRAMES = 8
MIN_AUDIO_SECONDS = 1.0
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


# ---------------------------------------------------------------------------------------------- raw files
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
