"""Multi-view testing: a sample read as several views, its prediction the mean of its views' probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmtool.data.source import DiskSource
from mmtool.data.views import TestViews as Views
from mmtool.data.views import uniform_crop, window_start
from mmtool.engine.evaluate import evaluate_splits
from mmtool.engine.inference import run_inference
from mmtool.engine.runtime import Runtime
from mmtool.errors import UserError

# 4 samples x 3 views of 2-class scores; the views of samples 0 and 2 disagree
VIEWS = torch.tensor([
    [[3.0, 0.0], [0.0, 1.0], [0.0, 1.0]],   # target 0: one view right; mean probability says class 1
    [[0.0, 2.0], [0.0, 2.0], [1.0, 0.0]],   # target 1: two views right, video right
    [[0.2, 0.0], [0.2, 0.0], [0.0, 5.0]],   # target 0: two views right; the confident third wins: wrong
    [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]],   # target 0: all right
])  # fmt: skip
TARGET = torch.tensor([0, 1, 0, 0])


class _ViewReader:
    """Sample i, view v: the scores VIEWS[i, v] as modality "x" (training reads view 0)."""

    def read(self, index, modalities, train, rng):
        return {"x": VIEWS[index, 0]}

    def read_view(self, index, view, modalities):
        return {"x": VIEWS[index, view]}


class _Scores(nn.Module):
    """Logits are the input; features are twice the input."""

    modalities = ("x",)

    def forward(self, inputs):
        return {"logits": inputs["x"], "features": {"x": 2 * inputs["x"]}}


def _source(views: int = 3) -> DiskSource:
    return DiskSource(_ViewReader(), TARGET, ["x"], eval_batch_size=2, views=views)


def test_video_accuracy_is_the_accuracy_of_the_averaged_clip_predictions():
    out = run_inference(_Scores(), _source(), Runtime.cpu(), want=("logits", "features"), batch_size=2)
    mean_prob = VIEWS.softmax(dim=2).mean(dim=1)  # (4, 2): each video's views averaged, computed here directly
    assert torch.equal(out["target"], TARGET) and torch.equal(out["ids"], torch.arange(4))
    assert torch.allclose(out["logits"].exp(), mean_prob, atol=1e-6)
    video_acc = float((mean_prob.argmax(1) == TARGET).float().mean() * 100)
    clip_acc = float((VIEWS.argmax(2) == TARGET[:, None]).float().mean() * 100)
    assert (video_acc, clip_acc) == (50.0, pytest.approx(800 / 12))  # the clips disagree: the accuracies differ
    assert out["clip_accuracy"]["logits"] == pytest.approx(clip_acc)
    assert torch.allclose(out["features"]["x"], 2 * VIEWS.mean(dim=1))  # features: the mean over views
    scores = evaluate_splits(_Scores(), {"test": _source()}, 2, Runtime.cpu())
    assert scores["test_accuracy"] == pytest.approx(video_acc)
    assert scores["test_clip_accuracy"] == pytest.approx(clip_acc)
    assert scores["views_per_sample"] == {"test": 3}


def test_views_of_one_sample_may_span_batches_and_ranks():
    """Batches of 2 split the 3 views of a sample; two ranks each read every other view: the sums add up."""
    whole = run_inference(_Scores(), _source(), Runtime.cpu(), want=("logits",), batch_size=5)
    parts: dict[int, object] = {}

    class Rank(Runtime):  # gathers what the other rank's pass left in `parts` (no process group here)
        distributed = True

        def gather_objects(self, obj):
            parts[self.rank] = obj
            return [parts[r] for r in sorted(parts)]

    for rank in (1, 0):
        merged = run_inference(_Scores(), _source(), Rank(torch.device("cpu"), world_size=2, rank=rank),
                               want=("logits",), batch_size=2)  # fmt: skip
    assert torch.allclose(merged["logits"], whole["logits"], atol=1e-6)
    assert merged["clip_accuracy"] == pytest.approx(whole["clip_accuracy"])


def test_training_reads_one_view_and_a_reader_without_views_is_refused():
    batches = list(_source().loader(8, train=True, seed=0))
    assert sum(len(b) for b in batches) == 4
    assert len(_source().select(["x"])) == 4 and _source().select(["x"]).views == 3

    class OneView:
        def read(self, index, modalities, train, rng):
            return {"x": VIEWS[index, 0]}

    with pytest.raises(UserError, match="one view per sample"):
        DiskSource(OneView(), TARGET, ["x"], views=2)


def test_windows_follow_pyslowfast_and_one_window_is_centred():
    # PySlowFast get_start_end_idx: start = delta * k / C; 150 stored frames, 32 per window, 10 windows
    assert [window_start(150, 32, k, 10) for k in range(10)] == [int(118 * k / 10) for k in range(10)]
    assert window_start(150, 32, 0, 1) == 59 and window_start(32, 32, 3, 10) == 0
    assert Views(10, 3).of(7) == (2, 1) and Views(10, 3).count == 30


def test_three_crops_lie_at_start_centre_and_end_of_the_long_side():
    wide = torch.arange(8 * 12).reshape(1, 8, 12)  # (C, H=8, W=12): values name their pixel
    lefts = [int(uniform_crop(wide, 8, i, 3)[0, 0, 0]) for i in range(3)]
    assert lefts == [0, 2, 4]  # W - size = 4: left, centre, right
    tall = torch.arange(12 * 8).reshape(1, 12, 8)
    tops = [int(uniform_crop(tall, 8, i, 3)[0, 0, 0]) // 8 for i in range(3)]
    assert tops == [0, 2, 4]
    assert int(uniform_crop(wide, 8, 0, 1)[0, 0, 0]) == 2  # one crop: the centred one
    small = uniform_crop(torch.zeros(3, 4, 6), 8, 2, 3)
    assert small.shape == (3, 8, 8)  # resized up first, aspect kept


def test_clip_reader_reads_windows_crops_and_aligned_audio(tmp_path):
    from PIL import Image

    from mmtool.data.clips_cache import StackedClipReader

    t, h, w = 10, 8, 12
    frames = np.zeros((t * h, w, 3), dtype=np.uint8)
    for k in range(t):
        frames[k * h : (k + 1) * h] = 20 * k  # frame k is grey level 20k
    Image.fromarray(frames).save(tmp_path / "c.png")  # lossless, unlike the cache's JPEG
    np.save(tmp_path / "c.npy", np.arange(1000, dtype=np.float32))
    reader = StackedClipReader(str(tmp_path), ["c.png"], ["c.npy"], stored_frames=t, store_size=8, image_size=8,
                               audio_samples=100, window=4, views=Views(2, 3), eval_crop=True)  # fmt: skip
    levels = []
    for view in range(6):
        x = reader.read_view(0, view, ["video", "audio"])
        assert x["video"].shape == (3, 4, 8, 8) and x["audio"].shape == (100,)
        grey = x["video"][0, :, 0, 0] * 0.229 + 0.485  # undo the ImageNet normalisation of channel 0
        levels.append(torch.round(grey * 255 / 20).int().tolist())
        first = window_start(t, 4, view // 3, 2)
        centre = (first + 2) / t * 1000
        assert float(x["audio"][0]) == round(centre - 50)  # the audio is centred on the window's middle
    assert levels[0] == levels[1] == levels[2] == [0, 1, 2, 3]  # window 0 of 2: start 6 * 0 / 2 = 0
    assert levels[3] == [3, 4, 5, 6]  # window 1: start 6 * 1 / 2 = 3
    train = reader.read(0, ["video"], True, np.random.default_rng(1))["video"]
    assert train.shape == (3, 4, 8, 8)
