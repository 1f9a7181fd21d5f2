"""The tiny model's text-encoder and U-Net fit (brainldm.tiny_diffusion) and the
scene reader that checks what generated images show (brainldm.scene_readback)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainldm import scenes
from brainldm.models import ModelError, build_tiny_components
from brainldm.scene_readback import dominant_object, fit_reader, grid_colours, labels
from brainldm.tiny_diffusion import DiffusionFitError, fit_diffusion, heldout_loss, tokenize


def _fit(components: dict, steps: int, **kw):
    c = components
    return fit_diffusion(c["unet"], c["text_encoder"], c["tokenizer"], c["vae"], c["scheduler"],
                         steps, seed=0, **kw)


def test_fit_is_deterministic_changes_only_unet_and_text_encoder(caplog):
    torch.set_num_threads(2)
    a, b, random = build_tiny_components(0), build_tiny_components(0), build_tiny_components(0)
    vae_before = {k: v.clone() for k, v in a["vae"].state_dict().items()}
    with caplog.at_level("INFO", logger="brainldm.tiny_diffusion"):
        fit_a = _fit(a, 3, pool_size=32, batch_size=4, log_every=1)
    fit_b = _fit(b, 3, pool_size=32, batch_size=4, log_every=1)
    assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    assert "tiny U-Net step 3/3: noise MSE" in caplog.text and "held-out noise MSE" in caplog.text
    assert (fit_a.loss, fit_a.heldout_loss, fit_a.heldout_loss_uncond) == (fit_b.loss, fit_b.heldout_loss, fit_b.heldout_loss_uncond)
    for name in ("unet", "text_encoder"):
        for key, weight in a[name].state_dict().items():
            assert torch.equal(weight, b[name].state_dict()[key]), (name, key)
    assert not torch.equal(a["unet"].conv_in.weight, random["unet"].conv_in.weight)
    assert not torch.equal(a["text_encoder"].get_input_embeddings().weight,
                           random["text_encoder"].get_input_embeddings().weight)
    for key, weight in a["vae"].state_dict().items():
        assert torch.equal(weight, vae_before[key]), key
    assert not a["unet"].training and not a["text_encoder"].training


def test_fit_lowers_the_heldout_noise_prediction_error():
    torch.set_num_threads(2)
    comp = build_tiny_components(0)
    held = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    texts = ["a red circle on a grey background."] * 16

    def err():
        return heldout_loss(comp["unet"], comp["text_encoder"], comp["tokenizer"], comp["scheduler"],
                            held, texts, torch.Generator().manual_seed(0))

    before = err()
    fit = _fit(comp, 60, pool_size=64, batch_size=16)
    # measured: ~1.0 for the random U-Net, ~0.3 after 60 steps
    assert fit.heldout_loss < 0.6 < before
    assert err() < 0.6 * before


def test_bad_fit_settings():
    with pytest.raises(ModelError, match="model.tiny_unet_steps = -1"):
        build_tiny_components(0, unet_steps=-1)
    comp = build_tiny_components(0)
    with pytest.raises(DiffusionFitError, match="model.tiny_unet_steps = 0"):
        _fit(comp, 0)
    with pytest.raises(DiffusionFitError, match="caption dropout 1.0"):
        _fit(comp, 1, cond_dropout=1.0)


def test_tokenize_pads_to_clip_length():
    tok = build_tiny_components(0)["tokenizer"]
    ids = tokenize(tok, ["a red circle", ""])
    assert ids.shape == (2, 77)
    assert ids[1, 0] == tok.bos_token_id and ids[1, 1] == tok.eos_token_id


# ---------------------------------------------------------------- scene reader
def test_reader_reads_real_scenes_far_above_chance():
    reader = fit_reader(0, n=1500)
    rng = np.random.default_rng(77)
    drawn = [scenes.random_scene(rng) for _ in range(300)]
    got = reader.read(np.stack([scenes.render(s, 64) for s in drawn]))
    truth = labels(drawn)
    # measured: background 0.57, dominant object colour 0.44 (chance ~0.2 and ~0.15)
    for name, y in truth.items():
        chance = np.bincount(y).max() / len(y)
        assert np.mean(got[name] == y) > chance + 0.2, name
    # a reader of shuffled pixels is at chance: the rate measures the pixels
    shuffled = reader.read(np.stack([scenes.render(drawn[(i + 1) % 300], 64) for i in range(300)]))
    assert np.mean(shuffled["background"] == truth["background"]) < 0.35


def test_dominant_object_and_grid_colours():
    small = scenes.SceneObject("circle", "red", "small", "left", (0.0, 0.0))
    large = scenes.SceneObject("star", "blue", "large", "right", (0.0, 0.0))
    assert dominant_object(scenes.Scene("grey", (small, large), 0)) is large
    assert dominant_object(scenes.Scene("grey", (small,), 0)) is small
    img = np.zeros((1, 64, 64, 3), np.uint8)
    img[0, :8, :8] = 255
    g = grid_colours(img).reshape(1, 8, 8, 3)
    assert g[0, 0, 0].tolist() == [1.0, 1.0, 1.0] and g[0, 1:].max() == 0 and g[0, 0, 1:].max() == 0
