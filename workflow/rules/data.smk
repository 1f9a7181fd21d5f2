# Data stage: the synthetic mini-NSD (data.source: synthetic) or the real NSD
# (download rules below), then ingestion into per-subject arrays.

if SYNTHETIC:

    rule synthetic_nsd:
        """Write the synthetic mini-NSD in NSD's layout, with a planted brain-feature relation."""
        output:
            synthetic_outputs(),
        params:
            subjects=config["data"]["subjects"],
            n_sessions=config["data"]["n_sessions"],
            synthetic=config["synthetic"],
            pycortex_cache="results/pycortex",
        log:
            "results/logs/synthetic_nsd.log",
        benchmark:
            "results/benchmarks/synthetic_nsd.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=15,
        conda:
            "../../envs/cpu.yaml"
        script:
            "../scripts/synthetic_nsd.py"


rule stimuli_table:
    """The images the configured subjects saw, checked against imgBrick and the captions."""
    input:
        responses=[subject_files(s)["responses"] for s in SUBJECTS],
        **shared_nsd_files(),
    output:
        "results/stimuli/stimuli.tsv",
    params:
        n_sessions=config["data"]["n_sessions"],
    log:
        "results/logs/stimuli_table.log",
    benchmark:
        "results/benchmarks/stimuli_table.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/stimuli_table.py"


rule ingest:
    """One subject's betas -> float32 train/test arrays per ROI (divided by 300, z-scored per session)."""
    input:
        betas=betas_files,
        brainmask=subject_input("brainmask"),
        streams=subject_input("streams"),
        prf=subject_input("prf"),
        responses=[subject_files(s)["responses"] for s in SUBJECTS],
        expdesign=nsd_file("expdesign"),
    output:
        ingest_outputs(),
    params:
        subjects=SUBJECTS,
        rois=config["ingest"]["rois"],
        zscore=config["ingest"]["zscore_per_session"],
        bad_sessions=config["ingest"]["bad_sessions"],
    log:
        "results/logs/{subject}/ingest.log",
    benchmark:
        "results/benchmarks/{subject}/ingest.tsv"
    threads: 1
    resources:
        # one session of brain-mask voxels (750 trials x ~250k voxels float32) plus the test sums
        mem_mb=6000,
        runtime=120,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/ingest.py"


TARGETS += ["results/stimuli/stimuli.tsv"] + [f for s in SUBJECTS for f in ingest_outputs(s)]


# >>> download rules
# Fetch the real NSD files (data.source: nsd) into nsd_root, mirroring the bucket's
# keys, and COCO's caption JSONs. Defined only for the real data, so they never
# compete with the synthetic generator, which writes the same paths.
if not SYNTHETIC:

    rule download_nsd:
        """Fetch every NSD file the configured subjects and sessions need."""
        input:
            all_nsd_files(),

    rule download_nsd_file:
        """One NSD file from the public bucket (anonymous S3; resumable, size-checked)."""
        output:
            os.path.join(NSD_ROOT, "{key}"),
        wildcard_constraints:
            key=NSD_KEY_PATTERN,
        params:
            key="{key}",
            endpoint_url=config["download"]["endpoint_url"],
            bucket=config["download"]["bucket"],
        log:
            "results/logs/download/{key}.log",
        benchmark:
            "results/benchmarks/download/{key}.tsv"
        retries: 3
        threads: 1
        resources:
            mem_mb=512,
            runtime=download_runtime,
        conda:
            "../../envs/cpu.yaml"
        script:
            "../scripts/download_nsd.py"

    rule download_coco_captions:
        """COCO 2017 caption JSONs, extracted from COCO's annotation archive (~250 MB)."""
        output:
            train=nsd_file("captions_train"),
            val=nsd_file("captions_val"),
        params:
            url=config["download"]["coco_annotations_url"],
        log:
            "results/logs/download/coco_captions.log",
        benchmark:
            "results/benchmarks/download/coco_captions.tsv"
        retries: 3
        threads: 1
        resources:
            mem_mb=512,
            runtime=60,
        conda:
            "../../envs/cpu.yaml"
        script:
            "../scripts/download_coco.py"
# <<< download rules
