"""Benchmark: brainldm ingestion vs a plain read of the same NSD-layout betas files.

Writes a full-size synthetic subject in NSD's layout (default 40 sessions x 750 trials
on the 81x104x83 func1pt8mm grid; betas int16 (trials, z, y, x) in HDF5 with NSD's
chunking, one chunk per voxel time series [1 1 1 750]), then, each in its own
subprocess, runs

- ``baseline``: the reference's style (make_subjmri.py): read every session's full
  betas volume with h5py into memory, concatenate all sessions, then mask by the
  brain mask; on at most ``--baseline-sessions`` sessions (all of them would need
  about twice the data size in RAM), extrapolated to all sessions;
- ``brainldm``: ``brainldm.ingest.ingest_subject`` on all sessions (masked reads
  session by session, /300, z-scoring, split, per-ROI float32 outputs written to disk),

and prints time and peak memory of each and their ratios. Peak RSS is the child's
``ru_maxrss`` (from ``os.wait4``); because ingestion writes its outputs through
memory-mapped files, whose written pages count in RSS until the kernel evicts them,
the peak of anonymous memory (``RssAnon``, sampled from /proc every 0.2 s) is shown too.

Usage::

    nice python benchmarks/ingest.py                      # full size, ~13 GB of inputs + ~25 GB of outputs
    nice python benchmarks/ingest.py --sessions 4 --keep  # smaller; keep the inputs for the next run

Input files land under ``--workdir`` (default /tmp/brainldm-bench-ingest) and are
deleted at the end unless ``--keep``; ingestion outputs are always deleted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io
from tqdm import tqdm

from brainldm import nsd

SUBJECT = "subj01"
OTHER = "subj02"  # a second subject, so that a test set of shared images exists
ROIS = {"early": {"atlas": "streams", "labels": [1]}, "ventral": {"atlas": "streams", "labels": [5]}}
AFFINE = np.diag([1.8, 1.8, 1.8, 1.0])
GB = 1e9


# ---------------------------------------------------------------- synthetic inputs
def ellipsoid_mask(grid: tuple[int, int, int], fraction: float) -> np.ndarray:
    """Brain mask (x, y, z) uint8: a centred ellipsoid covering about ``fraction`` of the grid."""
    # an ellipsoid with semi-axes s * (half of each side) fills pi/6 * s^3 of its box
    s = (fraction / (math.pi / 6)) ** (1 / 3)
    axes = [np.arange(n) - (n - 1) / 2 for n in grid]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    r = (x / (s * grid[0] / 2)) ** 2 + (y / (s * grid[1] / 2)) ** 2 + (z / (s * grid[2] / 2)) ** 2
    return (r <= 1).astype(np.uint8)


def streams_atlas(mask: np.ndarray) -> np.ndarray:
    """NSD ``streams`` labels (x, y, z) uint8 inside the mask: 1 early (posterior), 5 ventral (inferior), 6 lateral."""
    nx, ny, nz = mask.shape
    x, y, z = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    labels = np.zeros(mask.shape, np.uint8)
    inside = mask > 0
    labels[inside & (y < 0.3 * ny)] = 1
    labels[inside & (y >= 0.3 * ny) & (y < 0.6 * ny) & (z < 0.35 * nz)] = 5
    labels[inside & (y >= 0.3 * ny) & (y < 0.6 * ny) & (z >= 0.35 * nz) & (np.abs(x - nx / 2) > 0.3 * nx)] = 6
    return labels


def design(n_sessions: int, n_trials: int, seed: int) -> dict[str, pd.DataFrame]:
    """responses.tsv tables of two subjects, NSD-like: each image seen 3 times over the sessions;
    the first ``n_shared`` ids (a tenth of each subject's images) are seen by both subjects."""
    total = n_sessions * n_trials
    n_images = math.ceil(total / 3)
    n_shared = max(1, n_images // 10)
    rng = np.random.default_rng(seed)
    tables = {}
    for k, subject in enumerate((SUBJECT, OTHER)):
        own = n_shared + k * (n_images - n_shared) + np.arange(n_images - n_shared)
        ids = np.repeat(np.concatenate([np.arange(n_shared), own]), 3)[:total]
        ids = rng.permutation(ids)
        t = np.arange(total)
        within = t % n_trials
        tables[subject] = pd.DataFrame({
            "SUBJECT": int(subject[-2:]), "SESSION": t // n_trials + 1, "RUN": within // 63 + 1,
            "TRIAL": within % 63 + 1, "73KID": ids + 1,
        })
    tables["sharedix"] = np.arange(1, n_shared + 1)[None, :]
    return tables


def write_session(file: Path, voxels: np.ndarray, grid: tuple[int, int, int], n_trials: int, rng: np.random.Generator) -> None:
    """One session's betas: HDF5 dataset ``betas`` int16 (trials, z, y, x), NSD's chunks (trials, 1, 1, 1).

    Only the chunks of brain voxels are written (random int16 betas, about N(0, 1.5 %) x 300);
    the others read back as the fill value 0. Written to a temporary name, fsynced, then renamed.
    """
    data = np.empty((len(voxels), n_trials), dtype=np.int16)  # one row per voxel = one chunk
    for lo in range(0, len(voxels), 50_000):  # bounded float temporaries
        block = rng.standard_normal((min(50_000, len(voxels) - lo), n_trials), dtype=np.float32)
        data[lo : lo + len(block)] = np.clip(block * 450 + rng.normal(0, 100), -32768, 32767)
    tmp = file.with_name(f".tmp-{os.getpid()}-{file.name}")
    with h5py.File(tmp, "w") as f:
        dset = f.create_dataset("betas", shape=(n_trials, grid[2], grid[1], grid[0]), dtype="<i2",
                                chunks=(n_trials, 1, 1, 1), fillvalue=0)
        write = dset.id.write_direct_chunk
        for row, (x, y, z) in zip(data, voxels.tolist()):
            write((0, z, y, x), row.tobytes())
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, file)


def write_inputs(root: Path, n_sessions: int, n_trials: int, grid: tuple[int, int, int], mask_fraction: float, seed: int, keep: bool) -> None:
    """NSD-layout inputs under ``root`` (skips session files already there when ``keep``)."""
    mask = ellipsoid_mask(grid, mask_fraction)
    tables = design(n_sessions, n_trials, seed)
    for subject in (SUBJECT, OTHER):
        for kind, vol in (("brainmask", mask), ("roi_streams", streams_atlas(mask))):
            file = nsd.path(root, kind, subject)
            file.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(vol, AFFINE), str(file))
        file = nsd.path(root, "responses", subject)
        file.parent.mkdir(parents=True, exist_ok=True)
        tables[subject].to_csv(file, sep="\t", index=False)
    file = nsd.path(root, "expdesign")
    file.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(file, {"sharedix": tables["sharedix"], "masterordering": np.array([[1]]), "subjectim": np.ones((8, 1))})
    voxels = np.argwhere(mask)
    for session in tqdm(range(1, n_sessions + 1), desc="writing betas sessions", file=sys.stderr, mininterval=5, dynamic_ncols=False):
        file = nsd.path(root, "betas_hdf5", SUBJECT, session)
        if keep and file.exists() and nsd.betas_grid(file) == (grid, n_trials):
            continue
        file.parent.mkdir(parents=True, exist_ok=True)
        write_session(file, voxels, grid, n_trials, np.random.default_rng([seed, session]))


def evict(files: list[Path]) -> None:
    """Drop the files' pages from the page cache, so each run reads from disk."""
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- the two contenders (child processes)
def run_baseline(root: Path, n_sessions: int) -> dict:
    """Plain read: every session's full volume into RAM, concatenate, then mask. Returns a summary."""
    mask, _ = nsd.read_volume(nsd.path(root, "brainmask", SUBJECT))
    volumes = []
    for session in tqdm(range(1, n_sessions + 1), desc="baseline sessions", file=sys.stderr, mininterval=5, dynamic_ncols=False):
        with h5py.File(nsd.path(root, "betas_hdf5", SUBJECT, session), "r") as f:
            volumes.append(f["betas"][:])  # (trials, z, y, x) int16
    betas = np.concatenate(volumes)
    del volumes
    masked = betas[:, mask.transpose(2, 1, 0) > 0]  # (all trials, n_vox), the h5 axis order
    return {"rows": int(masked.shape[0]), "voxels": int(masked.shape[1]), "checksum": int(masked[:, ::997].sum(dtype=np.int64))}


def run_brainldm(root: Path, n_sessions: int, out: Path) -> dict:
    """brainldm.ingest.ingest_subject on the first n_sessions sessions. Returns a summary."""
    from brainldm.ingest import ingest_subject

    ingest_subject(
        SUBJECT, [nsd.path(root, "betas_hdf5", SUBJECT, s) for s in range(1, n_sessions + 1)],
        nsd.path(root, "brainmask", SUBJECT), {"streams": nsd.path(root, "roi_streams", SUBJECT)},
        {s: nsd.path(root, "responses", s) for s in (SUBJECT, OTHER)}, nsd.path(root, "expdesign"), ROIS, out, zscore=True,
    )
    train = pd.read_csv(out / "train.tsv", sep="\t")
    test = pd.read_csv(out / "test.tsv", sep="\t")
    return {"train_rows": len(train), "test_rows": len(test), "output_bytes": sum(p.stat().st_size for p in out.iterdir())}


def child_main(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    if args.child == "baseline":
        info = run_baseline(args.workdir / "nsd", args.child_sessions)
    else:
        info = run_brainldm(args.workdir / "nsd", args.child_sessions, args.workdir / "out")
    info["seconds"] = time.perf_counter() - start
    info["ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps(info), flush=True)


def status_kb(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    """Fields of /proc/<pid>/status in kB ({} once the process is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in keys:
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def measure(args: argparse.Namespace, which: str, n_sessions: int) -> dict:
    """Run one contender in a child process; its wall time, peak RSS (wait4) and sampled peak RssAnon."""
    evict([nsd.path(args.workdir / "nsd", "betas_hdf5", SUBJECT, s) for s in range(1, n_sessions + 1)])
    cmd = [sys.executable, __file__, "--workdir", str(args.workdir), "--child", which, "--child-sessions", str(n_sessions)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak_anon = peak_file = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        s = status_kb(proc.pid, ("RssAnon", "RssFile"))
        peak_anon = max(peak_anon, s.get("RssAnon", 0))
        peak_file = max(peak_file, s.get("RssFile", 0))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = proc.stdout.read()
    result = next((json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")), None)
    return {
        "which": which, "sessions": n_sessions, "returncode": proc.returncode, "wall_seconds": wall,
        "seconds": result["seconds"] if result else None, "peak_rss_bytes": usage.ru_maxrss * 1024,
        "peak_anon_bytes": peak_anon * 1024, "peak_file_bytes": peak_file * 1024, "info": result,
    }


# ---------------------------------------------------------------- main
def free_bytes(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free


def fmt_gb(n: float | None) -> str:
    return "-" if n is None else f"{n / GB:.2f} GB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/brainldm-bench-ingest"), help="scratch folder for inputs and outputs")
    p.add_argument("--sessions", type=int, default=40, help="sessions of the subject (NSD: 40)")
    p.add_argument("--trials", type=int, default=750, help="trials per session (NSD: 750)")
    p.add_argument("--grid", type=int, nargs=3, default=[81, 104, 83], metavar=("X", "Y", "Z"), help="func grid (subj01 func1pt8mm: 81 104 83)")
    p.add_argument("--mask-fraction", type=float, default=0.30, help="share of the grid inside the brain mask")
    p.add_argument("--baseline-sessions", type=int, default=3, help="sessions the plain read holds in RAM; extrapolated linearly to --sessions")
    p.add_argument("--min-free-gb", type=float, default=20.0, help="refuse to start if the disk would drop below this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep (and reuse) the written inputs")
    p.add_argument("--child", choices=["baseline", "brainldm"], help=argparse.SUPPRESS)
    p.add_argument("--child-sessions", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(args)
        return 0

    grid = tuple(args.grid)
    S, T = args.sessions, args.trials
    B = min(args.baseline_sessions, S)
    n_brain = int(ellipsoid_mask(grid, args.mask_fraction).sum())
    n_grid = int(np.prod(grid))
    full_bytes = S * T * n_grid * 2  # the dense int16 volumes, what a plain read holds
    tables = design(S, T, args.seed)
    n_train = int((~tables[SUBJECT]["73KID"].isin(tables["sharedix"].ravel())).sum())
    input_bytes = S * T * n_brain * 2 * 1.1  # brain chunks only, plus HDF5 chunk index
    output_bytes = n_train * n_brain * 4 * 1.35  # brain + early + ventral float32 train arrays
    free = free_bytes(args.workdir)
    have = sum(f.stat().st_size for f in args.workdir.rglob("*.hdf5")) if args.keep else 0
    need = input_bytes - have + output_bytes
    print(f"subject shape: {S} sessions x {T} trials on {grid} ({n_brain} brain voxels = {n_brain / n_grid:.1%} of the grid)")
    print(f"dense int16 data: {fmt_gb(full_bytes)}; betas files ~{fmt_gb(input_bytes)}; ingestion outputs ~{fmt_gb(output_bytes)}; disk free {fmt_gb(free)}")
    if free - need < args.min_free_gb * GB:
        print(f"not enough disk under {args.workdir}: need ~{fmt_gb(need)} and keep {args.min_free_gb} GB free; use fewer --sessions or another --workdir", file=sys.stderr)
        return 2
    print(f"load average before: {os.getloadavg()}")

    t0 = time.perf_counter()
    write_inputs(args.workdir / "nsd", S, T, grid, args.mask_fraction, args.seed, args.keep)
    print(f"wrote inputs in {time.perf_counter() - t0:.0f} s")
    try:
        results = []
        for which, n in (("baseline", B), ("brainldm", S)):
            print(f"running {which} on {n} sessions ...", flush=True)
            r = measure(args, which, n)
            results.append(r)
            print(json.dumps(r), flush=True)
            shutil.rmtree(args.workdir / "out", ignore_errors=True)
    finally:
        shutil.rmtree(args.workdir / "out", ignore_errors=True)
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print(f"load average after: {os.getloadavg()}")

    base, ours = results
    rows = []
    if base["returncode"] != 0:
        print(f"baseline on {B} sessions failed with exit code {base['returncode']} (-9: killed, probably out of memory) "
              f"after {base['wall_seconds']:.0f} s at peak RSS {fmt_gb(base['peak_rss_bytes'])}")
    if ours["returncode"] != 0:
        print(f"brainldm ingestion failed with exit code {ours['returncode']}")
    scale = S / B
    rows.append(("plain read (measured)", B, B * T * n_grid * 2, base["seconds"], base["peak_rss_bytes"], base["peak_anon_bytes"]))
    ext_time = base["seconds"] * scale if base["seconds"] is not None else None
    # memory: each further session adds its dense volume twice (the list of volumes and the concatenation)
    extra = 2 * (S - B) * T * n_grid * 2
    ext_rss, ext_anon = base["peak_rss_bytes"] + extra, base["peak_anon_bytes"] + extra
    rows.append(("plain read (EXTRAPOLATED)", S, full_bytes, ext_time, ext_rss, ext_anon))
    rows.append(("brainldm ingest_subject", S, full_bytes, ours["seconds"], ours["peak_rss_bytes"], ours["peak_anon_bytes"]))
    print()
    print(f"{'':34} {'sessions':>8} {'dense data':>11} {'time':>9} {'peak RSS':>10} {'peak anon':>10}")
    for name, n, size, sec, rss, anon in rows:
        t = "-" if sec is None else f"{sec:.1f} s"
        print(f"{name:34} {n:>8} {fmt_gb(size):>11} {t:>9} {fmt_gb(rss):>10} {fmt_gb(anon):>10}")
    if ext_time is not None and ours["seconds"]:
        print(f"\ntime ratio (plain read, extrapolated / brainldm): {ext_time / ours['seconds']:.2f}")
        print(f"memory ratio (plain read peak RSS, extrapolated / brainldm peak RSS): {ext_rss / ours['peak_rss_bytes']:.1f}")
        print(f"memory ratio by peak anonymous memory: {ext_anon / max(ours['peak_anon_bytes'], 1):.1f}")
    print(f"extrapolation: time x {scale:.1f} (sessions {S}/{B}); peak memory + 2 x the dense data of the {S - B} further sessions "
          f"(+{fmt_gb(extra)}: np.concatenate holds the list of volumes and their concatenation at once)")
    if ours["info"]:
        print(f"brainldm wrote {ours['info']['train_rows']} train rows, {ours['info']['test_rows']} test images, {fmt_gb(ours['info']['output_bytes'])} of outputs (included in its time)")
    return 0 if base["returncode"] == 0 and ours["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
