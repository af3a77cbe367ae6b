"""CLIP's towers: tiny configs saved with save_pretrained and loaded back by name, projected vs pooled output,
and the text attention mask under the collate function's 0-padding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmtool.errors import UserError
from mmtool.models.clip import ClipImageEncoder, ClipTextEncoder
from mmtool.models.pretrained import load_pretrained

transformers = pytest.importorskip("transformers")

VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "image_size": 32, "patch_size": 8, "projection_dim": 16}  # fmt: skip
TEXT = {"vocab_size": 100, "hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
        "max_position_embeddings": 12, "projection_dim": 16, "bos_token_id": 98, "eos_token_id": 99}  # fmt: skip


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)
    model = transformers.CLIPModel(cfg).eval()
    folder = tmp_path_factory.mktemp("clip")
    model.save_pretrained(folder)
    return model, folder


def test_image_tower_loads_from_a_clip_folder_and_gives_the_projected_embedding(clip_folder: tuple) -> None:
    model, folder = clip_folder
    enc = ClipImageEncoder([3, 32, 32], config=VISION).eval()
    report = load_pretrained(enc, folder, "model.encoders.image.pretrained")
    assert "logit_scale" in report["ignored"] and all(k.startswith(("text_", "logit")) for k in report["ignored"])
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pooled = model.vision_model(pixel_values=images).pooler_output  # class token after post_layernorm
        torch.testing.assert_close(enc(images), model.visual_projection(pooled))
        pooled_enc = ClipImageEncoder([3, 32, 32], config=VISION, output="pooled").eval()
        load_pretrained(pooled_enc, folder, "where")
        torch.testing.assert_close(pooled_enc(images), pooled)
    assert (enc.out_dim, pooled_enc.out_dim) == (16, 32)


def test_a_saved_tower_reloads_with_no_missing_or_unexpected_keys(tmp_path: Path) -> None:
    for enc, x in [(ClipImageEncoder([3, 32, 32], config=VISION), torch.randn(2, 3, 32, 32)),
                   (ClipTextEncoder([8], config=TEXT), torch.tensor([[98, 5, 6, 99, 0, 0, 0, 0]]))]:  # fmt: skip
        enc.eval()
        enc.model.save_pretrained(tmp_path / enc.kind)
        again = type(enc)([3, 32, 32] if enc.kind == "image" else [8], config=VISION if enc.kind == "image" else TEXT)
        assert load_pretrained(again.eval(), tmp_path / enc.kind, "where")["ignored"] == []
        with torch.no_grad():
            torch.testing.assert_close(again(x), enc(x))


def test_text_tower_masks_after_end_of_text_whatever_pads(clip_folder: tuple) -> None:
    model, folder = clip_folder
    enc = ClipTextEncoder([8], config=TEXT).eval()
    load_pretrained(enc, folder, "where")
    # id 0 is a real token in CLIP's vocabulary ("!"): inside the text it is attended, after end-of-text it is padding
    zero_padded = torch.tensor([[98, 0, 7, 99, 0, 0, 0, 0], [98, 5, 6, 8, 9, 99, 0, 0]])
    eot_padded = torch.where(torch.arange(8) > torch.tensor([[3], [5]]), torch.tensor(99), zero_padded)
    assert enc.attention_mask(zero_padded).tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]]
    assert torch.equal(enc.attention_mask(eot_padded), enc.attention_mask(zero_padded))
    with torch.no_grad():
        out = enc(zero_padded)
        torch.testing.assert_close(out, enc(eot_padded))
        unpadded = model.text_projection(model.text_model(input_ids=zero_padded[:1, :4]).pooler_output)
        torch.testing.assert_close(out[:1], unpadded)
        assert not torch.allclose(out[:1], enc(torch.tensor([[98, 3, 7, 99, 0, 0, 0, 0]])))  # the "!" counts


def test_legacy_eos_config_finds_end_of_text_as_the_largest_id() -> None:
    enc = ClipTextEncoder([6], config={**TEXT, "eos_token_id": 2})  # openai's released config.json says 2
    ids = torch.tensor([[98, 0, 4, 99, 0, 0]])
    assert enc.attention_mask(ids).tolist() == [[1, 1, 1, 1, 0, 0]]


def test_mismatches_fail_in_one_line(clip_folder: tuple, tmp_path: Path) -> None:
    _, folder = clip_folder
    with pytest.raises(UserError, match="num_hidden_layers 2, the encoder 3"):
        load_pretrained(ClipImageEncoder([3, 32, 32], config={**VISION, "num_hidden_layers": 3}), folder, "where")
    with pytest.raises(UserError, match="is not one"):
        load_pretrained(ClipTextEncoder([8], config=TEXT), tmp_path / "none.pth", "where")
    with pytest.raises(UserError, match="no field 'hidden'"):
        ClipTextEncoder([8], config={"hidden": 3})
    with pytest.raises(UserError, match="more than its 12 positions"):
        ClipTextEncoder([20], config=TEXT)
    with pytest.raises(UserError, match=r"the config reads \[3, 32, 32\]"):
        ClipImageEncoder([3, 64, 64], config=VISION)
    with pytest.raises(UserError, match="output must be one of"):
        ClipImageEncoder([3, 32, 32], config=VISION, output="cls")
