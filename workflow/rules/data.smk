# Data stage: the synthetic mini-NSD (data.source: synthetic) or the real NSD
# (download rules below), then ingestion into per-subject arrays.

INGEST_FILES = ["train.tsv", "test.tsv"] + [
    f"{kind}_{roi}{suffix}"
    for roi in ROIS
    for kind, suffix in (("betas", "_train.npy"), ("betas", "_test.npy"), ("voxels", ".npy"))
]


def ingest_outputs(subject="{subject}"):
    """The files ingestion writes for one subject (see docs/contracts.md)."""
    return [f"results/{subject}/ingest/{name}" for name in INGEST_FILES]


if SYNTHETIC:

    def synthetic_outputs():
        """Every NSD file the generator writes: both betas formats, plus the ground truth."""
        files = all_nsd_files()
        other = "nifti" if config["data"]["betas_format"] == "hdf5" else "hdf5"
        files += [nsd_file("betas_" + other, s, n) for s in SUBJECTS for n in SESSIONS]
        files += [os.path.join(NSD_ROOT, "ground_truth", f"{s}.npz") for s in SUBJECTS]
        return files

    rule synthetic_nsd:
        """Write the synthetic mini-NSD in NSD's layout, with a planted brain-feature relation."""
        output:
            synthetic_outputs(),
        params:
            root=NSD_ROOT,
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
        "../envs/cpu.yaml"
    script:
        "../scripts/stimuli_table.py"


rule ingest:
    """One subject's betas -> float32 train/test arrays per ROI (divided by 300, z-scored per session)."""
    input:
        betas=betas_files,
        brainmask=lambda w: subject_files(w.subject)["brainmask"],
        streams=lambda w: subject_files(w.subject)["streams"],
        prf=lambda w: subject_files(w.subject)["prf"],
        responses=[subject_files(s)["responses"] for s in SUBJECTS],
        expdesign=nsd_file("expdesign"),
    output:
        ingest_outputs(),
    params:
        subjects=SUBJECTS,
        rois=config["ingest"]["rois"],
        zscore=config["ingest"]["zscore_per_session"],
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
        "../envs/cpu.yaml"
    script:
        "../scripts/ingest.py"


TARGETS += ["results/stimuli/stimuli.tsv"] + [f for s in SUBJECTS for f in ingest_outputs(s)]


# >>> download rules
# Fetch the real NSD files (data.source: nsd) into nsd_root, mirroring the bucket's
# keys, and COCO's caption JSONs. Defined only for the real data, so they never
# compete with the synthetic generator, which writes the same paths.
if not SYNTHETIC:

    # Keys of the files the method reads (see brainldm.nsd.relpath); nothing else.
    NSD_KEY_PATTERN = (
        r"(?:nsddata/experiments/nsd/nsd_(?:expdesign\.mat|stim_info_merged\.csv)"
        r"|nsddata/ppdata/subj0[1-8]/behav/responses\.tsv"
        r"|nsddata/ppdata/subj0[1-8]/func1pt8mm/(?:brainmask|roi/[A-Za-z0-9_-]+)\.nii\.gz"
        r"|nsddata_betas/ppdata/subj0[1-8]/func1pt8mm/betas_fithrf_GLMdenoise_RR/"
        r"betas_session\d\d\.(?:hdf5|nii\.gz)"
        r"|nsddata_stimuli/stimuli/nsd/nsd_stimuli\.hdf5)"
    )

    def download_runtime(wildcards):
        """Minutes to allow for one NSD file on a slow (~1-2 MB/s) link."""
        if wildcards.key.endswith("nsd_stimuli.hdf5"):  # ~37 GB
            return 720
        if wildcards.key.startswith("nsddata_betas/"):  # ~1 GB per session
            return 60
        return 15

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
            "../envs/cpu.yaml"
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
            "../envs/cpu.yaml"
        script:
            "../scripts/download_coco.py"
# <<< download rules
