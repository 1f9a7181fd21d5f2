"""brainldm.reconstruct with the tiny model: shards, seeds, gather, grid, bad inputs."""

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from brainldm import reconstruct
from brainldm.reconstruct import ReconSettings, ReconstructionError
from brainldm.selection import pixel_similarity

SETTINGS = dict(image_size=64, num_inference_steps=5, n_samples=2, shards=2, batch_size=2, grid_images=3, seed=7)
N_TEST = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from brainldm.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", seed=0)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoded")
    rng = np.random.default_rng(0)
    ids = np.array([3, 11, 17])
    np.savez(root / "z.npz", pred=rng.normal(size=(N_TEST, 4, 8, 8)).astype(np.float32), nsd_id=ids)
    np.savez(root / "c.npz", pred=rng.normal(size=(N_TEST, 77, 32)).astype(np.float32), nsd_id=ids)
    with h5py.File(root / "stimuli.hdf5", "w") as f:
        f["imgBrick"] = rng.integers(0, 255, size=(20, 40, 40, 3), dtype=np.uint8)
    return root


@pytest.fixture(scope="module")
def shards(tiny, decoded, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    files = []
    for shard in range(SETTINGS["shards"]):
        files.append(reconstruct.reconstruct_shard(tiny, decoded / "z.npz", decoded / "c.npz",
                                                   out / f"{shard}.h5", "subj01", shard, SETTINGS,
                                                   device="cpu", threads=1))
    return files


def test_shards_hold_every_image_condition_and_sample(shards):
    seen = []
    for path in shards:
        with h5py.File(path, "r") as f:
            seen += list(f["nsd_id"][:])
            for k in ("z", "c", "zc"):
                assert f[k].shape == (len(f["nsd_id"]), 2, 64, 64, 3) and f[k].dtype == np.uint8
            if len(f["nsd_id"]):
                zc = f["zc"][0]
                assert zc.std() > 1  # not blank
                assert not np.array_equal(zc[0], zc[1])  # samples differ
                assert not np.array_equal(f["zc"][0], f["z"][0])  # c conditioning matters
    assert seen == [3, 11, 17]


def test_same_seed_same_images(tiny, decoded, shards, tmp_path):
    again = reconstruct.reconstruct_shard(tiny, decoded / "z.npz", decoded / "c.npz", tmp_path / "0.h5",
                                          "subj01", 0, SETTINGS, device="cpu", threads=1)
    other = reconstruct.reconstruct_shard(tiny, decoded / "z.npz", decoded / "c.npz", tmp_path / "x.h5",
                                          "subj01", 0, dict(SETTINGS, seed=8), device="cpu",
                                          threads=1)
    single = reconstruct.reconstruct_shard(tiny, decoded / "z.npz", decoded / "c.npz", tmp_path / "1.h5",
                                           "subj01", 0, dict(SETTINGS, batch_size=1), device="cpu",
                                           threads=1)
    with h5py.File(shards[0], "r") as a, h5py.File(again, "r") as b, h5py.File(other, "r") as c, \
            h5py.File(single, "r") as d:
        assert len(a["nsd_id"]) == 2  # a batch of two test images
        for k in ("z", "c", "zc"):
            np.testing.assert_array_equal(a[k][:], b[k][:])
            assert not np.array_equal(a[k][:], c[k][:])
            # each (image, sample) has its own generator: batching does not change the images
            # beyond float rounding
            assert np.abs(a[k][:].astype(int) - d[k][:].astype(int)).max() <= 2


def test_gather_writes_the_contract_and_a_grid(shards, decoded, tmp_path):
    out = reconstruct.gather(shards, decoded / "z.npz", decoded / "stimuli.hdf5", tmp_path / "recons.h5",
                             "subj01", SETTINGS)
    reconstruct.draw_grid(out, tmp_path / "grid.png", SETTINGS, "subj01")
    with h5py.File(out, "r") as f:
        assert f.attrs["n_samples"] == 2 and "grid_images" not in f.attrs  # what made the images only
        np.testing.assert_array_equal(f["nsd_id"][:], [3, 11, 17])
        assert f["original"].shape == (N_TEST, 64, 64, 3) and f["original"].dtype == np.uint8
        for k in ("z", "c", "zc"):
            assert f[k].shape == (N_TEST, 2, 64, 64, 3)
        with h5py.File(shards[1], "r") as s:
            np.testing.assert_array_equal(f["zc"][-1], s["zc"][-1])
            assert s["zc"].compression == "gzip" and s["zc"].compression_opts == 1
        # images compressed (gzip 1, one chunk per image), lossless
        for k in ("z", "c", "zc", "original"):
            assert f[k].compression == "gzip" and f[k].compression_opts == 1 and f[k].chunks[-3:] == (64, 64, 3)
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size[0] > grid.size[1] > 100  # 3 rows x 7 columns


def test_seeds_and_shards():
    assert reconstruct.sample_seed(42, "subj01", 5, 0) == reconstruct.sample_seed(42, "subj01", 5, 0)
    seeds = {reconstruct.sample_seed(42, s, i, k) for s in ("subj01", "subj02") for i in (5, 6) for k in (0, 1)}
    assert len(seeds) == 8
    parts = [reconstruct.shard_indices(10, 3, k) for k in range(3)]
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(10))
    assert len(reconstruct.shard_indices(2, 4, 3)) == 0


def test_similarity_prefers_the_original():
    rng = np.random.default_rng(0)
    orig = rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
    noisy = np.clip(orig + rng.normal(0, 30, orig.shape), 0, 255).astype(np.uint8)
    other = rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
    for metric in ("pixcorr", "ssim"):
        sim = pixel_similarity(orig[None], np.stack([other, noisy])[None], metric)[0]
        assert sim[1] > sim[0]


@pytest.mark.parametrize("key,value,message", [
    ("n_samples", 0, "reconstruction.n_samples = 0 is invalid"),
    ("strength", 1.5, "reconstruction.strength"),
    ("grid_metric", "lpips", "reconstruction.grid_metric"),
])
def test_bad_settings(key, value, message):
    with pytest.raises(ReconstructionError, match=message):
        ReconSettings(**{key: value})


def test_bad_shapes(tiny, decoded, tmp_path):
    from brainldm.models import load_pipeline

    pipe = load_pipeline(tiny, device="cpu")
    z, c = np.zeros((1, 4, 8, 8)), np.zeros((1, 77, 32))
    reconstruct.check_model_shapes(pipe, z, c, 64)
    with pytest.raises(ReconstructionError, match="4 channels"):
        reconstruct.check_model_shapes(pipe, np.zeros((1, 3, 8, 8)), c, 64)
    with pytest.raises(ReconstructionError, match=r"conditioned on \(77, 32\)"):
        reconstruct.check_model_shapes(pipe, z, np.zeros((1, 77, 768)), 64)
    with pytest.raises(ReconstructionError, match="image_size = 60 must be a multiple of 16"):
        reconstruct.check_model_shapes(pipe, z, c, 60)
    np.savez(tmp_path / "z.npz", pred=np.zeros((3, 64)), nsd_id=np.arange(3))
    with pytest.raises(ReconstructionError, match=r"decoded z in .* has shape \(3, 64\)"):
        reconstruct.load_decoded(tmp_path / "z.npz", decoded / "c.npz")
    with pytest.raises(ReconstructionError, match="missing decoded features"):
        reconstruct.load_decoded(tmp_path / "nope.npz", decoded / "c.npz")


# ----------------------------------------------------------------------------- workflow


def _job_counts(text: str) -> dict[str, int]:
    """{rule: jobs} from the 'Job stats' table of a Snakemake dry run ({} if nothing to do)."""
    lines = text.splitlines()
    if "Job stats:" not in [line.strip() for line in lines]:
        return {}
    start = [line.strip() for line in lines].index("Job stats:") + 3
    counts = {}
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    counts.pop("total", None)
    return counts


@pytest.mark.slow
def test_deleting_one_shard_reruns_only_that_shard(tiny, decoded, tmp_path):
    """The reconstruction rules in a scratch copy of the workflow, on prepared decoded
    features: when one shard's output is missing (its job failed, so the gather job did
    not run) a dry run lists that shard and the gather job only, not the finished shard;
    after the gather the (temp) shards are gone and a dry run has nothing to do."""
    import shutil
    import subprocess
    import sys

    import yaml

    repo = Path(__file__).resolve().parents[1]
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy2(repo / "Snakefile", work / "Snakefile")
    for folder in ("workflow", "config"):
        shutil.copytree(repo / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "resources").symlink_to(repo / "resources")
    overrides = {"data": {"subjects": [1]},
                 "reconstruction": {"shards": 2, "n_samples": 1, "num_inference_steps": 2,
                                    "image_size": 64, "batch_size": 4, "grid_images": 2}}
    (work / "config" / "test.yaml").write_text(yaml.safe_dump(overrides))
    results = work / "results"
    (results / "subj01" / "decoding").mkdir(parents=True)
    for name in ("z.npz", "c.npz"):
        shutil.copy2(decoded / name, results / "subj01" / "decoding" / name)
    shutil.copytree(tiny, results / "models" / "tiny")
    stimuli = results / "synthetic_nsd" / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5"
    stimuli.parent.mkdir(parents=True)
    shutil.copy2(decoded / "stimuli.hdf5", stimuli)

    def snakemake(*args):
        cmd = [sys.executable, "-m", "snakemake", "--configfile", "config/demo.yaml", "config/test.yaml",
               "--cores", "2", "--allowed-rules", "reconstruct_shard", "reconstruct_gather",
               *[a for a in args if not a.startswith("results/")], "--",
               *([a for a in args if a.startswith("results/")] or ["results/subj01/reconstruction/recons.h5"])]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, HF_HUB_OFFLINE="1"))
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        return proc.stdout + proc.stderr

    shard_dir = results / "subj01" / "reconstruction" / "shards"
    snakemake("results/subj01/reconstruction/shards/0.h5")  # as if shard 1's job had failed
    assert [p.name for p in shard_dir.glob("*.h5")] == ["0.h5"]
    assert _job_counts(snakemake("-n")) == {"reconstruct_shard": 1, "reconstruct_gather": 1}
    snakemake()
    # issue 17.3: the shards are temp(): removed once recons.h5 is written; nothing left to do
    assert (results / "subj01" / "reconstruction" / "recons.h5").is_file()
    assert not list(shard_dir.glob("*.h5"))
    assert _job_counts(snakemake("-n")) == {}
