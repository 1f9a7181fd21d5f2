"""Benchmark: the encoding stage's ridge fits at NSD shape, on this machine's CPU.

    nice python benchmarks/encoding.py                 # NSD shape (about 25 min on 2 cores)
    nice python benchmarks/encoding.py --scale 0.25    # a quick check of the script

Shape (defaults): 27,750 training trials (NSD subj01, 40 sessions, shared images left
out) in groups of 3 repeats, 982 test images, 6,400 PCA components per feature space
(``encoding.n_components``), the schema's 7 alphas and 5 folds, and a brain of
209,854 voxels: the brain mask of the full-size synthetic subject of
``benchmarks/ingest.py`` (81x104x83 grid, 30 % inside).

Measured, each in its own child process (peak RSS = the child's VmHWM):

- ``single``: one single-space model as ``encoding.fit_single`` runs it: the design
  (``ridge.ridge_design``: XᵀX and the fold Gram matrices diagonalised once for every
  voxel batch), then ``fit_ridge`` + prediction + test scores on voxel batches of
  several sizes; time = design + per batch (a + b x voxels), fitted and extrapolated to
  the whole brain in batches of ``encoding.voxel_batch``;
- ``banded``: one z+zc model as ``encoding.fit_banded`` runs it (``brainldm.banded``:
  himalaya's random search, each candidate weighting one ``PrimalRidgeCV`` design
  shared by every voxel batch) at 1 candidate on two voxel counts and at 2 candidates,
  on two feature spaces of ``--banded-components`` each (1,600 by default, to keep the
  run short); the per-candidate (design) and per-voxel costs are scaled to
  6,400 + 6,400 by their multiply-add counts (``ridge.primal_cv_costs``) and
  extrapolated to ``encoding.n_iter`` candidates and the brain;
- ``himalaya`` (with ``--himalaya``): the baseline, himalaya's GroupRidgeCV on the
  same data at 1 iteration and the first voxel count;
- ``gemm``: the machine's float32 matrix-product rate (the floor of both fits).

Then prints the projection for one subject's whole encoding stage with the default
analyses (single: z, c, zc; noise: 3 levels; stage and layers: 6 fractions x 5 layers
= 44 single and 9 banded fits), on this CPU and, from the multiply-add count of
``ridge.primal_cv_costs`` and a stated throughput, on one GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

ALPHAS = [1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0]  # the schema's encoding.alphas
FOLDS, N_ITER, VOXEL_BATCH = 5, 20, 20000  # encoding.cv_folds, n_iter, voxel_batch defaults
N_SINGLE, N_BANDED = 44, 9  # fits of the default analyses (see the module docstring)
GPU_TFLOPS = 30.0  # assumed sustained float32 rate of one data-centre GPU (H100/H200 peak ~60-67 without TF32)


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))


def make_data(n: int, n_test: int, p: int, v: int, seed: int = 0):
    """Standardised-like features (n + n_test, p) float32 and voxels (n + n_test, v) = X W + noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + n_test, p), dtype=np.float32)
    rank = min(32, p)
    W = rng.standard_normal((rank, v), dtype=np.float32) / 8
    Y = X[:, :rank] @ W
    Y += rng.standard_normal(Y.shape, dtype=np.float32)
    groups = np.repeat(np.arange(-(-n // 3)), 3)[:n]  # 3 repeats per image, as NSD
    return X[:n], X[n:], Y[:n], Y[n:], groups


def child_single(a: argparse.Namespace) -> dict:
    from brainldm.encoding import _test_scores
    from brainldm.ridge import fit_ridge, ridge_design
    from brainldm.threads import limit_threads

    limit_threads(a.threads)
    v_max = max(a.voxels)
    x, x_test, y, y_test, groups = make_data(a.trials, a.test, a.components, v_max)
    out = {"rss_data": peak_rss()}
    t = time.perf_counter()
    design = ridge_design(x, ALPHAS, cv=FOLDS, groups=groups, backend="numpy", n_targets=a.brain)
    out.update(design_s=time.perf_counter() - t, strategy=design.strategy, rss_design=peak_rss(), batches=[])
    for v in a.voxels:
        t = time.perf_counter()
        fit = fit_ridge(x, y[:, :v], ALPHAS, cv=FOLDS, groups=groups, backend="numpy", fit_intercept=True, design=design)
        _test_scores(y_test[:, :v], fit.predict(x_test))
        out["batches"].append({"voxels": v, "seconds": time.perf_counter() - t, "rss": peak_rss()})
        print(f"single: {v} voxels in {out['batches'][-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    return out


def child_banded(a: argparse.Namespace) -> dict:
    from brainldm.encoding import SubjectData, fit_banded
    from brainldm.threads import limit_threads

    limit_threads(a.threads)
    p, voxels = a.banded_components, a.banded_voxels
    x, x_test, y, y_test, groups = make_data(a.trials, a.test, 2 * p, max(voxels))
    out = {"runs": []}
    for n_iter, v in ((1, voxels[0]), (1, voxels[1]), (2, voxels[0])):
        data = SubjectData(train=y[:, :v], test=y_test[:, :v], train_ids=groups, test_ids=np.arange(a.test))
        settings = dict(cv_folds=FOLDS, n_iter=n_iter, alphas=ALPHAS, n_targets_batch=None, voxel_batch=None,
                        backend="numpy", seed=0)
        t = time.perf_counter()
        fit_banded([x[:, :p], x[:, p:]], [x_test[:, :p], x_test[:, p:]], data, settings, "bench")
        out["runs"].append({"n_iter": n_iter, "voxels": v, "seconds": time.perf_counter() - t, "rss": peak_rss()})
        print(f"banded: n_iter {n_iter}, {v} voxels in {out['runs'][-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    return out


def child_himalaya(a: argparse.Namespace) -> dict:
    """The baseline: himalaya's GroupRidgeCV, 1 iteration on the first banded voxel count."""
    from himalaya.ridge import GroupRidgeCV

    from brainldm.ridge import make_cv
    from brainldm.threads import limit_threads

    limit_threads(a.threads)
    p, v = a.banded_components, a.banded_voxels[0]
    x, _, y, _, groups = make_data(a.trials, a.test, 2 * p, v)
    model = GroupRidgeCV(groups=np.repeat([0, 1], p), solver="random_search", fit_intercept=False,
                         cv=make_cv(FOLDS, groups, a.trials), random_state=0,
                         solver_params=dict(n_iter=1, alphas=np.asarray(ALPHAS), progress_bar=False))
    t = time.perf_counter()
    model.fit(x, y - y.mean(0))
    return {"himalaya": {"n_iter": 1, "voxels": v, "seconds": time.perf_counter() - t, "rss": peak_rss()}}


def child_gemm(a: argparse.Namespace) -> dict:
    from brainldm.threads import limit_threads

    limit_threads(a.threads)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((a.trials // FOLDS, a.components), dtype=np.float32)
    B = rng.standard_normal((a.components, 2000), dtype=np.float32)
    A @ B  # warm-up
    t = time.perf_counter()
    for _ in range(3):
        A @ B
    sec = (time.perf_counter() - t) / 3
    return {"gflops": 2.0 * A.shape[0] * A.shape[1] * B.shape[1] / sec / 1e9}


CHILDREN = {"single": child_single, "banded": child_banded, "himalaya": child_himalaya, "gemm": child_gemm}


def run_child(which: str, argv: list[str]) -> dict:
    print(f"running {which} ...", flush=True)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, *argv, "--child", which], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{which} failed with exit code {proc.returncode} (-9: killed, probably out of memory)")
    result = json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))
    result["wall_s"] = time.perf_counter() - t
    result["peak_rss"] = result.get("peak_rss", 0)
    print(json.dumps(result), flush=True)
    return result


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=27750, help="training trials (NSD subj01: 27,750)")
    p.add_argument("--test", type=int, default=982, help="test images")
    p.add_argument("--components", type=int, default=6400, help="PCA components of a feature space")
    p.add_argument("--brain", type=int, default=209854, help="voxels of the whole brain mask")
    p.add_argument("--voxels", type=int, nargs="+", default=[1000, 2000, 4000], help="voxel batch sizes of the single fit (increasing)")
    p.add_argument("--banded-components", type=int, default=1600,
                   help="components of each of the two banded spaces measured (projected to --components)")
    p.add_argument("--banded-voxels", type=int, nargs=2, default=[100, 4000],
                   help="two voxel counts of the banded fits (far apart: their difference gives the per-voxel cost)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS/torch threads (default: every CPU)")
    p.add_argument("--scale", type=float, default=1.0, help="scale trials, components and voxels (a quick check: 0.25)")
    p.add_argument("--skip-banded", action="store_true", help="measure only the single-space fit")
    p.add_argument("--himalaya", action="store_true",
                   help="also time himalaya's GroupRidgeCV on the first banded shape (the baseline; ~7 min at the defaults)")
    p.add_argument("--results", help="print the report of a saved run again (the file its output was saved to)")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        result = CHILDREN[a.child](a)
        result["peak_rss"] = peak_rss()
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    if a.scale != 1.0:
        a.trials, a.test = int(a.trials * a.scale), max(50, int(a.test * a.scale))
        a.components, a.banded_components = int(a.components * a.scale), int(a.banded_components * a.scale)
        a.voxels = [max(10, int(v * a.scale)) for v in a.voxels]
    passed = ["--trials", str(a.trials), "--test", str(a.test), "--components", str(a.components), "--brain", str(a.brain),
              "--voxels", *map(str, a.voxels), "--banded-components", str(a.banded_components),
              "--banded-voxels", *map(str, a.banded_voxels), "--threads", str(a.threads)]
    print(f"shape: {a.trials} trials x {a.components} components, {a.test} test images, brain {a.brain} voxels; "
          f"{a.threads} threads; load average {os.getloadavg()}")

    if a.results:  # print the report of a saved run (its JSON lines) again
        with open(a.results) as f:
            found = [json.loads(line) for line in f if line.startswith("{")]
        kinds = {"gflops": "gemm", "design_s": "single", "runs": "banded", "himalaya": "himalaya"}
        saved = {kinds[k]: r for r in found for k in kinds if k in r}
    else:
        saved = {"gemm": run_child("gemm", passed), "single": run_child("single", passed)}
        if not a.skip_banded:
            saved["banded"] = run_child("banded", passed)
            if a.himalaya:
                saved["himalaya"] = run_child("himalaya", passed)
    report(a, saved)
    return 0


def report(a: argparse.Namespace, saved: dict) -> None:
    """Print the measured figures and the projections (saved: gemm, single and maybe banded results)."""
    from brainldm.ridge import primal_cv_costs

    gemm, single = saved["gemm"], saved["single"]
    v = np.array([b["voxels"] for b in single["batches"]], float)
    s = np.array([b["seconds"] for b in single["batches"]])
    # per voxel from the smallest and largest batch; what is left of the largest is the per-batch cost
    per_voxel = max((s[-1] - s[0]) / (v[-1] - v[0]), 0.0) if len(v) > 1 else s[0] / v[0]
    per_batch = max(s[-1] - per_voxel * v[-1], 0.0)
    n_batches = math.ceil(a.brain / VOXEL_BATCH)
    single_s = single["design_s"] + n_batches * per_batch + per_voxel * a.brain
    # memory: the data and the design, plus what a voxel batch adds, scaled to voxel_batch voxels
    rss_per_voxel = (single["batches"][-1]["rss"] - single["rss_design"]) / max(v[-1], 1)
    single_rss = single["rss_design"] + rss_per_voxel * VOXEL_BATCH + (a.trials + a.test) * VOXEL_BATCH * 4
    macs = primal_cv_costs(a.trials, a.components, a.brain, FOLDS, len(ALPHAS))[single["strategy"]]
    def per_target_macs(t: int) -> float:  # the cost model's multiply-adds of t targets, without the design's
        costs = lambda k: primal_cv_costs(a.trials, a.components, k, FOLDS, len(ALPHAS))[single["strategy"]]
        return costs(t) - costs(0)

    fit_gflops = 2 * per_target_macs(int(v[-1])) / 1e9
    print()
    print(f"float32 matrix products here: {gemm['gflops']:.0f} GFLOP/s")
    print(f"single-space fit, strategy {single['strategy']}: design {single['design_s']:.1f} s "
          f"(peak RSS {single['rss_design'] / 1e9:.2f} GB with the data)")
    for b in single["batches"]:
        print(f"  {b['voxels']:>6} voxels: {b['seconds']:7.1f} s   peak RSS {b['rss'] / 1e9:.2f} GB")
    print(f"  fit: {per_voxel * 1e3:.2f} ms per voxel + {per_batch:.1f} s per batch")
    rate = fit_gflops / s[-1]
    print(f"  achieved {rate:.0f} GFLOP/s on the largest batch = {rate / gemm['gflops']:.2f} x the matrix-product rate "
          f"({fit_gflops:.0f} GFLOP per ridge.primal_cv_costs, design excluded)")
    print(f"  whole brain ({a.brain} voxels, {n_batches} batches of {VOXEL_BATCH}): {hours(single_s)} on this CPU, "
          f"peak RSS ~{single_rss / 1e9:.1f} GB (EXTRAPOLATED)")
    gpu_single = 2 * macs / (GPU_TFLOPS * 1e12)
    print(f"  on one GPU at an assumed {GPU_TFLOPS:.0f} TFLOP/s float32: {hours(gpu_single)} ({2 * macs / 1e15:.1f} PFLOP)")

    banded_s = gpu_banded = None
    if "banded" in saved:
        banded = saved["banded"]
        (r1, r1v, r2) = banded["runs"]
        pb, pb0 = 2 * a.banded_components, 2 * a.components  # measured / the stage's (two spaces of --components)

        # brainldm.banded: per candidate weighting one PrimalRidgeCV on the 2p scaled columns (its design, made
        # once for every voxel batch), then the per-voxel products of its strategy; multiply-adds of both
        def design_macs(q: int) -> float:
            return primal_cv_costs(a.trials, q, 0, FOLDS, len(ALPHAS))["folds"]

        def voxel_macs(q: int) -> float:
            return primal_cv_costs(a.trials, q, 1, FOLDS, len(ALPHAS))["folds"] - design_macs(q)

        per_voxel_b = max(r1v["seconds"] - r1["seconds"], 0.0) / (r1v["voxels"] - r1["voxels"])
        per_iter = max(r2["seconds"] - r1["seconds"] - per_voxel_b * r2["voxels"], 0.0)  # one more candidate's design
        f_design, f_vox = design_macs(pb0) / design_macs(pb), voxel_macs(pb0) / voxel_macs(pb)
        banded_s = N_ITER * (per_iter * f_design + per_voxel_b * f_vox * a.brain)
        # memory: the stacked, scaled and standardised columns (3 copies), (folds + 1) (q, q) eigenbases and fold
        # projections, one voxel batch of training betas and the solver's work arrays on it
        n_val = a.trials / FOLDS
        banded_rss = 4 * (3 * a.trials * pb0 + (FOLDS + 2) * pb0 * pb0 + FOLDS * n_val * pb0
                          + (a.trials + 3 * pb0) * VOXEL_BATCH) + 2 * a.test * a.brain * 4
        banded_flops = 2 * N_ITER * (design_macs(pb0) + voxel_macs(pb0) * a.brain)
        gpu_banded = banded_flops / (GPU_TFLOPS * 1e12)
        print(f"\nbanded z+zc fit, {a.banded_components} + {a.banded_components} components (brainldm.banded):")
        for r in banded["runs"]:
            print(f"  n_iter {r['n_iter']}, {r['voxels']:>5} voxels: {r['seconds']:7.1f} s   peak RSS {r['rss'] / 1e9:.2f} GB")
        print(f"  {per_iter:.1f} s per candidate weighting (its design: {2 * design_macs(pb) / max(per_iter, 1e-9) / 1e9:.0f} "
              f"GFLOP/s) + {per_voxel_b * 1e3:.1f} ms per voxel and candidate "
              f"({2 * voxel_macs(pb) / max(per_voxel_b, 1e-12) / 1e9:.0f} GFLOP/s = "
              f"{2 * voxel_macs(pb) / max(per_voxel_b, 1e-12) / 1e9 / gemm['gflops']:.2f} x the matrix-product rate)")
        if "himalaya" in saved:
            h = saved["himalaya"]["himalaya"]
            ours = r1["seconds"]
            print(f"  baseline, himalaya GroupRidgeCV on the same data (n_iter 1, {h['voxels']} voxels): {h['seconds']:.1f} s, "
                  f"peak RSS {h['rss'] / 1e9:.2f} GB; brainldm.banded {ours:.1f} s: {h['seconds'] / max(ours, 1e-9):.1f} x faster")
        print(f"  at {a.components} + {a.components} components, whole brain, n_iter {N_ITER}: {hours(banded_s)} on this CPU, "
              f"peak RSS ~{banded_rss / 1e9:.1f} GB (EXTRAPOLATED: design x {f_design:.1f} and per-voxel work x {f_vox:.1f} "
              f"by their multiply-add counts, linear in candidates and voxels); the designs are "
              f"{N_ITER * per_iter * f_design / max(banded_s, 1e-9):.0%} of it")
        print(f"  on one GPU at {GPU_TFLOPS:.0f} TFLOP/s: {hours(gpu_banded)} ({banded_flops / 1e15:.1f} PFLOP)")

    print(f"\nwhole encoding stage of one subject, default analyses ({N_SINGLE} single + {N_BANDED} banded fits, "
          "PCA not included):")
    if banded_s is not None:
        print(f"  this CPU ({a.threads} threads): {hours(N_SINGLE * single_s + N_BANDED * banded_s)}")
        print(f"  one GPU (by FLOP count at {GPU_TFLOPS:.0f} TFLOP/s): {hours(N_SINGLE * gpu_single + N_BANDED * gpu_banded)}")
    else:
        print(f"  single fits only: this CPU {hours(N_SINGLE * single_s)}, one GPU {hours(N_SINGLE * gpu_single)}")


if __name__ == "__main__":
    sys.exit(main())
