"""Parse-time view of an NSD copy: which needed files exist, which are missing.

The workflow never makes an existing NSD file a rule output: the download rules'
``{key}`` wildcard is constrained to the missing keys (:func:`key_constraint`), so
no Snakemake command (``--forceall``, ``--forcerun``, ``--rerun-triggers``, a
changed rule) can delete, overwrite or re-fetch a file that is already there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from brainldm.nsd_layout import COCO_KINDS, relpath

#: Seconds to wait for the bucket when asking for the size of missing files.
HEAD_TIMEOUT = 3.0

#: Missing keys named one by one in the summary; the rest are counted.
MAX_LISTED = 12

#: A regex that matches no string at all (for a copy that lacks nothing).
MATCH_NOTHING = r"(?!x)x"


def needed_keys(
    subjects: Sequence[str], sessions: Mapping[str, Sequence[int]], betas_format: str
) -> list[str]:
    """Keys (paths relative to nsd_root) of every NSD file the method reads.

    subjects: ``subjNN`` names; sessions: {subject: session numbers (1-based)};
    betas_format: ``hdf5`` or ``nifti``. Shared files first, then per subject.
    """
    keys = [relpath(k) for k in ("expdesign", "stim_info", "stimuli", *COCO_KINDS)]
    for subject in subjects:
        keys += [relpath(k, subject) for k in ("brainmask", "roi_streams", "roi_prf-visualrois", "responses")]
        keys += [relpath(f"betas_{betas_format}", subject, s) for s in sessions[subject]]
    return keys


def split_present(root: str | os.PathLike, keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """(present, missing) keys under ``root``; a key is present when it is a file there.

    Only checks existence (os.path.isfile, which follows links); never writes.
    """
    present, missing = [], []
    for key in keys:
        (present if os.path.isfile(os.path.join(root, key)) else missing).append(key)
    return present, missing


def key_constraint(keys: Iterable[str]) -> str:
    """A regex that matches exactly the given keys (and nothing when there are none)."""
    keys = sorted(set(keys))
    if not keys:
        return MATCH_NOTHING
    return "(?:" + "|".join(re.escape(k) for k in keys) + ")"


def is_coco_key(key: str) -> bool:
    """True for the caption JSONs, which come from COCO's archive, not the NSD bucket."""
    return key in {relpath(k) for k in COCO_KINDS}


def object_sizes(
    keys: Sequence[str], endpoint_url: str, bucket: str, timeout: float = HEAD_TIMEOUT
) -> dict[str, int | None]:
    """Bytes of each key in the bucket by S3 HEAD; None where unknown.

    Each request waits at most ``timeout`` seconds and is not retried; after the
    first connection failure (offline) the remaining keys are not asked for.
    COCO keys are not in the bucket and are always None.
    """
    sizes: dict[str, int | None] = {k: None for k in keys}
    keys = [k for k in keys if not is_coco_key(k)]
    if not keys:
        return sizes
    import boto3
    import botocore.exceptions
    from botocore import UNSIGNED
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=endpoint_url,
        config=Config(signature_version=UNSIGNED, connect_timeout=timeout, read_timeout=timeout,
                      retries={"max_attempts": 1, "mode": "standard"}),
    )
    try:
        sizes[keys[0]] = int(client.head_object(Bucket=bucket, Key=keys[0])["ContentLength"])
    except botocore.exceptions.BotoCoreError:  # unreachable: do not wait for the others
        return sizes
    except botocore.exceptions.ClientError:  # reachable, but this key is not there
        pass

    def head(key: str) -> int | None:
        try:
            return int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        for key, size in zip(keys[1:], pool.map(head, keys[1:])):
            sizes[key] = size
    return sizes


def human_size(n_bytes: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def summary(
    root: str | os.PathLike,
    present: Sequence[str],
    missing: Sequence[str],
    sizes: Mapping[str, int | None] | None = None,
) -> str:
    """One line: "NSD copy at <root>: N of M files present; missing: <keys> (<size>)".

    sizes: {missing key: bytes or None} (None or absent: size unknown).
    """
    n, m = len(present), len(present) + len(missing)
    text = f"NSD copy at {root}: {n} of {m} files present"
    if not missing:
        return text + "; nothing to download"
    listed = ", ".join(missing[:MAX_LISTED])
    if len(missing) > MAX_LISTED:
        listed += f" and {len(missing) - MAX_LISTED} more"
    sizes = sizes or {}
    known = [sizes.get(k) for k in missing if sizes.get(k) is not None]
    if not known:
        size = "size unknown"
    elif len(known) == len(missing):
        size = human_size(sum(known))
    else:
        size = f"{human_size(sum(known))} for {len(known)} of {len(missing)}, the rest size unknown"
    return f"{text}; missing: {listed} ({size})"


def available_sessions(root: str | os.PathLike, subjects: Sequence[str]) -> dict[str, int]:
    """Sessions each subject has: the highest SESSION of its responses.tsv under ``root``
    when that file is there, else the count NSD published (SESSIONS_PER_SUBJECT)."""
    from brainldm.nsd_layout import SESSIONS_PER_SUBJECT, path, read_responses

    out = {}
    for subject in subjects:
        file = path(root, "responses", subject)
        if file.is_file():
            out[subject] = int(read_responses(file)["SESSION"].max())
        else:
            out[subject] = SESSIONS_PER_SUBJECT[int(subject[4:])]
    return out


def resolve_sessions(
    setting: str | int | Mapping, subjects: Sequence[str], available: Mapping[str, int],
    key: str = "data.sessions",
) -> dict[str, list[int]]:
    """Session numbers (1-based) each subject uses, from config ``data.sessions``.

    setting: ``"all"`` (every session the subject has), an integer n (sessions 1..n
    of every subject; a subject with fewer stops the run with a message naming it
    and its count), or a mapping {subject (1 or "subj01"): "all" or n}, which must
    name every configured subject. available: {subject: sessions it has}.
    """
    from brainldm.nsd_layout import NSDError, per_subject

    if isinstance(setting, Mapping):
        per = per_subject(setting, subjects, key, ": add them (a number of sessions or 'all')")
    else:
        per = {s: setting for s in subjects}
    out = {}
    for subject in subjects:
        value, have = per[subject], available[subject]
        if value == "all":
            n = have
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            if value > have:
                raise NSDError(f"{key} asks for {value} sessions but {subject} has only {have}: "
                               f"set {key} to {have} or less, to 'all', or per subject "
                               f"(e.g. {{{subject}: {have}}})")
            n = value
        else:
            raise NSDError(f"{key}: {value!r} for {subject} is neither 'all' nor a positive integer")
        out[subject] = list(range(1, n + 1))
    return out
