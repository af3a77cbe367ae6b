"""Kaldi's log mel filterbank ("fbank") of a waveform batch, in torch on the model's device: ``fbank``.

MLA (paper 003, App. A.3) feeds "the fbank acoustic feature" to the audio encoders of CREMA-D and Kinetics-Sounds
(ResNet-18) and of IEMOCAP (CAV-MAE). Its extraction script (github Cecile-hi/Multimodal-Learning-with-
Alternating-Unimodal-Adaptation @4735bbc, data/extract_fbank.py, ``wav2fbank``) is CAV-MAE's
(github YuanGongND/cav-mae, src/dataloader.py ``_wav2fbank``):

    waveform = waveform - waveform.mean()
    fbank = torchaudio.compliance.kaldi.fbank(waveform, htk_compat=True, sample_frequency=sr, use_energy=False,
                                              window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)
    # then zero-padded or cut to target_length = 1024 frames

so the defaults here are those, with Kaldi's defaults for the rest: 25 ms frames every 10 ms, cut inside the
signal (``snip_edges``: T = 1 + (L - window) // shift), each frame's mean removed, pre-emphasis 0.97, the window,
zero-padded to the next power of two (512 samples at 16 kHz), the power spectrum, 128 triangular filters on
Kaldi's mel scale (1127 ln(1 + f / 700)) from 20 Hz to the Nyquist frequency, and the natural log floored at
float32's epsilon. ``htk_compat`` only moves the energy coefficient, which ``use_energy=False`` leaves out.
Note the window: CAV-MAE and MLA use ``hanning`` (a symmetric Hann window), not Kaldi's default ``povey``
(the Hann window to the power 0.85); both are offered, and ``hamming`` and ``rectangular``.

Normalisation (``mean``, ``std``: ``(fbank - mean) / std``, after the padding): CAV-MAE's AudioSet statistics
are mean -5.081 and std 4.4849; MLA applies them to the CAV-MAE input of CREMA-D and Kinetics-Sounds
(dataset/dataset.py @11ae1ee, ``CAVDataset``) but not to IEMOCAP's (``Modal3Dataset`` defines them and never
uses them) nor to the ResNet-18 input (``AVDataset`` reads the raw fbank). The default is no normalisation;
a recipe names the values.

Output: [1, T, n_mels] per sample (frames before mel bins, Kaldi's and MLA's layout, with a channel axis for
the CNN encoders; :mod:`mmtool.models.cav_mae` reads it too), T = ``target_frames`` when given. Computed in
float64 outside autocast (torchaudio computes in the waveform's dtype, float32, whose rounding moves the lowest,
nearly empty mel bins by up to ~1e-4 in the log; float64 also keeps TF32 matmuls away), returned as float32.
The whole-waveform mean is that of the waveform the data delivers (a clip padded to a fixed length includes its
padding). Parity with torchaudio is not tested here (torchaudio does not run on the build machine); the tests
compare with an independent numpy implementation of the same definition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmtool.models.transforms import INPUT_TRANSFORMS, _length

WINDOWS = ("hanning", "povey", "hamming", "rectangular")
FLOOR = torch.finfo(torch.float32).eps  # Kaldi/torchaudio's log floor


def kaldi_window(kind: str, size: int) -> torch.Tensor:
    """Kaldi's symmetric window functions (torchaudio.compliance.kaldi's ``_feature_window_function``)."""
    if kind == "hanning":
        return torch.hann_window(size, periodic=False, dtype=torch.float64)
    if kind == "povey":
        return torch.hann_window(size, periodic=False, dtype=torch.float64).pow(0.85)
    if kind == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float64)
    return torch.ones(size, dtype=torch.float64)


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: float, low: float, high: float) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters on Kaldi's mel scale; the Nyquist bin gets no weight."""

    def mel(f: torch.Tensor | float) -> torch.Tensor:
        return 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)

    high = high if high > 0 else high + sample_rate / 2
    low_mel, high_mel = mel(low), mel(high)
    delta = (high_mel - low_mel) / (n_mels + 1)
    left = low_mel + torch.arange(n_mels, dtype=torch.float64).unsqueeze(1) * delta  # (n_mels, 1)
    centre, right = left + delta, left + 2 * delta
    bins = mel(sample_rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float64)).unsqueeze(0)  # (1, n_fft / 2)
    up, down = (bins - left) / (centre - left), (right - bins) / (right - centre)
    return F.pad(torch.clamp(torch.minimum(up, down), min=0.0), (0, 1))


@INPUT_TRANSFORMS.register("fbank")
class KaldiFbank(nn.Module):
    """Kaldi fbank of (B, L) waveforms -> (B, 1, T, n_mels), float32 (module docstring).

    Args:
        in_shape: per-sample input shape, ``L`` or ``[L]``.
        sample_rate: Hz.
        frame_ms: frame length (Kaldi: 25 ms).
        shift_ms: frame shift (10 ms).
        n_mels: mel bins (128, CAV-MAE's and MLA's).
        window: ``hanning`` (CAV-MAE, MLA), ``povey`` (Kaldi's default), ``hamming`` or ``rectangular``.
        preemphasis: coefficient (0.97; 0 disables).
        remove_dc: subtract each frame's mean (Kaldi's ``remove_dc_offset``).
        low_freq: lowest filter edge in Hz (20).
        high_freq: highest edge in Hz; 0 or less is an offset from the Nyquist frequency (0).
        demean: subtract each waveform's mean first (CAV-MAE's and MLA's ``waveform - waveform.mean()``).
        target_frames: zero-pad or cut to this many frames (1024); None keeps T.
        mean: normalisation mean (CAV-MAE's AudioSet value: -5.081); None: no normalisation.
        std: normalisation std (4.4849); given together with ``mean``.
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        sample_rate: int = 16000,
        frame_ms: float = 25.0,
        shift_ms: float = 10.0,
        n_mels: int = 128,
        window: str = "hanning",
        preemphasis: float = 0.97,
        remove_dc: bool = True,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        demean: bool = True,
        target_frames: int | None = 1024,
        mean: float | None = None,
        std: float | None = None,
    ) -> None:
        super().__init__()
        self.length = _length(in_shape, "fbank")
        self.win = int(sample_rate * frame_ms * 0.001)  # torchaudio truncates as Kaldi does
        self.shift = int(sample_rate * shift_ms * 0.001)
        _check(self, window, n_mels, target_frames, mean, std)
        self.n_fft = 1 << (self.win - 1).bit_length()  # next power of two (round_to_power_of_two)
        nyquist = sample_rate / 2
        if not 0 <= low_freq < (high_freq if high_freq > 0 else nyquist + high_freq) <= nyquist:
            raise ValueError(f"fbank: needs 0 <= low_freq < high_freq <= {nyquist} Hz (low_freq={low_freq}, "
                             f"high_freq={high_freq})")  # fmt: skip
        self.n_mels, self.window_kind, self.preemphasis, self.remove_dc = n_mels, window, preemphasis, remove_dc
        self.demean, self.target_frames, self.mean, self.std = demean, target_frames, mean, std
        self.frames = 1 + (self.length - self.win) // self.shift
        self.register_buffer("window", kaldi_window(window, self.win), persistent=False)
        banks = kaldi_mel_banks(n_mels, self.n_fft, sample_rate, low_freq, high_freq)
        self.register_buffer("banks", banks.T.contiguous(), persistent=False)  # (n_fft // 2 + 1, n_mels) float64

    @property
    def out_shape(self) -> list[int]:
        """[1, T, n_mels]: T = target_frames, or 1 + (L - window) // shift."""
        return [1, self.target_frames or self.frames, self.n_mels]

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202  (nn.Module's signature)
        """Device moves as usual; dtype casts leave the window and the filterbank in float64."""
        window, banks = self.window, self.banks
        super()._apply(fn, recurse)
        self.window = window.to(self.window.device)
        self.banks = banks.to(self.banks.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, 1, T, n_mels)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.double().reshape(x.shape[0], -1)  # float64: low mel bins are small differences of large terms
            if self.demean:
                x = x - x.mean(dim=1, keepdim=True)
            frames = x.unfold(1, self.win, self.shift)  # (B, T, win), snip_edges
            if self.remove_dc:
                frames = frames - frames.mean(dim=2, keepdim=True)
            if self.preemphasis:
                previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=2)  # Kaldi: x[0] - c * x[0]
                frames = frames - self.preemphasis * previous
            frames = F.pad(frames * self.window, (0, self.n_fft - self.win))  # (B, T, n_fft)
            power = torch.fft.rfft(frames).abs().pow(2)  # (B, T, n_fft // 2 + 1)
            fbank = (power @ self.banks).clamp_min(FLOOR).log().float()  # (B, T, n_mels)
            if self.target_frames is not None:
                fbank = _fit(fbank, self.target_frames)
            if self.mean is not None:
                fbank = (fbank - self.mean) / self.std
        return fbank.unsqueeze(1)

    def extra_repr(self) -> str:
        return (f"win={self.win}, shift={self.shift}, n_fft={self.n_fft}, n_mels={self.n_mels}, "
                f"window={self.window_kind}, target_frames={self.target_frames}, "
                f"mean={self.mean}, std={self.std}")  # fmt: skip


def _fit(fbank: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T, M) zero-padded at the end or cut to (B, frames, M) (CAV-MAE's ``ZeroPad2d``/slice)."""
    missing = frames - fbank.shape[1]
    return F.pad(fbank, (0, 0, 0, missing)) if missing > 0 else fbank[:, :frames]


def _check(t: KaldiFbank, window: str, n_mels: int, target_frames: int | None, mean: float | None,
           std: float | None) -> None:  # fmt: skip
    if window not in WINDOWS:
        raise ValueError(f"fbank: window must be one of {', '.join(WINDOWS)}, got {window!r}")
    if t.win < 2 or t.shift < 1 or t.length < t.win:
        raise ValueError(f"fbank: {t.length} samples, frames of {t.win} every {t.shift}: needs at least one frame")
    if n_mels < 1 or (target_frames is not None and target_frames < 1):
        raise ValueError(f"fbank: n_mels and target_frames must be positive (n_mels={n_mels}, "
                         f"target_frames={target_frames})")  # fmt: skip
    if (mean is None) != (std is None) or (std is not None and not (std > 0 and math.isfinite(std))):
        raise ValueError(f"fbank: give mean and std together, std > 0 (mean={mean}, std={std})")
