"""Input transforms: modules that turn what the data delivers into what an encoder reads, on the model's device.

A transform is built as ``cls(in_shape, **args)`` from a model spec (``"transform": "stft"`` plus
``"transform_args"``), where ``in_shape`` is the per-sample shape the dataset delivers; it exposes
``out_shape``, the per-sample shape it produces, from which the encoder is sized. Transforms hold no learnt
state: whatever tensors they need (Fourier kernels) are rebuilt from their arguments and kept out of the
``state_dict``, so checkpoints stay small and their keys stay those of the encoders (torchvision-compatible).

Why a model-side transform rather than a prep step: VGG-Sound's magnitude spectrogram (App. A.1: 1024-point
DFT, 64 ms window, 32 ms hop, computed with nnAudio) costs a few milliseconds per batch on an accelerator,
and computing it there lets a recipe change the STFT (or crop the waveform first) without re-preparing a
cache of 200k clips. Kinetics-400's log-mel spectrogram (``logmel``, mmaction2's audio features) is one more
such step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mmtool.registry import Registry

INPUT_TRANSFORMS: Registry[type[nn.Module]] = Registry("input transform")


def _length(in_shape: int | Sequence[int], name: str = "stft") -> int:
    """Samples per waveform from a per-sample shape: ``L`` or ``[L]``."""
    if isinstance(in_shape, int):
        return in_shape
    dims = [int(d) for d in in_shape]
    if len(dims) != 1:
        raise ValueError(f"{name} expects a waveform per sample (shape [L]), got shape {dims}")
    return dims[0]


def _frames(name: str, sample_rate: int, n_fft: int, win_ms: float, hop_ms: float, length: int) -> tuple[int, int]:
    """Window and hop in samples, checked: positive, the window within ``n_fft``, enough samples to pad."""
    win, hop = round(sample_rate * win_ms / 1000), round(sample_rate * hop_ms / 1000)
    if not 0 < win <= n_fft or hop <= 0:
        raise ValueError(
            f"{name}: window {win} and hop {hop} samples must be positive and the window at most n_fft={n_fft} "
            f"(sample_rate={sample_rate}, win_ms={win_ms}, hop_ms={hop_ms})"
        )
    if length <= n_fft // 2:
        raise ValueError(f"{name}: {length} samples are too few for reflect padding of n_fft // 2 = {n_fft // 2}")
    return win, hop


class _FixedKernels(nn.Module):
    """A transform whose tensors (Fourier kernels, filter banks) are functions of its arguments: kept out of
    checkpoints, following the module across devices, and left in float32 by dtype casts."""

    def _own_kernels(self, module: nn.Module) -> None:
        """Make every buffer of ``module`` and its children non-persistent (off the ``state_dict``; a
        non-persistent buffer still moves with ``.to(device)``)."""
        for sub in module.modules():
            for name in list(sub._buffers):
                kernel = sub._buffers.pop(name)
                sub.register_buffer(name, kernel, persistent=False)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> _FixedKernels:
        """Device moves apply as usual; dtype casts (``.half()``, ``.to(torch.bfloat16)``) leave the kernels in
        float32, where the transform computes."""
        before = [(sub, name, kernel) for sub in self.modules() for name, kernel in sub._buffers.items()]
        super()._apply(fn, recurse)
        for sub, name, old in before:
            kernel = sub._buffers[name]
            if kernel is not None and kernel.dtype != old.dtype:  # re-take the exact kernel, not a rounded one
                sub._buffers[name] = old.to(kernel.device)
        return self


@INPUT_TRANSFORMS.register("stft")
class STFTMagnitude(_FixedKernels):
    """Magnitude STFT of a waveform batch with nnAudio: (B, L) -> (B, 1, n_fft // 2 + 1, T), float32.

    Defaults are App. A.1's: a 1024-point DFT with a 64 ms Hann window and a 32 ms hop at 16 kHz (1024 and
    512 samples). Frames are centred (the signal is reflect-padded by ``n_fft // 2`` on both sides), so
    ``T = 1 + L // hop``: 313 frames for 10 s at 16 kHz. The result equals
    ``torch.stft(x, n_fft, hop, win, window=torch.hann_window(win), center=True, pad_mode="reflect").abs()``.

    The computation always runs in float32, also inside a bf16/fp16 autocast region and when the model was
    cast to half precision: a 1024-tap sum in bf16 loses most of the quiet bins.

    Args:
        in_shape: per-sample input shape, ``L`` or ``[L]`` (samples per waveform).
        sample_rate: sampling rate of the waveform in Hz.
        n_fft: DFT size; the output has ``n_fft // 2 + 1`` frequency bins.
        win_ms: window length in milliseconds (at most ``n_fft`` samples; a shorter window is zero-padded).
        hop_ms: hop between frames in milliseconds.
        log: return ``log1p(magnitude)`` instead of the magnitude (the paper feeds the plain magnitude).
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        sample_rate: int = 16000,
        n_fft: int = 1024,
        win_ms: float = 64.0,
        hop_ms: float = 32.0,
        log: bool = False,
    ) -> None:
        super().__init__()
        from nnAudio.features import STFT  # heavy import (scipy): only where a model uses it

        self.length = _length(in_shape)
        self.win_length, self.hop_length = _frames("stft", sample_rate, n_fft, win_ms, hop_ms, self.length)
        self.n_fft, self.log = n_fft, log
        self.stft = STFT(
            n_fft=n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            window="hann",  # scipy's periodic Hann, the same as torch.hann_window
            freq_scale="no",
            center=True,
            pad_mode="reflect",
            sr=sample_rate,
            trainable=False,
            output_format="Magnitude",
            verbose=False,
        )
        self._own_kernels(self.stft)

    @property
    def out_shape(self) -> list[int]:
        """Per-sample output shape [1, n_fft // 2 + 1, T] with T = 1 + L // hop (centred frames)."""
        return [1, self.n_fft // 2 + 1, 1 + self.length // self.hop_length]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, 1, F, T)
        with torch.autocast(device_type=x.device.type, enabled=False):
            spec = self.stft(x.float())  # (B, F, T)
            if self.log:
                spec = torch.log1p(spec)
        return spec.unsqueeze(1)

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, win_length={self.win_length}, hop_length={self.hop_length}, log={self.log}"


@INPUT_TRANSFORMS.register("logmel")
class LogMel(_FixedKernels):
    """mmaction2's log-mel audio feature of a waveform batch, with nnAudio: (B, L) -> (B, 1, n_mels, T), float32.

    Kinetics-400's audio model (paper 000, App. A.1, footnote 10) reads the features of open-mmlab/mmaction2's
    ``tools/data/build_audio_features.py`` (read at commit eb7e1084389d47eff30ad43e86542c89f98d5b8a of the
    0.x branch, the paper's "master"; these settings are the same in every version of the file, from
    cfd257af, 2020, to c5487888, 2023, on main). Its ``AudioTools``, as its ``__main__`` builds it
    (``fft_size=512, hop_size=256``): librosa audio at 16 kHz, RMS-normalised to 0.1 (``audio_normalize``,
    RMS floored at 1e-4); the STFT magnitude with a 512-sample frame and a 256-sample hop
    ("window_size:32ms hop_size:16ms"); 80 mel bands between ``FMIN`` 125 and ``FMAX`` 7600 Hz (librosa's
    Slaney mel scale and area-normalised filters); ``S = 20 * log10(max(1e-5, mel)) - REF_LEVEL_DB`` (20);
    then ``clip((S - MIN_LEVEL_DB) / -MIN_LEVEL_DB, 0, 1)`` with ``MIN_LEVEL_DB`` -100. So the log is floored
    (at 1e-5, -100 dB), not offset, and mel levels from -80 to 20 dB map linearly onto [0, 1]. The defaults
    here are these. Two differences: mmaction2 takes the STFT with lws (mode "speech", a square-root Hann
    window scaled for reconstruction, so its levels differ from these by a window-dependent constant of a
    few dB), this transform with nnAudio (a Hann window, frames centred with reflect padding, so
    ``T = 1 + L // hop``); and mmaction2 normalises the RMS of the whole audio file, this transform that of
    the waveform it receives. Aligning the audio with the clip (mmaction2's ``AudioFeatureSelector`` crops
    the feature frames that the sampled video frames span) is the dataset's work: this transform sees the
    waveform the data delivers. The output is laid out as ``stft``'s, frequency before time (mmaction2's
    model reads (1, T, 80)).

    Computed in float32, also inside a bf16/fp16 autocast region and in a model cast to half precision.

    Args:
        in_shape: per-sample input shape, ``L`` or ``[L]`` (samples per waveform).
        sample_rate: sampling rate of the waveform in Hz.
        n_fft: DFT size; the mel filters cover its ``n_fft // 2 + 1`` bins.
        win_ms: window length in milliseconds (at most ``n_fft`` samples).
        hop_ms: hop between frames in milliseconds.
        n_mels: mel bands (rows of the output).
        fmin: lowest filter edge in Hz.
        fmax: highest filter edge in Hz (at most the Nyquist frequency).
        rms: RMS each waveform is scaled to first; None keeps the waveform as it comes.
        min_db: the floor of the log in dB (``10 ** (min_db / 20)``), and the span of the map: mel levels of
            ``min_db + ref_db`` dB and below map to 0.
        ref_db: mel levels of ``ref_db`` dB and above map to 1.
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        sample_rate: int = 16000,
        n_fft: int = 512,
        win_ms: float = 32.0,
        hop_ms: float = 16.0,
        n_mels: int = 80,
        fmin: float = 125.0,
        fmax: float = 7600.0,
        rms: float | None = 0.1,
        min_db: float = -100.0,
        ref_db: float = 20.0,
    ) -> None:
        super().__init__()
        from nnAudio.features import MelSpectrogram  # heavy import (scipy): only where a model uses it

        self.length = _length(in_shape, "logmel")
        self.win_length, self.hop_length = _frames("logmel", sample_rate, n_fft, win_ms, hop_ms, self.length)
        if not 0 <= fmin < fmax <= sample_rate / 2 or n_mels < 1 or min_db >= 0 or (rms is not None and rms <= 0):
            raise ValueError(
                f"logmel: needs 0 <= fmin < fmax <= sample_rate / 2, n_mels >= 1, min_db < 0 and rms > 0 or None "
                f"(fmin={fmin}, fmax={fmax}, sample_rate={sample_rate}, n_mels={n_mels}, min_db={min_db}, rms={rms})"
            )
        self.n_fft, self.n_mels, self.rms, self.min_db, self.ref_db = n_fft, n_mels, rms, min_db, ref_db
        self.mel = MelSpectrogram(
            sr=sample_rate,
            n_fft=n_fft,
            win_length=self.win_length,
            n_mels=n_mels,
            hop_length=self.hop_length,
            window="hann",
            center=True,
            pad_mode="reflect",
            power=1.0,  # mmaction2 warps the magnitude, not the power
            htk=False,  # Slaney's mel scale, librosa's default
            fmin=fmin,
            fmax=fmax,
            norm=1,  # area-normalised filters, librosa's default ("slaney")
            verbose=False,
        )
        self._own_kernels(self.mel)

    @property
    def out_shape(self) -> list[int]:
        """Per-sample output shape [1, n_mels, T] with T = 1 + L // hop (centred frames)."""
        return [1, self.n_mels, 1 + self.length // self.hop_length]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, 1, n_mels, T)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            if self.rms is not None:
                x = x * (self.rms / x.square().mean(-1, keepdim=True).sqrt().clamp_min(1e-4))
            mel = self.mel(x)  # (B, n_mels, T) magnitudes
            db = 20 * torch.log10(mel.clamp_min(10 ** (self.min_db / 20))) - self.ref_db
            spec = ((db - self.min_db) / -self.min_db).clamp(0, 1)
        return spec.unsqueeze(1)

    def extra_repr(self) -> str:
        return (
            f"n_fft={self.n_fft}, win_length={self.win_length}, hop_length={self.hop_length}, n_mels={self.n_mels}, "
            f"rms={self.rms}, min_db={self.min_db}, ref_db={self.ref_db}"
        )


@INPUT_TRANSFORMS.register("stack_frames")
class StackFrames(nn.Module):
    """The frames of a clip concatenated on channels, frame-major: (B, C, T, H, W) -> (B, T * C, H, W).

    What CREMA-D's loader delivers as ``visual`` (:class:`mmtool.data.cremad.VisualAudioReader`), done on the
    device for a clip set whose loader delivers ``video`` clips (Kinetics-Sounds): a 2D ``resnet18`` then reads
    MLA's "concatenation of three transformed images" (paper 003, App. A.3) with ``T * C`` input channels.
    """

    def __init__(self, in_shape: Sequence[int]) -> None:
        super().__init__()
        dims = [int(d) for d in in_shape] if not isinstance(in_shape, int) else [in_shape]
        if len(dims) != 4:
            raise ValueError(f"stack_frames expects clips of shape [C, T, H, W] per sample, got shape {dims}")
        self.channels, self.frames, self.height, self.width = dims

    @property
    def out_shape(self) -> list[int]:
        """[T * C, H, W]."""
        return [self.frames * self.channels, self.height, self.width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B, T * C, H, W)
        return x.transpose(1, 2).flatten(1, 2)
