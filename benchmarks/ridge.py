"""Benchmark of the ridge decoders at NSD-like shapes scaled to this machine.

    python benchmarks/ridge.py                       # 8,000 trials x 5,000 voxels -> 6,400 and 20,000 targets
    python benchmarks/ridge.py --scale 0.5           # half of every size (a busy 2-core machine)

For each target count, in one run and on the same data (planted linear signal + noise,
float32), every method runs in its own subprocess so that its peak memory (max RSS)
is its own:

- ``ours``: brainldm.ridge.fit_ridge as the decoding stage calls it (auto backend =
  numpy on CPU, PrimalRidgeCV with its cost-model strategy, printed as ours/<strategy>,
  standardised X, intercept, per-target alphas, 5 folds, n_targets_batch);
- ``reference``: the reference's configuration (StandardScaler, himalaya RidgeCV on the
  numpy backend, no target batching, fit_intercept=False, cv=5);
- ``sklearn``: scikit-learn RidgeCV(alpha_per_target=True) (efficient leave-one-out,
  the only CV it offers with per-target alphas);
- ``floor``: the unavoidable linear algebra, one thin SVD of X and the Uᵀ·Y product (torch).

Printed: seconds, ratios to ``ours`` and to the floor, peak RSS and its increase over
the data alone, and the 16 GB arithmetic for the full-size c decoder.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

ALPHAS = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0]  # the reference's grid for z and c


def make_data(n: int, p: int, t: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X (n, p) float32 and Y (n, t) float32 = X W + noise, W of rank 32."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p), dtype=np.float32)
    W = (rng.standard_normal((p, 32), dtype=np.float32) @ rng.standard_normal((32, t), dtype=np.float32)) / p
    Y = X @ W
    Y += rng.standard_normal((n, t), dtype=np.float32) * Y.std()
    return X, Y


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(method: str, n: int, p: int, t: int, threads: int, n_targets_batch: int) -> dict:
    """Run one method in this process; returns seconds and peak RSS."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    # every library imported before the clock starts
    import himalaya.kernel_ridge  # noqa: F401
    import himalaya.ridge  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.pipeline  # noqa: F401
    import sklearn.preprocessing  # noqa: F401

    import brainldm.ridge  # noqa: F401

    X, Y = make_data(n, p, t)
    base = peak_rss_mb()
    with threadpool_limits(limits=threads):
        start = time.perf_counter()
        if method == "ours":
            from brainldm.ridge import fit_ridge

            fit = fit_ridge(X, Y, ALPHAS, cv=5, backend="auto", n_targets_batch=n_targets_batch,
                            fit_intercept=True, overwrite_Y=True)
            fit.predict(X[:100])
            method = f"ours/{fit.strategy}"
        elif method == "reference":
            from himalaya.backend import set_backend
            from himalaya.ridge import RidgeCV
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            set_backend("numpy", on_error="warn")
            model = make_pipeline(StandardScaler(with_mean=True, with_std=True),
                                  RidgeCV(alphas=ALPHAS, cv=5))
            model.fit(X, Y)
            model.predict(X[:100])
        elif method == "sklearn":
            from sklearn.linear_model import RidgeCV as SkRidgeCV
            from sklearn.preprocessing import StandardScaler

            Xs = StandardScaler().fit_transform(X)
            model = SkRidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(Xs, Y)
            model.predict(Xs[:100])
        elif method == "floor":
            Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
            U, S, Vh = torch.linalg.svd(Xt, full_matrices=False)
            UtY = U.T @ Yt
            float(UtY[0, 0])
        else:
            raise ValueError(method)
        seconds = time.perf_counter() - start
    return dict(method=method, seconds=seconds, peak_mb=peak_rss_mb(), data_mb=base)


def run_method(method: str, n: int, p: int, t: int, threads: int, n_targets_batch: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--n", str(n), "--p", str(p), "--t", str(t),
           "--threads", str(threads), "--n-targets-batch", str(n_targets_batch)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return dict(method=method, seconds=float("nan"), peak_mb=float("nan"), data_mb=float("nan"),
                    error=out.stderr.strip().splitlines()[-1] if out.stderr else "failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def c_decoder_memory_gb(n: int, p: int, t: int, n_test: int, n_targets_batch: int, n_folds: int = 5) -> dict[str, float]:
    """Float32 arrays alive at the peak of the full-size c decoder (PrimalRidgeCV, Y
    centred in place), in GB."""
    gb = 4 / 1e9
    n_val = n // n_folds
    b = n_targets_batch
    parts = {
        "X standardised (n x p)": n * p * gb,
        "Y (n x t), centred in place": n * t * gb,
        "coefficients (p x t)": p * t * gb,
        "eigenvectors, folds + full data ((folds + 1) x p x p)": (n_folds + 1) * p * p * gb,
        "X_val V per fold (folds x n_val x p)": n * p * gb,
        "Gram matrix while decomposing (p x p)": p * p * gb,
        "batch: Y columns (n x b) + XᵀY, projection, refit (4 x p x b)": (n * b + 4 * p * b) * gb,
        "batch: X_val gather (n_val x p) + Y_val, residuals (3 x n_val x b)": (n_val * p + 3 * n_val * b) * gb,
        "test predictions (n_test x t)": n_test * t * gb,
    }
    parts["total"] = sum(parts.values())
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply trials, voxels and targets by this")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-targets-batch", type=int, default=4096)
    ap.add_argument("--methods", default="floor,ours,reference,sklearn")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--p", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--t", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.p, args.t, args.threads, args.n_targets_batch)))
        return

    n, p = int(8000 * args.scale), int(5000 * args.scale)
    print(f"ridge benchmark: {n} trials x {p} voxels, 7 alphas, 5 folds, {args.threads} threads "
          f"(NSD subj01: ~25,000 trials x several thousand voxels -> 6,400 (z) / 59,136 (c) targets)")
    for t in (int(6400 * args.scale), int(20000 * args.scale)):
        results = [run_method(m, n, p, t, args.threads, args.n_targets_batch) for m in args.methods.split(",")]
        by = {r["method"].split("/")[0]: r for r in results}
        ours = by.get("ours", {}).get("seconds", float("nan"))
        floor = by.get("floor", {}).get("seconds", float("nan"))
        print(f"\n-> {t} targets (Y = {n * t * 4 / 1e9:.2f} GB float32)")
        print(f"{'method':10s} {'seconds':>9s} {'x ours':>7s} {'x floor':>8s} {'peak MB':>9s} {'over data MB':>13s}")
        for r in results:
            extra = f"  ({r['error']})" if "error" in r else ""
            print(f"{r['method']:10s} {r['seconds']:9.1f} {r['seconds'] / ours:7.2f} {r['seconds'] / floor:8.2f} "
                  f"{r['peak_mb']:9.0f} {r['peak_mb'] - r['data_mb']:13.0f}{extra}")

    n_full, p_full, t_full = 24980, 8000, 59136
    print(f"\nFull-size c decoder, float32 arrays at the peak (assumed: {n_full} training trials = "
          f"NSD subj01 sessions 1-37 minus the shared-image trials, {p_full} ventral voxels, "
          f"{t_full} targets, n_targets_batch={args.n_targets_batch}):")
    for name, value in c_decoder_memory_gb(n_full, p_full, t_full, 982, args.n_targets_batch).items():
        print(f"  {name:75s} {value:6.2f} GB")


if __name__ == "__main__":
    main()
