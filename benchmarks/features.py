"""Benchmark: z and c features, brainldm (batched) vs the reference's per-image loop.

On the same pipeline, images and captions, in the same run:

- ``reference style`` (img2feat_sd.py): one image at a time: read it from
  ``nsd_stimuli.hdf5``, LANCZOS-resize, VAE-encode a batch of 1; encode every caption
  of the image in its own text-encoder call, then average;
- ``brainldm``: ``compute_family("z" / "c", ...)`` on batches of ``--batch-size``
  images read together (all captions of a batch in one text-encoder call).

Prints images/second of each and the ratio, and checks both give the same
features. The stimuli are drawn by brainldm.scenes (synthetic mini-NSD style) and
written in NSD's imgBrick format. Models: the tiny model (always, on the CPU), and
SD v1.4 (``--sd``, default CompVis/stable-diffusion-v1-4) when a GPU is present and
its weights are in the local Hugging Face cache.

Usage::

    nice python benchmarks/features.py                       # tiny model, 256 images, 1 thread
    nice python benchmarks/features.py --images 512 --threads 2 --resolution 320
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import h5py
import numpy as np
import torch

from brainldm import nsd, scenes
from brainldm.features import FeatureSettings, compute_family, encode_text, preprocess_images
from brainldm.models import ModelError, build_tiny_model, load_pipeline


def make_stimuli(folder: Path, n: int, size: int, seed: int = 0) -> tuple[Path, list[list[str]]]:
    """n synthetic scenes as imgBrick (n, size, size, 3) uint8, and 5 captions each."""
    rng = np.random.default_rng(seed)
    scene_list = [scenes.random_scene(rng) for _ in range(n)]
    brick = folder / "nsd_stimuli.hdf5"
    with h5py.File(brick, "w") as f:
        f.create_dataset("imgBrick", data=np.stack([scenes.render(s, size) for s in scene_list]),
                         chunks=(1, size, size, 3))
    return brick, [scenes.captions(s, rng) for s in scene_list]


@torch.no_grad()
def reference_loop(pipe, brick: Path, captions, ids, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's style: batch 1 for z, one text-encoder call per caption for c."""
    vae = pipe.vae
    zs, cs = [], []
    for i in ids:
        image = nsd.read_images(brick, [i])
        x = preprocess_images(image, resolution).to(vae.device, vae.dtype)
        zs.append((vae.encode(x).latent_dist.mean * vae.config.scaling_factor).float().cpu().numpy())
        emb = [encode_text(pipe, [t]).float().cpu() for t in captions[i]]
        cs.append(torch.cat(emb).mean(0, keepdim=True).numpy())
    return np.concatenate(zs), np.concatenate(cs)


def batched(pipe, brick: Path, captions, ids, settings: FeatureSettings) -> tuple[np.ndarray, np.ndarray]:
    """brainldm's way: batches of images read together, all their captions in one call."""
    zs, cs = [], []
    for lo in range(0, len(ids), settings.batch_size):
        part = ids[lo:lo + settings.batch_size]
        images = nsd.read_images(brick, part)
        zs.append(compute_family("z", pipe, settings, part, images=images)["z"])
        cs.append(compute_family("c", pipe, settings, part, captions=[captions[i] for i in part])["c"])
    return np.concatenate(zs), np.concatenate(cs)


def timed(fn, repeats: int):
    """(best wall seconds over repeats, last result), after one warm-up call on a few items."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def run(name: str, pipe, brick, captions, n: int, resolution: int, batch_size: int, repeats: int) -> dict:
    ids = np.arange(n)
    settings = FeatureSettings.from_config({"z_resolution": resolution, "batch_size": batch_size})
    reference_loop(pipe, brick, captions, ids[:2], resolution)  # warm-up
    batched(pipe, brick, captions, ids[:batch_size], settings)
    t_ref, (z_ref, c_ref) = timed(lambda: reference_loop(pipe, brick, captions, ids, resolution), repeats)
    t_new, (z_new, c_new) = timed(lambda: batched(pipe, brick, captions, ids, settings), repeats)
    tol = 1e-3 if pipe.unet.dtype == torch.float16 else 1e-4
    same = bool(np.allclose(z_ref, z_new, atol=tol, rtol=tol) and np.allclose(c_ref, c_new, atol=tol, rtol=tol))
    result = {"model": name, "device": str(pipe.device), "images": n, "resolution": resolution,
              "batch_size": batch_size, "threads": torch.get_num_threads(),
              "reference_images_per_s": n / t_ref, "brainldm_images_per_s": n / t_new,
              "speedup": t_ref / t_new, "same_features": same}
    print(f"{name} on {pipe.device} ({n} images, {resolution} px, batch {batch_size}, "
          f"{torch.get_num_threads()} thread(s)): reference loop {n / t_ref:.1f} img/s, "
          f"brainldm {n / t_new:.1f} img/s -> x{t_ref / t_new:.2f}; same features: {same}", flush=True)
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=128, help="stimulus side in px (synthetic: 128, NSD: 425)")
    ap.add_argument("--resolution", type=int, default=64, help="z_resolution for the tiny model")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sd", default="CompVis/stable-diffusion-v1-4", help="real model, run when a GPU is present")
    ap.add_argument("--out", default="benchmarks/out/features.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="brainldm-bench-features-") as tmp:
        tmp = Path(tmp)
        brick, captions = make_stimuli(tmp, args.images, args.image_size)
        tiny = load_pipeline(build_tiny_model(tmp / "tiny", seed=0), device="cpu")
        results.append(run("tiny", tiny, brick, captions, args.images, args.resolution, args.batch_size, args.repeats))
        if torch.cuda.is_available():
            try:
                sd = load_pipeline(args.sd)
            except ModelError as err:
                print(f"SD v1.4 skipped: {err}", file=sys.stderr)
            else:
                results.append(run(args.sd, sd, brick, captions, args.images, 320, 8, args.repeats))
        else:
            print("SD v1.4 skipped: no GPU", file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
