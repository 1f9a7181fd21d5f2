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
    kind = "betas_" + config["data"]["betas_format"]
    return [nsd_file(kind, wildcards.subject, s) for s in SESSIONS]


def subject_files(subject):
    """The per-subject NSD files ingestion needs besides the betas."""
    return {
        "brainmask": nsd_file("brainmask", subject),
        "streams": nsd_file("roi_streams", subject),
        "prf": nsd_file("roi_prf-visualrois", subject),
        "responses": nsd_file("responses", subject),
    }


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
    kind = "betas_" + config["data"]["betas_format"]
    for subject in SUBJECTS:
        files += list(subject_files(subject).values())
        files += [nsd_file(kind, subject, s) for s in SESSIONS]
    return files
