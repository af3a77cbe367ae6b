"""CAV-MAE's audio branch (Gong et al., ICLR 2023) as an encoder of fbank features: ``cav_mae_audio``.

MLA (paper 003, Sec. 5.1 and App. A.3) encodes IEMOCAP's audio with "the pre-trained cavmae-audio model"; its
code also offers CAV-MAE for CREMA-D and Kinetics-Sounds (``CAVClassifier``) beside the ResNet-18 the paper's
tables use there. What is implemented is the path MLA runs, ``CAVMAEFT.forward_feat(a, None, "a")`` followed
by a mean over tokens (github Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation @4735bbc,
models/cav_mae.py; models/basic_model.py @11ae1ee, ``Modal3Classifier``/``CAVClassifier``), which is
CAV-MAE's own (github YuanGongND/cav-mae, src/models/cav_mae.py):

  1. the (B, T, F) fbank (T frames, F = 128 mel bins) is read as a (B, 1, F, T) image;
  2. ``patch_embed_a.proj``: Conv2d(1, D, 16, stride 16) -> (B, D, F / 16, T / 16), flattened frequency-major
     to (B, N, D) with N = F / 16 * T / 16 (512 for 1024 frames);
  3. ``+ pos_embed_a`` (1, N, D) (initialised as a 2-D sine-cosine grid: rows are frequency, columns time;
     a parameter, trainable as in CAVMAEFT) ``+ modality_a`` (1, 1, D); no class token;
  4. ``blocks_a``: ``depth`` (11) pre-norm ViT blocks using their unified norms ``norm1``/``norm2``;
  5. ``blocks_u``: ``shared_depth`` (1) blocks using their audio norms ``norm1_a``/``norm2_a``;
  6. ``norm_a`` (LayerNorm, eps 1e-6 as timm's ViT), then the mean over the N tokens -> (B, D).

Key layout (facts of the published PyTorch checkpoints, which the code above loads by name): every block has
``norm1``, ``norm1_a``, ``norm1_v``, ``attn.qkv`` (D -> 3D, with bias), ``attn.proj``, ``norm2``, ``norm2_a``,
``norm2_v``, ``mlp.fc1`` (D -> 4D), ``mlp.fc2``; the encoder keeps ``patch_embed_a.proj.{weight,bias}``,
``pos_embed_a``, ``modality_a``, ``blocks_a.<i>.*``, ``blocks_u.<i>.*`` and ``norm_a.*``. The norms a block
does not use on the audio path are kept (so the checkpoint's keys load one to one) but frozen. A checkpoint's
visual branch (``patch_embed_v``, ``pos_embed_v``, ``modality_v``, ``blocks_v``, ``norm_v``), its joint
``norm``, decoder and classifier are reported as ignored. Checkpoints saved from ``nn.DataParallel`` carry
``module.``; it is stripped.

Choices where the sources are silent: GELU is exact (timm's ``nn.GELU``); LayerNorm eps is 1e-6 (timm's ViT
``partial(nn.LayerNorm, eps=1e-6)`` is what CAV-MAE passes as ``norm_layer``); dropout and drop-path are 0
(CAVMAEFT's defaults).

Input: what the ``fbank`` input transform (:mod:`mmtool.models.fbank`) produces, [1, T, F] or [T, F] per
sample; T and F must be multiples of the patch (1024 x 128 for the published weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from mmtool.models.encoders import ENCODERS
from mmtool.models.vit import attend, grid, init_linear, load_by_name, mlp_width, sincos_2d

EPS = 1e-6  # timm ViT's LayerNorm eps, CAV-MAE's norm_layer


class Attention(nn.Module):
    """timm's ``Attention`` keys: ``qkv`` (with bias) and ``proj``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D)
        return self.proj(attend(self.qkv(x), self.heads))


class Mlp(nn.Module):
    """timm's ``Mlp`` keys: ``fc1``, GELU, ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """CAV-MAE's block: one attention and MLP, three pairs of norms (unified, audio, visual).

    Args:
        dim: token width.
        heads: attention heads.
        mlp_ratio: MLP hidden width over ``dim``.
        norms: which pair of norms this block uses: ``""`` (``norm1``/``norm2``) or ``"_a"``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, norms: str) -> None:
        super().__init__()
        for suffix in ("", "_a", "_v"):
            setattr(self, f"norm1{suffix}", nn.LayerNorm(dim, eps=EPS))
        self.attn = Attention(dim, heads)
        for suffix in ("", "_a", "_v"):
            setattr(self, f"norm2{suffix}", nn.LayerNorm(dim, eps=EPS))
        self.mlp = Mlp(dim, mlp_width(dim, mlp_ratio))
        self.norms = norms
        for suffix in {"", "_a", "_v"} - {norms}:  # kept for the checkpoint's keys, unused on this path
            for name in (f"norm1{suffix}", f"norm2{suffix}"):
                getattr(self, name).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D)
        x = x + self.attn(getattr(self, f"norm1{self.norms}")(x))
        return x + self.mlp(getattr(self, f"norm2{self.norms}")(x))


@ENCODERS.register("cav_mae_audio")
class CAVMAEAudio(nn.Module):
    """CAV-MAE's audio branch on (B, [1,] T, F) fbank features -> (B, embed_dim) (module docstring).

    Args:
        in_dim: per-sample shape ``[1, T, F]`` or ``[T, F]`` (frames, mel bins).
        embed_dim: token width D (768 for the published base model).
        depth: modality-specific blocks (CAV-MAE's ``modality_specific_depth``, 11).
        shared_depth: shared blocks run with the audio norms (12 - 11 = 1).
        heads: attention heads (12).
        mlp_ratio: MLP hidden width over D (4).
        patch: square patch size (16).
    """

    def __init__(
        self,
        in_dim: Sequence[int],
        embed_dim: int = 768,
        depth: int = 11,
        shared_depth: int = 1,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        patch: int = 16,
    ) -> None:
        super().__init__()
        frames, bins = _frames_bins(in_dim)
        rows, cols = grid("cav_mae_audio", bins, patch, "mel bins"), grid("cav_mae_audio", frames, patch, "frames")
        self.patch_embed_a = nn.Module()
        self.patch_embed_a.proj = nn.Conv2d(1, embed_dim, kernel_size=patch, stride=patch)
        self.pos_embed_a = nn.Parameter(sincos_2d(embed_dim, rows, cols).unsqueeze(0))  # (1, N, D)
        self.modality_a = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks_a = nn.ModuleList(Block(embed_dim, heads, mlp_ratio, "") for _ in range(depth))
        self.blocks_u = nn.ModuleList(Block(embed_dim, heads, mlp_ratio, "_a") for _ in range(shared_depth))
        self.norm_a = nn.LayerNorm(embed_dim, eps=EPS)
        self.apply(init_linear)
        nn.init.xavier_uniform_(self.patch_embed_a.proj.weight.view(embed_dim, -1))
        nn.init.normal_(self.modality_a, std=0.02)
        self.out_dim = embed_dim

    def tokens(self, fbank: torch.Tensor) -> torch.Tensor:  # (B, [1,] T, F) -> (B, N, D)
        x = fbank.reshape(fbank.shape[0], 1, *fbank.shape[-2:]).transpose(2, 3)  # (B, 1, F, T)
        x = self.patch_embed_a.proj(x).flatten(2).transpose(1, 2)  # (B, F/p * T/p, D), frequency-major
        x = x + self.pos_embed_a + self.modality_a
        for block in [*self.blocks_a, *self.blocks_u]:
            x = block(x)
        return self.norm_a(x)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:  # (B, [1,] T, F) -> (B, D)
        return self.tokens(fbank).mean(dim=1)

    def load_pretrained(self, path: Path, where: str) -> dict[str, list[str]]:
        """A published CAV-MAE checkpoint (``.pth``, optionally DataParallel's ``module.``) loaded by name."""
        from mmtool.models.pretrained import read_state_dict

        return load_by_name(self, read_state_dict(path), where, str(path))


def _frames_bins(in_dim: int | Sequence[int]) -> tuple[int, int]:
    from mmtool.errors import UserError

    shape = [int(in_dim)] if isinstance(in_dim, int) else [int(d) for d in in_dim]
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2:
        raise UserError(f"encoder 'cav_mae_audio' reads fbank features [1, T, F] or [T, F], got shape {shape} "
                        "(transform: fbank)")  # fmt: skip
    return shape[0], shape[1]
