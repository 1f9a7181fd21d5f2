"""Benchmark: the GPU paths, in one run of a few minutes.

Builds the exact Stable Diffusion v1.4 architecture with random weights, offline
(UNet2DConditionModel 320/640/1280/1280 with cross-attention 768, AutoencoderKL
128/256/512/512, CLIPTextModel 768 hidden / 12 layers; the numbers of parameters are
printed), and measures on the GPU, each against its own baseline in the same run:

- features z (VAE latents at 320 px) and c (caption embeddings, 5 captions per
  image): images/s at batch 1 vs the configured batch (``--batch-size``);
- img2img reconstruction as the paper runs it (512 px, 50 DDIM steps, strength 0.8,
  guidance 5): images/s in fp32 vs fp16, batch 1 vs batched, with SDPA attention
  (diffusers' default on torch 2) vs diffusers' classic attention processor;
  plus one test image's three conditions (zc, z, c) through brainldm's Reconstructor;
- the ridge decoder (brainldm.ridge.fit_ridge, primal solver) at the z-decoder shape:
  torch_cuda vs numpy.

It prints every figure, the ratios and the peak GPU memory of each step, and writes
them to ``--out`` (JSON). ``torch.compile`` is not used (one compilation costs more
than these short runs gain). Weights are random: speed and memory only, no quality.

Without a GPU it says so and runs the same steps on the CPU with small sizes (the
tiny model, 64 px, few steps, a small ridge problem) as a check that the script works;
those figures are not GPU figures.

Usage (the project venv)::

    python benchmarks/gpu.py              # GPU if present, else the small CPU check
    python benchmarks/gpu.py --small      # the small sizes on any device

On the project's GPU machines (no network; their own Python with torch, transformers,
h5py, scikit-learn, but no diffusers and no himalaya), carry the missing pure-Python
wheels in: here, ``make gpu-wheels`` (``pip download --no-deps`` of the pinned
diffusers and himalaya into ``.wheels/``, an ignored folder); there::

    pip install --no-index --no-deps --target .pylib .wheels/*.whl
    PYTHONPATH=src:.pylib python benchmarks/gpu.py

(carry resources/clip_tokenizer too: CLIP's tokenizer, built here by ``make install``).

The ridge benchmark needs neither himalaya nor the GPU's diffusers: the primal
solver runs on numpy and torch alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from brainldm.ridge import fit_ridge  # noqa: E402

# The paper's reconstruction settings, and the feature stage's defaults at NSD scale.
FULL = dict(z_resolution=320, image_size=512, steps=50, strength=0.8, guidance=5.0,
            n_images=16, recon_images=4, recon_batch=4, ridge=(8000, 5000, 6400))
# A check that the script runs, on any machine: the tiny model, small sizes.
SMALL = dict(z_resolution=64, image_size=64, steps=5, strength=0.8, guidance=5.0,
             n_images=16, recon_images=2, recon_batch=2, ridge=(1000, 400, 512))


def sd14_components(tokenizer_dir: Path, device: torch.device) -> dict:
    """The five modules of SD v1.4's architecture (configs as on the hub), random weights.

    The tokenizer is the one in ``tokenizer_dir``: CLIP's own, as built by ``make install``
    (resources/clip_tokenizer, :mod:`brainldm.clip_tokenizer`), so prompts tokenise as
    with Stable Diffusion; for speed only their number per prompt, 77, matters.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=77)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: seconds instead of a minute on the CPU
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512), norm_num_groups=32, sample_size=512,
            scaling_factor=0.18215,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
            projection_dim=768, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ))
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return dict(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def build_pipeline(small: bool, device: torch.device):
    """SD v1.4's architecture (or, with ``small``, the project's tiny model) as an img2img pipeline."""
    from diffusers import StableDiffusionImg2ImgPipeline

    from brainldm.clip_tokenizer import check_tokenizer_dir
    from brainldm.models import build_tiny_components

    parts = build_tiny_components(seed=0) if small else sd14_components(check_tokenizer_dir(), device)
    pipe = StableDiffusionImg2ImgPipeline(**parts, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[], object], device: torch.device, repeats: int = 2) -> tuple[float, float]:
    """(best wall seconds over ``repeats`` after one warm-up call, peak GPU memory in GB)."""
    fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else float("nan")
    return best, peak


def report(results: list[dict], step: str, n: int, seconds: float, peak_gb: float, **extra) -> dict:
    row = dict(step=step, images=n, seconds=seconds, images_per_s=n / seconds, peak_gpu_gb=peak_gb, **extra)
    results.append(row)
    mem = "" if np.isnan(peak_gb) else f", peak GPU memory {peak_gb:.2f} GB"
    print(f"  {step}: {n / seconds:.2f} images/s ({seconds:.2f} s for {n}){mem}", flush=True)
    return row


def ratio(label: str, fast: dict, slow: dict) -> None:
    print(f"  -> {label}: x{fast['images_per_s'] / slow['images_per_s']:.2f}", flush=True)


def bench_features(pipe, sizes: dict, batch_size: int, device: torch.device, results: list[dict]) -> None:
    """z and c of the same images at batch 1 and at ``batch_size``."""
    from brainldm import scenes
    from brainldm.features import encode_c, encode_z

    rng = np.random.default_rng(0)
    drawn = [scenes.random_scene(rng) for _ in range(sizes["n_images"])]
    images = np.stack([scenes.render(s, 425 if sizes is FULL else 128) for s in drawn])
    captions = [scenes.captions(s, rng) for s in drawn]
    n = len(images)

    def z_at(b: int):
        return lambda: [encode_z(pipe, images[i:i + b], sizes["z_resolution"]) for i in range(0, n, b)]

    def c_at(b: int):
        return lambda: [encode_c(pipe, captions[i:i + b]) for i in range(0, n, b)]

    print(f"features ({n} images, z at {sizes['z_resolution']} px, 5 captions each):", flush=True)
    for family, at in (("z", z_at), ("c", c_at)):
        one = report(results, f"features {family}, batch 1", n, *measure(at(1), device), batch=1)
        many = report(results, f"features {family}, batch {batch_size}", n, *measure(at(batch_size), device),
                      batch=batch_size)
        ratio(f"{family} batch {batch_size} vs batch 1", many, one)


def bench_reconstruction(pipe, sizes: dict, device: torch.device, results: list[dict]) -> None:
    """img2img at the paper's settings: fp32 vs fp16, batch 1 vs batched, SDPA vs classic attention."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
    from PIL import Image

    from brainldm.reconstruct import ReconSettings, Reconstructor

    size, n, batch = sizes["image_size"], sizes["recon_images"], sizes["recon_batch"]
    rng = np.random.default_rng(1)
    init = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
    dim = pipe.text_encoder.config.hidden_size
    cond_np = rng.standard_normal((n, 77, dim)).astype(np.float32)

    def img2img(b: int):
        def run():
            dtype = pipe.unet.dtype
            cond = torch.from_numpy(cond_np).to(device, dtype)
            with torch.inference_mode():
                empty, _ = pipe.encode_prompt("", device, 1, False)
                for i in range(0, n, b):
                    k = min(b, n - i)
                    pipe(image=init[i:i + k], strength=sizes["strength"], prompt_embeds=cond[i:i + k],
                         negative_prompt_embeds=empty.expand(k, -1, -1), guidance_scale=sizes["guidance"],
                         num_inference_steps=sizes["steps"], output_type="np",
                         generator=torch.Generator("cpu").manual_seed(i))
        return run

    def attention(processor) -> None:
        pipe.unet.set_attn_processor(processor())
        pipe.vae.set_attn_processor(processor())

    print(f"img2img ({n} images, {size} px, {sizes['steps']} DDIM steps, strength {sizes['strength']}, "
          f"guidance {sizes['guidance']}):", flush=True)
    fp32 = report(results, "img2img fp32, batch 1, SDPA", n, *measure(img2img(1), device, repeats=1),
                  dtype="float32", batch=1, attention="sdpa")
    base, name = fp32, "fp32"
    if device.type == "cuda":
        pipe.to(torch.float16)
        base = report(results, "img2img fp16, batch 1, SDPA", n, *measure(img2img(1), device, repeats=1),
                      dtype="float16", batch=1, attention="sdpa")
        ratio("fp16 vs fp32", base, fp32)
        name = "fp16"
    else:
        print("  fp16: skipped on the CPU (float16 is a GPU format)", flush=True)
    batched = report(results, f"img2img {name}, batch {batch}, SDPA", n, *measure(img2img(batch), device, repeats=1),
                     dtype=name, batch=batch, attention="sdpa")
    ratio(f"batch {batch} vs batch 1 ({name})", batched, base)
    attention(AttnProcessor)
    classic = report(results, f"img2img {name}, batch 1, classic attention", n,
                     *measure(img2img(1), device, repeats=1), dtype=name, batch=1, attention="classic")
    attention(AttnProcessor2_0)
    ratio(f"SDPA vs classic attention ({name})", base, classic)
    # One test image, one sample, all three conditions, as the reconstruction rule runs them.
    settings = ReconSettings(image_size=size, num_inference_steps=sizes["steps"], strength=sizes["strength"],
                             guidance_scale=sizes["guidance"], n_samples=1)
    rec = Reconstructor(pipe, settings)
    latent = sizes["z_resolution"] // 8
    z = rng.standard_normal((1, 4, latent, latent)).astype(np.float32)
    seconds, peak = measure(lambda: rec.generate(z, cond_np[:1], np.array([[0]])), device, repeats=1)
    report(results, f"Reconstructor.generate ({name}, z + c + zc, batch 1)", 1,
           seconds, peak)


def bench_ridge(sizes: dict, device: torch.device, results: list[dict]) -> None:
    """fit_ridge (primal solver, 7 alphas, 5 folds) on the same data with numpy and on the GPU."""
    n, p, t = sizes["ridge"]
    rng = np.random.default_rng(2)
    X = rng.standard_normal((n, p), dtype=np.float32)
    W = rng.standard_normal((p, t), dtype=np.float32) / np.sqrt(p)
    Y = X @ W + rng.standard_normal((n, t), dtype=np.float32)
    alphas = np.logspace(1, 7, 7)
    print(f"ridge decoder ({n} trials x {p} voxels -> {t} targets, 7 alphas, 5 folds):", flush=True)
    fits, rows = {}, {}
    backends = ["numpy"] + (["torch_cuda"] if device.type == "cuda" else ["torch"])
    for backend in backends:
        fit_ridge(X[:200, :50], Y[:200, :10], alphas, cv=5, backend=backend, solver="primal")  # warm-up (imports)
        t0 = time.perf_counter()
        fits[backend] = fit_ridge(X, Y, alphas, cv=5, backend=backend, solver="primal")
        sync(device)
        seconds = time.perf_counter() - t0
        rows[backend] = dict(step=f"ridge {backend}", seconds=seconds, backend=backend,
                             strategy=fits[backend].strategy, shape=[n, p, t])
        results.append(rows[backend])
        print(f"  {backend} ({fits[backend].strategy}): {seconds:.1f} s", flush=True)
    fast = backends[1]
    same = float(np.mean(fits["numpy"].best_alphas == fits[fast].best_alphas))
    rel = float(np.abs(fits["numpy"].coef - fits[fast].coef).max() / np.abs(fits["numpy"].coef).max())
    rows[fast].update(same_alpha_fraction=same, max_rel_coef_difference=rel)
    print(f"  -> {fast} vs numpy: x{rows['numpy']['seconds'] / rows[fast]['seconds']:.2f}; "
          f"same alpha for {same:.1%} of targets, max coefficient difference {rel:.1e} (relative)", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="the small sizes (default without a GPU)")
    ap.add_argument("--batch-size", type=int, default=8, help="features batch (features.batch_size)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["features", "reconstruction", "ridge"])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "gpu.json"))
    args = ap.parse_args(argv)

    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    small = args.small or not cuda
    sizes = SMALL if small else FULL
    start = time.perf_counter()
    if cuda:
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}",
              flush=True)
    else:
        print(f"No GPU present (torch {torch.__version__}, CUDA build {torch.version.cuda}): running the small "
              "sizes on the CPU as a check of the script; these are not GPU figures.", flush=True)
    results: list[dict] = []
    if not {"features", "reconstruction"} <= set(args.skip):
        t0 = time.perf_counter()
        pipe = build_pipeline(small, device)
        counts = {k: sum(p.numel() for p in getattr(pipe, k).parameters()) / 1e6
                  for k in ("unet", "vae", "text_encoder")}
        print(f"model: {'tiny' if small else 'SD v1.4 architecture'}, random weights, built in "
              f"{time.perf_counter() - t0:.0f} s; parameters (M): "
              + ", ".join(f"{k} {v:.1f}" for k, v in counts.items()), flush=True)
        if "features" not in args.skip:
            bench_features(pipe, sizes, args.batch_size, device, results)
        if "reconstruction" not in args.skip:
            bench_reconstruction(pipe, sizes, device, results)
        del pipe
    if "ridge" not in args.skip:
        bench_ridge(sizes, device, results)
    total = time.perf_counter() - start
    print(f"total {total:.0f} s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(device=torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
                torch=torch.__version__, cuda=torch.version.cuda, small=small, total_seconds=total,
                threads=torch.get_num_threads())
    out.write_text(json.dumps(dict(meta=meta, results=results), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
