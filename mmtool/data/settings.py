"""The built-in datasets' own recipe settings: one frozen dataclass per family.

A recipe writes them flat beside the common keys (``data: {name: ucf101, split: 2, flow_stack: 10}``);
validation (:mod:`mmtool.data_config`) checks the keys that are not common against the named dataset's class,
with the ``checked(...)`` ranges below. The defaults are what ``mmtool prep NAME`` builds when nothing is
given (CREMA-D's 3 frames of 3 s at 22.05 kHz are its defaults, not the Makefile's).

This module imports no torch (recipe validation reads it); the families register these classes with their
:class:`~mmtool.data.registry.DatasetSpec`, and registration checks that a built-in name uses the class
:data:`BUILTIN_SETTINGS` lists. A dataset from elsewhere declares its class beside its spec instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from mmtool.checks import above, at_least, between, checked, one_of


@dataclass(frozen=True)
class NoSettings:
    """Generated array sets (synth-*, digits-*): size, seed and split fractions are the common keys."""


@dataclass(frozen=True)
class GammaSettings:
    """App. A.10's dataset γ. ``balanced``: the reading that gives labels 1 and 2 equal counts (the paper's
    Table 21 and its uni-modal 70.9% imply them), beside the literal one (off: about 1:3, see
    :mod:`mmtool.data.synthetic`)."""

    balanced: bool = False


@dataclass(frozen=True)
class FrameSettings:
    """What the encoders of a real (image or video) dataset see. Real datasets have official test splits
    (``official_splits``): the common keys ``n`` and ``test_fraction`` mean nothing for them and a recipe
    that sets them is refused."""

    official_splits: ClassVar[bool] = True

    image_size: int = checked(224, at_least(1))  # side of the square frames the encoders see (App. A.1: 224)
    augment: bool = True  # random crops and flips in training (UCF101: App. A.1; VGG-Sound: none)


@dataclass(frozen=True)
class UCF101Settings(FrameSettings):
    split: int = checked(1, one_of(1, 2, 3), picks_samples=True)  # official train/test split 1, 2 or 3
    flow_stack: int = checked(10, at_least(1))  # x and y flow frames per sample (App. A.1: 10 each, 20 channels)
    # prep: frames (jpegs_256/), video (UCF-101/*.avi) or auto (frames if present)
    rgb_source: str = checked("auto", one_of("frames", "video", "auto"))


@dataclass(frozen=True)
class AudioVisualSettings(FrameSettings):
    """Audio-visual clip sets stored by :mod:`mmtool.data.clips` (VGG-Sound, Kinetics); prep-time sizes."""

    store_size: int = checked(256, at_least(1))  # frames stored store_size x store_size (App. A.1: 256)
    clip_frames: int = checked(32, at_least(1))  # frames sampled uniformly per clip (App. A.1: 32)
    audio_seconds: float = checked(10.0, above(0))  # audio cropped or tiled to this length (App. A.1: 10 s)
    sample_rate: int = checked(16000, at_least(1))  # audio resampled to this rate (App. A.1: 16 kHz)
    # load-time: a sample is window_frames consecutive stored frames (None: all clip_frames of them); training
    # draws the window's start, evaluation takes test_clips windows spread over the clip
    window_frames: int | None = checked(None, at_least(1))
    # load-time: seconds of audio per sample (None: audio_seconds, all that prep keeps); with window_frames, the
    # audio is centred on the frames' window (paper 000 App. A.1: "the specgram that can be aligned in time")
    audio_window_seconds: float | None = checked(None, above(0))
    # load-time, validation and test: each video is read as test_clips windows x test_crops spatial crops
    # (PySlowFast TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS) and its prediction is the mean of theirs
    # (mmtool.data.views); results report the accuracy over videos and over single views
    test_clips: int = checked(1, at_least(1))
    test_crops: int = checked(1, one_of(1, 3))
    # evaluation crop side (None: image_size); another size needs encoders that pool over space (CNNs, not MLPs)
    test_crop_size: int | None = checked(None, at_least(1))


@dataclass(frozen=True)
class CremadSettings(AudioVisualSettings):
    """CREMA-D as OGM-GE reads it (dataset/CramedDataset.py): 3 frames, 3 s of audio at 22.05 kHz."""

    clip_frames: int = checked(3, at_least(1))
    audio_seconds: float = checked(3.0, above(0))
    sample_rate: int = checked(22050, at_least(1))


@dataclass(frozen=True)
class ModelNet40Settings(FrameSettings):
    # prep: 0-based indices of the 12 renders (v001 = 0) read as the front and the rear view
    # (Wu et al. 2022, configs/training.gin: specific_views=[0, 6], i.e. v001 and v007, 180 degrees apart)
    front_view: int = checked(0, between(0, 11))
    rear_view: int = checked(6, between(0, 11))
    # prep: a third render read as the modality ``side`` (None: the two views above). Paper 002, Sec. 7 trains on
    # "three views" without naming them; our choice: front and rear as above plus v004, 90 degrees round (3)
    side_view: int | None = checked(None, between(0, 11))


@dataclass(frozen=True)
class NVGestureSettings(FrameSettings):
    """NVGesture RGB + depth (paper 002 App. A), :mod:`mmtool.data.nvgesture`; data_prep/nvgesture.md."""

    store_size: int = checked(256, at_least(8))  # prep: frames resized to store_size x store_size (App. A: 256x256)
    max_frames: int = checked(80, at_least(1))  # prep: frames kept from the listed start (App. A: 80, start to end)
    # load-time: consecutive frames per sample, zero-padded on both sides when a gesture is shorter (App. A: 64)
    window_frames: int = checked(64, at_least(1))
    flip: bool = True  # load-time: horizontal flips in training, with augment (paper 002 Sec. 6.1: "flipping")


@dataclass(frozen=True)
class Food101Settings(FrameSettings):
    """UPMC Food-101 (image + text), :mod:`mmtool.data.food101`: images read at load time, texts tokenized at prep."""

    # prep: a local Hugging Face tokenizer folder (relative to the working directory); its files are in the cache key
    tokenizer: str | None = None
    # prep: token ids kept per text, [CLS] and [SEP] included (MLA data/extract_token.py: max_length=256)
    max_tokens: int = checked(256, between(2, 512))
    # load: the images' mean and std, ImageNet's (MLA's ResNet pipeline) or CLIP's
    image_norm: str = checked("imagenet", one_of("imagenet", "clip"))


@dataclass(frozen=True)
class MVSASettings(Food101Settings):
    """MVSA-Single (image + tweet), :mod:`mmtool.data.mvsa`: Food-101's keys. It has no official split, so the
    common keys ``test_fraction``, ``val_fraction`` and ``seed`` draw train/val/test at load time."""

    official_splits: ClassVar[bool] = False


@dataclass(frozen=True)
class IemocapSettings(AudioVisualSettings):
    """IEMOCAP (audio + video frames + text), :mod:`mmtool.data.iemocap`; data_prep/iemocap.md says where each
    default comes from (MLA's code, github Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation)."""

    clip_frames: int = checked(1, at_least(1))  # MLA Modal3Dataset: the middle image of the utterance (prep-time)
    audio_seconds: float = checked(10.24, above(0))  # MLA extract_fbank.py: 1024 frames of 10 ms (load crops/tiles)
    # prep: a local Hugging Face tokenizer folder (MLA preprocess_iemo.py: bert-base-uncased); in the cache key
    tokenizer: str | None = None
    max_tokens: int = checked(256, between(2, 512))  # MLA preprocess_iemo.py: max_length=256
    merge_excited: bool = True  # prep: "exc" joins "hap" (4 classes: angry, happy, neutral, sad)
    # load-time: random = MLA gen_iemo_txt.py's utterance-level shuffle (20% test); session = Session 5 is test
    split: str = checked("random", one_of("random", "session"), picks_samples=True)


@dataclass(frozen=True)
class ColoredMNISTSettings:
    """Colored-and-gray MNIST (paper 002, Sec. 6.1; colouring of Kim et al. 2019), :mod:`mmtool.data.colored_mnist`.
    The test split is MNIST's t10k set; ``data.val_fraction`` of the training images (``data.seed``) is validation."""

    official_splits: ClassVar[bool] = True

    # prep: variance of the per-channel colour jitter on [0, 1] (Kim et al.: sigma^2 in 0.020..0.050; ours: 0.020)
    color_var: float = checked(0.02, between(0.0, 1.0))
    # prep: P(a digit is painted in its label's colour), otherwise one of the 9 other colours uniformly
    train_correlation: float = checked(1.0, between(0.0, 1.0))  # Kim et al.: every training digit in its colour
    test_correlation: float = checked(0.1, between(0.0, 1.0))  # Kim et al.: random colours (1 in 10 agree)
    color_seed: int = checked(0, at_least(0))  # prep: the colour draws (data.seed only picks the validation images)
    # load-time: which colours the validation images wear: "test" (the weak correlation, as paper 002's validation
    # set) or "train" (the strong one, as the images they are carved from)
    val_colors: str = checked("test", one_of("test", "train"))


# Kinetics-Sounds: the 31 Kinetics-400 classes listed by the AdaMML authors, https://github.com/IBM/AdaMML/issues/3
# (the 32-class list of pritamqu/CrissCross issue #4 adds "strumming guitar"; see mmtool.data.kinetics).
KINETICS_SOUNDS = (
    "blowing nose", "blowing out candles", "bowling", "chopping wood", "dribbling basketball", "laughing",
    "mowing lawn", "playing accordion", "playing bagpipes", "playing bass guitar", "playing clarinet",
    "playing drums", "playing guitar", "playing harmonica", "playing keyboard", "playing organ", "playing piano",
    "playing saxophone", "playing trombone", "playing trumpet", "playing violin", "playing xylophone",
    "ripping paper", "shoveling snow", "shuffling cards", "singing", "stomping grapes", "tap dancing",
    "tapping guitar", "tapping pen", "tickling",
)  # fmt: skip


@dataclass(frozen=True)
class KineticsSoundsSettings(AudioVisualSettings):
    """Kinetics-Sounds: Kinetics-400 restricted to ``classes`` (default: the 31 of :data:`KINETICS_SOUNDS`;
    ``data.classes`` names another list, e.g. those 31 and "strumming guitar" for the 32-class variant)."""

    # which classes (and so which clips) the set holds: a sample-picking setting (prep checks the names)
    classes: tuple[str, ...] = field(default=KINETICS_SOUNDS, metadata={"picks_samples": True})


_ARRAY_SETS = ("synth-alpha", "synth-beta", "synth-lazy", "digits-colored", "digits-twoview", "synth-tri")

BUILTIN_SETTINGS: dict[str, type] = {
    **{name: NoSettings for name in _ARRAY_SETS},
    "synth-gamma": GammaSettings,
    "cremad": CremadSettings,
    "food101": Food101Settings,
    "iemocap": IemocapSettings,
    "kinetics400": AudioVisualSettings,
    "kinetics-sounds": KineticsSoundsSettings,
    "modelnet40": ModelNet40Settings,
    "colored-mnist": ColoredMNISTSettings,
    "mvsa": MVSASettings,
    "nvgesture": NVGestureSettings,
    "ucf101": UCF101Settings,
    "vggsound": AudioVisualSettings,
}
