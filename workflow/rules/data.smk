# Data stage: the synthetic mini-NSD (data.source: synthetic) or the real NSD
# (download rules below), then ingestion into per-subject arrays.

if SYNTHETIC:

    rule synthetic_nsd:
        """Write the synthetic mini-NSD in NSD's layout, with a planted brain-feature relation."""
        output:
            synthetic_outputs(),
        params:
            subjects=config["data"]["subjects"],
            n_sessions=config["synthetic"]["n_sessions"],
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
            "../envs/cpu.yaml"
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
        subjects=SUBJECTS,
        n_sessions=N_SESSIONS,
    log:
        "results/logs/stimuli_table.log",
    benchmark:
        "results/benchmarks/stimuli_table.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
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
        sessions=N_SESSIONS,
    log:
        "results/logs/{subject}/ingest.log",
    benchmark:
        "results/benchmarks/{subject}/ingest.tsv"
    threads: 1
    resources:
        # benchmarks/ingest.py, 40 sessions x 750 trials, 209,854 brain voxels: 1.6 min and 3.9 GB peak RSS
        # (HDF5, local SSD); about 19 KB per brain voxel (the float64 test sums, two sessions in flight)
        mem_mb=5000,
        runtime=60,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/ingest.py"


TARGETS += ["results/stimuli/stimuli.tsv"] + [f for s in SUBJECTS for f in ingest_outputs(s)]


# >>> download rules
# Fetch the real NSD files (data.source: nsd) into nsd_root, mirroring the bucket's
# keys, and COCO's caption JSONs. Defined only for the real data, so they never
# compete with the synthetic generator, which writes the same paths.
# An NSD file that exists at parse time is never an output of any rule: the {key}
# wildcard matches only the missing keys, so no Snakemake option (--forceall,
# --forcerun, --rerun-triggers, a changed rule) can delete or re-fetch it; the
# consumers read it as a plain input. A file downloaded by an earlier run is, on
# the next parse, just an existing file too.
if not SYNTHETIC:
    NSD_PRESENT, NSD_MISSING = nsd_copy.split_present(NSD_ROOT, all_nsd_keys())
    NSD_MISSING_BUCKET = [k for k in NSD_MISSING if not nsd_copy.is_coco_key(k)]
    NSD_MISSING_COCO = {
        name: nsd_file(kind)
        for name, kind in (("train", "captions_train"), ("val", "captions_val"))
        if nsd_layout.relpath(kind) in NSD_MISSING
    }
    if workflow.is_main_process:  # once, in the process that plans the DAG (not in each job)
        print(
            nsd_copy.summary(
                NSD_ROOT,
                NSD_PRESENT,
                NSD_MISSING,
                nsd_copy.object_sizes(
                    NSD_MISSING, config["download"]["endpoint_url"], config["download"]["bucket"]
                ),
            ),
            file=sys.stderr,
        )

    rule download_nsd:
        """Fetch every NSD file the configured subjects and sessions need."""
        input:
            all_nsd_files(),

    rule download_nsd_file:
        """One missing NSD file from the public bucket (anonymous S3; resumable, size-checked)."""
        output:
            os.path.join(NSD_ROOT, "{key}"),
        wildcard_constraints:
            key=nsd_copy.key_constraint(NSD_MISSING_BUCKET),
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
            "../envs/download.yaml"
        script:
            "../scripts/download_nsd.py"

    if NSD_MISSING_COCO:

        rule download_coco_captions:
            """The missing COCO 2017 caption JSONs, from COCO's annotation archive (~250 MB)."""
            output:
                **NSD_MISSING_COCO,
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
                "../envs/download.yaml"
            script:
                "../scripts/download_coco.py"
# <<< download rules
