# Helpers of the decoding and reconstruction stages (snakemake --lint wants functions
# apart from rules). Included by decoding.smk.
DECODING = config["decoding"]
DECODING_TARGETS = dict(DECODING["targets"])
for _target, _rois in DECODING_TARGETS.items():
    for _roi in _rois:
        if _roi not in ROIS:
            raise ValueError(
                f"config decoding.targets.{_target}: ROI {_roi!r} is not ingested; "
                f"use one of {ROIS} (keys of ingest.rois, plus brain)"
            )
# himalaya on a GPU (torch_cuda, or auto where one is present) for the big c decoder.
DECODING_GPU = 1 if DECODING["backend"] in ("auto", "torch_cuda") else 0
# The demo's small fits (tiny model) gain nothing from a second thread; NSD-size fits
# on a CPU use four.
DECODING_THREADS = 1 if TINY_MODEL else 4
# The decoding config keys that change the decoded features (tracked as params).
DECODING_SETTINGS = {
    k: DECODING[k]
    for k in ("alphas", "cv_folds", "cv_by_session", "fit_intercept", "backend",
              "n_targets_batch", "n_alphas_batch", "shuffle_control", "seed")
}

RECON = config["reconstruction"]
RECON_SHARDS = list(range(RECON["shards"]))
# What the shard and gather jobs depend on (the grid's keys only change reconstruct_grid).
RECON_SHARD_SETTINGS = {k: v for k, v in RECON.items() if not k.startswith("grid_")}
# The tiny model is CPU work (one thread each, so two jobs share the 2 demo cores).
RECON_GPU = 0 if TINY_MODEL else 1
RECON_ENV = "../envs/cpu.yaml" if TINY_MODEL else "../envs/gpu.yaml"
RECON_THREADS = 1 if TINY_MODEL else 2
# Minutes per shard: about 40 s per test image with SD v1.4 on one GPU for the three
# conditions x 5 samples at 512 px, with a wide margin; NSD has at most 1000 test images.
RECON_RUNTIME = 10 if TINY_MODEL else int(10 + 2 * -(-1000 // RECON["shards"]) * RECON["n_samples"] / 5)
# Disk (MB) a job writes, uncompressed upper bound (gzip 1 saves ~20%): per shard its
# images (3 conditions x n_samples, uint8); the gather job the whole subject with originals.
_RECON_IMAGE_MB = RECON["image_size"] ** 2 * 3 / 1e6
RECON_SHARD_DISK_MB = int(10 + -(-1000 // RECON["shards"]) * 3 * RECON["n_samples"] * _RECON_IMAGE_MB)
RECON_GATHER_DISK_MB = int(10 + 1000 * (3 * RECON["n_samples"] + 1) * _RECON_IMAGE_MB)


def decoding_betas(split):
    """Input function: the betas of the target's ROIs for one split, in config order."""

    def files(wildcards):
        return [
            f"results/{wildcards.subject}/ingest/betas_{roi}_{split}.npy"
            for roi in DECODING_TARGETS[wildcards.target]
        ]

    return files


def decoding_rois(wildcards):
    """The ROIs whose betas are h-stacked for this target."""
    return DECODING_TARGETS[wildcards.target]


def decoding_runtime(wildcards):
    """Minutes: the c decoder (59,136 targets at SD v1.4 size) dominates."""
    return 240 if wildcards.target == "c" else 60


def decoding_mem_mb(wildcards, input):
    """Y_train has one row per training trial (about 3x the feature file's rows, one per
    image), plus coefficients, eigenvectors and X·V (benchmarks/ridge.py adds them up:
    12.8 GB for a full-size c decoder): 4x the betas and 4x the feature file."""
    return int(1000 + 4 * input.size_mb)
