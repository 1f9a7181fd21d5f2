"""A user's existing NSD copy (here: a small synthetic one, `data.source: nsd`) is used
in place: read-only works, no Snakemake option deletes or rewrites a file of it, and
the dry run lists exactly the missing files, which are then fetched from S3 (moto on
loopback) without touching anything else."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import uuid
from pathlib import Path

import boto3
import pytest

from brainldm import nsd, nsd_copy

from .conftest import WorkflowRun, copy_workflow, file_digest, parse_dry_run

TARGETS = ["results/stimuli/stimuli.tsv", "results/subj01/ingest/train.tsv", "results/subj02/ingest/train.tsv"]
# Every rule that reads the NSD root or the model folder: stimuli table, ingestion, the
# features (stimuli, captions; the model), reconstruction (the model; the gather reads the
# stimuli) and the encoding maps (the brain mask); for subj02 (its own grid, fewer
# sessions) only, to keep the test short. Evaluation reads neither.
READERS = TARGETS + ["results/subj02/reconstruction/recons.h5", "results/subj02/encoding/single_maps"]
# what the run reads: 5 shared files, per subject 4 files and its sessions of hdf5 betas
# (3 and, NSD quirk, 2; the copy also has NIfTI betas and the generator's ground truth)
N_NEEDED = len(nsd_copy.needed_keys(["subj01", "subj02"], {"subj01": [1, 2, 3], "subj02": [1, 2]}, "hdf5"))
REMOVED = [nsd.relpath("brainmask", "subj02"), nsd.relpath("betas_hdf5", "subj01", 2)]


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """{relative path: (sha256, mtime_ns, mode)} of every file under root."""
    return {
        str(p.relative_to(root)): (file_digest(p), p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def set_writable(root: Path, writable: bool) -> None:
    """chmod -R a-w (or u+w back) on root, keeping the files' mtimes."""
    for p in sorted(root.rglob("*"), reverse=True) + [root]:
        mode = p.stat().st_mode
        mode = mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        os.chmod(p, mode)


def unreachable_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(scope="module")
def nsd_copy_root(tmp_path_factory) -> Path:
    """A complete NSD-format copy with NSD's quirks (subj01 3 sessions, subj02 2), dated
    long ago like a lab's copy."""
    from brainldm.synthetic import SyntheticDesign, write_synthetic_nsd

    root = tmp_path_factory.mktemp("lab") / "nsd"
    design = SyntheticDesign(subjects=(1, 2), n_sessions=3, trials_per_session=60, n_shared_images=10,
                             n_images=450, image_size=32, snr=1.0, seed=0, nsd_quirks=True)
    write_synthetic_nsd(root, design, tmp_path_factory.mktemp("pycortex"))
    for p in root.rglob("*"):
        os.utime(p, (1709251200, 1709251200))  # 2024-03-01
    return root


def make_run(tmp_path: Path, root: Path, endpoint: str, bucket: str = "natural-scenes-dataset",
             extra: dict | None = None, targets: list[str] = TARGETS) -> WorkflowRun:
    overrides = {
        "data": {"source": "nsd", "nsd_root": str(root), "subjects": [1, 2], "sessions": "all"},
        "download": {"endpoint_url": endpoint, "bucket": bucket},
        **(extra or {}),
    }
    return WorkflowRun(copy_workflow(tmp_path / "wf", overrides), targets=list(targets))


def test_read_only_copy_is_used_in_place_and_never_touched(nsd_copy_root, demo_run, tmp_path):
    """A read-only NSD copy and a read-only model folder (the lab's, here the demo's tiny
    model copied: a diffusers folder, loaded like SD v1.4) through every rule that reads
    them; afterwards, and after --forceall on writable copies, every file of both has the
    same checksum, mtime and mode."""
    root = tmp_path / "copy"
    shutil.copytree(nsd_copy_root, root)  # copy2: mtimes kept
    before = snapshot(root)
    model = tmp_path / "lab_models" / "tiny-sd"
    shutil.copytree(demo_run.path("results/models/tiny"), model)
    model_before = snapshot(model)
    extra = {"model": {"name": str(model), "device": "cpu"}, "encoding": {"analyses": ["single"]}}
    run = make_run(tmp_path, root, unreachable_endpoint(), extra=extra, targets=READERS)

    # the complete copy: the dry run of the whole DAG, even forced, has no download job
    proc = run.snakemake("-n", "--forceall", "--", "all")
    n = N_NEEDED
    assert f"NSD copy at {root}: {n} of {n} files present; nothing to download" in proc.stderr
    assert proc.stderr.count("NSD copy at") == 1
    jobs = parse_dry_run(proc.stdout + proc.stderr)
    assert jobs.get("ingest") == 2 and not any(r.startswith("download") for r in jobs), jobs

    set_writable(root, False)
    set_writable(model.parent, False)
    try:
        ro, model_ro = snapshot(root), snapshot(model)
        proc = run.snakemake(timeout=1200)
        for target in READERS:
            assert run.path(target).exists(), target
        assert (run.path("results/subj01/ingest/betas_early_train.npy")).stat().st_size > 0
        # data.sessions: all = every session each subject has (3 and 2)
        for subject, n in (("subj01", 3), ("subj02", 2)):
            train = run.path(f"results/{subject}/ingest/train.tsv").read_text().splitlines()
            assert {int(line.split()[-2]) for line in train[1:]} == set(range(1, n + 1))
        assert proc.stderr.count("NSD copy at") == 1  # the main process only, not each job
        assert snapshot(root) == ro and snapshot(model) == model_ro
    finally:
        set_writable(root, True)
        set_writable(model.parent, True)
    assert snapshot(root) == before and snapshot(model) == model_before

    # writable, every rule forced (the model loaded again by the z features): still nothing changes there
    proc = run.snakemake("--forceall", "--", *TARGETS, "results/features/z.h5")
    assert "download" not in proc.stdout + proc.stderr.replace("nothing to download", "")
    assert snapshot(root) == before and snapshot(model) == model_before


def test_dry_run_lists_exactly_the_missing_files_and_fetches_only_them(nsd_copy_root, tmp_path, endpoint):
    root = tmp_path / "copy"
    shutil.copytree(nsd_copy_root, root)
    full = snapshot(root)
    bodies = {key: (root / key).read_bytes() for key in REMOVED}
    for key in REMOVED:
        (root / key).unlink()
    before = snapshot(root)

    admin = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                         aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"nsd-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=bucket)
    for key, body in bodies.items():
        admin.put_object(Bucket=bucket, Key=key, Body=body, ACL="public-read")
    run = make_run(tmp_path, root, endpoint, bucket)

    proc = run.snakemake("-n", "--", "download_nsd")
    line = next(l for l in proc.stderr.splitlines() if l.startswith("NSD copy at"))
    n = N_NEEDED
    size = sum(len(b) for b in bodies.values())
    assert line.startswith(f"NSD copy at {root}: {n - 2} of {n} files present; missing: ")
    listed = line.split("missing: ", 1)[1].rsplit(" (", 1)[0].split(", ")
    assert sorted(listed) == sorted(REMOVED)
    assert re.search(r"\((\d+(\.\d)?) (B|KiB|MiB)\)$", line), line
    assert f"{size / 1024 ** 2:.1f} MiB" in line or f"{size / 1024:.1f} KiB" in line
    jobs = parse_dry_run(proc.stdout + proc.stderr)
    assert jobs == {"download_nsd": 1, "download_nsd_file": 2}, jobs
    for key in REMOVED:
        assert f"{root / key}" in proc.stdout + proc.stderr

    run.snakemake("--", "download_nsd")
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k not in REMOVED} == before
    for key in REMOVED:
        assert after[key][0] == full[key][0]

    # a downloaded file is an existing file on the next parse: nothing to fetch, even forced
    proc = run.snakemake("-n", "--forceall", "--", "download_nsd")
    assert f"{n} of {n} files present" in proc.stderr
    assert "download_nsd_file" not in parse_dry_run(proc.stdout + proc.stderr)
