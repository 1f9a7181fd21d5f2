"""Fit the tiny model's VAE on procedural scenes, so that its latent is image-like.

Stable Diffusion's VAE was trained on natural images: its latent z is a coarse,
local code of the image (a 4-channel 1/8-resolution picture). A VAE with random
weights has a latent that is only weakly and non-locally related to the pixels, so
nothing that encodes local luminance and colour (early visual cortex, or the
synthetic brain's early voxels) can predict it. :func:`fit_vae` trains the tiny
model's :class:`~diffusers.AutoencoderKL` briefly on scenes drawn with
:func:`brainldm.scenes.random_scene` and :func:`brainldm.scenes.render` from the
model's own seed (streams separate from the synthetic mini-NSD's), the way SD's VAE
was trained on images independent of NSD.

Loss, as SD's VAE without its perceptual and adversarial terms: per-image sum of
squared pixel errors (images in [-1, 1]) + ``kl_weight`` (SD: 1e-6) x the per-image
KL divergence of the posterior to N(0, 1), averaged over the batch; Adam. The fit
runs on the CPU with a fixed number of threads and deterministic algorithms, so
the weights depend only on (seed, steps, settings).

After the fit the VAE's ``scaling_factor`` is set, as SD's was, to 1 / sd of the
posterior means of held-out scenes, so that ``z = mean x scaling_factor`` has unit
standard deviation (SD v1: 0.18215).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL

from brainldm import scenes

log = logging.getLogger(__name__)

# Tags of the random streams drawn from the model's seed: the training scenes, the
# held-out scenes and the torch generator (posterior samples, batch order). The
# synthetic mini-NSD draws its scenes from default_rng(synthetic.seed) and its
# subjects from default_rng([seed, subject]) with subject 1-8, so these never collide.
_TRAIN_SCENES = 0x7A1E_0001
_HELDOUT_SCENES = 0x7A1E_0002

#: Defaults of the fit (a ~250 k-parameter VAE at 64 px: ~0.1 s per step on one core).
BATCH_SIZE = 8
LEARNING_RATE = 1e-3
KL_WEIGHT = 1e-6
N_HELDOUT = 64


class VAEFitError(ValueError):
    """Bad settings for the VAE fit; the message names the setting and the fix."""


@dataclass(frozen=True)
class VAEFit:
    """What a fit did and how good the VAE is on held-out scenes.

    loss: mean per-pixel squared error (images in [-1, 1]) over the last logging
    window; kl: mean per-image KL over the same window; psnr / baseline_psnr: dB
    (peak-to-peak 2) of decode(encode(x)) and of the held-out scenes' mean image,
    on ``N_HELDOUT`` held-out scenes; latent_sd: sd of their posterior means
    before scaling; seconds: wall time of the training steps.
    """

    steps: int
    seconds: float
    loss: float
    kl: float
    psnr: float
    baseline_psnr: float
    latent_sd: float
    scaling_factor: float


def render_images(drawn: list[scenes.Scene], size: int) -> torch.Tensor:
    """``drawn`` scenes rendered at ``size`` px: (n, 3, size, size) float32 in [-1, 1]."""
    pixels = np.stack([scenes.render(s, size) for s in drawn])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def scene_images(rng: np.random.Generator, n: int, size: int) -> torch.Tensor:
    """``n`` random scenes rendered at ``size`` px: (n, 3, size, size) float32 in [-1, 1]."""
    return render_images([scenes.random_scene(rng) for _ in range(n)], size)


def psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error on images in [-1, 1] (peak-to-peak 2)."""
    return 10.0 * math.log10(4.0 / mse)


@contextlib.contextmanager
def deterministic_cpu(threads: int) -> Iterator[None]:
    """Run with ``threads`` torch threads and deterministic algorithms; restore both after."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.set_num_threads(old_threads)


@torch.no_grad()
def evaluate(vae: AutoencoderKL, images: torch.Tensor) -> tuple[float, float, float]:
    """(psnr, mean-image baseline psnr, sd of the posterior means) of ``images`` (n, 3, H, W) in [-1, 1]."""
    mean = vae.encode(images).latent_dist.mean
    recon = vae.decode(mean).sample.clamp(-1, 1)
    mse = float(((recon - images) ** 2).mean())
    baseline = float(((images - images.mean(0, keepdim=True)) ** 2).mean())
    return psnr(mse), psnr(baseline), float(mean.std())


def fit_vae(vae: AutoencoderKL, steps: int, seed: int, image_size: int | None = None,
            batch_size: int = BATCH_SIZE, lr: float = LEARNING_RATE, kl_weight: float = KL_WEIGHT,
            threads: int = 1, log_every: int = 50) -> VAEFit:
    """Train ``vae`` in place for ``steps`` Adam steps on fresh random scenes; set its scaling factor.

    image_size: side in px of the training scenes (default: the VAE's sample_size).
    Every step draws ``batch_size`` new scenes from ``seed``'s training stream.
    The loss is logged (``logging``, INFO) every ``log_every`` steps. Leaves the VAE
    in eval mode. Returns the fit's :class:`VAEFit`.
    """
    if steps < 1:
        raise VAEFitError(f"model.tiny_vae_steps = {steps}: fit_vae needs >= 1 step (0 keeps the random VAE)")
    size = int(image_size or vae.config.sample_size)
    if size < 8 or size % 8:
        raise VAEFitError(f"VAE training image size {size} px: use a multiple of 8 (the VAE downsamples x8)")
    train_rng = np.random.default_rng([seed, _TRAIN_SCENES])
    heldout = scene_images(np.random.default_rng([seed, _HELDOUT_SCENES]), N_HELDOUT, size)
    with deterministic_cpu(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
        vae.train()
        start = time.perf_counter()
        window_mse, window_kl, n_window = 0.0, 0.0, 0
        for step in range(1, steps + 1):
            x = scene_images(train_rng, batch_size, size)
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample(generator=generator)).sample
            sq_err = ((recon - x) ** 2).flatten(1).sum(1)   # (batch,) per-image sums, as SD
            kl = posterior.kl()                              # (batch,) per-image sums
            loss = (sq_err + kl_weight * kl).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            window_mse += sq_err.detach().mean().item() / x[0].numel()
            window_kl += kl.detach().mean().item()
            n_window += 1
            if step % log_every == 0 or step == steps:
                last_mse, last_kl = window_mse / n_window, window_kl / n_window
                log.info("tiny VAE step %d/%d: pixel MSE %.4f (PSNR %.2f dB), KL %.1f per image, %.1f s",
                         step, steps, last_mse, psnr(last_mse), last_kl, time.perf_counter() - start)
                window_mse, window_kl, n_window = 0.0, 0.0, 0
        seconds = time.perf_counter() - start
        vae.eval()
        fit_psnr, baseline_psnr, latent_sd = evaluate(vae, heldout)
    scaling = float(f"{1.0 / latent_sd:.5g}")
    vae.register_to_config(scaling_factor=scaling)
    log.info("tiny VAE fitted: %d steps in %.1f s; held-out PSNR %.2f dB (mean image %.2f dB); "
             "latent sd %.4f -> scaling_factor %s", steps, seconds, fit_psnr, baseline_psnr, latent_sd, scaling)
    return VAEFit(steps, seconds, last_mse, last_kl, fit_psnr, baseline_psnr, latent_sd, scaling)
