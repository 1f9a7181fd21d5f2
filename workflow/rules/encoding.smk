# Voxel-wise encoding models and cortical maps (see docs/contracts.md and
# src/brainldm/{encoding,maps}.py): per subject one fit job per analysis
# (single, noise, stage, layers) and one map job per analysis.


include: "encoding_common.smk"


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
        "../envs/gpu.yaml" if ENCODING_GPU else "../envs/cpu.yaml"
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
        "../envs/gpu.yaml" if ENCODING_GPU else "../envs/cpu.yaml"
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
        "../envs/gpu.yaml" if ENCODING_GPU else "../envs/cpu.yaml"
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
        "../envs/gpu.yaml" if ENCODING_GPU else "../envs/cpu.yaml"
    script:
        "../scripts/encode.py"


rule encoding_maps:
    """NIfTI maps (and pycortex flatmap PNGs when a pycortex subject is configured) of one analysis."""
    input:
        npz="results/{subject}/encoding/{analysis}.npz",
        voxels="results/{subject}/ingest/voxels_brain.npy",
        brainmask=encoding_brainmask,
    output:
        maps=report(
            directory("results/{subject}/encoding/{analysis}_maps"),
            patterns=["{map}.png"],
            caption="../report/encoding.rst",
            category="Encoding maps",
            subcategory="{analysis}",
            labels={"subject": "{subject}", "map": "{map}"},
        ),
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
        "../envs/cpu.yaml"
    script:
        "../scripts/flatmaps.py"


TARGETS += expand("results/{subject}/encoding/{analysis}_maps", subject=SUBJECTS, analysis=ENCODING_ANALYSES)
