"""UCF101's file layouts: the official split lists and the raw folders prep reads, and the names of the cache.

Nothing a list or a folder names may lead outside its folder (see :mod:`mmtool.data.ucf101`); a clip's files
are found whatever the case differences between the lists and the disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mmtool.data.registry import dataset_settings
from mmtool.data.settings import UCF101Settings
from mmtool.data_config import DataConfig
from mmtool.errors import UserError

FORMAT = 1  # bump when the index or the extracted frames change
NAME = "ucf101"
SPLITS = (1, 2, 3)
LISTS = "ucfTrainTestlist"
RGB_FRAMES = "jpegs_256"
FLOW = "tvl1_flow"
VIDEOS = "UCF-101"
EXTRACTED = "frames"  # cache sub-folder of the RGB frames decoded from .avi files
INDEX = "index.jsonl"
STEM = re.compile(r"^v_(?P<cls>.+)_g(?P<group>\d+)_c(?P<clip>\d+)$")
RGB_SOURCES = ("frames", "video", "auto")
NO_FLOW_NOTE = f"no {FLOW}/u and {FLOW}/v: flow is not computed from videos, so this cache has the rgb modality only"


def settings(cfg: DataConfig) -> UCF101Settings:
    """The UCF101 settings of ``cfg`` (``data.split``, ``data.flow_stack``, ...)."""
    return dataset_settings(cfg, UCF101Settings)


def frame_name(index: int) -> str:
    """File name of frame ``index`` (0-based) in jpegs_256/, tvl1_flow/ and the extracted folders."""
    return f"frame{index + 1:06d}.jpg"


# --------------------------------------------------------------------------------------------- split lists
@dataclass(frozen=True)
class ListedClip:
    """One clip of the split lists: ``name`` is the video stem as listed (``v_HandStandPushups_g01_c01``)."""

    name: str
    class_name: str  # classInd.txt spelling
    label: int  # 0-based
    group: int
    clip: int
    list_path: str  # as listed, e.g. "HandstandPushups/v_HandStandPushups_g01_c01.avi"
    splits: tuple[str | None, str | None, str | None]  # "train" / "test" / None (not listed) for splits 1-3


def read_list(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a split file as (1-based line number, text), whatever the line endings.

    Raises:
        UserError: the file does not exist.
    """
    if not path.is_file():
        raise UserError(f"missing split file {path} (expected the official {LISTS}/ folder under data.raw)")
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def parse_class_index(path: Path) -> list[str]:
    """Class names of ``classInd.txt`` ("1 ApplyEyeMakeup" ...), position = 0-based label.

    Raises:
        UserError: a line is not "INDEX NAME" or the indices are not 1, 2, 3, ...
    """
    names: list[str] = []
    for lineno, line in read_list(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(names) + 1:
            raise UserError(f"{path}:{lineno}: expected '{len(names) + 1} ClassName', got {line!r}")
        if parts[1] in (".", "..") or "/" in parts[1] or "\\" in parts[1]:  # the class is a folder in the lists
            raise UserError(f"{path}:{lineno}: class {parts[1]!r} is not a plain folder name")
        names.append(parts[1])
    if not names:
        raise UserError(f"{path}: no classes listed")
    return names


def parse_split_lists(lists: Path) -> tuple[list[str], list[ListedClip]]:
    """Class names and every clip of ``trainlist0{1,2,3}.txt``/``testlist0{1,2,3}.txt``, indexed once.

    Class folders are matched to ``classInd.txt`` case-insensitively (the real lists spell some classes
    differently from their file names); a train list's label must agree with the folder's class.

    Raises:
        UserError: a malformed line, an unknown class, a wrong label, or a clip in both lists of a split.
    """
    classes = parse_class_index(lists / "classInd.txt")
    by_lower = {c.lower(): i for i, c in enumerate(classes)}
    seen: dict[str, dict] = {}
    for split in SPLITS:
        for kind in ("train", "test"):
            path = lists / f"{kind}list{split:02d}.txt"
            for lineno, line in read_list(path):
                where = f"{path}:{lineno}"
                name, label, list_path = _parse_list_line(line, kind, by_lower, classes, where)
                entry = seen.setdefault(name, {"label": label, "list_path": list_path, "splits": [None] * 3})
                if entry["label"] != label or entry["splits"][split - 1] not in (None, kind):
                    raise UserError(f"{where}: {name} is listed with another class or in both lists of split {split}")
                entry["splits"][split - 1] = kind
    return classes, [_listed(name, e, classes) for name, e in sorted(seen.items())]


def _parse_list_line(
    line: str, kind: str, by_lower: dict[str, int], classes: list[str], where: str
) -> tuple[str, int, str]:
    """(video stem, 0-based label, listed path) of one "Class/v_Class_gXX_cYY.avi [LABEL]" line."""
    parts = line.split()
    list_path = parts[0].replace("\\", "/")
    if list_path.startswith("/") or ".." in list_path.split("/"):
        raise UserError(f"{where}: {parts[0]!r} leads outside the raw folder (an absolute path or '..')")
    folder, _, file_name = list_path.rpartition("/")
    stem = file_name.rsplit(".", 1)[0]
    if len(parts) != (2 if kind == "train" else 1) or not STEM.match(stem) or folder.lower() not in by_lower:
        example = "Class/v_Class_g08_c01.avi" + (" LABEL" if kind == "train" else "")
        raise UserError(f"{where}: expected '{example}' with a class of classInd.txt, got {line!r}")
    label = by_lower[folder.lower()]
    if kind == "train" and parts[1] != str(label + 1):
        raise UserError(f"{where}: label {parts[1]} but classInd.txt numbers {classes[label]} as {label + 1}")
    return stem, label, list_path


def _listed(name: str, entry: dict, classes: list[str]) -> ListedClip:
    match = STEM.match(name)
    assert match is not None  # checked while parsing
    return ListedClip(
        name,
        classes[entry["label"]],
        entry["label"],
        int(match["group"]),
        int(match["clip"]),
        entry["list_path"],
        tuple(entry["splits"]),
    )


# --------------------------------------------------------------------------------------------- raw layout
class FolderIndex:
    """Names in one folder, looked up case-insensitively (an exact match wins); listed once, lazily."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._names: dict[str, list[str]] | None = None

    def find(self, name: str) -> str | None:
        """The on-disk spelling of ``name`` in this folder, or None."""
        if self._names is None:
            self._names = {}
            for entry in sorted(p.name for p in self.folder.iterdir()) if self.folder.is_dir() else []:
                self._names.setdefault(entry.lower(), []).append(entry)
        found = self._names.get(name.lower(), [])
        return name if name in found else (found[0] if found else None)


@dataclass(frozen=True)
class Layout:
    """Which raw folders prep reads: ``rgb_source`` "frames" (jpegs_256/) or "video" (UCF-101/*.avi)."""

    raw: Path
    rgb_source: str
    flow: bool  # tvl1_flow/u and tvl1_flow/v exist

    @classmethod
    def resolve(cls, cfg: DataConfig) -> Layout:
        """The layout under ``data.raw`` for ``data.rgb_source`` (auto: frames when jpegs_256/ exists).

        Raises:
            UserError: no raw folder, an unknown rgb_source, or the folders it needs are absent.
        """
        if not cfg.raw:
            raise UserError("ucf101 needs its raw folder: `mmtool prep ucf101 --raw DIR` (see data_prep/ucf101.md)")
        raw = Path(cfg.raw).expanduser().resolve()
        if not (raw / LISTS).is_dir():
            raise UserError(f"{raw / LISTS} not found: --raw must hold {LISTS}/ (see data_prep/ucf101.md)")
        wanted = settings(cfg).rgb_source
        if wanted not in RGB_SOURCES:
            raise UserError(f"data.rgb_source must be one of {', '.join(RGB_SOURCES)}, got {wanted!r}")
        source = wanted
        if source == "auto":
            source = "frames" if (raw / RGB_FRAMES).is_dir() else "video"
        needed = raw / (RGB_FRAMES if source == "frames" else VIDEOS)
        if not needed.is_dir():
            raise UserError(f"{needed} not found (data.rgb_source={wanted}; see data_prep/ucf101.md)")
        flow = all((raw / FLOW / axis).is_dir() for axis in ("u", "v"))
        return cls(raw, source, flow)

    def describe(self) -> dict:
        return {
            "raw": str(self.raw),
            "split_lists": LISTS,
            "rgb_source": self.rgb_source,
            "rgb": RGB_FRAMES if self.rgb_source == "frames" else f"{VIDEOS} (decoded to {EXTRACTED}/ in the cache)",
            "rgb_base": "raw" if self.rgb_source == "frames" else "cache",
            "flow": FLOW if self.flow else None,
            "flow_note": None if self.flow else NO_FLOW_NOTE,
        }


class RawFinder:
    """Finds each listed clip's raw files, tolerating case differences between lists and disk."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        raw = layout.raw
        self.rgb = FolderIndex(raw / RGB_FRAMES)
        self.flow = {axis: FolderIndex(raw / FLOW / axis) for axis in ("u", "v")}
        self.classes = FolderIndex(raw / VIDEOS)
        self.videos: dict[str, FolderIndex] = {}
        self.case_mismatches: set[str] = set()

    def locate(self, clip: ListedClip) -> tuple[dict[str, str], list[str]]:
        """({part: path relative to raw} found, [expected relative paths that are absent])."""
        wanted: dict[str, tuple[str, str | None]] = {}
        if self.layout.rgb_source == "frames":
            wanted["rgb_dir"] = (f"{RGB_FRAMES}/{clip.name}", self._found(self.rgb, clip.name, RGB_FRAMES))
        else:
            wanted["video"] = (f"{VIDEOS}/{clip.list_path}", self._video(clip))
        if self.layout.flow:
            for axis in ("u", "v"):
                rel = f"{FLOW}/{axis}"
                wanted[f"flow_{axis}_dir"] = (f"{rel}/{clip.name}", self._found(self.flow[axis], clip.name, rel))
        found = {part: path for part, (_, path) in wanted.items() if path is not None}
        return found, [expected for expected, path in wanted.values() if path is None]

    def _found(self, folder: FolderIndex, name: str, rel: str) -> str | None:
        on_disk = folder.find(name)
        if on_disk is None:
            return None
        if on_disk != name:
            self.case_mismatches.add(f"{rel}: {_class_part(name)} -> {_class_part(on_disk)}")
        return f"{rel}/{on_disk}"

    def _video(self, clip: ListedClip) -> str | None:
        listed_folder, _, file_name = clip.list_path.rpartition("/")
        folder = self._found(self.classes, listed_folder, VIDEOS)
        if folder is None:
            return None
        files = self.videos.setdefault(folder, FolderIndex(self.layout.raw / folder))
        return self._found(files, file_name, folder)


def _class_part(name: str) -> str:
    match = STEM.match(Path(name).stem)
    return match["cls"] if match else name
