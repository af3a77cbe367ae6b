"""Multi-view testing: a video read as several temporal windows and spatial crops, its prediction the mean of theirs.

PySlowFast tests a Kinetics model on ``TEST.NUM_ENSEMBLE_VIEWS`` (10) temporal clips x ``TEST.NUM_SPATIAL_CROPS``
(3) crops of each video and sums the views' softmax scores (``slowfast/datasets/kinetics.py``,
``decoder.get_start_end_idx``, ``transform.uniform_crop``, ``tools/test_net.py``); paper 000 App. A.1 follows
PySlowFast. Here, with ``data.test_clips`` = C and ``data.test_crops`` = K, a validation or test split of N videos
is read as N x C x K views: view ``v`` of video ``i`` has the flat id ``i * C * K + v``, temporal window
``v // K`` and crop ``v % K`` (PySlowFast's order). :func:`mmtool.engine.inference.run_inference` folds the views
of each video back into one row as they stream past (nothing holds a split's views at once):

* outputs whose name ends in ``logits`` become the log of the mean of the views' softmax probabilities (so the
  argmax is PySlowFast's summed-softmax prediction, and a cross-entropy on them is the video's);
* every other output (features) becomes the mean over the views — a linear classifier on mean features, as
  `decide` and `probe` fit, gives the mean of its per-view logits;
* each logits output also counts its correct single views: the clip accuracy beside the video accuracy.

Where the windows fall: with W = ``data.window_frames`` of T stored frames and delta = T - W, window k of C starts
at ``delta * k / C`` rounded down (PySlowFast's rule without offset sampling, its default); one window is the
centred one (``delta // 2``). Crops: the ``test_crop_size`` square at the start, centre and end of the frame's
long side (PySlowFast's spatial index 0, 1, 2); one crop is the centred one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmtool.data.transforms import resize


@dataclass(frozen=True)
class TestViews:
    """How many temporal windows (``clips``) and spatial crops (``crops``) each evaluated video is read as."""

    clips: int = 1
    crops: int = 1

    @property
    def count(self) -> int:
        return self.clips * self.crops

    def of(self, view: int) -> tuple[int, int]:
        """(window, crop) of view ``view`` of a video."""
        return divmod(view, self.crops)

    def describe(self) -> str:
        return f"{self.clips} clip{'s' if self.clips != 1 else ''} x {self.crops} crop{'s' if self.crops != 1 else ''}"


def window_start(stored: int, window: int, index: int, count: int) -> int:
    """First stored frame of temporal window ``index`` of ``count`` (module docstring); 0 when the window
    covers every stored frame."""
    delta = max(stored - window, 0)
    if count == 1:
        return delta // 2
    return int(delta * index / count)


def uniform_crop(clip: torch.Tensor, size: int, index: int, count: int) -> torch.Tensor:
    """The ``size`` x ``size`` crop ``index`` of ``count`` of (..., H, W): one crop is the centred one; three are
    at the start, centre and end of the long side (centred on the short side). A frame with a side under
    ``size`` is first resized up, aspect kept."""
    h, w = clip.shape[-2:]
    if h < size or w < size:
        scale = max(size / h, size / w)
        clip = resize(clip, (max(size, round(h * scale)), max(size, round(w * scale))))
        h, w = clip.shape[-2:]
    position = 1 if count == 1 else index  # 0 start, 1 centre, 2 end
    top, left = (h - size) // 2, (w - size) // 2
    if h > w:
        top = (0, (h - size) // 2, h - size)[position]
    else:
        left = (0, (w - size) // 2, w - size)[position]
    return clip[..., top : top + size, left : left + size]


def views_report(settings: object) -> dict:
    """What a stage's results say of multi-view testing under the data ``settings`` ({} for one view)."""
    views = TestViews(getattr(settings, "test_clips", 1), getattr(settings, "test_crops", 1))
    if views.count == 1:
        return {}
    return {
        "test_views": {"clips": views.clips, "crops": views.crops},
        "accuracy_over": f"videos: each video's prediction is the mean of its {views.describe()} (probabilities)",
    }
