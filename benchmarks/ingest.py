"""Benchmark: brainldm ingestion against the floors of the same run: reading the betas
files' bytes, decompressing them (NIfTI), writing the outputs' bytes.

Writes a full-size synthetic subject in NSD's layout (default 40 sessions x 750 trials
on the 81x104x83 func1pt8mm grid; betas int16 (trials, z, y, x) in HDF5 with NSD's
chunking, one uncompressed chunk per voxel time series [1 1 1 750], only the brain's
chunks written) and ``--nifti-sessions`` of them also as dense ``.nii.gz`` (x, y, z,
trials), then measures, each in its own child process with the files evicted from the
page cache first:

- ``read floor``: the session files' bytes read sequentially (8 MiB reads, like ``cat``);
- ``gunzip floor`` (NIfTI): the same files decompressed with zlib, nothing kept;
- ``write floor``: as many bytes as ingestion writes, written in 64 MiB blocks;
- ``reader``: ``brainldm.nsd.read_betas`` of every session at the brain voxels (where
  ingestion's reading time goes);
- ``reference style``: the reference's make_subjmri.py way (every session's full volume
  into RAM, concatenated, then masked) on ``--baseline-sessions``, extrapolated;
- ``brainldm``: ``brainldm.ingest.ingest_subject`` (masked reads, /300, z-scoring, split,
  per-ROI float32 outputs written to disk), for the HDF5 copy and for the NIfTI copy;

and prints time, peak RSS (the child's ``VmHWM``) and peak anonymous memory (``RssAnon``
sampled every 0.2 s), with ratios against the floors.

Usage::

    nice python benchmarks/ingest.py --min-free-gb 10       # full size: ~14 GB of inputs + ~33 GB of outputs
    nice python benchmarks/ingest.py --sessions 4 --keep    # smaller; keep the inputs for the next run

Input files land under ``--workdir`` (default /tmp/brainldm-bench-ingest) and are
deleted at the end unless ``--keep``; outputs are always deleted.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

from brainldm import nsd
from brainldm.logs import progress

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


def write_inputs(root: Path, n_sessions: int, n_trials: int, grid: tuple[int, int, int], mask_fraction: float,
                 seed: int, keep: bool, nifti_sessions: int) -> None:
    """NSD-layout inputs under ``root`` (skips session files already there when ``keep``);
    the first ``nifti_sessions`` sessions also as dense .nii.gz (x, y, z, trials), same values."""
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
    for session in progress(range(1, n_sessions + 1), "writing betas sessions"):
        file = nsd.path(root, "betas_hdf5", SUBJECT, session)
        if not (keep and file.exists() and nsd.betas_grid(file) == (grid, n_trials)):
            file.parent.mkdir(parents=True, exist_ok=True)
            write_session(file, voxels, grid, n_trials, np.random.default_rng([seed, session]))
        nii = nsd.path(root, "betas_nifti", SUBJECT, session)
        if session <= nifti_sessions and not (keep and nii.exists()):
            nii.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(file, "r") as f:
                vol = f["betas"][:].transpose(3, 2, 1, 0)  # (x, y, z, trials)
            tmp = nii.with_name(f".tmp-{os.getpid()}-{nii.name}")
            nib.save(nib.Nifti1Image(vol, AFFINE), str(tmp))
            os.replace(tmp, nii)


def betas_files(root: Path, kind: str, n_sessions: int) -> list[Path]:
    """The subject's betas files of sessions 1..n_sessions (kind: betas_hdf5 | betas_nifti)."""
    return [nsd.path(root, kind, SUBJECT, s) for s in range(1, n_sessions + 1)]


def evict(files: list[Path]) -> None:
    """Drop the files' pages from the page cache, so each run reads from disk."""
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- what is measured (child processes)
def run_read_floor(files: list[Path], **_) -> dict:
    """The files' bytes read front to back in 8 MiB reads, nothing kept (``cat > /dev/null``)."""
    buf, total = bytearray(8 * 2**20), 0
    for file in files:
        with open(file, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return {"bytes": total}


def run_gunzip_floor(files: list[Path], **_) -> dict:
    """The .nii.gz files decompressed with zlib in 8 MiB pieces, nothing kept (``zcat > /dev/null``)."""
    total = 0
    for file in files:
        with gzip.open(file, "rb") as f:
            while piece := f.read(8 * 2**20):
                total += len(piece)
    return {"uncompressed_bytes": total}


def run_write_floor(files: list[Path], out: Path, n_bytes: int, **_) -> dict:
    """``n_bytes`` written to one file in 64 MiB blocks (what ingestion writes, as one stream)."""
    out.mkdir(parents=True, exist_ok=True)
    block = np.ones(64 * 2**20, np.uint8)
    with open(out / "floor.bin", "wb", buffering=0) as f:
        left = n_bytes
        while left > 0:
            left -= f.write(memoryview(block)[: min(left, len(block))])
    return {"bytes": n_bytes}


def run_reader(files: list[Path], root: Path, **_) -> dict:
    """brainldm's reader alone: nsd.read_betas of every session at the brain-mask voxels."""
    mask, _ = nsd.read_volume(nsd.path(root, "brainmask", SUBJECT))
    voxels, check = np.argwhere(mask > 0), 0
    for file in progress(files, "reader sessions"):
        check += int(nsd.read_betas(file, voxels)[:, ::997].sum(dtype=np.int64))
    return {"voxels": len(voxels), "checksum": check}


def run_baseline(files: list[Path], root: Path, **_) -> dict:
    """Plain read: every session's full volume into RAM, concatenate, then mask. Returns a summary."""
    mask, _ = nsd.read_volume(nsd.path(root, "brainmask", SUBJECT))
    volumes = []
    for file in progress(files, "baseline sessions"):
        with h5py.File(file, "r") as f:
            volumes.append(f["betas"][:])  # (trials, z, y, x) int16
    betas = np.concatenate(volumes)
    del volumes
    masked = betas[:, mask.transpose(2, 1, 0) > 0]  # (all trials, n_vox), the h5 axis order
    return {"rows": int(masked.shape[0]), "voxels": int(masked.shape[1]), "checksum": int(masked[:, ::997].sum(dtype=np.int64))}


def run_brainldm(files: list[Path], root: Path, out: Path, **_) -> dict:
    """brainldm.ingest.ingest_subject on these session files. Returns a summary."""
    from brainldm.ingest import ingest_subject

    ingest_subject(
        SUBJECT, files, nsd.path(root, "brainmask", SUBJECT), {"streams": nsd.path(root, "roi_streams", SUBJECT)},
        {s: nsd.path(root, "responses", s) for s in (SUBJECT, OTHER)}, nsd.path(root, "expdesign"), ROIS, out, zscore=True,
        sessions={OTHER: len(files)},
    )
    train = pd.read_csv(out / "train.tsv", sep="\t")
    test = pd.read_csv(out / "test.tsv", sep="\t")
    return {"train_rows": len(train), "test_rows": len(test), "output_bytes": sum(p.stat().st_size for p in out.iterdir())}


RUNS = {"read": run_read_floor, "gunzip": run_gunzip_floor, "write": run_write_floor, "reader": run_reader,
        "baseline": run_baseline, "brainldm": run_brainldm}


def child_main(args: argparse.Namespace) -> None:
    root = args.workdir / "nsd"
    files = betas_files(root, args.child_kind, args.child_sessions)
    start = time.perf_counter()
    info = RUNS[args.child](files=files, root=root, out=args.workdir / "out", n_bytes=args.child_bytes)
    info["seconds"] = time.perf_counter() - start
    # the process's own peak: VmHWM starts afresh at exec (wait4's ru_maxrss may carry the parent's over)
    info["peak_rss_bytes"] = status_kb(os.getpid(), ("VmHWM",))["VmHWM"] * 1024
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


def measure(args: argparse.Namespace, which: str, kind: str, n_sessions: int, n_bytes: int = 0) -> dict:
    """Run one measurement in a child process, the inputs evicted and earlier writes synced first;
    its wall time, peak RSS (wait4) and sampled peak RssAnon."""
    os.sync()
    evict(betas_files(args.workdir / "nsd", kind, n_sessions))
    cmd = [sys.executable, __file__, "--workdir", str(args.workdir), "--child", which, "--child-kind", kind,
           "--child-sessions", str(n_sessions), "--child-bytes", str(n_bytes)]
    print(f"running {which} on {n_sessions} sessions ({kind}) ...", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak_anon = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_anon = max(peak_anon, status_kb(proc.pid, ("RssAnon",)).get("RssAnon", 0))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = proc.stdout.read()
    result = next((json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")), None)
    shutil.rmtree(args.workdir / "out", ignore_errors=True)
    r = {"which": which, "kind": kind, "sessions": n_sessions, "returncode": proc.returncode, "wall_seconds": wall,
         "seconds": result["seconds"] if result else None,
         "peak_rss_bytes": result["peak_rss_bytes"] if result else usage.ru_maxrss * 1024,
         "peak_anon_bytes": peak_anon * 1024, "info": result}
    print(json.dumps(r), flush=True)
    if proc.returncode != 0:
        print(f"{which} ({kind}, {n_sessions} sessions) failed with exit code {proc.returncode} (-9: killed, probably out of memory)")
    return r


# ---------------------------------------------------------------- main
def free_bytes(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free


def fmt_gb(n: float | None) -> str:
    return "-" if n is None else f"{n / GB:.2f} GB"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/brainldm-bench-ingest"), help="scratch folder for inputs and outputs")
    p.add_argument("--sessions", type=int, default=40, help="sessions of the subject (NSD: 40)")
    p.add_argument("--trials", type=int, default=750, help="trials per session (NSD: 750)")
    p.add_argument("--grid", type=int, nargs=3, default=[81, 104, 83], metavar=("X", "Y", "Z"), help="func grid (subj01 func1pt8mm: 81 104 83)")
    p.add_argument("--mask-fraction", type=float, default=0.30, help="share of the grid inside the brain mask")
    p.add_argument("--baseline-sessions", type=int, default=3, help="sessions the reference-style read holds in RAM; extrapolated linearly to --sessions")
    p.add_argument("--nifti-sessions", type=int, default=3, help="sessions also written and ingested as dense .nii.gz (0: none)")
    p.add_argument("--min-free-gb", type=float, default=20.0, help="refuse to start if the disk would drop below this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep (and reuse) the written inputs")
    p.add_argument("--child", choices=sorted(RUNS), help=argparse.SUPPRESS)
    p.add_argument("--child-kind", default="betas_hdf5", help=argparse.SUPPRESS)
    p.add_argument("--child-sessions", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(args)
        return 0

    grid = tuple(args.grid)
    S, T = args.sessions, args.trials
    B, N = min(args.baseline_sessions, S), min(args.nifti_sessions, S)
    n_brain = int(ellipsoid_mask(grid, args.mask_fraction).sum())
    n_grid = int(np.prod(grid))
    full_bytes = S * T * n_grid * 2  # the dense int16 volumes, what a plain read holds
    tables = design(S, T, args.seed)
    n_train = int((~tables[SUBJECT]["73KID"].isin(tables["sharedix"].ravel())).sum())
    input_bytes = S * T * n_brain * 2 * 1.1 + N * T * n_grid * 2  # brain chunks + HDF5 index; NIfTI at most dense
    output_bytes = n_train * n_brain * 4 * 1.35  # brain + early + ventral float32 train arrays
    free = free_bytes(args.workdir)
    have = sum(f.stat().st_size for f in args.workdir.rglob("*betas_session*")) if args.keep else 0
    need = input_bytes - have + output_bytes  # outputs are deleted after each measurement
    print(f"subject shape: {S} sessions x {T} trials on {grid} ({n_brain} brain voxels = {n_brain / n_grid:.1%} of the grid)")
    print(f"dense int16 data: {fmt_gb(full_bytes)}; betas files ~{fmt_gb(input_bytes)}; ingestion outputs ~{fmt_gb(output_bytes)}; disk free {fmt_gb(free)}")
    if free - need < args.min_free_gb * GB:
        print(f"not enough disk under {args.workdir}: need ~{fmt_gb(need)} and keep {args.min_free_gb} GB free; use fewer --sessions or another --workdir", file=sys.stderr)
        return 2
    print(f"load average before: {os.getloadavg()}; {os.cpu_count()} CPUs")

    t0 = time.perf_counter()
    write_inputs(args.workdir / "nsd", S, T, grid, args.mask_fraction, args.seed, args.keep, N)
    print(f"wrote inputs in {time.perf_counter() - t0:.0f} s")
    r = {}
    try:
        r["ingest"] = measure(args, "brainldm", "betas_hdf5", S)
        out_bytes = (r["ingest"]["info"] or {}).get("output_bytes", int(output_bytes))
        r["read"] = measure(args, "read", "betas_hdf5", S)
        r["write"] = measure(args, "write", "betas_hdf5", S, out_bytes)
        r["reader"] = measure(args, "reader", "betas_hdf5", S)
        r["baseline"] = measure(args, "baseline", "betas_hdf5", B)
        if N:
            r["nii_ingest"] = measure(args, "brainldm", "betas_nifti", N)
            r["nii_out_write"] = measure(args, "write", "betas_nifti", N, (r["nii_ingest"]["info"] or {}).get("output_bytes", 0))
            r["nii_gunzip"] = measure(args, "gunzip", "betas_nifti", N)
            r["nii_reader"] = measure(args, "reader", "betas_nifti", N)
    finally:
        shutil.rmtree(args.workdir / "out", ignore_errors=True)
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print(f"load average after: {os.getloadavg()}")
    report(r, S, B, N, T, n_grid)
    return 0 if all(x["returncode"] == 0 for x in r.values()) else 1


def report(r: dict, S: int, B: int, N: int, T: int, n_grid: int) -> None:
    """The table and the ratios against the floors."""
    sec = {k: v["seconds"] for k, v in r.items()}
    base = r["baseline"]
    extra = 2 * (S - B) * T * n_grid * 2  # each further session: its dense volume in the list and in the concatenation
    rows = [(f"read floor (betas bytes, {fmt_gb(r['read']['info'] and r['read']['info']['bytes'])})", "read"),
            ("write floor (the outputs' bytes)", "write"), ("brainldm reader (nsd.read_betas)", "reader"),
            ("brainldm ingest_subject", "ingest"), (f"reference style, {B} sessions (measured)", "baseline")]
    print(f"\n{'HDF5 copy':52} {'sessions':>8} {'time':>9} {'peak RSS':>10} {'peak anon':>10}")
    for name, key in rows:
        x = r[key]
        t = "-" if x["seconds"] is None else f"{x['seconds']:.1f} s"
        print(f"{name:52} {x['sessions']:>8} {t:>9} {fmt_gb(x['peak_rss_bytes']):>10} {fmt_gb(x['peak_anon_bytes']):>10}")
    ext = None if sec["baseline"] is None else sec["baseline"] * S / B
    print(f"{'reference style (EXTRAPOLATED)':52} {S:>8} {'-' if ext is None else f'{ext:.1f} s':>9} "
          f"{fmt_gb(base['peak_rss_bytes'] + extra):>10} {fmt_gb(base['peak_anon_bytes'] + extra):>10}")
    floor = (sec["read"] or 0) + (sec["write"] or 0)
    print(f"\nreader / read floor: {ratio(sec['reader'], sec['read'])}")
    print(f"ingest / read floor: {ratio(sec['ingest'], sec['read'])}")
    print(f"ingest / (read floor + write floor): {ratio(sec['ingest'], floor)}")
    print(f"reference style (extrapolated) / ingest: {ratio(ext, sec['ingest'])}")
    if r["ingest"]["info"]:
        i = r["ingest"]["info"]
        print(f"brainldm wrote {i['train_rows']} train rows, {i['test_rows']} test images, {fmt_gb(i['output_bytes'])} of outputs")
    if N:
        print(f"\n{'NIfTI copy (.nii.gz, dense)':52} {'sessions':>8} {'time':>9} {'peak RSS':>10} {'peak anon':>10}")
        for name, key in (("gunzip floor (zlib, nothing kept)", "nii_gunzip"), ("write floor (the outputs' bytes)", "nii_out_write"),
                          ("brainldm reader (nsd.read_betas)", "nii_reader"), ("brainldm ingest_subject", "nii_ingest")):
            x = r[key]
            t = "-" if x["seconds"] is None else f"{x['seconds']:.1f} s"
            print(f"{name:52} {x['sessions']:>8} {t:>9} {fmt_gb(x['peak_rss_bytes']):>10} {fmt_gb(x['peak_anon_bytes']):>10}")
        nfloor = (sec["nii_gunzip"] or 0) + (sec["nii_out_write"] or 0)
        print(f"\nNIfTI reader / gunzip floor: {ratio(sec['nii_reader'], sec['nii_gunzip'])}")
        print(f"NIfTI ingest / gunzip floor: {ratio(sec['nii_ingest'], sec['nii_gunzip'])}")
        print(f"NIfTI ingest / (gunzip floor + write floor): {ratio(sec['nii_ingest'], nfloor)}")


if __name__ == "__main__":
    sys.exit(main())
