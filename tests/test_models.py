"""brainldm.models: the tiny model round-trips through the real from_pretrained path, offline."""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from transformers import CLIPTokenizer

from brainldm import scenes
from brainldm.models import (
    TINY_TOKENIZER_DIR,
    ModelError,
    build_tiny_model,
    check_model_folder,
    load_pipeline,
    text_to_image,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


def _copy(tiny_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_dir, dst)
    return dst


def test_offline_round_trip_through_from_pretrained(tiny_dir):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert (tiny_dir / "model_index.json").is_file()
    pipe = load_pipeline(tiny_dir, device="cpu")
    assert isinstance(pipe, StableDiffusionImg2ImgPipeline)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    assert len(pipe.tokenizer) == pipe.text_encoder.config.vocab_size
    assert pipe.tokenizer.model_max_length == 77
    # 64 px -> 4 x 8 x 8 latents, like SD's x8 VAE
    with torch.no_grad():
        z = pipe.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert z.shape == (1, 4, 8, 8)
    assert pipe.vae.config.scaling_factor == pytest.approx(0.18215)


def test_tiny_weights_fixed_by_seed(tiny_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again", seed=0)
    other = build_tiny_model(tmp_path / "other", seed=1)
    a, b, c = (load_pipeline(d, device="cpu").unet.conv_in.weight for d in (tiny_dir, again, other))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_build_replaces_existing_folder_without_leftovers(tmp_path):
    out = tmp_path / "tiny"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    build_tiny_model(out, seed=0)
    assert not (out / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiny.tmp")]


def test_text_to_image_shares_modules(tiny_dir):
    pipe = load_pipeline(tiny_dir, device="cpu")
    t2i = text_to_image(pipe)
    assert isinstance(t2i, StableDiffusionPipeline)
    assert t2i.unet is pipe.unet and t2i.vae is pipe.vae and t2i.text_encoder is pipe.text_encoder
    images = t2i(prompt="a red circle", num_inference_steps=1, height=32, width=32, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 32, 32, 3)


def test_tokenizer_has_whole_words_for_synthetic_captions_and_byte_fallback():
    tok = CLIPTokenizer.from_pretrained(str(TINY_TOKENIZER_DIR), model_max_length=77)
    rng = np.random.default_rng(1)
    for _ in range(50):
        for caption in scenes.captions(scenes.random_scene(rng), rng):
            pieces = tok.tokenize(caption)
            assert all(p.endswith("</w>") for p in pieces), (caption, pieces)
    # an unknown word still tokenizes, byte by byte, and round-trips
    pieces = tok.tokenize("zebra")
    assert len(pieces) > 1
    assert tok.decode(tok("zebra").input_ids, skip_special_tokens=True) == "zebra"


# ---------------------------------------------------------------- bad input
def test_missing_model_index(tmp_path):
    with pytest.raises(ModelError, match="model_index.json is missing"):
        load_pipeline(tmp_path, device="cpu")


def test_missing_component_is_named(tiny_dir, tmp_path):
    folder = _copy(tiny_dir, tmp_path)
    shutil.rmtree(folder / "unet")
    with pytest.raises(ModelError, match="lacks the component 'unet'"):
        load_pipeline(folder, device="cpu")


def test_missing_weights_are_named(tiny_dir, tmp_path):
    folder = _copy(tiny_dir, tmp_path)
    for f in (folder / "vae").glob("diffusion_pytorch_model*"):
        f.unlink()
    with pytest.raises(ModelError, match="component 'vae' .* has no weights"):
        check_model_folder(folder)


def test_corrupt_model_index(tiny_dir, tmp_path):
    folder = _copy(tiny_dir, tmp_path)
    (folder / "model_index.json").write_text("{not json")
    with pytest.raises(ModelError, match="model_index.json is not valid JSON"):
        load_pipeline(folder, device="cpu")


def test_degenerate_tokenizer_is_refused(tiny_dir, tmp_path):
    folder = _copy(tiny_dir, tmp_path)
    shutil.rmtree(folder / "tokenizer")
    CLIPTokenizer(model_max_length=77).save_pretrained(folder / "tokenizer")  # 3 tokens, no vocabulary
    with pytest.raises(ModelError, match=r"tokenizer .* has 2 tokens but its text encoder expects 830"):
        load_pipeline(folder, device="cpu")


def test_uncached_hub_id_says_how_to_download():
    with pytest.raises(ModelError) as err:
        load_pipeline("brainldm-tests/not-a-cached-model", device="cpu")
    msg = str(err.value)
    assert "not in the local Hugging Face cache" in msg
    assert "hf download brainldm-tests/not-a-cached-model" in msg
    assert "from_pretrained('brainldm-tests/not-a-cached-model')" in msg


def test_missing_folder_and_tiny_name(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_pipeline(tmp_path / "no" / "such" / "model", device="cpu")
    with pytest.raises(ModelError, match="build_tiny_model"):
        load_pipeline("tiny", device="cpu")


def test_model_index_lists_the_five_components(tiny_dir):
    index = json.loads((tiny_dir / "model_index.json").read_text())
    for name in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
        assert index[name][0] is not None
    assert index.get("safety_checker", [None])[0] is None
