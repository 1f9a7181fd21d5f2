"""Every NSD file is validated when read: CRC of .nii.gz, int16 betas, bad sessions,
NaN/inf, constant voxels; crashes name the file and the fix."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainldm import nsd
from brainldm.ingest import zscore_sessionwise
from test_ingest import _ingest, _write_tiny_nsd


def _corrupt_gzip_body(file):
    """Flip bytes in the middle of a gzip stream, keeping the size (as a bad download would)."""
    data = bytearray(file.read_bytes())
    mid = len(data) // 2
    for k in range(mid, min(mid + 8, len(data) - 8)):
        data[k] ^= 0xFF
    file.write_bytes(bytes(data))


def test_corrupt_brainmask_at_same_size_fails_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 2, size=(40, 40, 40)).astype(np.uint8)
    big = tmp_path / "brainmask.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(big))
    size = big.stat().st_size
    _corrupt_gzip_body(big)
    assert big.stat().st_size == size
    with pytest.raises(nsd.NSDError, match=r"cannot read NIfTI .*brainmask\.nii\.gz .*corrupt or truncated: delete it and fetch it again"):
        nsd.read_volume(big)


def test_crc_failure_alone_is_caught(tmp_path):
    """Only the gzip trailer's CRC is wrong: the data decompress, yet the file is rejected."""
    file = tmp_path / "brainmask.nii.gz"
    vol = np.random.default_rng(1).integers(0, 2, size=(60, 60, 60)).astype(np.uint8)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(file))
    data = bytearray(file.read_bytes())
    data[-8] ^= 0xFF  # CRC32 of the trailer
    file.write_bytes(bytes(data))
    assert nib.load(str(file)).shape == (60, 60, 60)  # nibabel's lazy load does not notice
    with pytest.raises(nsd.NSDError, match=r"brainmask\.nii\.gz .*(CRC|crc).*fetch it again"):
        nsd.read_volume(file)


@pytest.mark.parametrize("fmt", ["hdf5", "nifti"])
def test_float_betas_are_an_error_not_a_cast(tmp_path, fmt):
    root = _write_tiny_nsd(tmp_path / "nsd")
    file = nsd.path(root, "betas_" + fmt, "subj01", 2)
    if fmt == "hdf5":
        with h5py.File(file, "r+") as f:
            betas = f["betas"][()].astype(np.float32)
            betas[0, 0, 0, 0] = np.nan
            del f["betas"]
            f["betas"] = betas
    else:
        img = nib.load(str(file))
        data = np.asarray(img.dataobj).astype(np.float32)
        data[0, 0, 0, 0] = np.nan  # NaN in NIfTI betas
        nib.save(nib.Nifti1Image(data, img.affine), str(file))
    with pytest.raises(nsd.NSDError, match=r"betas .*betas_session02\.(hdf5|nii\.gz) hold float32 values, but NSD stores betas as int16.*not cast"):
        _ingest(root, tmp_path / "out", fmt)
    assert not (tmp_path / "out" / "train.tsv").exists()


def test_scaled_nifti_betas_are_an_error(tmp_path):
    root = _write_tiny_nsd(tmp_path / "nsd")
    file = nsd.path(root, "betas_nifti", "subj01", 1)
    img = nib.load(str(file))
    scaled = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    scaled.header.set_slope_inter(2.0, 0.0)
    nib.save(scaled, str(file))
    with pytest.raises(nsd.NSDError, match=r"betas_session01\.nii\.gz carry a NIfTI scaling \(scl_slope 2\.0"):
        _ingest(root, tmp_path / "out", "nifti")


def _zero_session(root, session=2, value=0):
    file = nsd.path(root, "betas_hdf5", "subj01", session)
    with h5py.File(file, "r+") as f:
        f["betas"][...] = value
    return file


@pytest.mark.parametrize("value, what", [(0, "all zero"), (7, "constant")])
def test_bad_session_is_an_error_by_default(tmp_path, value, what):
    root = _write_tiny_nsd(tmp_path / "nsd")
    _zero_session(root, value=value)
    with pytest.raises(nsd.NSDError, match=rf"betas .*betas_session02\.hdf5 \(session 2\) are {what}.*ingest.bad_sessions: exclude"):
        _ingest(root, tmp_path / "out")


def test_bad_session_excluded_with_a_warning_and_recorded(tmp_path, caplog):
    root = _write_tiny_nsd(tmp_path / "nsd")
    _zero_session(root, session=2)
    out = tmp_path / "out"
    from brainldm.ingest import ingest_subject
    from test_ingest import ROIS

    with caplog.at_level("WARNING"):
        ingest_subject(
            "subj01", [nsd.path(root, "betas_hdf5", "subj01", s) for s in (1, 2)], nsd.path(root, "brainmask", "subj01"),
            {"streams": nsd.path(root, "roi_streams", "subj01"), "prf-visualrois": nsd.path(root, "roi_prf-visualrois", "subj01")},
            {s: nsd.path(root, "responses", s) for s in ("subj01", "subj02")}, nsd.path(root, "expdesign"), ROIS, out,
            zscore=False, bad_sessions="exclude",
        )
    assert "EXCLUDED session 2 of subj01" in caplog.text and "betas_session02.hdf5" in caplog.text
    sessions = pd.read_csv(out / "sessions.tsv", sep="\t")
    assert sessions["status"].tolist() == ["used", "excluded"] and sessions["reason"].tolist()[1] == "all zero"
    train = pd.read_csv(out / "train.tsv", sep="\t")
    assert train["nsd_id"].tolist() == [2] and train["session"].tolist() == [1]  # session 2's image 3 left out
    brain = np.load(out / "betas_brain_train.npy")
    assert brain.shape == (1, 6)
    np.testing.assert_allclose(brain[0], (200 + 10 * np.arange(6) + 1) / 300, rtol=1e-6)
    test = pd.read_csv(out / "test.tsv", sep="\t")
    assert test["n_repeats"].tolist() == [1]  # only session 1's repetition of image 0
    np.testing.assert_allclose(np.load(out / "betas_brain_test.npy")[0], (10 * np.arange(6) + 1) / 300, rtol=1e-6)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_clean_run_records_every_session_used(tmp_path):
    root = _write_tiny_nsd(tmp_path / "nsd")
    _ingest(root, tmp_path / "out")
    sessions = pd.read_csv(tmp_path / "out" / "sessions.tsv", sep="\t")
    assert sessions["session"].tolist() == [1, 2] and (sessions["status"] == "used").all()


def test_constant_voxel_zscores_to_exactly_zero():
    x = np.random.default_rng(0).normal(size=(750, 3)).astype(np.float32)
    x[:, 1] = np.float32(0.37)  # float32 rounding made this 1.0 before
    z = zscore_sessionwise(x)
    assert np.all(z[:, 1] == 0.0)
    np.testing.assert_allclose(z[:, [0, 2]].std(0), 1, atol=1e-5)


def test_constant_voxel_in_a_session_is_zero_after_ingest(tmp_path):
    root = _write_tiny_nsd(tmp_path / "nsd")
    file = nsd.path(root, "betas_hdf5", "subj01", 1)
    with h5py.File(file, "r+") as f:
        f["betas"][:, 0, 0, 0] = 111  # voxel (0, 0, 0) constant over session 1
    _ingest(root, tmp_path / "out", zscore=True)
    brain = np.load(tmp_path / "out" / "betas_brain_train.npy")
    voxels = np.load(tmp_path / "out" / "voxels_brain.npy").tolist()
    assert brain[0, voxels.index([0, 0, 0])] == 0.0  # train row 0 is in session 1
    assert np.isfinite(brain).all()


def test_all_zero_brainmask_names_the_mask_not_the_rois(tmp_path):
    root = _write_tiny_nsd(tmp_path / "nsd")
    file = nsd.path(root, "brainmask", "subj01")
    nib.save(nib.Nifti1Image(np.zeros((3, 2, 2), np.uint8), np.eye(4)), str(file))
    with pytest.raises(nsd.NSDError, match=r"brain mask .*brainmask\.nii\.gz has no voxel > 0.*fetch it again") as err:
        _ingest(root, tmp_path / "out")
    assert "ingest.rois" not in str(err.value)
