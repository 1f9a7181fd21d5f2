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
