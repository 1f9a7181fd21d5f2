# Ridge decoders from fMRI to the model's z and c (see docs/contracts.md and
# src/brainldm/decoding.py): one job per subject and target.
DECODING = config["decoding"]
DECODING_TARGETS = dict(DECODING["targets"])
# himalaya on a GPU (torch_cuda, or auto where one is present) for the big c decoder.
DECODING_GPU = 1 if DECODING["backend"] in ("auto", "torch_cuda") else 0
for _target, _rois in DECODING_TARGETS.items():
    for _roi in _rois:
        if _roi not in ROIS:
            raise ValueError(
                f"config decoding.targets.{_target}: ROI {_roi!r} is not ingested; "
                f"use one of {ROIS} (keys of ingest.rois, plus brain)"
            )


def decoding_betas(split):
    """Input function: the betas of the target's ROIs, in config order."""

    def files(wildcards):
        return [
            f"results/{wildcards.subject}/ingest/betas_{roi}_{split}.npy"
            for roi in DECODING_TARGETS[wildcards.target]
        ]

    return files


def decoding_settings():
    """The decoding config keys that change the decoded features."""
    keys = ["alphas", "cv_folds", "cv_by_session", "fit_intercept", "backend",
            "n_targets_batch", "n_alphas_batch", "shuffle_control", "seed"]
    return {k: DECODING[k] for k in keys}


def decoding_rois(wildcards):
    """The ROIs whose betas are h-stacked for this target."""
    return DECODING_TARGETS[wildcards.target]


def decoding_runtime(wildcards):
    """Minutes: the c decoder (59,136 targets at SD v1.4 size) dominates."""
    return 240 if wildcards.target == "c" else 60


def decoding_mem_mb(wildcards, input):
    """X and Y in float32, one centred copy and the solver's work arrays: about
    twice the betas plus twice the feature file (an upper bound of Y_train)."""
    return int(1000 + 2 * input.size_mb)


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
        settings=decoding_settings(),
    log:
        "results/logs/decoding/{subject}_{target}.log",
    benchmark:
        "results/benchmarks/decoding/{subject}_{target}.tsv"
    threads: 2
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
