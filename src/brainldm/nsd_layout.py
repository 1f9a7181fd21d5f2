"""NSD's file layout, subjects and sessions, and the trial table: what the workflow needs
while Snakemake parses it (and every cluster job re-parses it).

Standard library only at import time (pandas is imported by :func:`read_responses`
when it runs), so parsing the workflow never loads h5py, nibabel or scipy;
:mod:`brainldm.nsd` re-exports every name here next to the readers of the other
file kinds. Paths mirror the keys of the public bucket ``s3://natural-scenes-dataset``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import pandas as pd

#: Sessions each NSD subject completed (subj01..subj08).
SESSIONS_PER_SUBJECT = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}

_BETAS = "nsddata_betas/ppdata/{subject}/func1pt8mm/betas_fithrf_GLMdenoise_RR"
_FUNC = "nsddata/ppdata/{subject}/func1pt8mm"
_STIM = "nsddata_stimuli/stimuli/nsd"
_LAYOUT = {
    "betas_hdf5": _BETAS + "/betas_session{session:02d}.hdf5",
    "betas_nifti": _BETAS + "/betas_session{session:02d}.nii.gz",
    "brainmask": _FUNC + "/brainmask.nii.gz",
    "roi_streams": _FUNC + "/roi/streams.nii.gz",
    "roi_prf-visualrois": _FUNC + "/roi/prf-visualrois.nii.gz",
    "responses": "nsddata/ppdata/{subject}/behav/responses.tsv",
    "expdesign": "nsddata/experiments/nsd/nsd_expdesign.mat",
    "stim_info": "nsddata/experiments/nsd/nsd_stim_info_merged.csv",
    "stimuli": _STIM + "/nsd_stimuli.hdf5",
    "captions_train": _STIM + "/annotations/captions_train2017.json",
    "captions_val": _STIM + "/annotations/captions_val2017.json",
}
#: NSD file kinds that are not in the NSD bucket (COCO's annotation archive).
COCO_KINDS = ("captions_train", "captions_val")


class NSDError(ValueError):
    """Bad or missing NSD input; the message names the file and the fix."""


def subject_name(subject: int | str) -> str:
    """``1`` or ``"subj01"`` -> ``"subj01"``; rejects subjects NSD does not have."""
    if isinstance(subject, str):
        if not (subject.startswith("subj") and subject[4:].isdigit()):
            raise NSDError(f"unknown subject {subject!r}: NSD subjects are subj01..subj08")
        subject = int(subject[4:])
    if subject not in SESSIONS_PER_SUBJECT:
        raise NSDError(f"unknown subject {subject!r}: NSD subjects are 1..8 (subj01..subj08)")
    return f"subj{subject:02d}"


def relpath(kind: str, subject: int | str | None = None, session: int | str | None = None) -> str:
    """Key of one NSD file inside nsd_root (= its key in the NSD bucket)."""
    if kind not in _LAYOUT:
        raise KeyError(f"unknown NSD file kind {kind!r}; known: {sorted(_LAYOUT)}")
    fields = {}
    if "{subject}" in _LAYOUT[kind]:
        if subject is None:
            raise ValueError(f"NSD file kind {kind!r} needs a subject")
        fields["subject"] = subject_name(subject)
    if "{session" in _LAYOUT[kind]:
        if session is None:
            raise ValueError(f"NSD file kind {kind!r} needs a session")
        fields["session"] = int(session)
    return _LAYOUT[kind].format(**fields)


def path(root: str | os.PathLike, kind: str, subject=None, session=None) -> Path:
    """Absolute-or-relative path of one NSD file under ``root``."""
    return Path(root) / relpath(kind, subject=subject, session=session)


def require(file: str | os.PathLike) -> Path:
    """``file`` as a Path; :class:`NSDError` saying how to get it when it does not exist."""
    file = Path(file)
    if not file.exists():
        raise NSDError(
            f"missing NSD file {file}: run the workflow's download rules "
            "(data.source: nsd) or point data.nsd_root at a complete copy of NSD"
        )
    return file


def read_responses(file: str | os.PathLike) -> "pd.DataFrame":
    """responses.tsv: one row per trial; adds ``nsd_id`` = 73KID - 1 (0-based)."""
    import numpy as np
    import pandas as pd

    file = require(file)
    try:
        table = pd.read_csv(file, sep="\t")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise NSDError(f"cannot read {file} ({err}): it is not NSD's tab-separated responses.tsv; fetch it again") from err
    missing = {"SESSION", "TRIAL", "73KID"} - set(table.columns)
    if missing:
        raise NSDError(f"{file} lacks the columns {sorted(missing)} of NSD's responses.tsv; fetch it again")
    ids = pd.to_numeric(table["73KID"], errors="coerce")
    bad = np.flatnonzero(ids.isna().to_numpy() | (ids.to_numpy() % 1 != 0) | (ids.to_numpy() < 1))
    if bad.size:
        raise NSDError(
            f"{file} has an empty or non-integer 73KID cell in data row {int(bad[0]) + 1} "
            f"(line {int(bad[0]) + 2}; {bad.size} such rows): every trial needs its image id 1..73000; fetch the file again"
        )
    table["nsd_id"] = ids.astype(np.int64) - 1
    return table


def per_subject(setting: Mapping, subjects: Sequence[int | str], key: str, fix: str) -> dict[str, object]:
    """A config mapping {subject (1, "1" or "subj01"): value} as {"subjNN": value},
    naming every subject of ``subjects``; NSDError naming ``key`` (and ``fix``, what to
    add) for an unknown or absent subject. Standard library only (parse time)."""
    per = {}
    for k, v in setting.items():
        try:
            per[subject_name(int(k) if isinstance(k, str) and k.isdigit() else k)] = v
        except NSDError as err:
            raise NSDError(f"{key}: {err}") from err
    absent = [subject_name(s) for s in subjects if subject_name(s) not in per]
    if absent:
        raise NSDError(f"{key} is a per-subject mapping but lacks {', '.join(absent)}{fix}")
    return per


def synthetic_session_counts(n_sessions, subjects, nsd_quirks: bool = False) -> dict[int, int]:
    """Sessions the synthetic generator writes for each subject: {subject (int): n}.

    n_sessions (config ``synthetic.n_sessions``): one integer for every subject (with
    ``nsd_quirks``, every second subject of ``subjects`` gets one fewer, when n > 1),
    or a mapping {subject (1, "1" or "subj01"): n}, taken as it is, which must name
    every subject of ``subjects``. Standard library only (parse time).
    """
    from collections.abc import Mapping

    key = "synthetic.n_sessions"

    def count(value, who: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 40:
            raise NSDError(f"{key}: {value!r} for {who} is not an integer from 1 to 40")
        return value

    if isinstance(n_sessions, Mapping):
        per = per_subject(n_sessions, subjects, key, " (a subject of data.subjects): add a number of sessions for it")
        counts = {name: count(value, name) for name, value in per.items()}
        return {int(subject_name(s)[4:]): counts[subject_name(s)] for s in subjects}
    n = count(n_sessions, "every subject")
    return {int(subject_name(s)[4:]): n - 1 if nsd_quirks and n > 1 and i % 2 == 1 else n
            for i, s in enumerate(subjects)}
