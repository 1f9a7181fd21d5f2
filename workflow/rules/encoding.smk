# Voxel-wise encoding models and cortical maps (see docs/contracts.md and
# src/brainldm/{encoding,maps}.py): per subject one fit job (rule encode) and one map
# job (rule encoding_maps) per analysis: single, noise, stage, layers.


include: "encoding_common.smk"


rule encode:
    """Encoding models of every voxel for one analysis: single (z, c and zc, each on its
    own; paper Fig. 6), noise and stage (z + zc banded models per noise level / denoising
    stage and the unique variance of each; Figs. 7, 8) or layers (one model per U-Net
    layer and stage, best layer per voxel; Fig. 9)."""
    input:
        unpack(encoding_inputs),
    output:
        npz="results/{subject}/encoding/{analysis}.npz",
    wildcard_constraints:
        analysis="|".join(ENCODING_FEATURES),
    params:
        settings=ENCODING_SETTINGS,
    log:
        "results/logs/encoding/{subject}_{analysis}.log",
    benchmark:
        "results/benchmarks/encoding/{subject}_{analysis}.tsv"
    threads: ENCODING_THREADS
    resources:
        mem_mb=encoding_mem_mb,
        runtime=lambda wildcards: ENCODING_RUNTIME[wildcards.analysis],
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
        analysis="|".join(ENCODING_FEATURES),
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
