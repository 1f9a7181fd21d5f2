"""nsd.read_betas on NSD's HDF5 layout (one uncompressed chunk per voxel time series),
read chunk run by chunk run, against h5py's own selection of the same voxels."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from brainldm import nsd

GRID = (7, 6, 5)  # x, y, z
N_TRIALS = 12


def _voxels(rng: np.random.Generator, n: int) -> np.ndarray:
    """n distinct (x, y, z) voxels in random order."""
    flat = rng.choice(np.prod(GRID), size=n, replace=False)
    return np.stack(np.unravel_index(flat, GRID), axis=1)


def _by_h5py(file, voxels: np.ndarray) -> np.ndarray:
    """(n_trials, n_voxels) int16 through h5py's selection, one voxel at a time."""
    with h5py.File(file, "r") as f:
        dset = f["betas"]
        return np.stack([dset[:, z, y, x] for x, y, z in voxels.tolist()], axis=1)


def _write_nsd_layout(file, written: np.ndarray, rng: np.random.Generator, fill: int = 0) -> None:
    """Betas (trials, z, y, x) int16 with chunks (trials, 1, 1, 1); only the chunks of
    ``written`` voxels are stored, in random order (their file order is not the grid's)."""
    with h5py.File(file, "w") as f:
        dset = f.create_dataset("betas", shape=(N_TRIALS, *GRID[::-1]), dtype="<i2", chunks=(N_TRIALS, 1, 1, 1), fillvalue=fill)
        for x, y, z in written[rng.permutation(len(written))].tolist():
            dset.id.write_direct_chunk((0, z, y, x), rng.integers(-3000, 3000, N_TRIALS, dtype=np.int16).tobytes())


def test_nsd_layout_equals_h5py_with_unwritten_chunks_and_shuffled_order(tmp_path):
    rng = np.random.default_rng(0)
    requested = _voxels(rng, 120)
    written = requested[rng.random(len(requested)) < 0.8]  # some requested voxels were never written
    _write_nsd_layout(tmp_path / "b.hdf5", written, rng, fill=-7)
    got = nsd.read_betas(tmp_path / "b.hdf5", requested)
    assert got.dtype == np.int16 and got.shape == (N_TRIALS, len(requested))
    assert np.array_equal(got, _by_h5py(tmp_path / "b.hdf5", requested))
    with h5py.File(tmp_path / "b.hdf5", "r") as f:  # the chunk-run reader, not h5py's fallback, read it
        assert np.array_equal(nsd._read_voxel_chunks(tmp_path / "b.hdf5", f["betas"], requested), got)
    unwritten = ~(requested[:, None, :] == written[None]).all(axis=2).any(axis=1)
    assert unwritten.any() and (got[:, unwritten] == -7).all()


def test_full_grid_and_repeated_voxels(tmp_path):
    rng = np.random.default_rng(1)
    every = np.argwhere(np.ones(GRID, bool))
    _write_nsd_layout(tmp_path / "b.hdf5", every, rng)
    requested = np.concatenate([every[::3], every[:5]])  # a voxel asked twice gives the same column twice
    assert np.array_equal(nsd.read_betas(tmp_path / "b.hdf5", requested), _by_h5py(tmp_path / "b.hdf5", requested))


def test_other_layouts_read_the_same_values(tmp_path):
    """gzip-compressed planes (the layout of other writers) take h5py's path; same values."""
    rng = np.random.default_rng(2)
    every = np.argwhere(np.ones(GRID, bool))
    _write_nsd_layout(tmp_path / "nsd.hdf5", every, rng)
    with h5py.File(tmp_path / "nsd.hdf5", "r") as f:
        vol = f["betas"][:]
    with h5py.File(tmp_path / "gz.hdf5", "w") as f:
        f.create_dataset("betas", data=vol, chunks=(N_TRIALS, 1, GRID[1], GRID[0]), compression="gzip")
    requested = _voxels(rng, 50)
    with h5py.File(tmp_path / "gz.hdf5", "r") as f:
        assert nsd._read_voxel_chunks(tmp_path / "gz.hdf5", f["betas"], requested) is None
    assert np.array_equal(nsd.read_betas(tmp_path / "gz.hdf5", requested), nsd.read_betas(tmp_path / "nsd.hdf5", requested))


def test_truncated_nsd_layout_names_the_file(tmp_path):
    rng = np.random.default_rng(3)
    _write_nsd_layout(tmp_path / "b.hdf5", np.argwhere(np.ones(GRID, bool)), rng)
    data = (tmp_path / "b.hdf5").read_bytes()
    with h5py.File(tmp_path / "b.hdf5", "r") as f:
        last = max(c.byte_offset for c in _chunks(f["betas"]))
    (tmp_path / "b.hdf5").write_bytes(data[: last + 4])  # ends inside the last chunk
    with pytest.raises(nsd.NSDError, match=r"b\.hdf5.*fetch it again"):
        nsd.read_betas(tmp_path / "b.hdf5", np.argwhere(np.ones(GRID, bool)))


def _chunks(dset: h5py.Dataset) -> list:
    found = []
    dset.id.chunk_iter(found.append)
    return found


def _write_nifti(file, rng: np.random.Generator) -> np.ndarray:
    import nibabel as nib

    vol = rng.integers(-3000, 3000, size=(*GRID, N_TRIALS), dtype=np.int16)  # (x, y, z, trials)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(file))
    return vol


def test_nifti_gz_read_trial_by_trial_equals_the_volume(tmp_path):
    vol = _write_nifti(tmp_path / "b.nii.gz", np.random.default_rng(4))
    requested = _voxels(np.random.default_rng(5), 60)
    expected = vol[requested[:, 0], requested[:, 1], requested[:, 2], :].T
    assert np.array_equal(nsd.read_betas(tmp_path / "b.nii.gz", requested), expected)


@pytest.mark.parametrize("damage", ["crc", "truncated"])
def test_damaged_nifti_gz_betas_name_the_file(tmp_path, damage):
    file = tmp_path / "betas_session01.nii.gz"
    _write_nifti(file, np.random.default_rng(6))
    data = bytearray(file.read_bytes())
    if damage == "crc":
        data[-8] ^= 0xFF  # only the trailer's CRC32: every byte of data decompresses
    else:
        data = data[: len(data) * 2 // 3]
    file.write_bytes(bytes(data))
    with pytest.raises(nsd.NSDError, match=r"cannot read betas .*betas_session01\.nii\.gz .*corrupt or truncated"):
        nsd.read_betas(file, _voxels(np.random.default_rng(7), 10))
