# Helpers shared by every stage: subjects, sessions, NSD paths, targets.
import os
import sys

from brainldm import nsd_copy, nsd_layout

SUBJECTS = [nsd_layout.subject_name(s) for s in config["data"]["subjects"]]
NSD_ROOT = config["data"]["nsd_root"]
SYNTHETIC = config["data"]["source"] == "synthetic"


def synthetic_sessions():
    """{subject: sessions the synthetic generator writes}: synthetic.n_sessions, one
    number (one fewer for every second subject with synthetic.nsd_quirks) or a
    per-subject mapping (see brainldm.nsd_layout.synthetic_session_counts)."""
    counts = nsd_layout.synthetic_session_counts(
        config["synthetic"]["n_sessions"],
        config["data"]["subjects"],
        config["synthetic"]["nsd_quirks"],
    )
    return {nsd_layout.subject_name(s): n for s, n in counts.items()}


# {subject: session numbers used}, from data.sessions and what each subject has: the
# synthetic generator's synthetic.n_sessions, or the real copy's responses.tsv (NSD's
# published counts for a subject whose responses.tsv is not there yet).
SESSIONS_BY_SUBJECT = nsd_copy.resolve_sessions(
    config["data"]["sessions"],
    SUBJECTS,
    synthetic_sessions()
    if SYNTHETIC
    else nsd_copy.available_sessions(NSD_ROOT, SUBJECTS),
)
N_SESSIONS = {s: len(v) for s, v in SESSIONS_BY_SUBJECT.items()}
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
    """Path of one NSD file under nsd_root (see brainldm.nsd_layout.relpath)."""
    return os.path.join(NSD_ROOT, nsd_layout.relpath(kind, subject=subject, session=session))


def betas_files(wildcards):
    """The configured sessions' betas of one subject, in the configured format."""
    kind = f"betas_{config['data']['betas_format']}"
    return [nsd_file(kind, wildcards.subject, s) for s in SESSIONS_BY_SUBJECT[wildcards.subject]]


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


def all_nsd_keys():
    """Keys (paths under nsd_root) of every NSD file the configured subjects and sessions need."""
    return nsd_copy.needed_keys(
        SUBJECTS, SESSIONS_BY_SUBJECT, config["data"]["betas_format"]
    )


def all_nsd_files():
    """Every NSD file the method needs for the configured subjects and sessions."""
    return [os.path.join(NSD_ROOT, key) for key in all_nsd_keys()]


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
    generated = synthetic_sessions()  # data.sessions may use fewer
    files += [
        nsd_file(f"betas_{fmt}", s, n)
        for fmt in ("hdf5", "nifti")
        for s in SUBJECTS
        for n in range(1, generated[s] + 1)
    ]
    files = list(dict.fromkeys(files))
    truth = ["low_level.npy", "attributes.npy", "attribute_names.json"] + [f"{s}.npz" for s in SUBJECTS]
    files += [os.path.join(NSD_ROOT, "ground_truth", name) for name in truth]
    return files


def download_runtime(wildcards):
    """Minutes to allow for one NSD file on a slow (~1-2 MB/s) link."""
    if wildcards.key.endswith("nsd_stimuli.hdf5"):  # ~37 GB
        return 720
    if wildcards.key.startswith("nsddata_betas/"):  # ~1 GB per session
        return 60
    return 15
