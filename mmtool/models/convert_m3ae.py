"""Convert a released M3AE checkpoint (JAX/Flax) into a PyTorch state dict for the ``m3ae`` encoder.

    python -m mmtool.models.convert_m3ae m3ae_base.pkl m3ae_base.pt

Input: the release's pickle (``{"state": TrainState, "variant": ..., ...}`` as M3AE's training scripts save
it and MLA's models/m3ae.py reads it: ``pretrained["state"].params["params"]``), or an ``.npz`` whose keys are
the parameter paths joined by ``/`` (``params/encoder/Block_0/LayerNorm_0/scale``). The pickle is read with a
restricted unpickler: numpy arrays are rebuilt, every other class (Flax's TrainState and FrozenDict, optax
states, ml_collections' ConfigDict) becomes an inert placeholder whose arguments and state are searched for
the parameter tree, so no code from the file runs and neither JAX nor Flax is needed. Flax's msgpack files are
not read (the release is pickles).

Names (Flax module names of github young-geng/m3ae_public @635d86e, m3ae/model.py -> ours,
:mod:`mmtool.models.m3ae`); a Dense ``kernel`` is (in, out) and is transposed to Linear's (out, in):

    cls_token, encoder_{image,text}_type_embedding      -> same names
    image_embedding/{kernel,bias}                       -> image_embedding.{weight,bias}
    text_embedding/embedding                            -> text_embedding.weight
    encoder/Block_<i>/LayerNorm_0/{scale,bias}          -> encoder.blocks.<i>.layer_norm1.{weight,bias}
    encoder/Block_<i>/Attention_0/Dense_0               -> encoder.blocks.<i>.attention.qkv_linear
    encoder/Block_<i>/Attention_0/Dense_1               -> encoder.blocks.<i>.attention.fc
    encoder/Block_<i>/LayerNorm_1                       -> encoder.blocks.<i>.layer_norm2
    encoder/Block_<i>/TransformerMLP_0/{fc1,fc2}        -> encoder.blocks.<i>.transformer_mlp.{fc1,fc2}
    encoder/LayerNorm_0                                 -> encoder.layer_norm

The pre-training parts (``decoder``, ``decoder_*``, ``*_mask_embedding``) are left out and listed in one line;
a name that is neither mapped nor one of those stops the conversion with a one-line error.
"""

from __future__ import annotations

import pickle
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmtool.errors import UserError

LEAVES = {"scale": "weight", "bias": "bias", "kernel": "weight", "embedding": "weight"}
BLOCK_PARTS = {
    "LayerNorm_0": "layer_norm1",
    "Attention_0/Dense_0": "attention.qkv_linear",
    "Attention_0/Dense_1": "attention.fc",
    "LayerNorm_1": "layer_norm2",
    "TransformerMLP_0/fc1": "transformer_mlp.fc1",
    "TransformerMLP_0/fc2": "transformer_mlp.fc2",
}
TOP = {"image_embedding": "image_embedding", "text_embedding": "text_embedding",
       "encoder/LayerNorm_0": "encoder.layer_norm"}  # fmt: skip
PARAMS = ("cls_token", "encoder_image_type_embedding", "encoder_text_type_embedding")
PRETRAINING = re.compile(r"^(decoder|decoder_[a-z_]+|[a-z]+_mask_embedding)(/|$)")
NUMPY = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
         ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
         ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")}  # fmt: skip


class Opaque:
    """Stand-in for a class of the pickle that is not numpy's: keeps what it was built and set with."""

    origin = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in NUMPY:
            return super().find_class(module, name)
        return type(name, (Opaque,), {"origin": f"{module}.{name}"})


def _as_array(obj: Any) -> np.ndarray | None:
    """numpy arrays as they are; a jax array pickled as ``_reconstruct_array(fun, args, state, aval)``
    rebuilt from the numpy parts it carries."""
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, Opaque) and len(obj.args) >= 3 and isinstance(obj.args[1], tuple):
        fun = obj.args[0]
        if not isinstance(fun, Opaque) and callable(fun):  # numpy's _reconstruct, the only callable let through
            arr = fun(*obj.args[1])
            if isinstance(arr, np.ndarray):
                arr.__setstate__(obj.args[2])
                return arr
    return None


def _children(obj: Any) -> Iterator[Any]:
    if isinstance(obj, Mapping):
        yield from obj.values()
    elif isinstance(obj, (list, tuple)):
        yield from obj
    elif isinstance(obj, Opaque):
        yield from (*obj.args, *obj.kwargs.values(), obj.state)


def find_params(obj: Any, depth: int = 0) -> Mapping | None:
    """The first mapping holding ``encoder`` (with ``Block_0``) and ``cls_token``: M3AE's parameter tree."""
    if isinstance(obj, Mapping) and "cls_token" in obj and isinstance(obj.get("encoder"), (Mapping, Opaque)):
        return obj
    if depth > 12:
        return None
    for child in _children(obj):
        if isinstance(child, Opaque) and not child.args and isinstance(child.state, Mapping):
            child = child.state  # a dataclass pickled by its __dict__ (Flax's TrainState)
        found = find_params(child, depth + 1)
        if found is not None:
            return found
    return None


def flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """``{"a/b/c": array}`` for every array leaf of nested mappings (FrozenDicts read as their dict)."""
    if isinstance(tree, Opaque) and tree.args and isinstance(tree.args[0], Mapping):
        tree = tree.args[0]  # FrozenDict(dict)
    array = _as_array(tree)
    if array is not None:
        return {prefix: array}
    if not isinstance(tree, Mapping):
        return {}
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return out


def read_tree(path: Path) -> dict[str, np.ndarray]:
    """Flat ``{path: array}`` parameters of an M3AE checkpoint (``.pkl`` or ``.npz``).

    Raises:
        UserError: unreadable, or no M3AE parameter tree inside.
    """
    if not path.is_file():
        raise UserError(f"convert_m3ae: no file {path}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                flat = {k.replace(".", "/"): npz[k] for k in npz.files}
            flat = {k.removeprefix("params/").removeprefix("params/"): v for k, v in flat.items()}
            return flat
        with open(path, "rb") as fh:
            obj = _Unpickler(fh).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise UserError(f"convert_m3ae: {path} is not a readable pickle or npz ({type(err).__name__}: {err})") from None
    params = find_params(obj)
    if params is None:
        raise UserError(f"convert_m3ae: {path} holds no M3AE parameter tree (a mapping with 'encoder' and 'cls_token')")
    return flatten(params)


def torch_name(name: str) -> str | None:
    """Our state_dict key for a Flax parameter path, or None when it is no part of the encoder."""
    if name in PARAMS:
        return name
    match = re.fullmatch(r"encoder/Block_(\d+)/(.+)/(\w+)", name)
    if match and match[2] in BLOCK_PARTS and match[3] in LEAVES:
        return f"encoder.blocks.{match[1]}.{BLOCK_PARTS[match[2]]}.{LEAVES[match[3]]}"
    head, _, leaf = name.rpartition("/")
    if head in TOP and leaf in LEAVES:
        return f"{TOP[head]}.{LEAVES[leaf]}"
    return None


def convert(flat: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[str]]:
    """(state dict of torch tensors, the Flax names left out as pre-training parts).

    Raises:
        UserError: a name that is neither mapped nor a pre-training part.
    """
    import torch

    state, left_out, unknown = {}, [], []
    for name, value in sorted(flat.items()):
        key = torch_name(name)
        if key is None:
            (left_out if PRETRAINING.match(name) else unknown).append(name)
            continue
        array = np.asarray(value, dtype=np.float32)
        if name.endswith("/kernel"):
            array = array.T  # Dense (in, out) -> Linear (out, in)
        state[key] = torch.from_numpy(np.ascontiguousarray(array))
    if unknown:
        raise UserError(f"convert_m3ae: {len(unknown)} parameters of no known M3AE part, e.g. {unknown[:3]}")
    if "cls_token" not in state or "encoder.layer_norm.weight" not in state:
        raise UserError("convert_m3ae: the tree lacks cls_token or encoder/LayerNorm_0: not an M3AE encoder")
    return state, left_out


def describe(state: dict[str, Any]) -> str:
    """The encoder args the state dict fits (embed_dim, depth, vocab_size); heads are not in the shapes."""
    depth = len({k.split(".")[2] for k in state if k.startswith("encoder.blocks.")})
    dim = state["cls_token"].shape[-1]
    vocab = state["text_embedding.weight"].shape[0] if "text_embedding.weight" in state else None
    return f"embed_dim={dim} depth={depth} vocab_size={vocab} (heads: 12 for base, 16 for large)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m mmtool.models.convert_m3ae IN.pkl|IN.npz OUT.pt", file=sys.stderr)
        return 2
    import torch

    try:
        state, left_out = convert(read_tree(Path(args[0])))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.save(state, args[1])
    from mmtool.models.vit import summarise

    groups = summarise((n.replace("/", ".") for n in left_out), 1) or "nothing"
    print(f"{args[1]}: {len(state)} tensors, {describe(state)}; left out (pre-training): {groups}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
