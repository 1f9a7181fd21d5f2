"""Benchmark: evaluation metric networks, brainldm (batched, channels_last, one forward pass
per network and preprocessing) vs the reference style (img2feat_decoded.py: one image at a
time, one call per network, contiguous input tensors; the modules themselves are shared,
so their weights are channels_last in both).

On the same random-weight networks (evaluation.metrics_weights: random) and the same
images, in the same run, prints CPU milliseconds per image of each and the ratio, checks
both give the same features, and estimates the demo's evaluation stage (2 subjects x
(40 originals + 40 x 3 conditions x 2 samples) images).

Usage::

    nice python benchmarks/evaluation.py                 # 32 images, 1 thread
    nice python benchmarks/evaluation.py --images 64 --threads 2
"""

from __future__ import annotations

import argparse
import resource

import numpy as np
import torch

from brainldm.metric_features import MetricNetworks, WeightsConfig, preprocess


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def reference_style(nets: MetricNetworks, images: np.ndarray) -> dict[str, np.ndarray]:
    """One image at a time, contiguous tensors, every group its own call."""
    out: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        for img in images:
            for g in nets.groups:
                x = preprocess(img[None], g.preprocess).contiguous()
                feats = g.extractor(x)
                for s in g.specs:
                    out.setdefault(s.key, []).append(feats[s.node].reshape(1, -1).float().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--size", type=int, default=64, help="image side in px (the demo's tiny model: 64)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images = np.random.default_rng(0).integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    nets = MetricNetworks(WeightsConfig(mode="random"), device="cpu")
    nets.extract(images[:2])  # warm-up

    t = cpu_seconds()
    ref = reference_style(nets, images)
    t_ref = cpu_seconds() - t

    t = cpu_seconds()
    parts = [nets.extract(images[a : a + args.batch_size]) for a in range(0, len(images), args.batch_size)]
    ours = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    t_ours = cpu_seconds() - t

    worst = max(
        float(np.corrcoef(ref[k].ravel(), ours[k].ravel())[0, 1] < 0.9999) for k in ours
    )
    per_ref, per_ours = 1000 * t_ref / len(images), 1000 * t_ours / len(images)
    print(f"reference style: {per_ref:7.1f} CPU ms/image")
    print(f"brainldm:        {per_ours:7.1f} CPU ms/image   speed-up x{per_ref / per_ours:.2f}")
    print("features agree (r > 0.9999 per feature space):", "yes" if worst == 0 else "NO")
    demo_images = 2 * (40 + 40 * 3 * 2)
    print(f"demo estimate: {demo_images} images -> {demo_images * per_ours / 1000:.0f} CPU s "
          f"(~{demo_images * per_ours / 2000:.0f} s on 2 free cores), SSIM/PixCorr not included")


if __name__ == "__main__":
    main()
