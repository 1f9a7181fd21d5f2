# The model every GPU stage loads (features, reconstruction) and the features' settings:
# helpers only (snakemake --lint wants functions apart from rules). Included by features.smk.
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from brainldm.feature_keys import family_config

MODEL = config["model"]
TINY_MODEL = MODEL["name"] == "tiny"
TINY_MODEL_DIR = "results/models/tiny"
# The tiny model's tokenizer, CLIP's own, built by `make install` (brainldm.clip_tokenizer)
# into the repository's resources/: an absolute path, the same whichever folder snakemake
# runs in (--directory), so a run from another working directory does not see a changed
# input set.
TINY_TOKENIZER_DIR = os.path.join(REPO_DIR, "resources", "clip_tokenizer")
# Real models run on a GPU when there is one; the tiny model is CPU work.
FEATURES_GPU = 0 if TINY_MODEL else 1
FEATURES_ENV = "../envs/cpu.yaml" if TINY_MODEL else "../envs/gpu.yaml"
# The tiny model's small ops gain nothing from a second thread (and lose a lot on a
# busy machine); the real model's CPU side (image resizing, I/O) uses two.
FEATURES_THREADS = 1 if TINY_MODEL else 2
# Minutes for ~40k images (four NSD subjects) on one GPU; the tiny model needs a few.
# (zc includes the U-Net activations, collected in the same img2img pass; its first
# attempt asks for 24 h, within most sites' limit, a retry resumes for 48 h more.)
FEATURES_RUNTIME = {"z": 120, "c": 120, "zc": 1440, "unet": 1440} if not TINY_MODEL else dict.fromkeys(("z", "c", "zc", "unet"), 10)
FEATURES_MEM_MB = {"z": 8000, "c": 10000, "zc": 12000, "unet": 12000} if not TINY_MODEL else dict.fromkeys(("z", "c", "zc", "unet"), 2000)


def check_model():
    """Stop the DAG construction (also of a dry run) when model.name is a hub id not
    in the local cache (with model.local_files_only) or a folder lacking components;
    the message names model.name and the download command. The tiny model is built
    by the workflow; only its tokenizer (built by make install) must be there."""
    if TINY_MODEL:
        from brainldm.clip_tokenizer import TokenizerBuildError, check_tokenizer_dir

        try:
            check_tokenizer_dir(TINY_TOKENIZER_DIR)
        except TokenizerBuildError as err:
            raise WorkflowError(f"model.name 'tiny' cannot be built: {err}") from None
        return
    from brainldm.model_files import ModelError, check_model_folder, resolve_model

    try:
        source = resolve_model(MODEL["name"], MODEL["local_files_only"])
        if Path(source).is_dir():
            check_model_folder(source)
    except ModelError as err:
        raise WorkflowError(f"model.name {MODEL['name']!r} cannot be used: {err}") from None


if workflow.is_main_process:  # once, before anything is downloaded or computed
    check_model()


def model_path():
    """The folder or hub id every rule loads with brainldm.models.load_pipeline."""
    return TINY_MODEL_DIR if TINY_MODEL else MODEL["name"]


def model_inputs():
    """Input files of every job that loads the model (input model=...): the tiny
    model's index, a local folder's index, or nothing for a hub id (read from the
    Hugging Face cache)."""
    if TINY_MODEL:
        return [f"{TINY_MODEL_DIR}/model_index.json"]
    if Path(MODEL["name"]).is_dir():
        return [str(Path(MODEL["name"]) / "model_index.json")]
    return []


def model_device():
    """None (CUDA if available, else CPU) or the configured device."""
    return None if MODEL["device"] == "auto" else MODEL["device"]


def model_param(wildcards, input):
    """For params model=... of jobs with input model=model_inputs(): the folder to
    load (derived from the input, so nothing path-like is hard-coded) or the hub id."""
    files = [input.model] if isinstance(input.model, str) else list(input.model)
    return os.path.dirname(files[0]) if files else MODEL["name"]


def features_settings(*families):
    """The features: keys that change these families' values (tracked as params)."""
    out = {}
    for family in families:
        out.update(family_config(family, config["features"]))
    return out


def features_disk_mb(*families):
    """Disk (MB) a features job needs at its peak: its shards plus the gathered file (2 copies;
    after the gather the shards become a hard link to it, so 1 copy remains), for
    at most 10,000 images per configured subject (NSD: 73,000 in all), in features.dtype.
    Per image: z 4 x (z_resolution/8)^2; c 77 x 768; zc that x (strengths + fractions);
    unet SD v1's 3,200 block channels x pool^2 x fractions. The tiny model: 200 MB."""
    if TINY_MODEL:
        return 200
    f = config["features"]
    latent = 4 * (f["z_resolution"] // 8) ** 2
    values = {"z": latent, "c": 77 * 768, "zc": latent * (len(f["strengths"]) + len(f["fractions"])),
              "unet": 3200 * max(1, f["unet_pool_size"]) ** 2 * len(f["fractions"])}
    n_images = min(73000, 10000 * len(config["data"]["subjects"]))
    item = 2 if f["dtype"] == "float16" else 4
    return int(100 + 2 * n_images * item * sum(values[k] for k in families) / 1e6)


def features_inputs(wildcards):
    """Inputs of the features job of family z (the stimulus images) or c (the captions)."""
    common = {"table": "results/stimuli/stimuli.tsv", "model": model_inputs()}
    if wildcards.family == "z":
        return {**common, "stimuli": nsd_file("stimuli")}
    return {
        **common,
        "stim_info": nsd_file("stim_info"),
        "captions_train": nsd_file("captions_train"),
        "captions_val": nsd_file("captions_val"),
    }
