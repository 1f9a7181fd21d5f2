# Ridge decoders from fMRI to the model's z and c (see docs/contracts.md and
# src/brainldm/decoding.py): one job per subject and target.
include: "decoding_common.smk"


rule decode:
    """Fit the ridge decoder of one target for one subject and decode the test images."""
    input:
        train=decoding_betas("train"),
        test=decoding_betas("test"),
        train_tsv="results/{subject}/ingest/train.tsv",
        test_tsv="results/{subject}/ingest/test.tsv",
        features="results/features/{target}.h5",
    output:
        npz="results/{subject}/decoding/{target}.npz",
        scores="results/{subject}/decoding/{target}_scores.tsv",
    wildcard_constraints:
        target="|".join(DECODING_TARGETS) or "z|c",
    params:
        rois=decoding_rois,
        settings=DECODING_SETTINGS,
    log:
        "results/logs/decoding/{subject}_{target}.log",
    benchmark:
        "results/benchmarks/decoding/{subject}_{target}.tsv"
    threads: DECODING_THREADS
    resources:
        mem_mb=decoding_mem_mb,
        runtime=decoding_runtime,
        gpu=DECODING_GPU,
    conda:
        "../envs/gpu.yaml" if DECODING_GPU else "../envs/cpu.yaml"
    script:
        "../scripts/decode.py"


rule decoding_scores:
    """All subjects' and targets' decoding scores in one table."""
    input:
        expand("results/{subject}/decoding/{target}_scores.tsv", subject=SUBJECTS,
               target=list(DECODING_TARGETS)),
    output:
        "results/decoding/scores.tsv",
    log:
        "results/logs/decoding/scores.log",
    benchmark:
        "results/benchmarks/decoding/scores.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/decoding_scores.py"


TARGETS += ["results/decoding/scores.tsv"]
