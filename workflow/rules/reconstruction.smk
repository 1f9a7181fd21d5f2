# Images from decoded z and c (see docs/contracts.md and src/brainldm/reconstruct.py):
# the test images of each subject are split into reconstruction.shards jobs (GPU
# jobs with a real model), then gathered into recons.h5 (the shards are temp(): removed
# once it is written) and drawn as grid.png. Helpers and settings in decoding_common.smk.
rule reconstruct_shard:
    """Reconstruct one shard of one subject's test images: zc, z-only and c-only."""
    input:
        z="results/{subject}/decoding/z.npz",
        c="results/{subject}/decoding/c.npz",
        model=model_inputs(),
    output:
        temp("results/{subject}/reconstruction/shards/{shard}.h5"),
    params:
        model=model_param,
        local_files_only=MODEL["local_files_only"],
        device=model_device(),
        settings=RECON_SHARD_SETTINGS,
    log:
        "results/logs/reconstruction/{subject}_shard{shard}.log",
    benchmark:
        "results/benchmarks/reconstruction/{subject}_shard{shard}.tsv"
    threads: RECON_THREADS
    resources:
        mem_mb=2000 if TINY_MODEL else 16000,
        runtime=RECON_RUNTIME,
        gpu=RECON_GPU,
        disk_mb=RECON_SHARD_DISK_MB,
    conda:
        RECON_ENV
    script:
        "../scripts/reconstruct_shard.py"


rule reconstruct_gather:
    """All shards of one subject into recons.h5, with the originals."""
    input:
        shards=expand("results/{{subject}}/reconstruction/shards/{shard}.h5", shard=RECON_SHARDS),
        z="results/{subject}/decoding/z.npz",
        stimuli=nsd_file("stimuli"),
    output:
        h5="results/{subject}/reconstruction/recons.h5",
    params:
        settings=RECON_SHARD_SETTINGS,
    log:
        "results/logs/reconstruction/{subject}_gather.log",
    benchmark:
        "results/benchmarks/reconstruction/{subject}_gather.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30 if not TINY_MODEL else 5,
        disk_mb=RECON_GATHER_DISK_MB,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/reconstruct_gather.py"


rule reconstruct_grid:
    """grid.png: a few test images of one subject, original and z, c, zc (best and random sample)."""
    input:
        "results/{subject}/reconstruction/recons.h5",
    output:
        report(
            "results/{subject}/reconstruction/grid.png",
            caption="../report/reconstruction.rst",
            category="Reconstruction",
            labels={"subject": "{subject}"},
        ),
    params:
        settings=dict(RECON),
    log:
        "results/logs/reconstruction/{subject}_grid.log",
    benchmark:
        "results/benchmarks/reconstruction/{subject}_grid.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10 if not TINY_MODEL else 5,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/reconstruct_grid.py"


TARGETS += expand(
    "results/{subject}/reconstruction/{name}", subject=SUBJECTS, name=["recons.h5", "grid.png"]
)
