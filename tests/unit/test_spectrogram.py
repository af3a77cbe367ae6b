"""The ``stft`` input transform: nnAudio's STFT magnitude as the audio encoder's first step (App. A.1)."""

from __future__ import annotations

import math

import pytest
import torch

from mmtool.errors import UserError
from mmtool.models.transforms import INPUT_TRANSFORMS, STFTMagnitude

RATE = 16000


def _reference(x: torch.Tensor, n_fft: int = 1024, hop: int = 512, win: int = 1024) -> torch.Tensor:
    """torch's own centred, reflect-padded Hann STFT magnitude: (B, F, T)."""
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win),
                      center=True, pad_mode="reflect", return_complex=True)  # fmt: skip
    return spec.abs()


def _signal(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """Tones plus noise: energy spread over many bins, some of them quiet."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * RATE)) / RATE
    freqs = torch.tensor([220.0, 1375.0, 5000.0])[:, None]
    tones = torch.sin(2 * math.pi * freqs * t).sum(0)
    return (0.3 * tones + 0.05 * torch.randn(batch, len(t), generator=gen)).float()


def _assert_matches(ours: torch.Tensor, ref: torch.Tensor) -> None:
    scale = ref.abs().max()
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=1e-3 * float(scale))
    assert float((ours - ref).abs().max() / scale) < 1e-3


def test_registered_defaults_match_torch_stft():
    transform = INPUT_TRANSFORMS.get("stft")([RATE], sample_rate=RATE)
    assert (transform.win_length, transform.hop_length, transform.n_fft) == (1024, 512, 1024)  # 64 ms / 32 ms
    x = _signal(3, 1.0)
    out = transform(x)
    assert out.dtype == torch.float32
    assert list(out.shape) == [3, *transform.out_shape] == [3, 1, 513, 1 + RATE // 512]
    _assert_matches(out[:, 0], _reference(x))


def test_out_shape_is_computed_for_ten_seconds():
    transform = STFTMagnitude(160000)
    assert transform.out_shape == [1, 513, 313]
    assert STFTMagnitude([160000], hop_ms=16).out_shape == [1, 513, 626]  # 1 + 160000 // 256
    assert list(transform(torch.zeros(1, 160000)).shape) == [1, 1, 513, 313]


def test_no_state_dict_keys_and_kernels_follow_the_module():
    model = torch.nn.Sequential(STFTMagnitude([8000]), torch.nn.Flatten())
    assert model.state_dict() == {}
    assert {name for name, _ in model.named_buffers()} >= {"0.stft.wsin", "0.stft.wcos"}
    model.load_state_dict({}, strict=True)  # a checkpoint without kernels loads


def test_fp32_under_bf16_autocast_and_half_casts():
    transform = STFTMagnitude([RATE])
    x = _signal(2, 1.0, seed=1)
    ref = _reference(x)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = transform(x.bfloat16())  # bf16 input is promoted, never computed in bf16
    assert out.dtype == torch.float32
    _assert_matches(out[:, 0], _reference(x.bfloat16().float()))
    transform.half()  # a model cast to half precision keeps exact fp32 kernels
    assert transform.stft.wsin.dtype == torch.float32
    _assert_matches(transform(x)[:, 0], ref)


def test_log_option_and_shorter_window():
    x = _signal(1, 0.5, seed=2)
    out = STFTMagnitude([len(x[0])], log=True)(x)
    _assert_matches(out[:, 0], torch.log1p(_reference(x)))
    short = STFTMagnitude([len(x[0])], win_ms=32, hop_ms=16)(x)  # 512-sample window zero-padded to 1024
    ref = torch.stft(x, n_fft=1024, hop_length=256, win_length=512, window=torch.hann_window(512),
                     center=True, pad_mode="reflect", return_complex=True).abs()  # fmt: skip
    _assert_matches(short[:, 0], ref)


def test_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        STFTMagnitude([RATE], win_ms=128)  # 2048 samples > n_fft
    with pytest.raises(ValueError, match="waveform"):
        STFTMagnitude([1, RATE])
    with pytest.raises(UserError, match="unknown input transform"):
        INPUT_TRANSFORMS.get("mel")
