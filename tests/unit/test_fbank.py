"""The ``fbank`` input transform against an independent numpy implementation of Kaldi's definition.

torchaudio does not run on the build machine, so parity with ``torchaudio.compliance.kaldi.fbank`` itself is
not tested; the reference below follows Kaldi's feature-window.cc/mel-computations.cc definitions written
out with loops: framing with snip_edges, per-frame DC removal, pre-emphasis (the first sample against
itself), the symmetric window, zero-padding to a power of two, |rfft|^2, triangular filters on 1127 ln(1 + f/700)
from low_freq to Nyquist, and log floored at float32's epsilon.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmtool.models.fbank import KaldiFbank
from mmtool.models.transforms import INPUT_TRANSFORMS


def _mel(f: float) -> float:
    return 1127.0 * math.log(1.0 + f / 700.0)


def reference_fbank(wave: np.ndarray, sr: int, n_mels: int, window: str, low: float = 20.0) -> np.ndarray:
    """(T, n_mels) log mel energies of one waveform, float64, written from Kaldi's definitions."""
    wave = wave.astype(np.float64) - wave.mean()  # CAV-MAE's whole-waveform demean
    win, shift = int(sr * 0.025), int(sr * 0.010)
    n_fft = 1
    while n_fft < win:
        n_fft *= 2
    n = np.arange(win)
    hann = 0.5 - 0.5 * np.cos(2 * math.pi * n / (win - 1))
    w = hann if window == "hanning" else hann**0.85
    high_mel, low_mel = _mel(sr / 2), _mel(low)
    delta = (high_mel - low_mel) / (n_mels + 1)
    banks = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        left, centre, right = low_mel + m * delta, low_mel + (m + 1) * delta, low_mel + (m + 2) * delta
        for k in range(n_fft // 2):  # the Nyquist bin carries no weight in Kaldi
            f = _mel(k * sr / n_fft)
            if left < f < right:
                banks[m, k] = (f - left) / (centre - left) if f <= centre else (right - f) / (right - centre)
    frames = []
    for t in range(1 + (len(wave) - win) // shift):
        frame = wave[t * shift : t * shift + win].copy()
        frame -= frame.mean()
        frame = np.concatenate([[frame[0] - 0.97 * frame[0]], frame[1:] - 0.97 * frame[:-1]])
        padded = np.zeros(n_fft)
        padded[:win] = frame * w
        power = np.abs(np.fft.rfft(padded)) ** 2
        frames.append(np.log(np.maximum(banks @ power, np.finfo(np.float32).eps)))
    return np.stack(frames)


def _waves(sr: int, seconds: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(int(sr * seconds)) / sr
    tone = 0.3 * torch.sin(2 * math.pi * 440 * t) + 0.1 * torch.sin(2 * math.pi * 3100 * t)
    return torch.stack([tone + 0.05 * torch.randn(t.shape, generator=gen), 0.2 * torch.randn(t.shape, generator=gen)])


@pytest.mark.parametrize(
    ("window", "sr", "n_mels"), [("hanning", 16000, 128), ("povey", 16000, 64), ("hanning", 8000, 40)]
)
def test_matches_the_numpy_reference(window: str, sr: int, n_mels: int) -> None:
    waves = _waves(sr, 0.3)
    fb = KaldiFbank(waves.shape[1], sample_rate=sr, n_mels=n_mels, window=window, target_frames=None)
    out = fb(waves)  # (B, 1, T, n_mels)
    assert list(out.shape[1:]) == fb.out_shape and out.dtype == torch.float32
    for b in range(2):
        ref = reference_fbank(waves[b].numpy(), sr, n_mels, window)
        assert out.shape[2] == ref.shape[0] == 1 + (waves.shape[1] - int(sr * 0.025)) // int(sr * 0.010)
        np.testing.assert_allclose(out[b, 0].numpy(), ref, atol=1e-4, rtol=0)


def test_windows_differ_and_the_default_is_cav_mae_s_hanning() -> None:
    waves = _waves(16000, 0.2)
    hanning, povey = (KaldiFbank(3200, window=w, target_frames=None)(waves) for w in ("hanning", "povey"))
    assert KaldiFbank(3200).window_kind == "hanning"
    assert (hanning - povey).abs().max() > 0.05


def test_padding_cutting_and_normalisation_follow_cav_mae() -> None:
    waves = _waves(16000, 0.2)  # 18 frames
    plain = KaldiFbank(3200, target_frames=None)(waves)
    padded = KaldiFbank(3200, target_frames=30, mean=-5.081, std=4.4849)(waves)
    assert padded.shape == (2, 1, 30, 128)
    torch.testing.assert_close(padded[:, :, :18], (plain - -5.081) / 4.4849)
    padding = padded[:, :, 18:]  # zeros, normalised
    torch.testing.assert_close(padding, torch.full_like(padding, 5.081 / 4.4849))
    cut = KaldiFbank(3200, target_frames=10)(waves)
    torch.testing.assert_close(cut, plain[:, :, :10])


def test_half_precision_cast_keeps_the_computation_exact() -> None:
    waves = _waves(16000, 0.2)
    fb = KaldiFbank(3200, target_frames=None)
    expected = fb(waves)
    fb.half()
    assert fb.window.dtype == torch.float64 and fb.banks.dtype == torch.float64
    torch.testing.assert_close(fb(waves.half()), KaldiFbank(3200, target_frames=None)(waves.half().float()))
    assert not fb.state_dict() and expected.shape[2] == 18


def test_registered_and_bad_arguments_fail_in_one_line() -> None:
    assert INPUT_TRANSFORMS.get("fbank") is KaldiFbank
    with pytest.raises(ValueError, match="window must be one of"):
        KaldiFbank(16000, window="blackman")
    with pytest.raises(ValueError, match="mean and std together"):
        KaldiFbank(16000, mean=-5.0)
    with pytest.raises(ValueError, match="at least one frame"):
        KaldiFbank(100)
