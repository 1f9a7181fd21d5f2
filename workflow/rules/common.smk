# Helpers shared by every stage: subjects, sessions, NSD paths, targets.
import os

from brainldm import nsd

SUBJECTS = [nsd.subject_name(s) for s in config["data"]["subjects"]]
SESSIONS = list(range(1, config["data"]["n_sessions"] + 1))
NSD_ROOT = config["data"]["nsd_root"]
SYNTHETIC = config["data"]["source"] == "synthetic"
ROIS = list(config["ingest"]["rois"]) + ["brain"]


wildcard_constraints:
    subject=r"subj0[1-8]",
    session=r"\d\d",
    roi=r"[A-Za-z][A-Za-z0-9_-]*",
    shard=r"\d+",


# Each stage file appends the files `rule all` asks for.
TARGETS = []


def all_targets():
    """Every final output of the stages included so far."""
    return TARGETS


def nsd_file(kind, subject=None, session=None):
    """Path of one NSD file under nsd_root (see brainldm.nsd.relpath)."""
    return os.path.join(NSD_ROOT, nsd.relpath(kind, subject=subject, session=session))


def betas_files(wildcards):
    """The configured sessions' betas of one subject, in the configured format."""
    kind = f"betas_{config['data']['betas_format']}"
    return [nsd_file(kind, wildcards.subject, s) for s in SESSIONS]


def subject_files(subject):
    """The per-subject NSD files ingestion needs besides the betas."""
    return {
        "brainmask": nsd_file("brainmask", subject),
        "streams": nsd_file("roi_streams", subject),
        "prf": nsd_file("roi_prf-visualrois", subject),
        "responses": nsd_file("responses", subject),
    }


def subject_input(name):
    """Input function: one of subject_files() for the job's {subject}."""

    def _input(wildcards):
        return subject_files(wildcards.subject)[name]

    return _input


def shared_nsd_files():
    """The NSD files every subject shares."""
    return {
        "expdesign": nsd_file("expdesign"),
        "stim_info": nsd_file("stim_info"),
        "stimuli": nsd_file("stimuli"),
        "captions_train": nsd_file("captions_train"),
        "captions_val": nsd_file("captions_val"),
    }


def all_nsd_files():
    """Every NSD file the method needs for the configured subjects and sessions."""
    files = list(shared_nsd_files().values())
    kind = f"betas_{config['data']['betas_format']}"
    for subject in SUBJECTS:
        files += list(subject_files(subject).values())
        files += [nsd_file(kind, subject, s) for s in SESSIONS]
    return files


# ---- data stage helpers
INGEST_FILES = ["train.tsv", "test.tsv", "sessions.tsv"] + [
    f"{kind}_{roi}{suffix}"
    for roi in ROIS
    for kind, suffix in (("betas", "_train.npy"), ("betas", "_test.npy"), ("voxels", ".npy"))
]


def ingest_outputs(subject="{subject}"):
    """The files ingestion writes for one subject (see docs/contracts.md)."""
    return [f"results/{subject}/ingest/{name}" for name in INGEST_FILES]


def synthetic_outputs():
    """Every NSD file the generator writes: both betas formats, plus the ground truth."""
    files = all_nsd_files()
    other = "nifti" if config["data"]["betas_format"] == "hdf5" else "hdf5"
    files += [nsd_file(f"betas_{other}", s, n) for s in SUBJECTS for n in SESSIONS]
    truth = ["low_level.npy", "attributes.npy", "attribute_names.json"] + [f"{s}.npz" for s in SUBJECTS]
    files += [os.path.join(NSD_ROOT, "ground_truth", name) for name in truth]
    return files


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
