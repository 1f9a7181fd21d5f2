"""Images from decoded z and c with the latent diffusion model (paper §3.3, Fig. 3).

For every test image and sample s (seed from (seed, subject, nsd_id, s), the same seed
in the three conditions):

- ``zc``: decoded z (4, h, w) -> VAE decode -> resize to ``image_size`` -> img2img
  (VAE encode, noise to ``strength``, DDIM with ``eta``) conditioned on decoded c
  (77, d) with classifier-free guidance ``guidance_scale`` against the empty prompt;
- ``z`` (control): the same img2img conditioned on the empty prompt. Guidance is then
  a no-op (uncond + g (uncond - uncond) = uncond), so it runs without the
  unconditional copy, which halves its cost and gives the same images;
- ``c`` (control): text-to-image from pure noise conditioned on decoded c.

Test images are split into shards (``shard_indices``); each shard is one HDF5 file,
gathered into ``recons.h5`` (docs/contracts.md) plus a picture grid.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
from PIL import Image

from brainldm.io import atomic_path
from brainldm.logs import progress
from brainldm.threads import limit_threads

CONDITIONS = ("z", "c", "zc")


class ReconstructionError(ValueError):
    """Bad reconstruction input; the message names the file or config key and the fix."""


@dataclass
class ReconSettings:
    """Config section ``reconstruction`` (see workflow/schemas/config.schema.yaml)."""

    image_size: int = 512
    strength: float = 0.8
    num_inference_steps: int = 50
    eta: float = 0.0
    guidance_scale: float = 5.0
    n_samples: int = 5
    seed: int = 42
    shards: int = 50
    batch_size: int = 1
    grid_images: int = 8
    grid_metric: str = "pixcorr"

    def __post_init__(self) -> None:
        checks = [
            ("n_samples", self.n_samples >= 1, "an integer >= 1 (the reference: 5)"),
            ("shards", self.shards >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("num_inference_steps", self.num_inference_steps >= 1, "an integer >= 1 (the reference: 50)"),
            ("strength", 0 < self.strength <= 1, "a number in (0, 1] (the reference: 0.8)"),
            ("eta", self.eta >= 0, "a number >= 0 (the reference: 0)"),
            ("guidance_scale", self.guidance_scale >= 0, "a number >= 0 (the reference: 5)"),
            ("image_size", self.image_size >= 16, "an integer >= 16 (the reference: 512)"),
            ("grid_images", self.grid_images >= 1, "an integer >= 1"),
            ("grid_metric", self.grid_metric in ("pixcorr", "ssim"), "pixcorr or ssim"),
        ]
        for key, ok, want in checks:
            if not ok:
                raise ReconstructionError(
                    f"config reconstruction.{key} = {getattr(self, key)!r} is invalid: use {want}"
                )
        if round(self.strength * self.num_inference_steps) < 1:
            raise ReconstructionError(
                f"reconstruction.strength x num_inference_steps = {self.strength} x "
                f"{self.num_inference_steps} rounds to 0 img2img steps: raise one of them"
            )


#: The settings that only choose what grid.png shows (rule reconstruct_grid), not the images.
GRID_FIELDS = ("grid_images", "grid_metric")

# ----------------------------------------------------------------------------- helpers


#: HDF5 filter for the uint8 image datasets (one chunk per image): gzip level 1. On the
#: demo's recons.h5 it saves 19% (1.50 -> 1.21 MB; level 4: 1.20 MB, lzf: 1.31 MB) and
#: reading the whole file takes 0.01 s instead of < 0.01 s.
IMAGE_COMPRESSION = {"compression": "gzip", "compression_opts": 1}


def shard_indices(n_images: int, shards: int, shard: int) -> np.ndarray:
    """Positions (into the test images) of shard ``shard`` of ``shards`` contiguous, near-equal
    parts. Shards beyond n_images are empty."""
    if not 0 <= shard < shards:
        raise ReconstructionError(f"shard {shard} does not exist: reconstruction.shards is {shards}")
    return np.array_split(np.arange(n_images), shards)[shard]


def subject_number(subject: str) -> int:
    """``subj01`` -> 1."""
    return int(str(subject).removeprefix("subj"))


def sample_seed(base: int, subject: str, nsd_id: int, sample: int) -> int:
    """Seed of one sample: a hash of (base seed, subject number, nsd_id, sample index)."""
    seq = np.random.SeedSequence([int(base), subject_number(subject), int(nsd_id), int(sample)])
    return int(seq.generate_state(1, dtype=np.uint32)[0])


def load_decoded(z_npz: str | os.PathLike, c_npz: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoded test features from the decoding stage: nsd_id (n,), z (n, 4, h, w), c (n, 77, d)."""
    out = []
    for path, ndim, name in ((z_npz, 4, "z"), (c_npz, 3, "c")):
        path = Path(path)
        if not path.is_file():
            raise ReconstructionError(f"missing decoded features {path}; run the decoding stage first")
        try:
            with np.load(path) as f:
                pred, ids = f["pred"].astype(np.float32), f["nsd_id"].astype(np.int64)
        except (OSError, ValueError, KeyError) as err:
            raise ReconstructionError(f"cannot read {path} ({err}); delete it and re-run decoding") from err
        if pred.ndim != ndim:
            raise ReconstructionError(
                f"decoded {name} in {path} has shape {pred.shape}; expected "
                f"{'(n, channels, h, w)' if name == 'z' else '(n, tokens, dim)'}"
            )
        out.append((ids, pred))
    (z_ids, z), (c_ids, c) = out
    if not np.array_equal(z_ids, c_ids):
        raise ReconstructionError(
            f"{z_npz} and {c_npz} decode different test images (nsd_id differ); re-run decoding"
        )
    return z_ids, z, c


def check_model_shapes(pipe, z: np.ndarray, c: np.ndarray, image_size: int) -> None:
    """Raise ReconstructionError when decoded z / c or image_size do not fit the model."""
    channels = pipe.vae.config.latent_channels
    if z.shape[1] != channels:
        raise ReconstructionError(
            f"decoded z has shape {z.shape[1:]} but the model's latents have {channels} channels "
            "(4, h, w): the features and decoders were made with another model; re-run features and decoding"
        )
    tokens = pipe.tokenizer.model_max_length if pipe.tokenizer is not None else c.shape[1]
    dim = pipe.unet.config.cross_attention_dim
    if c.shape[1:] != (tokens, dim):
        raise ReconstructionError(
            f"decoded c has shape {c.shape[1:]} but the model's U-Net is conditioned on ({tokens}, {dim}): "
            "the features and decoders were made with another model; re-run features and decoding"
        )
    factor = pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.down_block_types) - 1)
    if image_size % factor:
        raise ReconstructionError(
            f"config reconstruction.image_size = {image_size} must be a multiple of {factor} for this "
            "model (VAE x U-Net downsampling); e.g. 512 for SD v1.4, 64 for the tiny model"
        )


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) floats in [0, 1] -> uint8."""
    return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- generation


class Reconstructor:
    """Runs the three conditions for one test image with a loaded img2img pipeline."""

    def __init__(self, pipe, settings: ReconSettings):
        import torch

        from brainldm.models import text_to_image

        self.torch = torch
        self.pipe = pipe
        self.t2i = text_to_image(pipe)
        self.t2i.set_progress_bar_config(disable=True)
        self.s = settings
        self.device = pipe.device
        self.dtype = pipe.unet.dtype
        with torch.no_grad():
            empty, _ = pipe.encode_prompt("", self.device, 1, False)
        self.empty = empty  # (1, 77, d): the unconditional (empty-prompt) embedding

    def init_image(self, z: np.ndarray) -> Image.Image:
        """Decoded z (4, h, w) -> VAE decode -> PIL image resized to image_size (step 1-2)."""
        torch = self.torch
        vae = self.pipe.vae
        latent = torch.from_numpy(z[None]).to(self.device, vae.dtype) / vae.config.scaling_factor
        with torch.no_grad():
            decoded = vae.decode(latent).sample
        image = self.pipe.image_processor.postprocess(decoded, output_type="pil")[0]
        size = self.s.image_size
        return image.resize((size, size), Image.Resampling.LANCZOS)

    def _generators(self, seeds: Sequence[int]):
        return [self.torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

    def generate(self, z: np.ndarray, c: np.ndarray, seeds: np.ndarray) -> dict[str, np.ndarray]:
        """All conditions for a batch of b test images.

        z: (b, 4, h, w), c: (b, 77, d), seeds: (b, n_samples) ints.
        Returns {condition: (b, n_samples, H, W, 3) uint8}. Every (image, sample) has its
        own generator, so an image's samples do not depend on the other images of the batch.
        """
        torch, s = self.torch, self.s
        seeds = np.asarray(seeds)
        b, n = seeds.shape
        flat_seeds = seeds.reshape(-1)
        cond = torch.from_numpy(np.repeat(c, n, axis=0)).to(self.device, self.dtype)
        empty = self.empty.expand(b * n, -1, -1).contiguous()
        init = [image for zi in z for image in [self.init_image(zi)] * n]
        common = dict(num_inference_steps=s.num_inference_steps, eta=s.eta, output_type="np")
        out = {}
        with torch.no_grad():
            out["zc"] = self.pipe(image=init, strength=s.strength, prompt_embeds=cond,
                                  negative_prompt_embeds=empty, guidance_scale=s.guidance_scale,
                                  generator=self._generators(flat_seeds), **common).images
            out["z"] = self.pipe(image=init, strength=s.strength, prompt_embeds=empty,
                                 negative_prompt_embeds=empty, guidance_scale=1.0,
                                 generator=self._generators(flat_seeds), **common).images
            out["c"] = self.t2i(prompt_embeds=cond, negative_prompt_embeds=empty,
                                guidance_scale=s.guidance_scale, height=s.image_size,
                                width=s.image_size, generator=self._generators(flat_seeds),
                                **common).images
        size = s.image_size
        return {k: to_uint8(np.asarray(v)).reshape(b, n, size, size, 3) for k, v in out.items()}


def reconstruct_shard(model: str | os.PathLike, z_npz, c_npz, out_h5, subject: str, shard: int,
                      settings: dict | ReconSettings, device: str | None = None,
                      threads: int | None = None, local_files_only: bool = True,
                      require_gpu: bool = False) -> Path:
    """Reconstruct the test images of one shard and write them to ``out_h5``:
    ``nsd_id`` (k,) and ``z``, ``c``, ``zc`` (k, n_samples, H, W, 3) uint8.
    threads: CPU threads for torch and BLAS (the rule's threads; None = library defaults).
    require_gpu: a GPU job (real model): stop rather than run on the CPU when CUDA is not
    usable and device is auto (:func:`brainldm.models.resolve_device`)."""

    limit_threads(threads)

    from brainldm.models import load_pipeline

    s = settings if isinstance(settings, ReconSettings) else ReconSettings(**settings)
    nsd_ids, z, c = load_decoded(z_npz, c_npz)
    idx = shard_indices(len(nsd_ids), s.shards, shard)
    pipe = load_pipeline(model, device=device, local_files_only=local_files_only, require_gpu=require_gpu)
    check_model_shapes(pipe, z, c, s.image_size)
    rec = Reconstructor(pipe, s)
    size = s.image_size
    shape = (len(idx), s.n_samples, size, size, 3)
    print(f"{subject} shard {shard}/{s.shards}: {len(idx)} test images x {s.n_samples} samples x "
          f"{len(CONDITIONS)} conditions on {pipe.device}", file=sys.stderr, flush=True)
    with atomic_path(out_h5) as tmp:
        with h5py.File(tmp, "w") as f:
            f["nsd_id"] = nsd_ids[idx]
            dsets = {k: f.create_dataset(k, shape=shape, dtype=np.uint8,
                                         **(dict(chunks=(1, 1, size, size, 3), **IMAGE_COMPRESSION)
                                            if len(idx) else {}))
                     for k in CONDITIONS}
            for key, value in asdict(s).items():
                f.attrs[key] = value
            starts = range(0, len(idx), s.batch_size)
            for start in progress(starts, f"{subject} shard {shard} batches of {s.batch_size}"):
                rows = idx[start:start + s.batch_size]
                seeds = np.array([[sample_seed(s.seed, subject, nsd_ids[i], k) for k in range(s.n_samples)]
                                  for i in rows])
                images = rec.generate(z[rows], c[rows], seeds)
                for key in CONDITIONS:
                    dsets[key][start:start + len(rows)] = images[key]
    return Path(out_h5)


# ----------------------------------------------------------------------------- gather


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (n, size, size, 3) uint8 (LANCZOS)."""
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.LANCZOS))
                     for im in images]) if len(images) else np.zeros((0, size, size, 3), np.uint8)


def gather(shard_files: Sequence[str | os.PathLike], z_npz, stimuli_file, out_h5,
           subject: str, settings: dict | ReconSettings) -> Path:
    """Concatenate the shards into ``recons.h5`` (docs/contracts.md), with the originals.

    Its attrs are the settings the images were made with (not the grid's, see :func:`draw_grid`).
    """
    from brainldm import nsd

    s = settings if isinstance(settings, ReconSettings) else ReconSettings(**settings)
    with np.load(z_npz) as f:
        nsd_ids = f["nsd_id"].astype(np.int64)
    n, size = len(nsd_ids), s.image_size
    if len(shard_files) != s.shards:
        raise ReconstructionError(f"expected {s.shards} shard files (reconstruction.shards), got {len(shard_files)}")
    with atomic_path(out_h5) as tmp:
        with h5py.File(tmp, "w") as out:
            out["nsd_id"] = nsd_ids
            shape = (n, s.n_samples, size, size, 3)
            dsets = {k: out.create_dataset(k, shape=shape, dtype=np.uint8, chunks=(1, 1, size, size, 3),
                                           **IMAGE_COMPRESSION)
                     for k in CONDITIONS}
            for shard, path in enumerate(shard_files):
                idx = shard_indices(n, s.shards, shard)
                with h5py.File(path, "r") as f:
                    ids = f["nsd_id"][:]
                    if not np.array_equal(ids, nsd_ids[idx]):
                        raise ReconstructionError(
                            f"shard {path} holds other test images than the decoded features; "
                            "delete the reconstruction shards and re-run"
                        )
                    for k in CONDITIONS:
                        if f[k].shape != (len(idx),) + shape[1:]:
                            raise ReconstructionError(
                                f"shard {path} has {k} {f[k].shape}, expected {(len(idx),) + shape[1:]} "
                                "(made with other settings?); delete it and re-run"
                            )
                        if len(idx):
                            dsets[k][idx[0]: idx[-1] + 1] = f[k][:]
            originals = out.create_dataset("original", shape=(n, size, size, 3), dtype=np.uint8,
                                           chunks=(1, size, size, 3), **IMAGE_COMPRESSION)
            for start in range(0, n, 64):
                originals[start:start + 64] = resize_images(
                    nsd.read_images(stimuli_file, nsd_ids[start:start + 64]), size)
            for key, value in asdict(s).items():
                if key not in GRID_FIELDS:
                    out.attrs[key] = value
            out.attrs["subject"] = subject
    return Path(out_h5)


def grid_rows(recons_h5: str | os.PathLike, settings: ReconSettings) -> tuple[list, list[str], np.ndarray]:
    """Pick the grid's images: evenly spaced test images; per condition the sample most
    similar to the original (settings.grid_metric) and a random sample.
    Returns (rows of images, column titles, nsd_ids shown)."""
    from brainldm.selection import best_indices, pixel_similarity

    rng = np.random.default_rng(settings.seed)
    with h5py.File(recons_h5, "r") as f:
        n, n_samples = f["z"].shape[:2]
        picks = np.unique(np.linspace(0, n - 1, min(settings.grid_images, n)).round().astype(int))
        titles = ["original"] + [f"{k} (best)" for k in CONDITIONS]
        if n_samples > 1:
            titles += [f"{k} (random)" for k in CONDITIONS]
        rows = []
        for i in picks:
            orig = f["original"][i]
            best, rand = [], []
            for k in CONDITIONS:
                samples = f[k][i]
                best.append(samples[best_indices(pixel_similarity(orig[None], samples[None], settings.grid_metric))[0]])
                rand.append(samples[int(rng.integers(n_samples))])
            rows.append([orig] + best + (rand if n_samples > 1 else []))
        return rows, titles, f["nsd_id"][:][picks]


def draw_grid(recons_h5, grid_png, settings: dict | ReconSettings, subject: str) -> None:
    """grid.png: one row per shown test image, columns original | z | c | zc (best, then random)."""
    import matplotlib

    settings = settings if isinstance(settings, ReconSettings) else ReconSettings(**settings)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, titles, ids = grid_rows(recons_h5, settings)
    fig, axes = plt.subplots(len(rows), len(titles), figsize=(1.6 * len(titles), 1.6 * len(rows) + 0.4),
                             squeeze=False)
    for r, row in enumerate(rows):
        for col, image in enumerate(row):
            ax = axes[r, col]
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[col], fontsize=8)
        axes[r, 0].set_ylabel(f"nsd {ids[r]}", fontsize=7)
    fig.suptitle(f"{subject}: best sample by {settings.grid_metric}, and a random sample", fontsize=9)
    fig.tight_layout()
    with atomic_path(grid_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
