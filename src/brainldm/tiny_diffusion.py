"""Train the tiny model's text encoder and U-Net on procedural scenes with their captions.

Stable Diffusion's U-Net learnt to denoise VAE latents of images conditioned on their
captions' CLIP embeddings (through cross-attention), with the caption dropped now and
then so that classifier-free guidance has an unconditional model to push away from.
:func:`fit_diffusion` does the same for the tiny model, on scenes drawn with
:func:`brainldm.scenes.random_scene` from the model's own seed (streams separate from
the synthetic mini-NSD's and from the VAE fit's, so no stimulus of the mini-NSD is
seen in training):

- latents ``z0 = vae.encode(x).latent_dist.mean x scaling_factor`` of a fixed pool of
  scenes, encoded once by the (already fitted, frozen) VAE;
- each step: a batch of pool scenes, one of each scene's captions drawn at random,
  replaced by the empty prompt with probability ``cond_dropout`` (SD: 0.1); a
  timestep ``t ~ U{0, ..., T-1}``; ``z_t = scheduler.add_noise(z0, eps, t)`` with the
  same scheduler (SD v1's scaled-linear betas) that inference uses;
- loss: mean squared error of the U-Net's noise prediction ``eps_hat(z_t, t, c)``,
  ``c = text_encoder(tokens).last_hidden_state``; the text encoder and the U-Net are
  trained together (SD's CLIP was trained beforehand; the tiny one starts random);
  AdamW with a linear warm-up and cosine decay.

The fit runs on the CPU with fixed threads and deterministic algorithms, so the
weights depend only on (seed, steps, settings).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from brainldm import scenes
from brainldm.tiny_vae import deterministic_cpu, render_images

log = logging.getLogger(__name__)

# Random streams drawn from the model's seed (see brainldm.tiny_vae for the VAE's).
_POOL_SCENES = 0x7A1E_0003
_HELDOUT_SCENES = 0x7A1E_0004

#: Captions per pool scene (as COCO's five).
CAPTIONS_PER_SCENE = 5


class DiffusionFitError(ValueError):
    """Bad settings for the U-Net / text-encoder fit; the message names the setting."""


@dataclass(frozen=True)
class DiffusionFit:
    """What a fit did: steps, wall seconds, the noise-prediction loss (mean squared
    error per latent element) over the last logging window and on held-out scenes
    at fixed timesteps, with the caption (``heldout_loss``) and with the empty prompt
    (``heldout_loss_uncond``): the gap is what the caption tells the U-Net."""

    steps: int
    seconds: float
    loss: float
    heldout_loss: float
    heldout_loss_uncond: float


def tokenize(tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids padded to the tokenizer's max length, as Stable Diffusion's pipelines do: (n, 77) int64."""
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Scaled posterior means of ``images`` (n, 3, H, W) in [-1, 1]: (n, 4, H/8, W/8) float32."""
    out = [vae.encode(images[i:i + batch]).latent_dist.mean for i in range(0, len(images), batch)]
    return torch.cat(out) * vae.config.scaling_factor


def scene_pool(rng: np.random.Generator, n: int, size: int) -> tuple[torch.Tensor, list[list[str]]]:
    """``n`` random scenes at ``size`` px, (n, 3, size, size) in [-1, 1], with their captions."""
    drawn = [scenes.random_scene(rng) for _ in range(n)]
    return render_images(drawn, size), [scenes.captions(s, rng, CAPTIONS_PER_SCENE) for s in drawn]


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10% at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def heldout_loss(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 scheduler: DDIMScheduler, latents: torch.Tensor, texts: list[str],
                 generator: torch.Generator) -> float:
    """Noise-prediction MSE on ``latents`` (n, 4, h, w) with captions ``texts`` at evenly spaced timesteps."""
    n = len(latents)
    t = torch.linspace(0, scheduler.config.num_train_timesteps - 1, n).long()
    noise = torch.randn(latents.shape, generator=generator)
    noisy = scheduler.add_noise(latents, noise, t)
    cond = text_encoder(tokenize(tokenizer, texts))[0]
    return float(((unet(noisy, t, encoder_hidden_states=cond).sample - noise) ** 2).mean())


def fit_diffusion(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                  vae: AutoencoderKL, scheduler: DDIMScheduler, steps: int, seed: int,
                  pool_size: int = 4096, batch_size: int = 32, lr: float = 2e-3,
                  cond_dropout: float = 0.1, image_size: int | None = None, threads: int = 1,
                  log_every: int = 100) -> DiffusionFit:
    """Train ``unet`` and ``text_encoder`` in place for ``steps`` AdamW steps (see the module).

    pool_size: scenes drawn from ``seed`` and encoded once by ``vae`` (frozen);
    image_size: their side in px (default: the VAE's sample size). Logs the loss
    (``logging``, INFO) every ``log_every`` steps. Leaves both modules in eval mode.
    """
    if steps < 1:
        raise DiffusionFitError(f"model.tiny_unet_steps = {steps}: use >= 1 step (0 keeps U-Net and text encoder random)")
    if not 0.0 <= cond_dropout < 1.0:
        raise DiffusionFitError(f"caption dropout {cond_dropout}: use a probability in [0, 1)")
    size = int(image_size or vae.config.sample_size)
    with deterministic_cpu(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng([seed, _POOL_SCENES])
        start = time.perf_counter()
        images, texts = scene_pool(rng, pool_size, size)
        vae.eval()
        latents = encode_latents(vae, images)
        held_images, held_texts = scene_pool(np.random.default_rng([seed, _HELDOUT_SCENES]), 256, size)
        held_latents = encode_latents(vae, held_images)
        held_texts = [t[0] for t in held_texts]
        log.info("tiny U-Net fit: %d pool scenes encoded to latents %s in %.1f s",
                 pool_size, tuple(latents.shape[1:]), time.perf_counter() - start)
        empty = tokenize(tokenizer, [""])[0]
        params = list(unet.parameters()) + list(text_encoder.parameters())
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, steps, max(1, steps // 20)))
        n_train_t = scheduler.config.num_train_timesteps
        unet.train()
        text_encoder.train()
        window, n_window, last = 0.0, 0, float("nan")
        for step in range(1, steps + 1):
            idx = torch.randint(pool_size, (batch_size,), generator=generator)
            pick = torch.randint(CAPTIONS_PER_SCENE, (batch_size,), generator=generator)
            ids = tokenize(tokenizer, [texts[i][k] for i, k in zip(idx.tolist(), pick.tolist())])
            drop = torch.rand(batch_size, generator=generator) < cond_dropout
            ids[drop] = empty
            z0 = latents[idx]
            noise = torch.randn(z0.shape, generator=generator)
            t = torch.randint(n_train_t, (batch_size,), generator=generator)
            noisy = scheduler.add_noise(z0, noise, t)
            cond = text_encoder(ids)[0]
            loss = ((unet(noisy, t, encoder_hidden_states=cond).sample - noise) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            window += loss.item()
            n_window += 1
            if step % log_every == 0 or step == steps:
                last = window / n_window
                log.info("tiny U-Net step %d/%d: noise MSE %.4f, %.1f s", step, steps, last,
                         time.perf_counter() - start)
                window, n_window = 0.0, 0
        seconds = time.perf_counter() - start
        unet.eval()
        text_encoder.eval()
        eval_gen = torch.Generator().manual_seed(seed)
        cond_loss = heldout_loss(unet, text_encoder, tokenizer, scheduler, held_latents, held_texts, eval_gen)
        eval_gen = torch.Generator().manual_seed(seed)
        uncond_loss = heldout_loss(unet, text_encoder, tokenizer, scheduler, held_latents,
                                   [""] * len(held_texts), eval_gen)
    log.info("tiny U-Net fitted: %d steps in %.1f s; held-out noise MSE %.4f with captions, %.4f without",
             steps, seconds, cond_loss, uncond_loss)
    return DiffusionFit(steps, seconds, last, cond_loss, uncond_loss)
