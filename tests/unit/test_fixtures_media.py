"""The media fixtures decode, follow the real UCF101 / VGG-Sound layouts, break the way they claim, and are
byte-for-byte deterministic.

Loader and prep tests elsewhere trust these files; a fixture that silently wrote the wrong layout (or a clip that
no decoder opens) would make those tests pass or fail for the wrong reason, so every promise of the helper is
checked here against the real readers, decord and PyAV.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import av
import decord
import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from tests.fixtures.files import tree
from tests.fixtures.media import (
    BROKEN_KINDS,
    UCF_OFFICIAL_TEST_GROUPS,
    add_missing_rows,
    class_tone_hz,
    render_frames,
    write_broken,
    write_broken_frames,
    write_ucf101,
    write_vggsound,
    write_video,
)

DECORD_ERRORS = (RuntimeError, decord.DECORDError)
SMALL_GROUPS = (1, 8, 15, 22)  # one test group per split + one group that always trains
SIZE = (32, 40)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples - samples.mean()))
    return float(np.fft.rfftfreq(len(samples), 1.0 / rate)[spectrum.argmax()])


def decoded_audio(path: Path, rate: int = 22050) -> np.ndarray:
    """Mono samples through decord.AVReader (the loaders' path), all video frames' worth of audio."""
    reader = decord.AVReader(str(path), sample_rate=rate, mono=True)
    chunks, _ = reader[0 : len(reader)]
    return np.concatenate([c.asnumpy() for c in chunks], axis=1)[0]


def mvhd_creation_time(data: bytes) -> int:
    """The mp4 movie header's creation time: 0 unless the muxer stamped the wall clock."""
    at = data.index(b"mvhd") + 4
    wide = data[at] == 1
    return int.from_bytes(data[at + 4 : at + (12 if wide else 8)], "big")


def read_lines(path: Path) -> list[str]:
    """Split-list entries the way tolerant loaders read them: CRLF stripped, blank lines dropped."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------- write_video


@pytest.mark.parametrize(("suffix", "channels"), [(".mp4", 1), (".avi", 2)])
def test_write_video_decodes_with_decord_and_av(tmp_path, suffix: str, channels: int):
    """Both containers open in decord and PyAV with the frames, size, pixels and class tone that were encoded."""
    path = write_video(tmp_path / f"clip{suffix}", frames=16, size=SIZE, fps=8, label=2, seed=3, channels=channels)
    reader = decord.VideoReader(str(path))
    assert len(reader) == 16 and reader[0].shape == (*SIZE, 3)
    decoded = reader.get_batch(list(range(16))).asnumpy().astype(np.float64)
    assert np.abs(decoded - render_frames(2, 16, SIZE, seed=3)).mean() < 15  # lossy, but the same picture

    with av.open(str(path)) as box:
        video, audio = box.streams.video[0], box.streams.audio[0]
        assert video.codec_context.name in ("h264", "mpeg4") and audio.codec_context.sample_rate == 22050
        assert audio.codec_context.channels == channels
        if suffix == ".avi":
            assert video.codec_context.name == "mpeg4" and video.codec_context.codec_tag == "XVID"

    samples = decoded_audio(path)
    assert samples.size >= 0.9 * 2.0 * 22050 and np.abs(samples).max() > 0.1
    assert abs(dominant_hz(samples, 22050) - class_tone_hz(2)) < 5


def test_audio_seconds_and_no_audio(tmp_path):
    """audio_seconds sets the track length independently of the frames; audio=False writes a video-only file."""
    longer = write_video(tmp_path / "long.mp4", frames=8, fps=8, audio_seconds=2.0)
    silent = write_video(tmp_path / "silent.mp4", frames=8, fps=8, audio=False)
    assert decord.AudioReader(str(longer), sample_rate=22050).shape[1] >= 2.0 * 22050
    with av.open(str(silent)) as box:
        assert len(box.streams.video) == 1 and len(box.streams.audio) == 0


def test_classes_have_separable_signatures():
    """Learnable content: the mean colour of a clip names its class (nearest class mean, new seeds)."""
    labels = range(5)
    means = {k: render_frames(k, 4, SIZE, seed=0).mean(axis=(0, 1, 2)) for k in labels}
    for k in labels:
        probe = render_frames(k, 4, SIZE, seed=99).mean(axis=(0, 1, 2))
        assert min(labels, key=lambda j: np.linalg.norm(probe - means[j])) == k
    assert len({round(class_tone_hz(k)) for k in labels}) == 5


def test_write_video_is_byte_identical_and_has_no_wall_clock(tmp_path):
    """Repeated writes at UCF101's real 240x320: libx264's MB-tree made most of these differ before it was off."""
    writes = [write_video(tmp_path / f"{i}.mp4", size=(240, 320), label=1, seed=4).read_bytes() for i in range(4)]
    assert all(data == writes[0] for data in writes) and mvhd_creation_time(writes[0]) == 0
    assert b"Lavf" not in writes[0] and b"Lavc" not in writes[0]  # bitexact: no library version strings
    assert writes[0] != write_video(tmp_path / "other.mp4", size=(240, 320), label=1, seed=5).read_bytes()


# ------------------------------------------------------------------------------------------------------ UCF101


@pytest.fixture(scope="module")
def ucf(tmp_path_factory) -> dict:
    """One small UCF101 tree (4 classes x 4 groups) shared by the layout tests; it is only read."""
    return write_ucf101(tmp_path_factory.mktemp("ucf") / "UCF101", groups=SMALL_GROUPS, frames=12, size=SIZE)


def test_ucf_split_files_have_crlf_and_a_trailing_blank_line(ucf):
    lists = ucf["root"] / "ucfTrainTestlist"
    names = ["classInd.txt"] + [f"{kind}list0{s}.txt" for kind in ("train", "test") for s in (1, 2, 3)]
    assert sorted(p.name for p in lists.iterdir()) == sorted(names)
    for name in names:
        raw = (lists / name).read_bytes()
        assert raw.endswith(b"\r\n\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    assert read_lines(lists / "classInd.txt") == ["1 ApplyEyeMakeup", "2 Archery", "3 HandstandPushups", "4 YoYo"]
    assert "crlf_trailing_blank_line" in ucf["quirks"]


def test_ucf_splits_follow_the_official_group_rule(ucf):
    lists = ucf["root"] / "ucfTrainTestlist"
    index = dict(line.split(" ")[::-1] for line in read_lines(lists / "classInd.txt"))
    pattern = re.compile(r"^(\w+)/v_(\w+)_g(\d\d)_c(\d\d)\.avi$")
    for split in (1, 2, 3):
        train = [line.split(" ") for line in read_lines(lists / f"trainlist0{split}.txt")]
        test = read_lines(lists / f"testlist0{split}.txt")
        assert all(len(entry) == 2 and entry[1] == index[entry[0].split("/")[0]] for entry in train)
        assert all(" " not in entry for entry in test)  # test lists carry no label
        for entries, kind in ((test, True), ([e[0] for e in train], False)):
            matches = [pattern.match(e) for e in entries]
            assert all(matches)
            assert all((int(m.group(3)) in UCF_OFFICIAL_TEST_GROUPS[split]) is kind for m in matches)
            assert {m.group(1) for m in matches} == set(ucf["classes"])  # every class on both sides
        assert len(train) + len(test) == len(ucf["clips"])


def test_ucf_videos_frames_and_flow_are_where_the_lists_point(ucf):
    root = ucf["root"]
    assert ucf["frames"] == 12 and ucf["flow_frames"] == 11
    for stem, clip in ucf["clips"].items():
        assert clip["video"] == root / "UCF-101" / clip["list_path"] and clip["video"].is_file()
        rgb = sorted(clip["rgb_dir"].iterdir())
        assert [p.name for p in rgb] == [f"frame{i:06d}.jpg" for i in range(1, 13)]
        for axis in ("u", "v"):
            folder = clip[f"flow_{axis}_dir"]
            assert folder == root / "tvl1_flow" / axis / clip["rgb_dir"].name
            assert [p.name for p in sorted(folder.iterdir())] == [f"frame{i:06d}.jpg" for i in range(1, 12)]
        assert clip["split1"] == ("test" if clip["group"] <= 7 else "train") and stem.startswith("v_")
    some = next(iter(ucf["clips"].values()))
    with (
        Image.open(some["rgb_dir"] / "frame000001.jpg") as rgb,
        Image.open(some["flow_u_dir"] / "frame000001.jpg") as u,
    ):
        assert rgb.mode == "RGB" and rgb.size == (SIZE[1], SIZE[0]) and u.mode == "L"
        flow = np.asarray(u, dtype=np.int16)
    assert abs(np.median(flow) - 128) <= 3  # TV-L1 encoding: 128 = no motion


def test_ucf_handstand_case_quirk(ucf):
    """classInd/list folder say HandstandPushups, files say HandStandPushups, frame folders follow classInd."""
    root, clip = ucf["root"], ucf["clips"]["v_HandStandPushups_g01_c01"]
    assert clip["list_path"] == "HandstandPushups/v_HandStandPushups_g01_c01.avi"
    assert (root / "UCF-101" / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi").is_file()
    assert (root / "jpegs_256" / "v_HandstandPushups_g01_c01").is_dir()
    assert not (root / "jpegs_256" / "v_HandStandPushups_g01_c01").exists()
    assert {"class_case_mismatch", "frame_dir_case_mismatch"} <= set(ucf["quirks"])


def test_ucf_audio_on_some_classes_only(ucf):
    """Like the real archive, only some classes have sound (even positions by default)."""
    for clip in (ucf["clips"][f"v_{name}_g01_c01"] for name in ("ApplyEyeMakeup", "Archery")):
        with av.open(str(clip["video"])) as box:
            assert len(box.streams.audio) == int(clip["audio"]) == int(clip["label"] % 2 == 0)
            assert box.streams.video[0].codec_context.codec_tag == "XVID"


def test_ucf_default_groups_and_no_quirks(tmp_path):
    """25 groups give the official 7/18 test/train groups per split; quirks=False writes LF and one spelling."""
    info = write_ucf101(tmp_path, videos=False, rgb_frames=False, flow=False, quirks=False)
    lists = tmp_path / "ucfTrainTestlist"
    for split in (1, 2, 3):
        assert len(read_lines(lists / f"testlist0{split}.txt")) == 7 * 4
        assert len(read_lines(lists / f"trainlist0{split}.txt")) == 18 * 4
    raw = (lists / "trainlist01.txt").read_bytes()
    assert b"\r" not in raw and not raw.endswith(b"\n\n")
    assert "v_HandstandPushups_g08_c01" in info["clips"] and info["quirks"] == []


def test_ucf_rejects_groups_that_leave_a_split_without_test_clips(tmp_path):
    with pytest.raises(ValueError, match="split 3"):
        write_ucf101(tmp_path, groups=9, videos=False, rgb_frames=False, flow=False)
    custom = {1: [1], 2: [2], 3: [3]}
    info = write_ucf101(tmp_path, groups=4, test_groups=custom, videos=False, rgb_frames=False, flow=False)
    assert info["clips"]["v_Archery_g03_c01"]["split3"] == "test"


# --------------------------------------------------------------------------------------------------- VGG-Sound


@pytest.fixture(scope="module")
def vgg(tmp_path_factory) -> dict:
    return write_vggsound(tmp_path_factory.mktemp("vgg") / "vggsound")


def csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_vggsound_csv_is_headerless_and_quotes_commas(vgg):
    rows = csv_rows(vgg["csv"])
    assert len(rows) == 3 * (3 + 2) and all(len(r) == 4 for r in rows)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{11}", r[0]) and r[1].isdigit() for r in rows)  # row 1 is data
    assert {r[3] for r in rows} == {"train", "test"}
    assert "people marching, chanting" in {r[2] for r in rows}
    assert '"people marching, chanting"' in vgg["csv"].read_text()  # csv-module quoting, not a 5th column
    assert any(r[0].startswith("-") for r in rows) and any("_" in r[0] for r in rows)
    assert {int(r[1]) for r in rows} >= {0, 30, 112}
    assert vgg["labels"] == sorted(vgg["labels"]) and vgg["label_index"]["dog barking"] == 0


def test_vggsound_every_row_has_a_readable_clip_in_a_known_variant(vgg):
    assert {r["variant"] for r in vgg["rows"]} == {"canonical", "no_pad", "start_end", "split_dir"}
    names = {
        "canonical": "{id}_{start:06d}.mp4",
        "no_pad": "{id}_{start}.mp4",
        "start_end": "{id}_{start:06d}_{end:06d}.mp4",
        "split_dir": "{split}/{id}_{start:06d}.mp4",
    }
    for row in vgg["rows"]:
        expected = names[row["variant"]].format(end=row["start"] + 10, **row)
        assert row["path"] == vgg["root"] / "video" / expected and row["path"].is_file()
    reader = decord.VideoReader(str(vgg["rows"][0]["path"]))
    assert len(reader) == 16 and reader[0].shape == (*SIZE, 3)
    assert decoded_audio(vgg["rows"][0]["path"]).size >= 0.9 * 2.0 * 22050


def test_add_missing_rows_lists_clips_that_are_not_on_disk(tmp_path):
    info = write_vggsound(tmp_path, train_per_class=1, test_per_class=1, name_variants=False)
    missing = add_missing_rows(info["csv"], 3)
    rows = csv_rows(info["csv"])
    assert len(rows) == 6 + 3 and [r[0] for r in rows[-3:]] == missing
    assert {r[2] for r in rows} == set(info["labels"])
    assert len(set(missing)) == 3 and not set(missing) & {r["id"] for r in info["rows"]}
    on_disk = [p.name for p in (tmp_path / "video").rglob("*.mp4")]
    assert len(on_disk) == 6 and not [name for name in on_disk if name.startswith(tuple(missing))]


# ------------------------------------------------------------------------------------------------ broken files


@pytest.mark.parametrize("kind", ["truncated", "zero_byte", "text"])
def test_undecodable_kinds_raise_in_decord_and_av(tmp_path, kind: str):
    path = write_broken(tmp_path, kind, "clip")
    assert path == tmp_path / "clip.mp4" and path.is_file()
    with pytest.raises(av.FFmpegError):
        av.open(str(path))
    with pytest.raises(DECORD_ERRORS):
        decord.VideoReader(str(path))


def test_truncated_is_half_of_a_valid_clip(tmp_path):
    whole = write_video(tmp_path / "whole.mp4").stat().st_size
    assert write_broken(tmp_path, "truncated", "half.mp4").stat().st_size == whole // 2


def test_no_audio_and_no_video(tmp_path):
    video_only = write_broken(tmp_path, "no_audio", "video_only")
    audio_only = write_broken(tmp_path, "no_video", "audio_only")
    assert len(decord.VideoReader(str(video_only))) == 16
    with pytest.raises(DECORD_ERRORS):
        decord.AVReader(str(video_only))
    with av.open(str(audio_only)) as box:
        assert len(box.streams.video) == 0 and box.streams.audio[0].codec_context.name == "aac"
    with pytest.raises(DECORD_ERRORS):
        decord.VideoReader(str(audio_only))


def test_unreadable_exists_but_cannot_be_opened(tmp_path):
    """A directory, not chmod 000: the suite runs as root, and root reads mode-000 files."""
    path = write_broken(tmp_path, "unreadable", "clip.mp4")
    assert path.exists() and not path.is_file()
    with pytest.raises(OSError):
        path.open("rb")
    with pytest.raises(OSError):
        av.open(str(path))


def test_too_short_is_valid_but_tiny(tmp_path):
    path = write_broken(tmp_path, "too_short", "clip", label=1)
    assert len(decord.VideoReader(str(path))) == 2
    samples = decoded_audio(path)
    assert 0 < samples.size < 0.3 * 22050


def test_every_broken_kind_is_written_and_unknown_kinds_rejected(tmp_path):
    assert {write_broken(tmp_path, kind, kind).name for kind in BROKEN_KINDS} == {f"{k}.mp4" for k in BROKEN_KINDS}
    with pytest.raises(ValueError):
        write_broken(tmp_path, "sideways", "x")


def test_broken_frames(tmp_path):
    info = write_ucf101(tmp_path, groups=SMALL_GROUPS, classes=("Archery",), videos=False)
    clip = "v_Archery_g01_c01"
    (empty,) = write_broken_frames(tmp_path, clip, "empty_rgb")
    assert empty == info["clips"][clip]["rgb_dir"] and empty.is_dir() and not list(empty.iterdir())

    other = "v_Archery_g08_c01"
    (bad,) = write_broken_frames(tmp_path, other, "corrupt_jpg")
    with pytest.raises(UnidentifiedImageError):
        Image.open(bad)
    good = [p for p in (tmp_path / "jpegs_256" / other).iterdir() if p != bad]
    assert len(good) == 11
    for frame in good:
        with Image.open(frame) as image:
            image.load()

    u, v = write_broken_frames(tmp_path, other, "short_flow")
    assert [len(list(d.iterdir())) for d in (u, v)] == [5, 5] and u.parent.name == "u"


# ------------------------------------------------------------------------------------------------- determinism


def test_datasets_are_byte_identical_on_a_second_write(tmp_path):
    """Same call, same bytes: every mp4, avi, jpg, csv and txt, in both layouts."""
    small = {"groups": SMALL_GROUPS, "classes": ("Archery", "HandstandPushups"), "frames": 6}
    first = tree(write_ucf101(tmp_path / "u1", **small)["root"])
    assert first == tree(write_ucf101(tmp_path / "u2", **small)["root"])
    assert any(k.endswith(".avi") for k in first) and any(k.endswith(".jpg") for k in first)
    vgg = {"train_per_class": 1, "test_per_class": 1}
    assert tree(write_vggsound(tmp_path / "v1", **vgg)["root"]) == tree(
        write_vggsound(tmp_path / "v2", **vgg)["root"]
    )
