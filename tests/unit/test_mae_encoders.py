"""CAV-MAE's audio branch and M3AE: key layouts, loading published layouts by name, the Flax converter, and
forward passes against references written from the released code's definitions."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmtool.errors import UserError
from mmtool.models import build_model
from mmtool.models.cav_mae import CAVMAEAudio
from mmtool.models.convert_m3ae import main as convert_main
from mmtool.models.m3ae import M3AEEncoder
from mmtool.models.pretrained import load_pretrained

TINY_CAV = {"embed_dim": 16, "depth": 2, "shared_depth": 1, "heads": 2}
TINY_M3AE = {"embed_dim": 16, "depth": 2, "heads": 2, "vocab_size": 40, "patch": 4}


# ---------------------------------------------------------------- CAV-MAE


def _cav_reference(enc: CAVMAEAudio, fbank: torch.Tensor) -> torch.Tensor:
    """MLA's ``forward_feat(a, None, "a")`` + mean, written out: blocks_a with norm1/norm2, blocks_u with
    norm1_a/norm2_a, attention as timm's (qkv reshaped (B, N, 3, H, d), softmax(q k^T / sqrt(d)))."""
    p = dict(enc.state_dict())
    a = fbank.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
    a = F.conv2d(a, p["patch_embed_a.proj.weight"], p["patch_embed_a.proj.bias"], stride=4)
    x = a.flatten(2).transpose(1, 2) + p["pos_embed_a"] + p["modality_a"]
    heads = TINY_CAV["heads"]
    for name, suffix in [("blocks_a.0", ""), ("blocks_a.1", ""), ("blocks_u.0", "_a")]:
        def ln(t: torch.Tensor, key: str, name: str = name) -> torch.Tensor:
            return F.layer_norm(t, t.shape[-1:], p[f"{name}.{key}.weight"], p[f"{name}.{key}.bias"], eps=1e-6)

        h = ln(x, f"norm1{suffix}")
        b, n, d = h.shape
        qkv = (h @ p[f"{name}.attn.qkv.weight"].T + p[f"{name}.attn.qkv.bias"]).reshape(b, n, 3, heads, d // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), -1)
        o = (att @ v).transpose(1, 2).reshape(b, n, d)
        x = x + o @ p[f"{name}.attn.proj.weight"].T + p[f"{name}.attn.proj.bias"]
        h = ln(x, f"norm2{suffix}")
        h = F.gelu(h @ p[f"{name}.mlp.fc1.weight"].T + p[f"{name}.mlp.fc1.bias"])
        x = x + h @ p[f"{name}.mlp.fc2.weight"].T + p[f"{name}.mlp.fc2.bias"]
    x = F.layer_norm(x, x.shape[-1:], p["norm_a.weight"], p["norm_a.bias"], eps=1e-6)
    return x.mean(1)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            t.copy_(torch.randn(t.shape, generator=gen) * 0.3)


def test_cav_mae_key_layout_and_forward_match_the_released_model() -> None:
    enc = CAVMAEAudio([1, 32, 8], patch=4, **TINY_CAV)
    keys = set(enc.state_dict())
    block = {f"{n}{s}.{w}" for n in ("norm1", "norm2") for s in ("", "_a", "_v") for w in ("weight", "bias")}
    block |= {f"{m}.{w}" for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2") for w in ("weight", "bias")}
    expected = {"patch_embed_a.proj.weight", "patch_embed_a.proj.bias", "pos_embed_a", "modality_a",
                "norm_a.weight", "norm_a.bias"}  # fmt: skip
    expected |= {f"blocks_a.{i}.{k}" for i in range(2) for k in block} | {f"blocks_u.0.{k}" for k in block}
    assert keys == expected and enc.pos_embed_a.shape == (1, 2 * 8, 16)
    _randomise(enc, 0)
    fbank = torch.randn(3, 1, 32, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(enc(fbank), _cav_reference(enc, fbank[:, 0]), atol=1e-5, rtol=1e-5)
    enc(fbank).sum().backward()  # the norms off the audio path are kept for the keys, frozen, and get no gradient
    assert enc.blocks_a[0].norm1_a.weight.grad is None and not enc.blocks_a[0].norm1_a.weight.requires_grad
    assert enc.blocks_u[0].norm1_a.weight.grad is not None and enc.blocks_u[0].norm1.weight.grad is None


def test_cav_mae_loads_a_dataparallel_checkpoint_by_name_and_reports_the_rest(tmp_path: Path) -> None:
    source = CAVMAEAudio([1, 32, 8], patch=4, **TINY_CAV)
    _randomise(source, 2)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state |= {"module.patch_embed_v.proj.weight": torch.zeros(16, 3, 4, 4), "module.blocks_v.0.attn.qkv.weight":
              torch.zeros(48, 16), "module.mlp_head.1.weight": torch.zeros(5, 16)}  # fmt: skip
    torch.save(state, tmp_path / "cav.pth")
    enc = CAVMAEAudio([1, 32, 8], patch=4, **TINY_CAV)
    report = load_pretrained(enc, tmp_path / "cav.pth", "model.encoders.audio.pretrained")
    assert report["ignored"] == ["blocks_v.0.attn.qkv.weight", "mlp_head.1.weight", "patch_embed_v.proj.weight"]
    x = torch.randn(2, 1, 32, 8)
    torch.testing.assert_close(enc(x), source(x))
    del state["module.norm_a.bias"], state["module.blocks_u.0.mlp.fc1.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(UserError, match=r"lacks 2 of the encoder's weights: blocks_u\.0\.\*, norm_a\.bias"):
        load_pretrained(enc, tmp_path / "partial.pth", "model.encoders.audio.pretrained")
    wide = CAVMAEAudio([1, 64, 8], patch=4, **TINY_CAV)  # another audio length: pos_embed_a of another shape
    with pytest.raises(UserError, match=r"pos_embed_a is \[1, 16, 16\]"):
        load_pretrained(wide, tmp_path / "cav.pth", "where")


def test_fbank_feeds_cav_mae_in_a_model_spec() -> None:
    spec = {"modalities": {"audio": [3200]}, "num_classes": 3, "head": "linear", "head_args": {},
            "encoders": {"audio": {"name": "cav_mae_audio", "args": {**TINY_CAV, "patch": 4}, "transform": "fbank",
                                   "transform_args": {"n_mels": 16, "target_frames": 24}}}}  # fmt: skip
    model = build_model(spec)
    out = model({"audio": torch.randn(2, 3200)})
    assert out["logits"].shape == (2, 3) and model.encoders["audio"].pos_embed_a.shape == (1, 4 * 6, 16)
    with pytest.raises(UserError, match="multiple of patch=4"):
        CAVMAEAudio([1, 30, 8], patch=4, **TINY_CAV)


# ---------------------------------------------------------------- M3AE


def _flax_tree(seed: int, dim: int = 16, depth: int = 2, vocab: int = 40, patch_values: int = 48) -> dict:
    """A tiny M3AE parameter tree in the release's layout (Flax names, Dense kernels (in, out)), decoder included."""
    rng = np.random.default_rng(seed)

    def arr(shape: tuple, scale: float, shift: float = 0.0) -> np.ndarray:
        return (shift + rng.normal(0, scale, shape)).astype(np.float32)

    def dense(i: int, o: int) -> dict:
        return {"kernel": arr((i, o), 0.3), "bias": arr((o,), 0.1)}

    def norm() -> dict:
        return {"scale": arr((dim,), 0.1, 1.0), "bias": arr((dim,), 0.1)}

    def block() -> dict:
        attention = {"Dense_0": dense(dim, 3 * dim), "Dense_1": dense(dim, dim)}
        mlp = {"fc1": dense(dim, 4 * dim), "fc2": dense(4 * dim, dim)}
        return {"LayerNorm_0": norm(), "Attention_0": attention, "LayerNorm_1": norm(), "TransformerMLP_0": mlp}

    encoder = {**{f"Block_{i}": block() for i in range(depth)}, "LayerNorm_0": norm()}
    vectors = ("cls_token", "encoder_image_type_embedding", "encoder_text_type_embedding",
               "decoder_image_type_embedding", "image_mask_embedding")  # fmt: skip
    return {**{name: arr((1, 1, dim), 0.5) for name in vectors}, "image_embedding": dense(patch_values, dim),
            "text_embedding": {"embedding": arr((vocab, dim), 1.0)}, "encoder": encoder,
            "decoder": {"Block_0": {"LayerNorm_0": norm()}}, "decoder_input_projection": dense(dim, 8)}  # fmt: skip


class FakeFrozenDict(dict):
    """Pickled as ``(cls, (dict,))``, as Flax's FrozenDict reduces."""

    def __reduce__(self) -> tuple:
        return (FakeFrozenDict, (dict(self),))


class FakeTrainState:
    """Pickled by reference to this test module, like Flax's TrainState in the release: the converter must not
    import it."""

    def __init__(self, params: dict) -> None:
        self.step = 7
        self.params = FakeFrozenDict({"params": {**params, "encoder": FakeFrozenDict(params["encoder"])}})


def _np_m3ae(tree: dict, tokens: np.ndarray, pad: np.ndarray, heads: int = 2) -> np.ndarray:
    """M3AE's Flax encoder in numpy (LayerNorm eps 1e-6, tanh GELU, -1e7 on padded keys): (B, 1 + N, D)."""

    def ln(x: np.ndarray, p: dict) -> np.ndarray:
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]

    def gelu(x: np.ndarray) -> np.ndarray:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    x = np.concatenate([np.repeat(tree["cls_token"], len(tokens), 0), tokens], 1).astype(np.float64)
    pad = np.concatenate([np.zeros((len(tokens), 1)), pad], 1)
    for i in range(len([k for k in tree["encoder"] if k.startswith("Block_")])):
        blk = tree["encoder"][f"Block_{i}"]
        h = ln(x, blk["LayerNorm_0"])
        b, n, d = h.shape
        att_p, mlp_p = blk["Attention_0"], blk["TransformerMLP_0"]
        qkv = (h @ att_p["Dense_0"]["kernel"] + att_p["Dense_0"]["bias"]).reshape(b, n, 3, heads, d // heads)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)
        att = q @ k.swapaxes(-1, -2) * (d // heads) ** -0.5
        att = np.where(pad[:, None, None, :] > 0, -1e7, att)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = (att @ v).swapaxes(1, 2).reshape(b, n, d)
        x = x + o @ att_p["Dense_1"]["kernel"] + att_p["Dense_1"]["bias"]
        h = gelu(ln(x, blk["LayerNorm_1"]) @ mlp_p["fc1"]["kernel"] + mlp_p["fc1"]["bias"])
        x = x + h @ mlp_p["fc2"]["kernel"] + mlp_p["fc2"]["bias"]
    return ln(x, tree["encoder"]["LayerNorm_0"])


def _sincos(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2) / (dim / 2))
    out = pos.reshape(-1, 1) * omega
    return np.concatenate([np.sin(out), np.cos(out)], 1)


@pytest.fixture
def converted(tmp_path: Path, capsys: pytest.CaptureFixture) -> tuple[dict, Path]:
    tree = _flax_tree(0)
    with open(tmp_path / "m3ae.pkl", "wb") as fh:
        pickle.dump({"state": FakeTrainState(tree), "variant": {"model_type": "tiny"}, "epoch": 50}, fh)
    assert convert_main([str(tmp_path / "m3ae.pkl"), str(tmp_path / "m3ae.pt")]) == 0
    line = capsys.readouterr().out.strip()
    assert "embed_dim=16 depth=2 vocab_size=40" in line and "decoder.*" in line and "image_mask_embedding" in line
    assert len(line.splitlines()) == 1
    return tree, tmp_path / "m3ae.pt"


def test_converted_image_encoder_matches_the_flax_definition(converted: tuple[dict, Path]) -> None:
    tree, path = converted
    enc = M3AEEncoder([3, 8, 8], variant="m3ae", pool="cls", **TINY_M3AE)
    report = load_pretrained(enc, path, "model.encoders.image.pretrained")
    assert report["ignored"] == ["encoder_text_type_embedding", "text_embedding.weight"]
    image = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    nhwc = image.transpose(0, 2, 3, 1)  # the Flax extract_patches: (b, h, p1, w, p2, c) -> (b, h*w, p1*p2*c)
    patches = nhwc.reshape(2, 2, 4, 2, 4, 3).swapaxes(2, 3).reshape(2, 4, 48)
    col, row = np.meshgrid(np.arange(2), np.arange(2))
    pos = np.concatenate([_sincos(8, col.flatten()), _sincos(8, row.flatten())], 1)
    embedding = tree["image_embedding"]
    tokens = patches @ embedding["kernel"] + embedding["bias"] + pos + tree["encoder_image_type_embedding"]
    ref = _np_m3ae(tree, tokens, np.zeros((2, 4)))
    out = enc(torch.from_numpy(image))
    np.testing.assert_allclose(out.detach().numpy(), ref[:, 0], atol=1e-4)
    enc_all = M3AEEncoder([3, 8, 8], variant="m3ae", pool="all", **TINY_M3AE)
    load_pretrained(enc_all, path, "where")
    np.testing.assert_allclose(enc_all(torch.from_numpy(image)).detach().numpy(), ref.mean(1), atol=1e-4)


def test_converted_text_encoder_masks_padding_as_flax(converted: tuple[dict, Path]) -> None:
    tree, path = converted
    ids = np.array([[5, 9, 3, 0, 0, 0], [7, 1, 2, 8, 6, 4]])
    enc = M3AEEncoder([6], variant="m3ae", pool="tokens", **TINY_M3AE)
    assert load_pretrained(enc, path, "where")["ignored"][0] == "encoder_image_type_embedding"
    table = tree["text_embedding"]["embedding"]
    tokens = table[ids] + _sincos(16, np.arange(6)) + tree["encoder_text_type_embedding"]
    ref = _np_m3ae(tree, tokens, (ids == 0).astype(np.float64))
    keep = (ids != 0)[..., None]
    expected = (ref[:, 1:] * keep).sum(1) / keep.sum(1)
    np.testing.assert_allclose(enc(torch.from_numpy(ids)).detach().numpy(), expected, atol=1e-4)


def test_mla_pooling_pads_every_text_to_the_full_length(converted: tuple[dict, Path]) -> None:
    _, path = converted
    enc = M3AEEncoder([8], **TINY_M3AE)  # variant mla, pool all
    load_pretrained(enc, path, "where")
    short = torch.tensor([[5, 9, 3, 0]])
    torch.testing.assert_close(enc(short), enc(F.pad(short, (0, 4))))  # the batch's padding does not matter
    assert not torch.allclose(enc(short), M3AEEncoder([8], pool="tokens", **TINY_M3AE)(short))


def test_patch_orders_of_mla_and_the_flax_release() -> None:
    image = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    mla = M3AEEncoder([3, 8, 8], **TINY_M3AE).patches(image)
    flax = M3AEEncoder([3, 8, 8], variant="m3ae", **TINY_M3AE).patches(image)
    # MLA: einops 'b c (h p1) (w p2) -> b (h w) (c p1 p2)'; the release: 'b (h p1) (w p2) c -> b (h w) (p1 p2 c)'
    assert torch.equal(mla[0, 1], image[0, :, 0:4, 4:8].reshape(-1))
    assert torch.equal(flax[0, 1], image[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))


def test_converter_and_loader_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tree = _flax_tree(3)
    tree["encoder"]["Block_0"]["Surprise_0"] = {"kernel": np.zeros((2, 2), np.float32)}
    flat = {"params/" + "/".join(k): v for k, v in _flatten(tree).items()}
    np.savez(tmp_path / "odd.npz", **flat)
    assert convert_main([str(tmp_path / "odd.npz"), str(tmp_path / "odd.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "encoder/Block_0/Surprise_0/kernel" in err and len(err.splitlines()) == 1
    del tree["encoder"]["Block_0"]["Surprise_0"]
    np.savez(tmp_path / "ok.npz", **{"params/" + "/".join(k): v for k, v in _flatten(tree).items()})
    assert convert_main([str(tmp_path / "ok.npz"), str(tmp_path / "ok.pt")]) == 0
    enc = M3AEEncoder([3, 8, 8], **TINY_M3AE)
    load_pretrained(enc, tmp_path / "ok.pt", "where")
    torch.testing.assert_close(enc.image_embedding.weight, torch.from_numpy(tree["image_embedding"]["kernel"].T))
    with pytest.raises(UserError, match="convert it first: python -m mmtool.models.convert_m3ae"):
        load_pretrained(enc, tmp_path / "odd.npz", "where")
    with pytest.raises(UserError, match=r"is \[1, 1, 16\] in .*needs \[1, 1, 8\]"):
        load_pretrained(M3AEEncoder([3, 8, 8], **{**TINY_M3AE, "embed_dim": 8}), tmp_path / "ok.pt", "where")
    with pytest.raises(UserError, match="images"):
        M3AEEncoder([4, 8], **TINY_M3AE)


def _flatten(tree: dict, prefix: tuple = ()) -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flatten(v, (*prefix, k)) if isinstance(v, dict) else {(*prefix, k): v})
    return out
