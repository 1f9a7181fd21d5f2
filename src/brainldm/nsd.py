"""NSD file layout and one reader per file kind.

Every stage reads NSD files (real or synthetic) only through this module, so the
synthetic generator is checked by reading its files back with these readers.
Paths mirror the keys of the public bucket ``s3://natural-scenes-dataset``.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

#: NSD's betas are percent signal change multiplied by this factor, stored as int16.
BETA_SCALE = 300.0

#: Sessions each NSD subject completed (subj01..subj08).
SESSIONS_PER_SUBJECT = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}

#: Label values of NSD's ROI atlases.
STREAMS_LABELS = {
    1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal",
    5: "ventral", 6: "lateral", 7: "parietal",
}
PRF_VISUALROIS_LABELS = {1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"}

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


def _require(file: str | os.PathLike) -> Path:
    file = Path(file)
    if not file.exists():
        raise NSDError(
            f"missing NSD file {file}: run the workflow's download rules "
            "(data.source: nsd) or point data.nsd_root at a complete copy of NSD"
        )
    return file


# ---------------------------------------------------------------- volumes
def _load_nifti(file: Path) -> nib.Nifti1Image:
    """A NIfTI image whose gzip stream is decompressed in full, so its CRC is checked.

    nibabel alone reads only the bytes it needs and never sees a corrupt tail or
    a failed CRC; this reads the whole file once (the image's uncompressed size in memory).
    """
    try:
        if str(file).endswith(".gz"):
            with gzip.open(file, "rb") as f:
                raw = f.read()  # reaches EOF: gzip checks the CRC and length
            return nib.Nifti1Image.from_bytes(raw)
        return nib.load(str(file))
    except (OSError, EOFError, zlib.error, ValueError, Exception) as err:  # nibabel raises many kinds
        raise NSDError(
            f"cannot read NIfTI {file} ({type(err).__name__}: {err}); the file is corrupt or truncated: "
            "delete it and fetch it again"
        ) from err


def read_volume(file: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A 3-D NIfTI volume: (data (x, y, z), affine (4, 4)); the whole file is CRC-checked."""
    file = _require(file)
    img = _load_nifti(file)
    try:
        data = np.asarray(img.dataobj)
    except Exception as err:
        raise NSDError(f"cannot read NIfTI {file} ({err}); the file is corrupt or truncated: delete it and fetch it again") from err
    if data.ndim != 3:
        raise NSDError(f"{file} has shape {data.shape}; a 3-D volume (x, y, z) was expected")
    return data, img.affine


def betas_grid(file: str | os.PathLike) -> tuple[tuple[int, int, int], int]:
    """Grid (x, y, z) and number of trials of one session's betas, without reading them."""
    file = _require(file)
    try:
        if str(file).endswith(".hdf5"):
            with h5py.File(file, "r") as f:
                n, z, y, x = f["betas"].shape
            return (x, y, z), n
        shape = nib.load(str(file)).shape
    except Exception as err:
        raise NSDError(f"cannot read betas {file} ({err}); the file is corrupt or truncated: delete it and fetch it again") from err
    if len(shape) != 4:
        raise NSDError(f"{file} has shape {shape}; betas are 4-D (x, y, z, trials)")
    return tuple(shape[:3]), shape[3]


def _not_int16(file: Path, dtype) -> NSDError:
    return NSDError(
        f"betas {file} hold {np.dtype(dtype).name} values, but NSD stores betas as int16 "
        "(percent signal change x 300); they are not cast: fetch the original file again "
        "(betas_fithrf_GLMdenoise_RR from the NSD bucket)"
    )


def read_betas(file: str | os.PathLike, voxels: np.ndarray) -> np.ndarray:
    """Betas of one session at the given voxels, in NSD's int16 units.

    voxels: (n_voxels, 3) int (x, y, z) indices.
    Returns (n_trials, n_voxels) int16 (percent signal change x 300).
    From ``.hdf5`` only the z-slices that hold a requested voxel are read; a
    ``.nii.gz`` is decompressed in full (CRC-checked). A file whose betas are not
    int16 (or carry a NIfTI scaling) is an error naming the file, never cast.
    """
    file = _require(file)
    voxels = np.asarray(voxels)
    if str(file).endswith(".hdf5"):
        try:
            with h5py.File(file, "r") as f:
                dset = f["betas"]  # (trials, z, y, x)
                if dset.dtype != np.int16:
                    raise _not_int16(file, dset.dtype)
                out = np.empty((dset.shape[0], len(voxels)), dtype=np.int16)
                for z in np.unique(voxels[:, 2]):
                    sel = np.flatnonzero(voxels[:, 2] == z)
                    plane = dset[:, int(z), :, :]  # (trials, y, x)
                    out[:, sel] = plane[:, voxels[sel, 1], voxels[sel, 0]]
                return out
        except NSDError:
            raise
        except Exception as err:
            raise NSDError(f"cannot read betas {file} ({type(err).__name__}: {err}); the file is corrupt or truncated: delete it and fetch it again") from err
    img = _load_nifti(file)
    if img.get_data_dtype() != np.int16:
        raise _not_int16(file, img.get_data_dtype())
    slope, inter = img.dataobj.slope, img.dataobj.inter
    if not (slope == 1 and inter == 0):
        raise NSDError(
            f"betas {file} carry a NIfTI scaling (scl_slope {slope}, scl_inter {inter}); NSD's betas are plain "
            "int16 (percent signal change x 300): fetch the original file again"
        )
    try:
        data = np.asarray(img.dataobj.get_unscaled())  # (x, y, z, trials)
        return np.ascontiguousarray(data[voxels[:, 0], voxels[:, 1], voxels[:, 2], :].T)
    except Exception as err:
        raise NSDError(f"cannot read betas {file} ({type(err).__name__}: {err}); the file is corrupt or truncated: delete it and fetch it again") from err


# ---------------------------------------------------------------- design
def read_responses(file: str | os.PathLike) -> pd.DataFrame:
    """responses.tsv: one row per trial; adds ``nsd_id`` = 73KID - 1 (0-based)."""
    file = _require(file)
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


def read_expdesign(file: str | os.PathLike) -> dict[str, np.ndarray]:
    """nsd_expdesign.mat: masterordering, subjectim, sharedix, kept 1-based as stored."""
    file = _require(file)
    try:
        mat = scipy.io.loadmat(file)
    except Exception as err:
        raise NSDError(f"cannot read {file} ({err}); fetch it again") from err
    return {k: np.asarray(mat[k]).astype(np.int64) for k in ("masterordering", "subjectim", "sharedix")}


def read_stim_info(file: str | os.PathLike) -> pd.DataFrame:
    """nsd_stim_info_merged.csv: one row per 73k image (nsdId 0-based, cocoId, cocoSplit, ...)."""
    file = _require(file)
    try:
        info = pd.read_csv(file, index_col=0)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise NSDError(f"cannot read {file} ({err}): the file is empty or not a CSV; fetch nsd_stim_info_merged.csv again") from err
    missing = {"nsdId", "cocoId", "cocoSplit"} - set(info.columns)
    if missing:
        raise NSDError(f"{file} lacks the columns {sorted(missing)} of NSD's nsd_stim_info_merged.csv; fetch it again")
    return info


def _brick(f: h5py.File, stimuli_file: Path) -> h5py.Dataset:
    if "imgBrick" not in f:
        raise NSDError(
            f"{stimuli_file} has no dataset imgBrick (it has {sorted(f.keys())}): it is not NSD's nsd_stimuli.hdf5; fetch it again"
        )
    return f["imgBrick"]


def _open_stimuli(stimuli_file: Path) -> h5py.File:
    try:
        return h5py.File(stimuli_file, "r")
    except OSError as err:
        raise NSDError(f"cannot open {stimuli_file} ({err}): the file is truncated or corrupt; delete it and fetch it again") from err


def n_images(stimuli_file: str | os.PathLike) -> int:
    """Number of images in imgBrick."""
    stimuli_file = _require(stimuli_file)
    with _open_stimuli(stimuli_file) as f:
        return _brick(f, stimuli_file).shape[0]


def read_images(stimuli_file: str | os.PathLike, nsd_ids) -> np.ndarray:
    """Images from nsd_stimuli.hdf5 ``imgBrick``: (n, H, W, 3) uint8, in the order of nsd_ids (0-based)."""
    stimuli_file = _require(stimuli_file)
    ids = np.asarray(nsd_ids, dtype=np.int64)
    with _open_stimuli(stimuli_file) as f:
        brick = _brick(f, stimuli_file)
        bad = ids[(ids < 0) | (ids >= brick.shape[0])]
        if bad.size:
            raise NSDError(
                f"image id {int(bad[0])} is outside imgBrick of {stimuli_file} "
                f"({brick.shape[0]} images): either the stimuli file is incomplete (fetch it again) or the image ids "
                "(responses.tsv 73KID / nsd_expdesign.mat) do not belong to it"
            )
        unique, inverse = np.unique(ids, return_inverse=True)
        try:
            return brick[unique][inverse]  # h5py needs increasing, unique indices
        except OSError as err:
            raise NSDError(f"cannot read images from {stimuli_file} ({err}): the file is truncated or corrupt; fetch it again") from err


def read_captions(stim_info: pd.DataFrame, caption_files: dict[str, str | os.PathLike], nsd_ids) -> list[list[str]]:
    """COCO captions of each image, matched through cocoId and cocoSplit.

    caption_files: {"train2017": path, "val2017": path}. Returns one list of captions per id.
    """
    by_split = {}
    for split, file in caption_files.items():
        try:
            with open(_require(file)) as f:
                coco = json.load(f)
            caps: dict[int, list[str]] = {}
            for ann in coco["annotations"]:
                caps.setdefault(int(ann["image_id"]), []).append(ann["caption"].strip())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise NSDError(
                f"cannot read caption file {file} ({err}): it is truncated or not JSON; delete it and fetch "
                "COCO's annotations_trainval2017 again"
            ) from err
        except (KeyError, TypeError, AttributeError) as err:
            raise NSDError(
                f"caption file {file} is not a COCO captions file (no annotations with image_id and caption: {err!r}); "
                "use COCO's captions_train2017.json / captions_val2017.json"
            ) from err
        by_split[split] = (caps, file)
    out = []
    for nsd_id in np.asarray(nsd_ids, dtype=np.int64):
        row = stim_info.loc[stim_info["nsdId"] == nsd_id]
        if row.empty:
            raise NSDError(f"image {nsd_id} is not in nsd_stim_info_merged.csv")
        coco_id, split = int(row["cocoId"].iloc[0]), str(row["cocoSplit"].iloc[0])
        if split not in by_split:
            raise NSDError(f"image {nsd_id} is in COCO split {split!r}, but no caption file for it was given")
        caps, file = by_split[split]
        if coco_id not in caps:
            raise NSDError(
                f"caption file {file} has no captions for cocoId {coco_id} (NSD image {nsd_id}): "
                "use COCO's full captions_train2017.json / captions_val2017.json"
            )
        out.append(caps[coco_id])
    return out
