"""Pieces shared by the ViT encoders of published checkpoints (:mod:`mmtool.models.cav_mae`,
:mod:`mmtool.models.m3ae`): fixed sine-cosine position embeddings, multi-head attention on a fused ``qkv``
projection, and loading a state dict by name with a one-line report.

Both released models compute attention the same way (timm's ``Attention`` and M3AE's Flax ``Attention``): one
linear layer gives ``qkv`` of width 3D, read as (B, N, 3, heads, D / heads); scores are scaled by
``(D / heads) ** -0.5``. :func:`attend` does that with ``F.scaled_dot_product_attention``; only the module
names around it differ, and they are each model's own so its checkpoint loads by name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from mmtool.errors import UserError


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, dim): sin of ``pos / 10000 ** (2i / dim)`` then cos (MAE's
    ``get_1d_sincos_pos_embed_from_grid``)."""
    if dim % 2:
        raise ValueError(f"sine-cosine embedding needs an even width, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))  # (dim / 2,)
    angles = positions.reshape(-1, 1).double() * omega  # (M, dim / 2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """(rows * cols, dim) for a row-major grid: the first half encodes the column, the second the row
    (MAE's ``get_2d_sincos_pos_embed``, whose meshgrid puts w first)."""
    col, row = torch.meshgrid(torch.arange(cols), torch.arange(rows), indexing="xy")  # (rows, cols) each
    return torch.cat([sincos_1d(dim // 2, col.flatten()), sincos_1d(dim // 2, row.flatten())], dim=1)


def attend(qkv: torch.Tensor, heads: int, pad: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, 3D) fused projections -> (B, N, D) attended values. ``pad`` (B, N) is True where a key is
    padding (it gets no attention weight)."""
    b, n, width = qkv.shape
    q, k, v = qkv.reshape(b, n, 3, heads, width // 3 // heads).permute(2, 0, 3, 1, 4)  # each (B, H, N, d)
    mask = None if pad is None else ~pad[:, None, None, :]  # (B, 1, 1, N): True = may attend
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # scale (d) ** -0.5, as both models
    return out.transpose(1, 2).reshape(b, n, width // 3)


def grid(name: str, size: int, patch: int, axis: str) -> int:
    """Patches along one axis; the size must be a positive multiple of the patch."""
    if size < patch or size % patch:
        raise UserError(f"encoder {name!r}: the input's {axis} ({size}) must be a positive multiple of patch={patch}")
    return size // patch


def summarise(keys: Iterable[str], depth: int = 1) -> str:
    """``a.*(3), b.c`` — keys grouped by their first ``depth`` dotted parts, for one-line reports."""
    groups: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        head = ".".join(parts[:depth]) + (".*" if len(parts) > depth else "")
        groups[head] = groups.get(head, 0) + 1
    return ", ".join(f"{k}({n})" if n > 1 else k for k, n in sorted(groups.items()))


def load_by_name(module: nn.Module, state: dict[str, torch.Tensor], where: str, source: str) -> dict[str, list[str]]:
    """Copy ``state`` into ``module`` by key. Keys the module lacks are returned as ``ignored`` (the parts
    of a published checkpoint this encoder does not use); a missing key or a shape mismatch is a one-line
    error naming ``where`` and ``source``.

    Raises:
        UserError: a weight of the module is absent from ``state`` or has another shape.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise UserError(f"{where}: {source} lacks {len(missing)} of the encoder's weights: {summarise(missing, 2)}")
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise UserError(f"{where}: {key} is {list(state[key].shape)} in {source}, the encoder needs "
                            f"{list(value.shape)} (check the encoder's args against the checkpoint)")  # fmt: skip
    module.load_state_dict({k: state[k].to(own[k].dtype) for k in own})
    return {"ignored": sorted(k for k in state if k not in own), "adapted": []}


def init_linear(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for Linear layers, unit LayerNorms (MAE's and M3AE's init)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def mlp_width(dim: int, ratio: float) -> int:
    """Hidden width of a transformer MLP (timm: ``int(dim * mlp_ratio)``)."""
    return int(math.floor(dim * ratio))
