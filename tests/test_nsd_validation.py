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


# ---------------------------------------------------------------- crashes that named no file
def _stimuli(tmp_path, n=3, name="imgBrick"):
    file = tmp_path / "nsd_stimuli.hdf5"
    with h5py.File(file, "w") as f:
        f[name] = np.zeros((n, 4, 4, 3), np.uint8)
    return file


def test_stimuli_without_imgbrick_names_the_file(tmp_path):
    file = _stimuli(tmp_path, name="images")
    with pytest.raises(nsd.NSDError, match=r"nsd_stimuli\.hdf5 has no dataset imgBrick \(it has \['images'\]\).*fetch it again"):
        nsd.n_images(file)
    with pytest.raises(nsd.NSDError, match=r"nsd_stimuli\.hdf5 has no dataset imgBrick"):
        nsd.read_images(file, [0])


def test_truncated_stimuli_names_the_file(tmp_path):
    file = _stimuli(tmp_path, n=50)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 3])
    with pytest.raises(nsd.NSDError, match=r"cannot (open|read images from) .*nsd_stimuli\.hdf5 .*truncated or corrupt.*fetch it again"):
        nsd.read_images(file, [0, 1])


@pytest.mark.parametrize("text, match", [
    ("", r"nsd_stim_info_merged\.csv \(No columns to parse from file\).*fetch nsd_stim_info_merged\.csv again"),
    (",nsdId,cocoSplit\n0,0,train2017\n", r"nsd_stim_info_merged\.csv lacks the columns \['cocoId'\].*fetch it again"),
])
def test_bad_stim_info_names_the_file(tmp_path, text, match):
    file = tmp_path / "nsd_stim_info_merged.csv"
    file.write_text(text)
    with pytest.raises(nsd.NSDError, match=match):
        nsd.read_stim_info(file)


def test_truncated_captions_name_the_file(tmp_path):
    info = pd.DataFrame({"nsdId": [0], "cocoId": [9], "cocoSplit": ["train2017"]})
    file = tmp_path / "captions_train2017.json"
    file.write_text('{"annotations": [{"image_id": 9, "caption": "a ca')
    with pytest.raises(nsd.NSDError, match=r"cannot read caption file .*captions_train2017\.json \(Unterminated string.*truncated or not JSON.*fetch"):
        nsd.read_captions(info, {"train2017": file}, [0])


def test_empty_73kid_cell_names_file_and_line(tmp_path):
    file = tmp_path / "responses.tsv"
    file.write_text("SUBJECT\tSESSION\tRUN\tTRIAL\t73KID\n1\t1\t1\t1\t5\n1\t1\t1\t2\t\n")
    with pytest.raises(nsd.NSDError, match=r"responses\.tsv has an empty or non-integer 73KID cell in data row 2 \(line 3; 1 such rows\)"):
        nsd.read_responses(file)


def test_empty_responses_names_the_file(tmp_path):
    file = tmp_path / "responses.tsv"
    file.write_text("")
    with pytest.raises(nsd.NSDError, match=r"cannot read .*responses\.tsv .*fetch it again"):
        nsd.read_responses(file)


def test_73kid_beyond_imgbrick_names_stimuli_and_responses(tmp_path):
    stimuli = _stimuli(tmp_path, n=3)
    responses = tmp_path / "responses.tsv"
    responses.write_text("SUBJECT\tSESSION\tRUN\tTRIAL\t73KID\n1\t1\t1\t1\t1\n1\t1\t1\t2\t9\n")
    with pytest.raises(nsd.NSDError) as err:
        from brainldm.ingest import stimuli_table

        stimuli_table([responses], 1, tmp_path / "info.csv", stimuli, {}, tmp_path / "s.tsv")
    msg = str(err.value)
    assert "image id 8 (0-based; 73KID 9)" in msg and "nsd_stimuli.hdf5 has only 3 images" in msg
    assert "stimuli file is incomplete" in msg and "responses.tsv" in msg and "nsd_expdesign.mat" in msg
    with pytest.raises(nsd.NSDError, match=r"outside imgBrick .*either the stimuli file is incomplete .*or the image ids \(responses\.tsv 73KID"):
        nsd.read_images(stimuli, [8])
