"""The GPU benchmark builds Stable Diffusion v1.4's exact architecture (checked on the
meta device: no memory, no weights)."""

from __future__ import annotations

import importlib.util
import re
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


def _run(script: str, *args: str, tmp_path: Path) -> str:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_ingest_benchmark_runs_at_a_small_size(tmp_path):
    """The ingestion benchmark (checked for what it prints, not for speed): every measurement
    ran, and the ratios against the floors are printed."""
    out = _run("ingest.py", "--sessions", "2", "--trials", "30", "--grid", "12", "14", "10", "--nifti-sessions", "1",
               "--baseline-sessions", "1", "--min-free-gb", "0", "--workdir", str(tmp_path / "w"), tmp_path=tmp_path)
    for line in ("reader / read floor:", "ingest / (read floor + write floor):", "NIfTI ingest / (gunzip floor + write floor):"):
        assert line in out, out
    assert re.search(r"brainldm wrote \d+ train rows, 2 test images", out), out
    assert not (tmp_path / "w").exists()  # inputs removed without --keep


def test_encoding_benchmark_runs_at_a_small_size(tmp_path):
    out = _run("encoding.py", "--trials", "300", "--test", "20", "--components", "24", "--voxels", "20", "40",
               "--banded-components", "8", "--banded-voxels", "5", "10", "--brain", "1000", "--threads", "1",
               "--himalaya", tmp_path=tmp_path)
    for line in ("single-space fit, strategy", "whole brain (1000 voxels", "banded z+zc fit, 8 + 8 components",
                 "baseline, himalaya GroupRidgeCV on the same data", "whole encoding stage of one subject"):
        assert line in out, out
    (tmp_path / "saved.log").write_text(out)
    again = _run("encoding.py", "--results", str(tmp_path / "saved.log"), "--trials", "300", "--test", "20",
                 "--components", "24", "--voxels", "20", "40", "--banded-components", "8", "--banded-voxels", "5", "10",
                 "--brain", "1000", "--threads", "1", tmp_path=tmp_path)
    assert again.split("float32 matrix products")[1] == out.split("float32 matrix products")[1]
