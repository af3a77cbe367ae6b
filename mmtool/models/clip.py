"""CLIP's image and text towers (Radford et al. 2021) through ``transformers``: ``clip_image`` and ``clip_text``.

Paper 003 (MLA), Sec. 5.3 and Tables 4/7: "pre-trained CLIP encoders (ViT-B/32 pre-trained model loaded as both
the image and text encoders)" on Food-101. ``CLIPVisionConfig()``'s and ``CLIPTextConfig()``'s defaults are
ViT-B/32's (vision: 224 px, 32 px patches, width 768, 12 layers; text: vocabulary 49,408, 77 positions, width
512, 12 layers; both projected to 512); a recipe's ``args: {config: {...}}`` sets fields over them (tests build
2-layer, 32-wide towers).

Feature (``output``): ``projected`` (default) is the tower's embedding in CLIP's joint space
(``image_embeds``/``text_embeds``: the pooled output through ``visual_projection``/``text_projection``, not
L2-normalised), 512 wide for both towers of ViT-B/32; ``pooled`` is the tower's pooled output before the
projection (the class token after ``post_layernorm``, 768 wide; the end-of-text token after
``final_layer_norm``, 512 wide). The paper does not say which; MLA's code (github Cecile-hi/Multimodal-Learning-
with-Alternating-Unimodal-Adaptation, models/basic_model.py @11ae1ee, ``CLIPClassifier``) reads pre-extracted
CLIP features of both modalities into one shared 512-input head (``ConcatFusion(input_dim=512)`` under MLA's
``gs_flag``), so both are 512 wide: the projected embeddings. (MLA extracts them once with frozen towers; here
the towers are encoders like any other, frozen (``freeze: true``) or fine-tuned as the recipe decides.)

Freezing (``freeze``): the tower's weights take no gradient (``requires_grad`` off, so no optimizer sees them),
its forward runs without autograd, and it stays in evaluation mode whatever mode the model is put in: the
features are those of pre-trained CLIP throughout, as when they are extracted once.

Text input: (B, L) token ids of CLIP's BPE tokenizer, ``<|startoftext|> ... <|endoftext|>`` (at most 77),
right-padded by the collate function with the tokenizer's pad id (:mod:`mmtool.data.text`: CLIP's tokenizer pads
with ``<|endoftext|>``, 49407; a cache made before pad ids were recorded pads with 0). CLIP's id 0 is the token
"!", not padding, so the mask cannot be ``ids != 0`` as for BERT.
The attention mask keeps every position up to and including the sequence's end-of-text token, found as
transformers' CLIP finds it for pooling: the first ``eos_token_id`` (49407), or, in configs that carry the
legacy ``eos_token_id`` 2 (openai's released config.json), the position of the largest id (end-of-text is the
largest id of the vocabulary). CLIP's text attention is causal, so positions after the end-of-text token never
reach the pooled feature whatever they hold; the mask makes that explicit. Padded with ``<|endoftext|>``, the first
one is still the text's own: prep keeps only the end-of-text tokens the tokenizer appends.

Image input: (B, 3, S, S) with S the config's ``image_size`` (224), normalised with CLIP's mean
(0.48145466, 0.4578275, 0.40821073) and std (0.26862954, 0.26130258, 0.27577711): the dataset's work.

Weights: ``pretrained: DIR``, a local transformers folder of CLIP (a full ``CLIPModel`` such as
openai/clip-vit-base-patch32, or a single tower saved from ``CLIP{Vision,Text}ModelWithProjection``), read with
``from_pretrained(DIR, local_files_only=True)``. The other tower's weights and ``logit_scale`` are reported as
ignored; a missing weight, or a folder whose architecture differs from the encoder's config, is a one-line error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmtool.errors import UserError
from mmtool.models.encoders import ENCODERS

OUTPUTS = ("projected", "pooled")
ARCHITECTURE = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "projection_dim",
                "image_size", "patch_size", "num_channels", "vocab_size", "max_position_embeddings")  # fmt: skip


def clip_config(kind: str, overrides: dict[str, Any] | None) -> Any:
    """``CLIPVisionConfig``/``CLIPTextConfig`` (ViT-B/32's defaults) with ``overrides``.

    Raises:
        UserError: transformers missing, or a field the config does not have.
    """
    try:
        import transformers
    except ImportError:
        raise UserError(f"encoder 'clip_{kind}' needs transformers: pip install -e '.[text]'") from None
    cls = transformers.CLIPVisionConfig if kind == "image" else transformers.CLIPTextConfig
    unknown = sorted(set(overrides or {}) - set(cls().to_dict()))
    if unknown:
        raise UserError(f"encoder 'clip_{kind}': args.config has no field {unknown[0]!r} ({cls.__name__} fields: "
                        f"{', '.join(k for k in ARCHITECTURE if hasattr(cls(), k))}, ...)")  # fmt: skip
    return cls(**(overrides or {}))


class _ClipTower(nn.Module):
    """What both towers share: the output choice and loading a transformers folder."""

    kind = ""
    model: nn.Module
    output: str
    frozen: bool = False

    def _freeze(self, freeze: bool) -> None:
        self.frozen = bool(freeze)
        if self.frozen:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> _ClipTower:
        super().train(mode)
        if self.frozen:  # a frozen tower computes pre-trained CLIP's features, never training-mode ones
            self.model.eval()
        return self

    def _output(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.output == "pooled":
            return pooled
        projection = self.model.visual_projection if self.kind == "image" else self.model.text_projection
        return projection(pooled)

    def load_pretrained(self, path: Path, where: str) -> dict[str, list[str]]:
        """Weights from the local transformers folder ``path`` (module docstring)."""
        if not Path(path).is_dir():
            raise UserError(f"{where}: encoder 'clip_{self.kind}' reads a transformers folder (config.json and "
                            f"weights), {path} is not one")  # fmt: skip
        own = self.model.config
        try:
            theirs = type(own).from_pretrained(str(path), local_files_only=True)
            loaded, info = _quietly(lambda: type(self.model).from_pretrained(
                str(path), config=own, local_files_only=True, output_loading_info=True))  # fmt: skip
        except Exception as err:  # noqa: BLE001  (transformers raises several types for a bad folder)
            raise UserError(f"{where}: no CLIP weights could be read from {path} ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''})") from None  # fmt: skip
        for key in ARCHITECTURE:
            if hasattr(own, key) and getattr(theirs, key) != getattr(own, key):
                raise UserError(f"{where}: {path} has {key} {getattr(theirs, key)}, the encoder {getattr(own, key)} "
                                f"(set model.encoders.<modality>.args.config.{key})")  # fmt: skip
        missing = sorted(info.get("missing_keys") or [])
        if missing or info.get("mismatched_keys"):
            bad = missing or [str(k) for k in info["mismatched_keys"]]
            raise UserError(f"{where}: {path} lacks or misshapes {len(bad)} of the encoder's weights, e.g. {bad[0]!r}")
        self.model.load_state_dict(loaded.state_dict())
        return {"ignored": sorted(info.get("unexpected_keys") or []), "adapted": []}


def _quietly(load: Any) -> Any:
    """Run a transformers load with its per-key report table and progress bar silenced (the caller reports in
    one line)."""
    from transformers.utils import logging

    level, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        return load()
    finally:
        logging.set_verbosity(level)
        if bar:
            logging.enable_progress_bar()


def _check_output(kind: str, output: str) -> None:
    if output not in OUTPUTS:
        raise UserError(f"encoder 'clip_{kind}': output must be one of {', '.join(OUTPUTS)}, got {output!r}")


@ENCODERS.register("clip_image")
class ClipImageEncoder(_ClipTower):
    """CLIP's vision tower on (B, 3, S, S) images -> (B, projection_dim) or (B, hidden_size) (module docstring).

    Args:
        in_dim: per-sample shape ``[3, S, S]`` (S = the config's ``image_size``).
        config: CLIPVisionConfig fields over ViT-B/32's.
        output: ``projected`` or ``pooled``.
        freeze: no gradient reaches the tower (module docstring).
    """

    kind = "image"

    def __init__(self, in_dim: Sequence[int], config: dict[str, Any] | None = None, output: str = "projected",
                 freeze: bool = False) -> None:  # fmt: skip
        super().__init__()
        from transformers import CLIPVisionModelWithProjection

        _check_output("image", output)
        cfg = clip_config("image", config)
        shape = [int(d) for d in in_dim] if not isinstance(in_dim, int) else [int(in_dim)]
        expected = [cfg.num_channels, cfg.image_size, cfg.image_size]
        if shape != expected:
            raise UserError(f"encoder 'clip_image': inputs of shape {shape}, the config reads {expected} "
                            "(args.config.image_size)")  # fmt: skip
        self.model = CLIPVisionModelWithProjection(cfg)
        self.output = output
        self.out_dim = cfg.projection_dim if output == "projected" else cfg.hidden_size
        self._freeze(freeze)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, out_dim)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self._output(self.model.vision_model(pixel_values=images).pooler_output)


@ENCODERS.register("clip_text")
class ClipTextEncoder(_ClipTower):
    """CLIP's text tower on (B, L) token ids -> (B, projection_dim) or (B, hidden_size) (module docstring).

    Args:
        in_dim: per-sample shape ``[L]``, the longest sequence (at most the config's 77 positions).
        config: CLIPTextConfig fields over ViT-B/32's.
        output: ``projected`` or ``pooled``.
        freeze: no gradient reaches the tower (module docstring).
        pool: ``eos``, the only one: the end-of-text token's state (transformers' ``pooler_output``). The key is
            BERT's (``cls``/``mean``); a fragment that turns a BERT recipe's text encoder into CLIP's sets it.
    """

    kind = "text"

    def __init__(self, in_dim: int | Sequence[int], config: dict[str, Any] | None = None,
                 output: str = "projected", freeze: bool = False, pool: str = "eos") -> None:  # fmt: skip
        super().__init__()
        from transformers import CLIPTextModelWithProjection

        _check_output("text", output)
        if pool != "eos":
            raise UserError(f"encoder 'clip_text': pool must be eos (the end-of-text token's state), got {pool!r}")
        cfg = clip_config("text", config)
        length = int(in_dim) if isinstance(in_dim, int) else int(in_dim[-1])
        if length > cfg.max_position_embeddings:
            raise UserError(f"encoder 'clip_text': inputs of {length} tokens, more than its "
                            f"{cfg.max_position_embeddings} positions (data.max_tokens)")  # fmt: skip
        self.model = CLIPTextModelWithProjection(cfg)
        self.output = output
        self.out_dim = cfg.projection_dim if output == "projected" else cfg.hidden_size
        self._freeze(freeze)

    def attention_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L) int: 1 up to and including each sequence's end-of-text token (module docstring)."""
        eos = self.model.config.eos_token_id
        end = ids.argmax(-1) if eos == 2 else (ids == eos).int().argmax(-1)  # (B,), transformers' pooling index
        return (torch.arange(ids.shape[1], device=ids.device) <= end.unsqueeze(1)).long()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) int -> (B, out_dim)
        ids = ids.long()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            pooled = self.model.text_model(input_ids=ids, attention_mask=self.attention_mask(ids)).pooler_output
            return self._output(pooled)
