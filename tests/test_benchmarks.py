"""The GPU benchmark builds Stable Diffusion v1.4's exact architecture (checked on the
meta device: no memory, no weights)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _gpu_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_builds_sd14_architecture():
    bench = _gpu_benchmark()
    parts = bench.sd14_components(REPO / "resources" / "clip_tokenizer", torch.device("meta"))
    millions = {k: sum(p.numel() for p in parts[k].parameters()) / 1e6 for k in ("unet", "vae", "text_encoder")}
    # SD v1.4's published sizes: U-Net 859.52 M, VAE 83.65 M, CLIP ViT-L/14 text encoder 123.06 M.
    assert round(millions["unet"], 2) == 859.52
    assert round(millions["vae"], 2) == 83.65
    assert round(millions["text_encoder"], 2) == 123.06
    assert parts["unet"].config.cross_attention_dim == 768
    assert tuple(parts["unet"].config.block_out_channels) == (320, 640, 1280, 1280)
