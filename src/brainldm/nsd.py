"""NSD file layout and one reader per file kind (the layout, the subjects and the
trial-table reader live in :mod:`brainldm.nsd_layout`, importable while the workflow
parses, and are re-exported here).

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

from brainldm.nsd_layout import (  # re-exported: the layout lives where parsing can import it
    COCO_KINDS,
    SESSIONS_PER_SUBJECT,
    NSDError,
    path,
    read_responses,
    relpath,
    require as _require,
    subject_name,
)

#: NSD's betas are percent signal change multiplied by this factor, stored as int16.
BETA_SCALE = 300.0


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


#: Voxels per block when the chunk rows are transposed into (trials, voxels): 1,024 rows
#: of 750 int16 stay in cache; one scattered transpose of a session is about 8x slower.
_TRANSPOSE_BLOCK = 1024


def _read_voxel_chunks(file: Path, dset: h5py.Dataset, voxels: np.ndarray) -> np.ndarray | None:
    """NSD's HDF5 layout read at file speed, or None where the layout differs.

    NSD stores each voxel's time series as one uncompressed chunk (trials, 1, 1, 1)
    of little-endian int16. Through h5py's selections every plane costs a chunk-index
    lookup per voxel (about 6 s per full-size session); here the chunk offsets are
    listed once (``chunk_iter``) and each run of chunks that lie back to back in the
    file is read with one ``readinto`` straight into the result, in file order.
    Voxels whose chunk was never written read as the dataset's fill value.
    voxels: (n_voxels, 3) int (x, y, z). Returns (n_trials, n_voxels) int16.
    """
    n_trials = dset.shape[0]
    if (dset.chunks != (n_trials, 1, 1, 1) or dset.dtype != np.dtype("<i2")
            or dset.id.get_create_plist().get_nfilters() != 0 or not hasattr(dset.id, "chunk_iter")):
        return None
    found = []  # (z, y, x, byte offset) of every written chunk
    dset.id.chunk_iter(lambda c: found.append((*c.chunk_offset[1:], c.byte_offset)))
    where = np.full(dset.shape[1:], -1, dtype=np.int64)  # (z, y, x) -> byte offset of its chunk
    if found:
        found = np.asarray(found, dtype=np.int64)
        where[found[:, 0], found[:, 1], found[:, 2]] = found[:, 3]
    at = where[voxels[:, 2], voxels[:, 1], voxels[:, 0]]  # (n_voxels,) byte offsets, -1: never written
    stored = np.flatnonzero(at >= 0)
    order = stored[np.argsort(at[stored], kind="stable")]  # voxel columns in file order
    offsets = at[order]
    nbytes = 2 * n_trials
    rows = np.empty((len(order) + 1, n_trials), dtype="<i2")  # one row per chunk, in file order; last: fill value
    rows[-1] = dset.fillvalue
    # runs of chunks stored back to back: one read each
    starts = np.flatnonzero(np.diff(offsets, prepend=-nbytes) != nbytes) if len(offsets) else np.array([], np.int64)
    ends = np.append(starts[1:], len(offsets))
    with open(file, "rb", buffering=0) as raw:
        for lo, hi in zip(starts.tolist(), ends.tolist()):
            view = memoryview(rows[lo:hi]).cast("B")
            raw.seek(int(offsets[lo]))
            done = 0
            while done < len(view):
                n = raw.readinto(view[done:])
                if not n:
                    raise NSDError(f"betas {file} end inside a chunk of its dataset: the file is truncated; delete it and fetch it again")
                done += n
    row_of = np.full(len(voxels), len(order), dtype=np.int64)  # each voxel's row (never written: the fill row)
    row_of[order] = np.arange(len(order))
    out = np.empty((n_trials, len(voxels)), dtype=np.int16)
    for lo in range(0, len(voxels), _TRANSPOSE_BLOCK):  # blocks of rows that stay in cache while transposed
        out[:, lo : lo + _TRANSPOSE_BLOCK] = rows[row_of[lo : lo + _TRANSPOSE_BLOCK]].T
    return out


def read_betas(file: str | os.PathLike, voxels: np.ndarray) -> np.ndarray:
    """Betas of one session at the given voxels, in NSD's int16 units.

    voxels: (n_voxels, 3) int (x, y, z) indices.
    Returns (n_trials, n_voxels) int16 (percent signal change x 300).
    From an ``.hdf5`` in NSD's layout each run of chunks stored back to back is read
    at once (other layouts: the z-planes that hold a requested voxel); a ``.nii.gz``
    is decompressed one trial volume at a time, to the end of its stream (CRC-checked).
    A file whose betas are not int16 (or carry a NIfTI scaling) is an error naming
    the file, never cast.
    """
    file = _require(file)
    voxels = np.asarray(voxels)
    if str(file).endswith(".hdf5"):
        try:
            with h5py.File(file, "r") as f:
                dset = f["betas"]  # (trials, z, y, x)
                if dset.dtype != np.int16:
                    raise _not_int16(file, dset.dtype)
                out = _read_voxel_chunks(file, dset, voxels)
                if out is None:  # another chunk layout: read the z-planes that hold a voxel
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
    if str(file).endswith(".gz"):
        return _read_nifti_gz_betas(file, voxels)
    img = _load_nifti(file)
    _check_nifti_betas(file, img)
    try:
        data = np.asarray(img.dataobj.get_unscaled())  # (x, y, z, trials)
        return np.ascontiguousarray(data[voxels[:, 0], voxels[:, 1], voxels[:, 2], :].T)
    except Exception as err:
        raise NSDError(f"cannot read betas {file} ({type(err).__name__}: {err}); the file is corrupt or truncated: delete it and fetch it again") from err


def _check_nifti_betas(file: Path, img: nib.Nifti1Image) -> None:
    """NSD's NIfTI betas are plain int16: anything else is an error naming the file."""
    if img.get_data_dtype() != np.int16:
        raise _not_int16(file, img.get_data_dtype())
    slope, inter = img.dataobj.slope, img.dataobj.inter
    if not (slope == 1 and inter == 0):
        raise NSDError(
            f"betas {file} carry a NIfTI scaling (scl_slope {slope}, scl_inter {inter}); NSD's betas are plain "
            "int16 (percent signal change x 300): fetch the original file again"
        )


def _read_nifti_gz_betas(file: Path, voxels: np.ndarray) -> np.ndarray:
    """Betas of a .nii.gz at the voxels, decompressed one trial volume at a time.

    A NIfTI's 4-D data are in Fortran order, so each trial's (x, y, z) volume is one
    contiguous piece of the stream: memory is the result plus one volume, never the
    whole file, and the time is gzip's. The stream is read to its end, so the CRC and
    length in the gzip trailer are checked as by :func:`_load_nifti`.
    voxels: (n_voxels, 3) int (x, y, z). Returns (n_trials, n_voxels) int16.
    """
    try:
        img = nib.load(str(file))  # the header only
        _check_nifti_betas(file, img)
        if len(img.shape) != 4:
            raise NSDError(f"{file} has shape {img.shape}; betas are 4-D (x, y, z, trials)")
        nx, ny, nz, n_trials = img.shape
        flat = voxels[:, 0] + nx * (voxels[:, 1] + ny * voxels[:, 2])  # index in a Fortran-ordered volume
        volume = np.empty(nx * ny * nz, dtype=img.get_data_dtype())
        view = memoryview(volume).cast("B")
        out = np.empty((n_trials, len(voxels)), dtype=np.int16)
        with gzip.open(file, "rb") as f:
            if len(f.read(int(img.dataobj.offset))) != int(img.dataobj.offset):
                raise EOFError("the file ends inside its header")
            for trial in range(n_trials):
                if f.readinto(view) != len(view):
                    raise EOFError(f"the data end at trial {trial} of {n_trials}")
                out[trial] = volume[flat]
            while f.read(2**20):  # to the end of the stream: gzip checks the CRC and length
                pass
        return out
    except NSDError:
        raise
    except Exception as err:
        raise NSDError(f"cannot read betas {file} ({type(err).__name__}: {err}); the file is corrupt or truncated: delete it and fetch it again") from err


# ---------------------------------------------------------------- design
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
