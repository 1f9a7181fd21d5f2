"""From NSD files to per-subject arrays: trials to images, scaling, z-scoring, split, ROI masks.

One code path for the real NSD and the synthetic mini-NSD. Betas are read
session by session, only at brain-mask voxels (NSD's HDF5 chunk by chunk run, see
:func:`brainldm.nsd.read_betas`); z-scored in place and written block of rows by
block of rows to ``.npy`` files (``io.NpyRows``), so peak memory is about one
session (int16 and float32) plus the test-set sums, never all sessions at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
from brainldm import nsd
from brainldm.logs import progress
from brainldm.io import NpyRows, atomic_path, remove_stale_temporaries, report_disk_full

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def _n_of(n_sessions: int | Mapping[str, int], subject: str) -> int:
    """Sessions used of one subject: the same n for all, or its entry of a mapping."""
    return n_sessions[subject] if isinstance(n_sessions, Mapping) else int(n_sessions)


def test_images(responses: Mapping[str, pd.DataFrame], sharedix: np.ndarray,
                n_sessions: int | Mapping[str, int]) -> np.ndarray:
    """The test set: shared images that every given subject saw in its sessions 1..n.

    responses: subject -> responses table (with ``nsd_id``); sharedix: 1-based 73k ids;
    n_sessions: one n for every subject or {subject: n}. Returns sorted 0-based nsd ids.
    """
    shared = set((np.asarray(sharedix).ravel() - 1).tolist())
    for subject, table in responses.items():
        seen = table.loc[table["SESSION"] <= _n_of(n_sessions, subject), "nsd_id"]
        shared &= set(seen.tolist())
    return np.array(sorted(shared), dtype=np.int64)


def roi_voxels(brainmask: np.ndarray, atlases: Mapping[str, np.ndarray], rois: Mapping[str, Mapping]) -> dict[str, np.ndarray]:
    """Voxel indices of each ROI and of the whole brain mask.

    brainmask: (x, y, z); atlases: atlas name -> label volume (x, y, z);
    rois: name -> {"atlas": str, "labels": [int]}. Returns name -> (n_vox, 3)
    int64 (x, y, z), in the order of the brain mask's voxels; ``brain`` is added.
    """
    inside = brainmask > 0
    out = {"brain": np.argwhere(inside)}
    for name, spec in rois.items():
        atlas = atlases[spec["atlas"]]
        mask = np.isin(atlas, spec["labels"]) & inside
        if not mask.any():
            raise nsd.NSDError(
                f"ROI {name!r} has no voxels: atlas {spec['atlas']} has none of the labels {spec['labels']} "
                "inside the brain mask; fix ingest.rois in the config"
            )
        out[name] = np.argwhere(mask)
    return out


def zscore_sessionwise(betas: np.ndarray, block: int = 512, out: np.ndarray | None = None) -> np.ndarray:
    """z-score each voxel over the trials of one session. betas: (n_trials, n_vox) float32.

    Statistics in float64, by blocks of ``block`` voxels (512 x 750 trials stay in
    cache: 4x faster than 16,384; every voxel's arithmetic is the same at any block). A voxel that is constant in
    the session (e.g. NSD's edge voxels, all 0 where a session lacks data) gives
    exactly 0 in every trial, never NaN, inf or the ±1 of float rounding.
    ``out`` (float32, betas' shape; may be ``betas`` itself) receives the result.
    """
    out = np.empty(betas.shape, dtype=np.float32) if out is None else out
    for start in range(0, betas.shape[1], block):
        x = betas[:, start : start + block].astype(np.float64)
        constant = (x == x[:1]).all(axis=0) if len(x) else np.ones(x.shape[1], dtype=bool)
        centred = x - x.mean(axis=0, keepdims=True)
        sd = np.sqrt((centred**2).mean(axis=0, keepdims=True))
        z = centred / np.where(constant | (sd == 0), 1.0, sd)
        z[:, constant] = 0.0
        out[:, start : start + block] = z
    return out


def _write_rows(writer: NpyRows, start: int, values: np.ndarray, rows: np.ndarray,
                cols: np.ndarray | None = None, block_bytes: int = 64 * 2**20) -> None:
    """Write values[rows][:, cols] at writer rows start.. . All columns (cols None): each
    row straight from ``values``, no copy; else in gathered blocks of about ``block_bytes``.

    values: (n, n_cols_in) float32, C-contiguous; rows: (n_rows,) int indices into values.
    """
    if cols is None:
        writer.write_each(start, [values[r] for r in rows.tolist()])
        return
    step = max(1, block_bytes // max(1, 4 * len(cols)))
    for lo in range(0, len(rows), step):
        writer.write(start + lo, values[np.ix_(rows[lo : lo + step], cols)])


def _read_ahead(items: Sequence[T], read: Callable[[T], R]) -> Iterator[R]:
    """read(item) for each item, in order; the next item is read in a thread while the
    caller works on this one (file reads and most numpy work release the GIL)."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(read, items[0]) if items else None
        for k in range(len(items)):
            result = pending.result()
            pending = pool.submit(read, items[k + 1]) if k + 1 < len(items) else None
            yield result


#: Columns of sessions.tsv: one row per configured session; status "used" or "excluded".
SESSION_COLUMNS = ("session", "file", "status", "reason")


class IngestOutputError(ValueError):
    """An ingestion output is missing columns; the message names the file and the rule to rerun."""


def read_sessions(path: str | os.PathLike) -> pd.DataFrame:
    """sessions.tsv of rule ingest -> DataFrame with SESSION_COLUMNS (reason "" where none)."""
    table = pd.read_csv(path, sep="\t", dtype={"file": str, "status": str, "reason": str}, keep_default_na=False)
    missing = set(SESSION_COLUMNS) - set(table.columns)
    if missing:
        raise IngestOutputError(f"{path} lacks columns {sorted(missing)}; rerun rule ingest")
    return table[list(SESSION_COLUMNS)]


#: What ingestion does with an all-zero or constant session (config ingest.bad_sessions).
BAD_SESSION_ACTIONS = ("error", "exclude")


def _session_problem(betas: np.ndarray) -> str | None:
    """Why one session's int16 betas (n_trials, n_vox) are not data, or None."""
    if betas.size == 0:
        return None
    lo, hi = int(betas.min()), int(betas.max())
    if lo == hi == 0:
        return "all zero"
    if lo == hi:
        return f"constant ({lo} at every voxel and trial)"
    return None


def ingest_subject(
    subject: str,
    betas_files: Sequence[str | os.PathLike],
    brainmask_file: str | os.PathLike,
    atlas_files: Mapping[str, str | os.PathLike],
    responses_files: Mapping[str, str | os.PathLike],
    expdesign_file: str | os.PathLike,
    rois: Mapping[str, Mapping],
    out_dir: str | os.PathLike,
    zscore: bool = True,
    bad_sessions: str = "error",
    sessions: Mapping[str, int] | None = None,
) -> None:
    """Write one subject's arrays (see docs/contracts.md, "Ingestion output").

    betas_files: the subject's sessions 1..n in order (.hdf5 or .nii.gz).
    responses_files: every configured subject's responses.tsv (the test set is the
    shared images all of them saw in their sessions used). sessions: {subject:
    number of sessions used} of the other subjects (default: len(betas_files) each).
    Betas are divided by 300 (percent signal change) and, if ``zscore``, z-scored per
    voxel within each session. An all-zero or constant session stops ingestion
    (``bad_sessions="error"``) or is left out with a warning (``"exclude"``);
    ``sessions.tsv`` records each session's status.
    """
    if bad_sessions not in BAD_SESSION_ACTIONS:
        raise ValueError(f"ingest.bad_sessions must be one of {BAD_SESSION_ACTIONS}, not {bad_sessions!r}")
    out_dir = Path(out_dir)
    n_sessions = len(betas_files)
    brainmask, affine = nsd.read_volume(brainmask_file)
    if not np.any(brainmask > 0):
        raise nsd.NSDError(
            f"brain mask {brainmask_file} has no voxel > 0: the file is corrupt or is not NSD's brainmask.nii.gz; "
            "delete it and fetch it again"
        )
    atlases = {}
    for atlas, file in atlas_files.items():
        atlases[atlas], _ = nsd.read_volume(file)
        if atlases[atlas].shape != brainmask.shape:
            raise nsd.NSDError(f"ROI file {file} has grid {atlases[atlas].shape} but the brain mask {brainmask_file} has {brainmask.shape}: both must come from the same subject's func1pt8mm folder")
    voxels = roi_voxels(brainmask, atlases, rois)
    # Column of each ROI's voxels inside the brain-mask voxel list.
    brain_index = np.full(brainmask.shape, -1, dtype=np.int64)
    brain_index[tuple(voxels["brain"].T)] = np.arange(len(voxels["brain"]))
    columns = {name: brain_index[tuple(v.T)] for name, v in voxels.items()}
    # ROIs whose columns are every brain voxel in order (at least "brain"): written without a column selection
    whole = {name for name, c in columns.items() if np.array_equal(c, np.arange(len(voxels["brain"])))}

    responses = {s: nsd.read_responses(f) for s, f in responses_files.items()}
    table = responses[subject]
    table = table.loc[table["SESSION"] <= n_sessions].copy()
    table["trial"] = table.groupby("SESSION").cumcount()
    sharedix = nsd.read_expdesign(expdesign_file)["sharedix"]
    used = dict(sessions) if sessions is not None else {s: n_sessions for s in responses}
    used[subject] = n_sessions
    test_ids = test_images(responses, sharedix, used)
    shared_all = set((sharedix.ravel() - 1).tolist())
    is_test = table["nsd_id"].isin(test_ids).to_numpy()
    # Shared images that not every subject saw are in neither split (as in the paper: 982 of 1000).
    is_train = ~table["nsd_id"].isin(shared_all).to_numpy()
    train = table.loc[is_train, ["nsd_id", "SESSION", "trial"]].rename(columns={"SESSION": "session"}).reset_index(drop=True)
    test_row = {nsd_id: k for k, nsd_id in enumerate(test_ids)}

    n_vox = {name: len(c) for name, c in columns.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = ["train.tsv", "test.tsv", "sessions.tsv"] + [
        f"{kind}_{name}{suffix}" for name in columns for kind, suffix in (("betas", "_train.npy"), ("betas", "_test.npy"), ("voxels", ".npy"))
    ]
    remove_stale_temporaries([out_dir / name for name in outputs])
    tmp_files, writers = {}, {}
    try:
        for name in columns:
            tmp_files[name] = out_dir / f".tmp-{os.getpid()}-betas_{name}_train.npy"
            writers[name] = NpyRows(tmp_files[name], (len(train), n_vox[name]))
    except BaseException:
        for writer in writers.values():
            writer.close()
        for file in tmp_files.values():
            file.unlink(missing_ok=True)
        raise
    test_sum = np.zeros((len(test_ids), n_vox["brain"]), dtype=np.float64)
    test_count = np.zeros(len(test_ids), dtype=np.int64)

    grid = tuple(brainmask.shape)
    row = 0
    kept_rows = np.ones(len(train), dtype=bool)
    status = []  # one row per session for sessions.tsv

    def read_session(session: int) -> np.ndarray:
        """The session's int16 betas at the brain voxels, its grid and trial count checked first."""
        file = betas_files[session - 1]
        file_grid, n_trials = nsd.betas_grid(file)
        if file_grid != grid:
            raise nsd.NSDError(f"betas {file} are on grid {file_grid} but the brain mask {brainmask_file} is {grid}: use betas and ROIs of the same subject and resolution (func1pt8mm)")
        expected = int((table["SESSION"] == session).sum())
        if n_trials != expected:
            raise nsd.NSDError(f"betas {file} hold {n_trials} trials but responses.tsv lists {expected} for session {session}: the file is incomplete, fetch it again")
        return nsd.read_betas(file, voxels["brain"])

    sessions_read = _read_ahead(range(1, n_sessions + 1), read_session)
    try:
        for session, (file, raw) in enumerate(zip(progress(betas_files, f"{subject} sessions"), sessions_read), start=1):
            sess = table.loc[table["SESSION"] == session]
            trials = sess["trial"].to_numpy()
            sess_train = is_train[table["SESSION"].to_numpy() == session]
            problem = _session_problem(raw)
            if problem is not None:
                if bad_sessions == "error":
                    raise nsd.NSDError(
                        f"betas {file} (session {session}) are {problem} inside the brain mask: the file is not data; "
                        "fetch it again, or set ingest.bad_sessions: exclude to leave this session out"
                    )
                log.warning("EXCLUDED session %d of %s: betas %s are %s (ingest.bad_sessions: exclude)", session, subject, file, problem)
                status.append({"session": session, "file": str(file), "status": "excluded", "reason": problem})
                n_skip = int(sess_train.sum())
                kept_rows[row : row + n_skip] = False
                row += n_skip
                continue
            betas = np.divide(raw, np.float32(nsd.BETA_SCALE), dtype=np.float32)
            del raw
            if zscore:
                zscore_sessionwise(betas, out=betas)
            if not np.isfinite(betas).all():
                raise nsd.NSDError(
                    f"betas {file} (session {session}) give {int((~np.isfinite(betas)).sum())} NaN/inf values after "
                    "scaling: the file is corrupt; fetch it again"
                )
            status.append({"session": session, "file": str(file), "status": "used", "reason": ""})
            train_trials = trials[sess_train]
            for name, cols in columns.items():
                _write_rows(writers[name], row, betas, train_trials, None if name in whole else cols)
            row += len(train_trials)
            for trial, nsd_id in zip(trials, sess["nsd_id"].to_numpy()):
                k = test_row.get(nsd_id)
                if k is not None:
                    test_sum[k] += betas[trial]
                    test_count[k] += 1
        for writer in writers.values():
            writer.close()
        if not kept_rows.all():  # excluded sessions: keep only the rows of the others
            for name in columns:
                old = np.load(tmp_files[name], mmap_mode="r")
                kept = out_dir / f".tmp-{os.getpid()}-kept-betas_{name}_train.npy"
                with NpyRows(kept, (int(kept_rows.sum()), n_vox[name])) as new:
                    _write_rows(new, 0, old, np.flatnonzero(kept_rows))
                del old
                os.replace(kept, tmp_files[name])
            train = train.loc[kept_rows].reset_index(drop=True)
        if np.any(test_count == 0):
            lost = test_ids[test_count == 0]
            raise nsd.NSDError(
                f"{subject}: test image {int(lost[0])} has no trial left after excluding sessions "
                f"{[r['session'] for r in status if r['status'] == 'excluded']}: fetch those betas again"
            )
        test_sum /= np.maximum(test_count, 1)[:, None]  # in place: the means, still float64
        for name, cols in columns.items():
            # column-major, as the column selection of every ROI gives it (and as these files always were)
            test_mean = test_sum.astype(np.float32, order="F") if name in whole else test_sum[:, cols].astype(np.float32)
            with atomic_path(out_dir / f"betas_{name}_test.npy") as tmp:
                np.save(tmp, test_mean)
            del test_mean
            with atomic_path(out_dir / f"voxels_{name}.npy") as tmp:
                np.save(tmp, voxels[name])
            os.replace(tmp_files[name], out_dir / f"betas_{name}_train.npy")
        with atomic_path(out_dir / "test.tsv") as tmp:
            pd.DataFrame({"row": np.arange(len(test_ids)), "nsd_id": test_ids, "n_repeats": test_count}).to_csv(tmp, sep="\t", index=False)
        with atomic_path(out_dir / "train.tsv") as tmp:
            train.insert(0, "row", np.arange(len(train)))
            train.to_csv(tmp, sep="\t", index=False)
        with atomic_path(out_dir / "sessions.tsv") as tmp:
            pd.DataFrame(status, columns=list(SESSION_COLUMNS)).to_csv(tmp, sep="\t", index=False)
    except OSError as err:
        with report_disk_full(out_dir):  # ENOSPC -> "disk full at <out_dir>, <free> left"
            raise err
        raise
    finally:
        sessions_read.close()  # waits for a session still being read ahead
        for writer in writers.values():
            writer.close()
        for file in [*tmp_files.values(), *out_dir.glob(f".tmp-{os.getpid()}-kept-*")]:
            if file.exists():
                file.unlink()
    log.info("%s: %d train trials, %d test images, voxels %s", subject, len(train), len(test_ids), n_vox)


def stimuli_table(
    responses_files: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
    n_sessions: int | Mapping[str, int],
    stim_info_file: str | os.PathLike,
    stimuli_file: str | os.PathLike,
    caption_files: Mapping[str, str | os.PathLike],
    out_file: str | os.PathLike,
) -> None:
    """Write the images the configured subjects saw (nsd_id cocoId cocoSplit), checking each exists.

    Fails early, naming the file, when an image id is outside imgBrick or an
    image has no captions in the COCO caption files.
    """
    if not isinstance(responses_files, Mapping):
        if isinstance(n_sessions, Mapping):
            raise TypeError("per-subject n_sessions needs responses_files as {subject: file}")
        responses_files = {str(i): f for i, f in enumerate(responses_files)}
    ids = set()
    for subject, file in responses_files.items():
        table = nsd.read_responses(file)
        ids |= set(table.loc[table["SESSION"] <= _n_of(n_sessions, subject), "nsd_id"].tolist())
    ids = np.array(sorted(ids), dtype=np.int64)
    n_brick = nsd.n_images(stimuli_file)
    bad = ids[(ids < 0) | (ids >= n_brick)]
    if bad.size:
        raise nsd.NSDError(
            f"responses list image id {int(bad[0])} (0-based; 73KID {int(bad[0]) + 1}) but imgBrick in {stimuli_file} "
            f"has only {n_brick} images: either the stimuli file is incomplete (fetch it again) or the responses "
            f"({', '.join(str(f) for f in responses_files.values())}) / nsd_expdesign.mat are wrong (fetch them again)"
        )
    info = nsd.read_stim_info(stim_info_file)
    nsd.read_captions(info, caption_files, ids)  # raises, naming the file, if an image has no captions
    rows = info.set_index("nsdId").loc[ids, ["cocoId", "cocoSplit"]].reset_index().rename(columns={"nsdId": "nsd_id"})
    with atomic_path(out_file) as tmp:
        rows.to_csv(tmp, sep="\t", index=False)
