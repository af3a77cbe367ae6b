"""The ``logmel`` input transform: mmaction2's log-mel audio feature (Kinetics-400) computed with nnAudio."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from mmtool.config import EncoderConfig, ModelConfig
from mmtool.errors import UserError
from mmtool.models import build_model, model_spec
from mmtool.models.transforms import INPUT_TRANSFORMS, LogMel

RATE = 16000


# ------------------------------------------------------------------ librosa's Slaney mel scale, written out
def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney: linear below 1 kHz (200/3 Hz a mel), logarithmic above (27 mels per factor 6.4)."""
    f = np.asarray(f, dtype=float)
    log_part = 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27)
    return np.where(f >= 1000, log_part, f / (200 / 3))


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=float)
    return np.where(m >= 15, 1000 * np.exp(np.log(6.4) / 27 * (m - 15)), m * (200 / 3))


def _edges(n_mels: int = 80, fmin: float = 125.0, fmax: float = 7600.0) -> np.ndarray:
    """The n_mels + 2 filter edges in Hz; filter i rises from edge i, peaks at edge i + 1, falls to edge i + 2."""
    return _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))


def _filterbank(n_fft: int = 512) -> torch.Tensor:
    """librosa.filters.mel(sr=16000, n_fft, n_mels=80, fmin=125, fmax=7600) (htk=False, norm="slaney"): (80, F)."""
    edges, freqs = _edges(), np.linspace(0, RATE / 2, n_fft // 2 + 1)
    rise = (freqs[None] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    fall = (edges[2:, None] - freqs[None]) / np.diff(edges)[1:, None]
    weights = np.maximum(0, np.minimum(rise, fall)) * (2 / (edges[2:] - edges[:-2]))[:, None]
    return torch.tensor(weights, dtype=torch.float32)


def _reference(x: torch.Tensor) -> torch.Tensor:
    """mmaction2's feature with torch's Hann STFT in place of lws: RMS 0.1, |STFT|, mel, dB, [0, 1]. (B, 80, T)."""
    x = x * (0.1 / x.square().mean(-1, keepdim=True).sqrt().clamp_min(1e-4))
    mag = torch.stft(x, n_fft=512, hop_length=256, window=torch.hann_window(512), center=True, pad_mode="reflect",
                     return_complex=True).abs()  # fmt: skip
    db = 20 * torch.log10((_filterbank() @ mag).clamp_min(1e-5)) - 20
    return ((db + 100) / 100).clamp(0, 1)


def _tones(freqs: list[float] | np.ndarray, seconds: float = 1.0, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * RATE), dtype=torch.float64) / RATE
    return (amplitude * torch.sin(2 * math.pi * torch.tensor(freqs, dtype=torch.float64)[:, None] * t)).float()


def _signal(batch: int, seed: int = 0) -> torch.Tensor:
    """Tones plus noise at different loudness: every band above the floor, some near it."""
    gen = torch.Generator().manual_seed(seed)
    loud = torch.logspace(-2, 0, batch)[:, None]
    return loud * (_tones([220.0, 1375.0, 5000.0]).sum(0) + 0.05 * torch.randn(batch, RATE, generator=gen))


# ------------------------------------------------------------------------------------------ tests
def test_defaults_are_mmaction2s():
    transform = INPUT_TRANSFORMS.get("logmel")([RATE])
    assert (transform.n_fft, transform.win_length, transform.hop_length, transform.n_mels) == (512, 512, 256, 80)
    assert (transform.rms, transform.min_db, transform.ref_db) == (0.1, -100.0, 20.0)
    torch.testing.assert_close(transform.mel.mel_basis, _filterbank(), rtol=1e-4, atol=1e-7)  # 125-7600 Hz, Slaney


def test_out_shape_for_a_waveform_length():
    assert LogMel([160000]).out_shape == [1, 80, 626]  # 10 s: 1 + 160000 // 256 centred frames
    assert LogMel(16000, hop_ms=10.0, win_ms=25.0, n_mels=64).out_shape == [1, 64, 101]  # 1 + 16000 // 160
    for length in (4000, 4100, 16000):
        transform = LogMel([length])
        out = transform(torch.randn(2, length))
        assert list(out.shape) == [2, *transform.out_shape] and out.dtype == torch.float32


def test_matches_the_feature_written_out():
    x = _signal(4)
    out = LogMel([RATE])(x)
    torch.testing.assert_close(out[:, 0], _reference(x), rtol=0, atol=2e-4)
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    torch.testing.assert_close(out[:1], LogMel([RATE])(x[:1] * 7.0), rtol=0, atol=2e-4)  # loudness: RMS-normalised


def test_a_pure_tone_lands_in_the_band_whose_centre_is_nearest():
    centres = _edges()[1:-1]  # (80,) each filter's peak
    picks = centres[[5, 20, 40, 60, 78]]
    off_centre = centres[[10, 30, 50, 70]] + 0.3 * np.diff(centres)[[10, 30, 50, 70]]  # 30 % of the way up
    freqs = np.concatenate([picks, off_centre, [440.0, 1000.0, 3000.0]])
    energy = LogMel([RATE])(_tones(freqs))[:, 0].mean(-1)  # (tones, 80): each band averaged over time
    nearest = np.abs(freqs[:, None] - centres[None]).argmin(1)
    assert energy.argmax(-1).tolist() == nearest.tolist()


def test_deterministic_and_nothing_in_the_state_dict():
    x = _signal(2, seed=1)
    a, b = LogMel([RATE]), LogMel([RATE])
    assert torch.equal(a(x), a(x)) and torch.equal(a(x), b(x))
    assert a.state_dict() == {}
    assert {name for name, _ in a.named_buffers()} >= {"mel.mel_basis", "mel.stft.wsin", "mel.stft.wcos"}


def test_fp32_under_bf16_autocast_and_half_casts():
    transform = LogMel([RATE])
    x = _signal(2, seed=2)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = transform(x.bfloat16())  # bf16 input is promoted, never computed in bf16
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], _reference(x.bfloat16().float()), rtol=0, atol=2e-4)
    transform.half()  # a model cast to half precision keeps exact fp32 kernels
    assert transform.mel.mel_basis.dtype == transform.mel.stft.wsin.dtype == torch.float32
    torch.testing.assert_close(transform(x)[:, 0], _reference(x), rtol=0, atol=2e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="fmax"):
        LogMel([RATE], fmax=9000.0)  # above 8 kHz Nyquist
    with pytest.raises(ValueError, match="window"):
        LogMel([RATE], win_ms=64.0)  # 1024 samples > n_fft 512
    with pytest.raises(ValueError, match="logmel expects a waveform"):
        LogMel([1, RATE])
    with pytest.raises(ValueError, match="too few"):
        LogMel([200])


def _audio_model(**transform_args) -> torch.nn.Module:
    audio = EncoderConfig(name="cnn", hidden=(4, 8), transform="logmel", transform_args=transform_args)
    spec = model_spec(ModelConfig(encoders={"audio": audio}), {"audio": [8000]}, 3, ["audio"])
    return build_model(spec)


def test_runs_in_a_model_built_from_a_spec_and_rebuilds_from_its_checkpoint():
    torch.manual_seed(0)
    model = _audio_model(sample_rate=8000, fmax=3800.0, n_mels=40).eval()
    entry = model.spec["encoders"]["audio"]
    assert entry["transform"] == "logmel" and entry["transform_args"]["n_mels"] == 40
    assert model.transforms["audio"].out_shape == [1, 40, 1 + 8000 // 128]  # 16 ms hop at 8 kHz: 128 samples
    x = {"audio": _signal(2)[:, :8000]}
    logits = model(x)["logits"]
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert not any(k.startswith("transforms.") for k in model.state_dict())  # encoder and head weights only
    buffer = io.BytesIO()
    torch.save({"spec": model.spec, "weights": model.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    again = build_model(saved["spec"])
    again.load_state_dict(saved["weights"])
    torch.testing.assert_close(again.eval()(x)["logits"], logits)
    with pytest.raises(UserError, match="transform 'logmel' takes no"):
        _audio_model(n_mel=40)
