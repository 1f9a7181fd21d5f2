# Helpers of the encoding stage (encoding.smk).
ENCODING = config.get("encoding", {})
ENCODING_ANALYSES = list(ENCODING.get("analyses", ["single", "noise", "stage", "layers"]))
# The config keys that change the fitted results (tracked as params).
ENCODING_SETTINGS = {
    k: ENCODING[k]
    for k in ("n_components", "alphas", "cv_folds", "n_iter", "backend", "n_targets_batch",
              "voxel_batch", "q", "zc_strength", "noise_levels", "fractions", "layers", "seed")
    if k in ENCODING
}
# The config keys that change the maps.
ENCODING_MAP_SETTINGS = {
    k: ENCODING.get(k)
    for k in ("pycortex_subject", "pycortex_xfm", "pycortex_filestore", "r_vmax")
}
# himalaya on a GPU (torch_cuda, or auto where one is present) for NSD-size fits.
ENCODING_GPU = 1 if ENCODING.get("backend", "auto") in ("auto", "torch_cuda") and not SYNTHETIC else 0
ENCODING_THREADS = 2 if SYNTHETIC else 4


def encoding_mem_mb(wildcards, input):
    """Train betas of one voxel batch in float32 plus the solver's copies (about 4x),
    bounded by 4x the whole train betas file, plus features/PCA headroom."""
    batch = ENCODING.get("voxel_batch", 20000) or 10**9
    # rows x batch x 4 bytes; NSD: 27,750 trials -> 2.2 GB per 20,000 voxels
    rows_mb = input.size_mb  # all inputs; an upper bound of the betas
    per_batch_mb = min(rows_mb, 30000 * batch * 4 / 1e6)
    return int(1500 + 4 * per_batch_mb)


def encoding_brainmask(wildcards):
    """The subject's brain mask: grid and affine of the NIfTI maps."""
    return subject_files(wildcards.subject)["brainmask"]


ENCODING_BETAS = dict(
    train="results/{subject}/ingest/betas_brain_train.npy",
    test="results/{subject}/ingest/betas_brain_test.npy",
    train_tsv="results/{subject}/ingest/train.tsv",
    test_tsv="results/{subject}/ingest/test.tsv",
)
