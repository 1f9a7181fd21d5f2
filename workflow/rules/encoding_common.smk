# Helpers of the encoding stage (encoding.smk).
ENCODING = config["encoding"]  # every key has its default from the schema
ENCODING_ANALYSES = list(ENCODING["analyses"])
# The feature families each analysis fits on (the inputs of rule encode).
ENCODING_FEATURES = {"single": ("z", "c", "zc"), "noise": ("z", "zc"), "stage": ("z", "zc"), "layers": ("unet",)}
# The config keys that change the maps; every other key (but analyses) changes the
# fitted results (tracked as params).
MAP_KEYS = ("pycortex_subject", "pycortex_xfm", "pycortex_filestore", "pycortex_resample", "r_vmax")
ENCODING_SETTINGS = {k: v for k, v in ENCODING.items() if k not in MAP_KEYS and k != "analyses"}
ENCODING_MAP_SETTINGS = {k: ENCODING[k] for k in MAP_KEYS}
# himalaya on a GPU (torch_cuda, or auto where one is present) for NSD-size fits.
ENCODING_GPU = 1 if ENCODING["backend"] in ("auto", "torch_cuda") and not SYNTHETIC else 0
ENCODING_THREADS = 2 if SYNTHETIC else 4
# Minutes per analysis at NSD size on one GPU (a single fit, or the banded fits per level).
ENCODING_RUNTIME = {"single": 240, "noise": 480, "stage": 480, "layers": 480} if not SYNTHETIC else dict.fromkeys(ENCODING_FEATURES, 10)


def encoding_inputs(wildcards):
    """Betas and trial tables of the subject, and the feature files of the analysis."""
    betas = {k: v.format(subject=wildcards.subject) for k, v in ENCODING_BETAS.items()}
    features = {family: f"results/features/{family}.h5" for family in ENCODING_FEATURES[wildcards.analysis]}
    return {**betas, **features}


def encoding_mem_mb(wildcards, input):
    """Train betas of one voxel batch in float32 plus the solver's copies (about 4x),
    bounded by 4x the whole train betas file, plus features/PCA headroom."""
    batch = ENCODING["voxel_batch"] or 10**9
    # rows x batch x 4 bytes; NSD: 27,750 trials -> 2.2 GB per 20,000 voxels
    rows_mb = input.size_mb  # all inputs; an upper bound of the betas
    per_batch_mb = min(rows_mb, 30000 * batch * 4 / 1e6)
    mem = int(1500 + 4 * per_batch_mb)
    if wildcards.analysis in ("noise", "stage") and not SYNTHETIC:
        # banded z+zc fits (brainldm.banded): benchmarks/encoding.py projects ~17 GB at NSD's
        # 6,400 + 6,400 components and voxel_batch 20,000 (3 GB measured at 1,600 + 1,600)
        mem = max(mem, 20000)
    return mem


def encoding_brainmask(wildcards):
    """The subject's brain mask: grid and affine of the NIfTI maps."""
    return subject_files(wildcards.subject)["brainmask"]


ENCODING_BETAS = dict(
    train="results/{subject}/ingest/betas_brain_train.npy",
    test="results/{subject}/ingest/betas_brain_test.npy",
    train_tsv="results/{subject}/ingest/train.tsv",
    test_tsv="results/{subject}/ingest/test.tsv",
)
