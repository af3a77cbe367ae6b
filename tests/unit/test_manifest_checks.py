"""A manifest is checked against the data it describes; no index entry or split-file line leaves its root."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mmtool.data import cache_dir, load_dataset, prepare
from mmtool.data.pipeline_io import read_jsonl, write_jsonl
from mmtool.data_config import DataConfig
from mmtool.errors import UserError
from tests.e2e.cli import messages
from tests.e2e.test_cli_chain import mmtool
from tests.fixtures.media import write_ucf101, write_vggsound


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def set_field(name: str, value: object) -> Callable[[dict], None]:
    def edit(manifest: dict) -> None:
        *parents, last = name.split(".")
        node = manifest
        for part in parents:
            node = node[part]
        node[last] = value

    return edit


def tamper_index(folder: Path, edit: Callable[[list[dict]], None]) -> Path:
    """Rewrite index.jsonl and its checksum in the manifest, as a hand-edited (or forged) cache would."""
    index = folder / "index.jsonl"
    rows = read_jsonl(index)
    edit(rows)
    write_jsonl(index, rows)
    sha = hashlib.sha256(index.read_bytes()).hexdigest()
    edit_json(folder / "manifest.json", lambda m: m["files"].update({"index.jsonl": sha}))
    return index


# ------------------------------------------------------------------------------------------- array sets
@pytest.fixture(scope="module")
def gamma(tmp_path_factory) -> DataConfig:
    cfg = DataConfig.of(name="synth-gamma", root=str(tmp_path_factory.mktemp("gamma") / "data"), n=60)
    prepare(cfg)
    return cfg


@pytest.fixture
def gamma_copy(gamma, tmp_path) -> DataConfig:
    shutil.copytree(gamma.root, tmp_path / "data")
    return DataConfig.of(name="synth-gamma", root=str(tmp_path / "data"), n=60)


@pytest.mark.parametrize(
    "field, value, found",
    [
        ("n", 59, "holds 60 samples"),
        ("num_classes", 4, "the label array 'y' of"),
        ("num_classes", 2, "has 3 classes"),
        ("class_counts", [30, 20, 10], "count ["),
        ("modalities.m1", 100, "holds m1 of shape 200"),
        ("modalities", {"m1": 200}, "holds {'m1': 200, 'm2': 100}"),
        ("dataset", "synth-alpha", "is read as 'synth-gamma'"),
    ],
)
def test_array_manifest_field_that_disagrees_with_the_data_is_named(gamma_copy, field, value, found):
    manifest = cache_dir(gamma_copy) / "manifest.json"
    load_dataset(gamma_copy)  # consistent as prepared
    edit_json(manifest, set_field(field, value))
    with pytest.raises(UserError) as err:
        load_dataset(gamma_copy)
    msg = str(err.value)
    assert msg.startswith(f"{manifest}: field '{field}' ")
    assert repr(value) in msg or json.dumps(value) in msg or str(value) in msg
    assert found in msg and "mmtool prep synth-gamma --force" in msg and "\n" not in msg


def test_a_missing_manifest_field_is_named(gamma_copy):
    manifest = cache_dir(gamma_copy) / "manifest.json"
    edit_json(manifest, lambda m: m.pop("class_counts"))
    with pytest.raises(UserError, match=r"field 'class_counts' is missing \(run `mmtool prep synth-gamma --force`"):
        load_dataset(gamma_copy)
    manifest.write_text("{not json")
    with pytest.raises(UserError, match="not a readable manifest"):
        load_dataset(gamma_copy)


def test_laziness_family_num_classes_is_the_family_s(tmp_path):
    cfg = DataConfig.of(name="synth-lazy", root=str(tmp_path / "data"), n=60)
    prepare(cfg)
    edit_json(cache_dir(cfg) / "manifest.json", set_field("num_classes", 3))
    with pytest.raises(UserError, match=r"field 'num_classes' is 3, but synth-lazy has 2 classes \(run `mmtool prep"):
        load_dataset(cfg)


@pytest.mark.parametrize("field, value", [("n", 599), ("num_classes", 4)])
def test_cli_train_on_an_edited_manifest_exits_2_naming_the_field(tmp_path, field, value):
    cfg = DataConfig.of(name="synth-gamma", root=str(tmp_path / "data"), n=600)  # what recipes/tiny reads from cwd
    prepare(cfg)
    manifest = cache_dir(cfg) / "manifest.json"
    edit_json(manifest, set_field(field, value))
    proc = mmtool(tmp_path, "train", "naive", "-d", "tiny", check=False)
    assert proc.returncode == 2
    lines = messages(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {Path('data') / manifest.relative_to(tmp_path / 'data')}")
    assert f"field '{field}' is {value}, but" in lines[0] and "mmtool prep synth-gamma --force" in lines[0]
    assert not any((tmp_path / "runs").rglob("*.json"))  # no half-run left behind


# ------------------------------------------------------------------------------------------------ UCF101
UCF_CLASSES = ("ApplyEyeMakeup", "Archery")
UCF_GROUPS = (1, 8, 15, 22)  # train and test clips in every official split


def ucf(tmp_path: Path, **kwargs) -> tuple[DataConfig, Path]:
    raw = write_ucf101(tmp_path / "raw", classes=UCF_CLASSES, groups=UCF_GROUPS, videos=False, frames=4, **kwargs)
    cfg = DataConfig.of(name="ucf101", root=str(tmp_path / "data"), raw=str(raw["root"]), image_size=16, flow_stack=2)
    return cfg, raw["root"]


@pytest.fixture
def ucf_prepared(tmp_path) -> tuple[DataConfig, Path]:
    cfg, raw = ucf(tmp_path)
    prepare(cfg)
    return cfg, raw


@pytest.mark.parametrize(
    "key, entry, problem",
    [
        ("rgb_dir", "jpegs_256/../../outside", "has a '..' component"),
        ("rgb_dir", "/etc", "is not a path relative to"),
        ("flow_u_dir", "tvl1_flow/v/v_ApplyEyeMakeup_g01_c01", "is not inside"),
        ("flow_v_dir", "tvl1_flow\\v\\..\\..\\..", "has a '..' component"),
    ],
)
def test_ucf101_index_entry_outside_its_folder_is_refused(ucf_prepared, key, entry, problem):
    cfg, _ = ucf_prepared

    def edit(rows: list[dict]) -> None:
        rows[1][key] = entry

    index = tamper_index(cache_dir(cfg), edit)
    with pytest.raises(UserError) as err:
        load_dataset(cfg)
    msg = str(err.value)
    assert msg.startswith(f"{index}:2 {key}: {entry!r} {problem}") and "--force" in msg and "\n" not in msg


def test_ucf101_clip_folder_linking_outside_the_raw_folder_is_refused(ucf_prepared, tmp_path):
    cfg, raw = ucf_prepared
    clip = raw / read_jsonl(cache_dir(cfg) / "index.jsonl")[0]["rgb_dir"]
    shutil.move(clip, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", clip)
    with pytest.raises(
        UserError, match=r"index.jsonl:1 rgb_dir: 'jpegs_256/v_\w+' leads outside .*jpegs_256 through a link"
    ):
        load_dataset(cfg)


def test_ucf101_layout_folder_may_itself_be_a_link(ucf_prepared, tmp_path):
    """A layout assembled from several disks: jpegs_256/ links to another folder, and loads."""
    cfg, raw = ucf_prepared
    shutil.move(raw / "jpegs_256", tmp_path / "other-disk")
    os.symlink(tmp_path / "other-disk", raw / "jpegs_256")
    assert len(load_dataset(cfg).splits["test"]) > 0


@pytest.mark.parametrize("field, value, found", [("n", 7, "holds 8 samples"), ("num_classes", 3, "has 2 classes")])
def test_ucf101_manifest_n_and_num_classes_agree_with_the_index(ucf_prepared, field, value, found):
    cfg, _ = ucf_prepared
    manifest = cache_dir(cfg) / "manifest.json"
    edit_json(manifest, set_field(field, value))
    with pytest.raises(UserError) as err:
        load_dataset(cfg)
    assert str(err.value).startswith(f"{manifest}: field '{field}' is {value}, but ")
    assert found in str(err.value) and "mmtool prep ucf101 --raw DIR --force" in str(err.value)


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda t: t.replace("Archery/v_Archery", "../Archery/v_Archery", 1), "leads outside the raw folder"),
        (lambda t: t.replace("Archery/v_Archery", "/abs/Archery/v_Archery", 1), "leads outside the raw folder"),
    ],
)
def test_ucf101_split_file_line_leaving_the_raw_folder_is_refused(tmp_path, edit, problem):
    cfg, raw = ucf(tmp_path, quirks=False)
    lists = raw / "ucfTrainTestlist" / "trainlist01.txt"
    lists.write_text(edit(lists.read_text()))
    with pytest.raises(UserError, match=rf"trainlist01.txt:\d+: '[^']*Archery[^']*' {problem}"):
        prepare(cfg)


def test_ucf101_class_that_is_not_a_plain_folder_name_is_refused(tmp_path):
    cfg, raw = ucf(tmp_path, quirks=False)
    index = raw / "ucfTrainTestlist" / "classInd.txt"
    index.write_text(index.read_text().replace("Archery", ".."))
    with pytest.raises(UserError, match=r"classInd.txt:2: class '..' is not a plain folder name"):
        prepare(cfg)


# -------------------------------------------------------------------------------------------- VGG-Sound
@pytest.fixture
def vgg_prepared(tmp_path) -> DataConfig:
    raw = write_vggsound(tmp_path / "raw", classes=("a", "b"), train_per_class=1, test_per_class=1, frames=8,
                         size=(16, 16), seconds=1.0, sample_rate=16000, name_variants=False)  # fmt: skip
    cfg = DataConfig.of(name="vggsound", root=str(tmp_path / "data"), raw=str(raw["root"]), store_size=16,
                     clip_frames=4, audio_seconds=1.0, image_size=8, val_fraction=0.0)  # fmt: skip
    prepare(cfg)
    return cfg


@pytest.mark.parametrize(
    "key, entry, problem",
    [
        ("frames", "frames/../../../x.jpg", "has a '..' component"),
        ("audio", "/tmp/x.npy", "is not a path relative to"),
        ("frames", "audio/00/x.jpg", "is not inside"),
        ("source", "../elsewhere/clip.mp4", "has a '..' component"),
    ],
)
def test_vggsound_index_entry_outside_its_root_is_refused(vgg_prepared, key, entry, problem):
    def edit(rows: list[dict]) -> None:
        rows[2][key] = entry

    index = tamper_index(cache_dir(vgg_prepared), edit)
    with pytest.raises(UserError) as err:
        load_dataset(vgg_prepared)
    msg = str(err.value)
    assert msg.startswith(f"{index}:3 {key}: {entry!r} {problem}") and "--force" in msg and "\n" not in msg


def test_vggsound_cache_file_linking_outside_is_refused(vgg_prepared, tmp_path):
    folder = cache_dir(vgg_prepared)
    audio = folder / read_jsonl(folder / "index.jsonl")[-1]["audio"]
    shutil.copy(audio, tmp_path / "outside.npy")
    audio.unlink()
    os.symlink(tmp_path / "outside.npy", audio)
    with pytest.raises(
        UserError, match=r"index.jsonl:4 audio: 'audio/\w+/[\w-]+\.npy' leads outside .* through a link"
    ):
        load_dataset(vgg_prepared)


@pytest.mark.parametrize(
    "field, value, found",
    [("n", 5, "holds 4 samples"), ("num_classes", 3, "has 2 classes"), ("split_sizes", {"train": 3, "test": 1}, "")],
)
def test_vggsound_manifest_facts_agree_with_the_index(vgg_prepared, field, value, found):
    manifest = cache_dir(vgg_prepared) / "manifest.json"
    edit_json(manifest, set_field(field, value))
    with pytest.raises(UserError) as err:
        load_dataset(vgg_prepared)
    assert str(err.value).startswith(f"{manifest}: field '{field}' is {value}, but ")
    assert found in str(err.value) and "mmtool prep vggsound --raw DIR" in str(err.value)
