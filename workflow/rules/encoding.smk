# Voxel-wise encoding models and cortical maps (see docs/contracts.md and
# src/brainldm/{encoding,maps}.py): per subject one fit job per analysis
# (single, noise, stage, layers) and one map job per analysis.
ENCODING = config.get("encoding", {})
ENCODING_ANALYSES = list(ENCODING.get("analyses", ["single", "noise", "stage", "layers"]))
# The config keys that change the fitted results (tracked as params).
ENCODING_SETTINGS = {
    k: ENCODING[k]
    for k in ("n_components", "alphas", "cv_folds", "n_iter", "backend", "n_targets_batch",
              "voxel_batch", "q", "zc_strength", "noise_levels", "fractions", "layers", "seed")
    if k in ENCODING
}
# The config keys that change the maps.
ENCODING_MAP_SETTINGS = {
    k: ENCODING.get(k)
    for k in ("pycortex_subject", "pycortex_xfm", "pycortex_filestore", "r_vmax")
}
# himalaya on a GPU (torch_cuda, or auto where one is present) for NSD-size fits.
ENCODING_GPU = 1 if ENCODING.get("backend", "auto") in ("auto", "torch_cuda") and not SYNTHETIC else 0
ENCODING_THREADS = 2 if SYNTHETIC else 4


def encoding_mem_mb(wildcards, input):
    """Train betas of one voxel batch in float32 plus the solver's copies (about 4x),
    bounded by 4x the whole train betas file, plus features/PCA headroom."""
    batch = ENCODING.get("voxel_batch", 20000) or 10**9
    # rows x batch x 4 bytes; NSD: 27,750 trials -> 2.2 GB per 20,000 voxels
    rows_mb = input.size_mb  # all inputs; an upper bound of the betas
    per_batch_mb = min(rows_mb, 30000 * batch * 4 / 1e6)
    return int(1500 + 4 * per_batch_mb)


def encoding_brainmask(wildcards):
    """The subject's brain mask: grid and affine of the NIfTI maps."""
    return subject_files(wildcards.subject)["brainmask"]


ENCODING_BETAS = dict(
    train="results/{subject}/ingest/betas_brain_train.npy",
    test="results/{subject}/ingest/betas_brain_test.npy",
    train_tsv="results/{subject}/ingest/train.tsv",
    test_tsv="results/{subject}/ingest/test.tsv",
)


rule encode_single:
    """z, c and zc encoding models of every voxel, each on its own (paper Fig. 6)."""
    input:
        **ENCODING_BETAS,
        z="results/features/z.h5",
        c="results/features/c.h5",
        zc="results/features/zc.h5",
    output:
        npz="results/{subject}/encoding/single.npz",
    params:
        analysis="single",
        settings=ENCODING_SETTINGS,
    log:
        "results/logs/encoding/{subject}_single.log",
    benchmark:
        "results/benchmarks/encoding/{subject}_single.tsv"
    threads: ENCODING_THREADS
    resources:
        mem_mb=encoding_mem_mb,
        runtime=10 if SYNTHETIC else 240,
        gpu=ENCODING_GPU,
    conda:
        "../../envs/gpu.yaml" if ENCODING_GPU else "../../envs/cpu.yaml"
    script:
        "../scripts/encode.py"


rule encode_noise:
    """z + zc banded models per noise level; unique variance of each (paper Fig. 7)."""
    input:
        **ENCODING_BETAS,
        z="results/features/z.h5",
        zc="results/features/zc.h5",
    output:
        npz="results/{subject}/encoding/noise.npz",
    params:
        analysis="noise",
        settings=ENCODING_SETTINGS,
    log:
        "results/logs/encoding/{subject}_noise.log",
    benchmark:
        "results/benchmarks/encoding/{subject}_noise.tsv"
    threads: ENCODING_THREADS
    resources:
        mem_mb=encoding_mem_mb,
        runtime=10 if SYNTHETIC else 480,
        gpu=ENCODING_GPU,
    conda:
        "../../envs/gpu.yaml" if ENCODING_GPU else "../../envs/cpu.yaml"
    script:
        "../scripts/encode.py"


rule encode_stage:
    """z + zc banded models per denoising stage; unique variance of each (paper Fig. 8)."""
    input:
        **ENCODING_BETAS,
        z="results/features/z.h5",
        zc="results/features/zc.h5",
    output:
        npz="results/{subject}/encoding/stage.npz",
    params:
        analysis="stage",
        settings=ENCODING_SETTINGS,
    log:
        "results/logs/encoding/{subject}_stage.log",
    benchmark:
        "results/benchmarks/encoding/{subject}_stage.tsv"
    threads: ENCODING_THREADS
    resources:
        mem_mb=encoding_mem_mb,
        runtime=10 if SYNTHETIC else 480,
        gpu=ENCODING_GPU,
    conda:
        "../../envs/gpu.yaml" if ENCODING_GPU else "../../envs/cpu.yaml"
    script:
        "../scripts/encode.py"


rule encode_layers:
    """One model per U-Net layer and denoising stage; best layer per voxel (paper Fig. 9)."""
    input:
        **ENCODING_BETAS,
        unet="results/features/unet.h5",
    output:
        npz="results/{subject}/encoding/layers.npz",
    params:
        analysis="layers",
        settings=ENCODING_SETTINGS,
    log:
        "results/logs/encoding/{subject}_layers.log",
    benchmark:
        "results/benchmarks/encoding/{subject}_layers.tsv"
    threads: ENCODING_THREADS
    resources:
        mem_mb=encoding_mem_mb,
        runtime=10 if SYNTHETIC else 480,
        gpu=ENCODING_GPU,
    conda:
        "../../envs/gpu.yaml" if ENCODING_GPU else "../../envs/cpu.yaml"
    script:
        "../scripts/encode.py"


rule encoding_maps:
    """NIfTI maps (and pycortex flatmap PNGs when a pycortex subject is configured) of one analysis."""
    input:
        npz="results/{subject}/encoding/{analysis}.npz",
        voxels="results/{subject}/ingest/voxels_brain.npy",
        brainmask=encoding_brainmask,
    output:
        maps=directory("results/{subject}/encoding/{analysis}_maps"),
    wildcard_constraints:
        analysis="single|noise|stage|layers",
    params:
        settings=ENCODING_MAP_SETTINGS,
        cache_dir="results/pycortex",
    log:
        "results/logs/encoding/{subject}_{analysis}_maps.log",
    benchmark:
        "results/benchmarks/encoding/{subject}_{analysis}_maps.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/flatmaps.py"


TARGETS += expand("results/{subject}/encoding/{analysis}_maps", subject=SUBJECTS, analysis=ENCODING_ANALYSES)
