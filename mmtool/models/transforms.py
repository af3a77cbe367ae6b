"""Input transforms: modules that turn what the data delivers into what an encoder reads, on the model's device.

A transform is built as ``cls(in_shape, **args)`` from a model spec (``"transform": "stft"`` plus
``"transform_args"``), where ``in_shape`` is the per-sample shape the dataset delivers; it exposes
``out_shape``, the per-sample shape it produces, from which the encoder is sized. Transforms hold no learnt
state: whatever tensors they need (Fourier kernels) are rebuilt from their arguments and kept out of the
``state_dict``, so checkpoints stay small and their keys stay those of the encoders (torchvision-compatible).

Why a model-side transform rather than a prep step: VGG-Sound's magnitude spectrogram (App. A.1: 1024-point
DFT, 64 ms window, 32 ms hop, computed with nnAudio) costs a few milliseconds per batch on an accelerator,
and computing it there lets a recipe change the STFT (or crop the waveform first) without re-preparing a
cache of 200k clips.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mmtool.registry import Registry

INPUT_TRANSFORMS: Registry[type[nn.Module]] = Registry("input transform")


def _length(in_shape: int | Sequence[int]) -> int:
    """Samples per waveform from a per-sample shape: ``L`` or ``[L]``."""
    if isinstance(in_shape, int):
        return in_shape
    dims = [int(d) for d in in_shape]
    if len(dims) != 1:
        raise ValueError(f"stft expects a waveform per sample (shape [L]), got shape {dims}")
    return dims[0]


@INPUT_TRANSFORMS.register("stft")
class STFTMagnitude(nn.Module):
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
        self.win_length = round(sample_rate * win_ms / 1000)
        self.hop_length = round(sample_rate * hop_ms / 1000)
        if not 0 < self.win_length <= n_fft or self.hop_length <= 0:
            raise ValueError(
                f"stft: window {self.win_length} and hop {self.hop_length} samples must be positive and the "
                f"window at most n_fft={n_fft} (sample_rate={sample_rate}, win_ms={win_ms}, hop_ms={hop_ms})"
            )
        if self.length <= n_fft // 2:
            raise ValueError(
                f"stft: {self.length} samples are too few for reflect padding of n_fft // 2 = {n_fft // 2}"
            )
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
        # The kernels are a function of the arguments: keep them out of checkpoints, but let them follow
        # the module across devices (non-persistent buffers do both).
        for name in list(self.stft._buffers):
            kernel = self.stft._buffers.pop(name)
            self.stft.register_buffer(name, kernel, persistent=False)

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

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> STFTMagnitude:
        """Device moves apply as usual; dtype casts (``.half()``, ``.to(torch.bfloat16)``) leave the Fourier
        kernels in float32, where the transform computes."""
        before = dict(self.stft._buffers)
        super()._apply(fn, recurse)
        for name, kernel in self.stft._buffers.items():
            old = before[name]
            if kernel is not None and kernel.dtype != old.dtype:  # re-take the exact kernel, not a rounded one
                self.stft._buffers[name] = old.to(kernel.device)
        return self

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, win_length={self.win_length}, hop_length={self.hop_length}, log={self.log}"
