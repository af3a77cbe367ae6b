"""M3AE (Geng et al. 2022, "Multimodal Masked Autoencoders Learn Transferable Representations") as a
one-modality encoder of images or token ids: ``m3ae``.

MLA (paper 003, Sec. 5.1, App. A.3) encodes Food-101's and MVSA's images and texts, and IEMOCAP's, with
"the base model [of M3AE], which has been released publicly". Its code (github Cecile-hi/Multimodal-Learning-
with-Alternating-Unimodal-Adaptation, models/basic_model.py @11ae1ee, ``M3AEClassifier``/``Modal3Classifier``)
builds one M3AE per modality, loads the same converted base weights into each, and feeds each one modality
through ``forward_representation``: the image alone or the text alone, then a mean over all output tokens.
This encoder is that, for the modality its input shape says: [3, H, W] is an image, [L] token ids.

Architecture (M3AE's Flax model, github young-geng/m3ae_public @635d86e, m3ae/model.py; base: D 768, 12
blocks, 12 heads, MLP 4D; vocabulary 30,522, bert-base-uncased's):
  * image: 16 x 16 patches flattened to 768 values, ``image_embedding`` (Linear 768 -> D) + a fixed 2-D
    sine-cosine position embedding + ``encoder_image_type_embedding`` (1, 1, D);
  * text: ``text_embedding`` (Embedding V x D) + a fixed 1-D sine-cosine embedding +
    ``encoder_text_type_embedding``; padding (id 0, BERT's [PAD]) is masked out of attention as keys;
  * ``cls_token`` (1, 1, D) first, then ``encoder.blocks.<i>``: pre-norm blocks (``layer_norm1``,
    ``attention.qkv_linear`` D -> 3D with bias, ``attention.fc``, ``layer_norm2``, ``transformer_mlp.fc1``
    D -> 4D, GELU, ``transformer_mlp.fc2``), and ``encoder.layer_norm``.
The key names are those of MLA's PyTorch port (models/m3ae.py @4735bbc), so its converted ``.pth`` files load
by name; :mod:`mmtool.models.convert_m3ae` maps the released Flax checkpoints onto the same names. An image
encoder holds no text embedding and a text encoder no image embedding: those keys of a checkpoint are
reported as ignored, with the decoder's.

``variant`` (where MLA's port and the Flax original differ; both are offered):
  * ``mla`` (default, what produced the paper's numbers): patches flattened channel-first,
    ``b c (h p1) (w p2) -> b (h w) (c p1 p2)``; LayerNorm eps 1e-5 and exact GELU (PyTorch's defaults);
  * ``m3ae``: patches flattened channel-last as the Flax ``extract_patches`` (``(p1 p2 c)``, the order the
    released ``image_embedding`` kernel was trained on); eps 1e-6 and tanh-approximated GELU (Flax's
    ``nn.LayerNorm``/``nn.gelu`` defaults).

``pool``: ``all`` (default; MLA: the mean over every output token, the class token and, for text, the padding
positions up to ``in_dim`` tokens, as MLA pads every text to 256), ``tokens`` (the mean over the image's or
the text's non-padding tokens) or ``cls`` (the class token).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmtool.errors import UserError
from mmtool.models.encoders import ENCODERS
from mmtool.models.vit import attend, grid, init_linear, load_by_name, mlp_width, sincos_1d, sincos_2d

VARIANTS = {"mla": (1e-5, "none", "chw"), "m3ae": (1e-6, "tanh", "hwc")}  # eps, GELU approximation, patch order
POOLS = ("all", "tokens", "cls")
PAD_ID = 0  # BERT's [PAD] (mmtool.data.text.PAD_ID); M3AE reads bert-base-uncased ids


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv_linear = nn.Linear(dim, 3 * dim)
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:  # (B, N, D)
        return self.fc(attend(self.qkv_linear(x), self.heads, pad))


class TransformerMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, gelu: str) -> None:
        super().__init__()
        self.fc1, self.fc2, self.gelu = nn.Linear(dim, hidden), nn.Linear(hidden, dim), gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.gelu))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float, gelu: str) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps)
        self.attention = Attention(dim, heads)
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps)
        self.transformer_mlp = TransformerMLP(dim, mlp_width(dim, mlp_ratio), gelu)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attention(self.layer_norm1(x), pad)
        return x + self.transformer_mlp(self.layer_norm2(x))


class Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, eps: float, gelu: str) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, eps, gelu) for _ in range(depth))
        self.layer_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, pad)
        return self.layer_norm(x)


@ENCODERS.register("m3ae")
class M3AEEncoder(nn.Module):
    """M3AE's encoder on images (B, 3, H, W) or token ids (B, L) -> (B, embed_dim) (module docstring).

    Args:
        in_dim: per-sample shape: ``[3, H, W]`` (an image; H, W multiples of ``patch``) or ``[L]`` (token ids,
            padded with 0; L is the longest text, ``data.max_tokens``).
        embed_dim: D (768 base, 1024 large).
        depth: encoder blocks (12 base, 24 large).
        heads: attention heads (12 base, 16 large).
        mlp_ratio: MLP hidden width over D.
        vocab_size: text vocabulary (bert-base-uncased: 30,522).
        patch: square patch size (16; the image embedding reads 3 * patch ** 2 = 768 values).
        variant: ``mla`` or ``m3ae`` (module docstring).
        pool: ``all``, ``tokens`` or ``cls`` (module docstring).
    """

    def __init__(
        self,
        in_dim: int | Sequence[int],
        embed_dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        vocab_size: int = 30522,
        patch: int = 16,
        variant: str = "mla",
        pool: str = "all",
    ) -> None:
        super().__init__()
        if variant not in VARIANTS or pool not in POOLS:
            raise UserError(f"encoder 'm3ae': variant must be one of {', '.join(VARIANTS)} and pool one of "
                            f"{', '.join(POOLS)}, got {variant!r} and {pool!r}")  # fmt: skip
        eps, gelu, self.patch_order = VARIANTS[variant]
        shape = [int(in_dim)] if isinstance(in_dim, int) else [int(d) for d in in_dim]
        self.modality, self.patch, self.pool = _modality(shape), patch, pool
        if self.modality == "image":
            rows, cols = grid("m3ae", shape[1], patch, "height"), grid("m3ae", shape[2], patch, "width")
            self.image_embedding = nn.Linear(shape[0] * patch * patch, embed_dim)
            self.encoder_image_type_embedding = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
            self.register_buffer("pos", sincos_2d(embed_dim, rows, cols).unsqueeze(0), persistent=False)
        else:
            self.length = shape[0]
            self.text_embedding = nn.Embedding(vocab_size, embed_dim)
            self.encoder_text_type_embedding = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
            self.register_buffer("pos", sincos_1d(embed_dim, torch.arange(shape[0])).unsqueeze(0), persistent=False)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.encoder = Transformer(embed_dim, depth, heads, mlp_ratio, eps, gelu)
        self.apply(init_linear)
        if self.modality == "text":
            nn.init.normal_(self.text_embedding.weight, std=1.0)  # M3AE's embedding_init
        self.out_dim = embed_dim

    def patches(self, image: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, H/p * W/p, C * p * p)
        b, c, h, w = image.shape
        p = self.patch
        x = image.reshape(b, c, h // p, p, w // p, p)
        order = (0, 2, 4, 1, 3, 5) if self.patch_order == "chw" else (0, 2, 4, 3, 5, 1)
        return x.permute(*order).reshape(b, (h // p) * (w // p), c * p * p)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Input tokens (B, N, D) and their padding (B, N; None for an image), class token excluded."""
        if self.modality == "image":
            return self.image_embedding(self.patches(x)) + self.pos + self.encoder_image_type_embedding, None
        if self.pool == "all" and x.shape[1] < self.length:  # MLA pads every text to the same length
            x = F.pad(x, (0, self.length - x.shape[1]), value=PAD_ID)
        x = x.long()
        tokens = self.text_embedding(x) + self.pos[:, : x.shape[1]] + self.encoder_text_type_embedding
        return tokens, x == PAD_ID

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) or (B, L) -> (B, D)
        tokens, pad = self.embed(x)
        cls = self.cls_token.expand(tokens.shape[0], 1, -1)
        if pad is not None:
            pad = F.pad(pad, (1, 0), value=False)  # the class token is never padding
        out = self.encoder(torch.cat([cls, tokens], dim=1), pad)  # (B, 1 + N, D)
        if self.pool == "cls":
            return out[:, 0]
        if self.pool == "all" or pad is None:
            return out.mean(dim=1) if self.pool == "all" else out[:, 1:].mean(dim=1)
        keep = (~pad[:, 1:]).unsqueeze(-1).to(out.dtype)  # (B, N, 1)
        return (out[:, 1:] * keep).sum(1) / keep.sum(1).clamp_min(1.0)

    def load_pretrained(self, path: Path, where: str) -> dict[str, list[str]]:
        """A PyTorch state dict in this layout: :mod:`mmtool.models.convert_m3ae`'s output or MLA's ``.pth``."""
        from mmtool.models.pretrained import read_state_dict

        if Path(path).suffix in (".pkl", ".msgpack", ".npz"):
            raise UserError(f"{where}: {path} is a Flax checkpoint; convert it first: "
                            f"python -m mmtool.models.convert_m3ae {path} OUT.pt")  # fmt: skip
        return load_by_name(self, read_state_dict(path), where, str(path))


def _modality(shape: list[int]) -> str:
    if len(shape) == 3:
        return "image"
    if len(shape) == 1:
        return "text"
    raise UserError(f"encoder 'm3ae' reads images [C, H, W] or token ids [L], got per-sample shape {shape}")
