# Evaluation of the reconstructions (see docs/contracts.md and src/brainldm/metrics.py):
# per subject, every test image and sample through each metric network once
# (scores.tsv, sample_scores.tsv); then the subjects pooled into metrics.csv/.md/.png
# and the Wilcoxon comparisons of the conditions.
EVAL = config["evaluation"]
# Random-weight networks are demo work on the CPU (one thread each, so two subjects
# share the 2 demo cores); pretrained ViT-L/14 and friends want a GPU.
EVAL_RANDOM = EVAL["metrics_weights"] == "random"
EVAL_GPU = 0 if EVAL_RANDOM else 1
EVAL_ENV = "../envs/cpu.yaml" if EVAL_RANDOM else "../envs/gpu.yaml"
EVAL_THREADS = 1 if EVAL_RANDOM else 2

# The config keys that decide the networks' weights (tracked as params).
EVAL_WEIGHTS = {
    "mode": EVAL["metrics_weights"],
    "seed": EVAL["seed"],
    "torch_weights_dir": EVAL["torch_weights_dir"],
    "clip_model": EVAL["clip_model"],
    "swav_weights": EVAL["swav_weights"],
}


# With pretrained weights, say at start-up which metric networks will be scored as
# unavailable (NaN), before any GPU hour is spent.
if workflow.is_main_process and not EVAL_RANDOM:
    from brainldm.metric_weights import WeightsConfig, missing_weights

    for _name, _why in missing_weights(WeightsConfig(**EVAL_WEIGHTS)).items():
        print(f"warning: metric network {_name} will be reported as unavailable: {_why}", file=sys.stderr)


rule evaluate_subject:
    """Score one subject's reconstructions: identification (both conventions), PixCorr, SSIM,
    distances, top-1 retrieval (decoded c vs true c; CLIP embeddings of the reconstructions) and
    brain correlation (a z -> voxels ridge predicts each reconstruction's pattern; r with the
    measured test betas per ROI)."""
    input:
        recons="results/{subject}/reconstruction/recons.h5",
        decoded_c="results/{subject}/decoding/c.npz",
        true_c="results/features/c.h5",
        # brain correlation: the z encoding model's training data and the measured test betas
        z="results/features/z.h5",
        model=model_inputs(),
        ingest_train="results/{subject}/ingest/betas_brain_train.npy",
        ingest_test="results/{subject}/ingest/betas_brain_test.npy",
        ingest_train_tsv="results/{subject}/ingest/train.tsv",
        ingest_test_tsv="results/{subject}/ingest/test.tsv",
        **{f"voxels_{roi}": f"results/{{subject}}/ingest/voxels_{roi}.npy" for roi in ROIS},
    output:
        scores="results/{subject}/evaluation/scores.tsv",
        samples="results/{subject}/evaluation/sample_scores.tsv",
        retrieval="results/{subject}/evaluation/retrieval.tsv",
    params:
        weights=EVAL_WEIGHTS,
        image_size=dict(EVAL["image_size"]),
        retrieval=dict(EVAL["retrieval"]),
        conditions=list(EVAL["conditions"]),
        batch_size=EVAL["batch_size"],
        rois=ROIS,
        model=model_param,
        local_files_only=MODEL["local_files_only"],
        device=model_device(),
        z_settings=features_settings("z"),
        encoding={k: config["encoding"][k] for k in ("alphas", "cv_folds", "backend", "voxel_batch")},
    log:
        "results/logs/evaluation/{subject}_scores.log",
    benchmark:
        "results/benchmarks/evaluation/{subject}_scores.tsv"
    threads: EVAL_THREADS
    resources:
        mem_mb=3000 if EVAL_RANDOM else 12000,
        runtime=15 if EVAL_RANDOM else 180,
        gpu=EVAL_GPU,
    conda:
        EVAL_ENV
    script:
        "../scripts/evaluate_subject.py"


rule evaluation_summary:
    """Pool the subjects: metrics table (CSV, Markdown), Fig.-5-like bars, Wilcoxon tests."""
    input:
        scores=expand("results/{subject}/evaluation/scores.tsv", subject=SUBJECTS),
        retrieval=expand("results/{subject}/evaluation/retrieval.tsv", subject=SUBJECTS),
        sessions=expand("results/{subject}/ingest/sessions.tsv", subject=SUBJECTS),
    output:
        csv="results/evaluation/metrics.csv",
        md=report(
            "results/evaluation/metrics.md",
            caption="../report/metrics_table.rst",
            category="Evaluation",
            labels={"figure": "metrics table"},
        ),
        png=report(
            "results/evaluation/metrics.png",
            caption="../report/metrics.rst",
            category="Evaluation",
            labels={"figure": "metrics"},
        ),
        wilcoxon="results/evaluation/wilcoxon.tsv",
    params:
        conditions=list(EVAL["conditions"]),
        alpha=EVAL["alpha"],
        subjects=SUBJECTS,
    log:
        "results/logs/evaluation/summary.log",
    benchmark:
        "results/benchmarks/evaluation/summary.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/evaluate_summary.py"


TARGETS += [
    "results/evaluation/metrics.csv",
    "results/evaluation/metrics.md",
    "results/evaluation/metrics.png",
    "results/evaluation/wilcoxon.tsv",
] + expand(
    "results/{subject}/evaluation/{name}.tsv",
    subject=SUBJECTS,
    name=["scores", "sample_scores", "retrieval"],
)
