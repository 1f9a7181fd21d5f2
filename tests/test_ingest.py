"""Ingestion: split, averaging, z-scoring and masking on a hand-built case; the planted signal survives;
bad inputs stop with a message naming the file."""

from __future__ import annotations

import gzip
import shutil

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io

from brainldm import nsd
from brainldm.ingest import ingest_subject, stimuli_table, zscore_sessionwise
from brainldm.ridge import fit_ridge
from brainldm.scores import pearson_columns

ROIS = {"early": {"atlas": "streams", "labels": [1]}, "ventral": {"atlas": "streams", "labels": [5]}}


def _write_tiny_nsd(root, fmt="hdf5"):
    """2 subjects, 2 sessions x 4 trials on a 3x2x2 grid; images 0..5, shared = {0, 1}.

    subj01 sees 0,1,2 and 0,1,3 (sessions 1, 2); subj02 sees 0,4 / 0,5 / ... (never 1).
    Betas value = 100 * nsd_id + 10 * voxel + session (int16 units).
    """
    grid = (3, 2, 2)
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    mask = np.zeros(grid, np.uint8)
    mask[:, :, 0] = 1  # 6 brain voxels with z == 0
    streams = np.zeros(grid, np.uint8)
    streams[0, 0, 0] = streams[1, 0, 0] = 1
    streams[2, 1, 0] = 5
    streams[2, 1, 1] = 5  # outside the brain mask: must be dropped
    for subject, seen in (("subj01", [[0, 1, 2, 1], [0, 3, 0, 1]]), ("subj02", [[0, 4, 0, 4], [5, 0, 5, 4]])):
        for kind, vol in (("brainmask", mask), ("roi_streams", streams), ("roi_prf-visualrois", streams)):
            file = nsd.path(root, kind, subject)
            file.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(vol, affine), str(file))
        rows = []
        for session, ids in enumerate(seen, start=1):
            betas = np.zeros((len(ids),) + grid[::-1], np.int16)  # (trials, z, y, x)
            for t, img in enumerate(ids):
                for v, (x, y, z) in enumerate(np.argwhere(mask)):
                    betas[t, z, y, x] = 100 * img + 10 * v + session
            file = nsd.path(root, "betas_hdf5", subject, session)
            file.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(file, "w") as f:
                f["betas"] = betas
            nib.save(nib.Nifti1Image(betas.transpose(3, 2, 1, 0), affine), str(nsd.path(root, "betas_nifti", subject, session)))
            rows += [{"SUBJECT": int(subject[-1]), "SESSION": session, "RUN": 1, "TRIAL": t + 1, "73KID": img + 1} for t, img in enumerate(ids)]
        file = nsd.path(root, "responses", subject)
        file.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(file, sep="\t", index=False)
    file = nsd.path(root, "expdesign")
    file.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(file, {"sharedix": np.array([[1, 2]]), "masterordering": np.array([[1]]), "subjectim": np.ones((8, 1))})
    return root


def _ingest(root, out, fmt="hdf5", zscore=False, subject="subj01", sessions=(1, 2)):
    kind = "betas_" + fmt
    ingest_subject(
        subject, [nsd.path(root, kind, subject, s) for s in sessions], nsd.path(root, "brainmask", subject),
        {"streams": nsd.path(root, "roi_streams", subject), "prf-visualrois": nsd.path(root, "roi_prf-visualrois", subject)},
        {s: nsd.path(root, "responses", s) for s in ("subj01", "subj02")}, nsd.path(root, "expdesign"), ROIS, out, zscore=zscore,
    )


@pytest.mark.parametrize("fmt", ["hdf5", "nifti"])
def test_split_averaging_and_masking_by_hand(tmp_path, fmt):
    root = _write_tiny_nsd(tmp_path / "nsd")
    out = tmp_path / "out"
    _ingest(root, out, fmt)
    test = pd.read_csv(out / "test.tsv", sep="\t")
    train = pd.read_csv(out / "train.tsv", sep="\t")
    # image 0 is shared and seen by both subjects -> test; image 1 is shared but subj02 never saw it -> neither split
    assert test["nsd_id"].tolist() == [0] and test["n_repeats"].tolist() == [3]
    assert train["nsd_id"].tolist() == [2, 3] and train["session"].tolist() == [1, 2] and train["trial"].tolist() == [2, 1]
    brain_train = np.load(out / "betas_brain_train.npy")
    assert brain_train.dtype == np.float32 and brain_train.shape == (2, 6)
    np.testing.assert_allclose(brain_train[0], (200 + 10 * np.arange(6) + 1) / 300, rtol=1e-6)  # divided by 300
    np.testing.assert_allclose(brain_train[1], (300 + 10 * np.arange(6) + 2) / 300, rtol=1e-6)
    # test = mean over the 3 repetitions (sessions 1, 2, 2)
    np.testing.assert_allclose(np.load(out / "betas_brain_test.npy")[0], (10 * np.arange(6) + (1 + 2 + 2) / 3) / 300, rtol=1e-6)
    voxels = np.load(out / "voxels_brain.npy")
    assert voxels.shape == (6, 3) and np.all(voxels[:, 2] == 0)
    assert np.load(out / "voxels_early.npy").tolist() == [[0, 0, 0], [1, 0, 0]]
    assert np.load(out / "voxels_ventral.npy").tolist() == [[2, 1, 0]]  # the voxel outside the mask is dropped
    early = np.load(out / "betas_early_train.npy")
    brain_cols = [voxels.tolist().index(v) for v in np.load(out / "voxels_early.npy").tolist()]
    np.testing.assert_array_equal(early, brain_train[:, brain_cols])


def test_zscore_within_each_session(tmp_path):
    root = _write_tiny_nsd(tmp_path / "nsd")
    _ingest(root, tmp_path / "out", zscore=True)
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, size=(50, 4)).astype(np.float32)
    z = zscore_sessionwise(x)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-5)
    # in the tiny case the session-1 trial of image 2 is z-scored over session 1's 4 trials (ids 0,1,2,1)
    session1 = np.array([0, 100, 200, 100], dtype=np.float32) / 300
    expected = (200 / 300 - session1.mean()) / session1.std()
    assert np.load(tmp_path / "out" / "betas_brain_train.npy")[0, 0] == pytest.approx(expected, rel=1e-5)


def test_planted_signal_is_recoverable_from_early_voxels(synthetic_root, synthetic_ingested):
    """A ridge fit on ingested early betas predicts held-out low-level image features; shuffled trials do not."""
    out, root = synthetic_ingested, synthetic_root
    low = np.load(root / "ground_truth" / "low_level.npy").reshape(1400, -1)
    train = pd.read_csv(out / "train.tsv", sep="\t")
    test = pd.read_csv(out / "test.tsv", sep="\t")
    assert len(test) == 40 and (test["n_repeats"] == 3).all() and len(train) == 480
    X_train, X_test = np.load(out / "betas_early_train.npy"), np.load(out / "betas_early_test.npy")
    alphas = np.logspace(0, 5, 11)
    fit = fit_ridge(X_train, low[train["nsd_id"]], alphas, cv=5, backend="numpy")
    r = pearson_columns(fit.predict(X_test), low[test["nsd_id"]])
    # The null: the same fit on shuffled trial order. Pixel-like features share a dominant factor
    # (overall brightness), so single shuffles scatter widely; their average is near 0 and none comes close.
    r_shuffled = []
    for seed in range(5):
        ids = np.random.default_rng(seed).permutation(train["nsd_id"])
        shuffled = fit_ridge(X_train, low[ids], alphas, cv=5, backend="numpy")
        r_shuffled.append(np.nanmean(pearson_columns(shuffled.predict(X_test), low[test["nsd_id"]])))
    assert np.nanmean(r) > 0.7
    assert abs(np.mean(r_shuffled)) < 0.25
    assert np.nanmean(r) > max(r_shuffled) + 0.2
    # ventral voxels carry the semantic attributes (which correlate with pixels through the captioned background colour),
    # not the pixels themselves: they predict low-level features worse
    fit_v = fit_ridge(np.load(out / "betas_ventral_train.npy"), low[train["nsd_id"]], alphas, cv=5, backend="numpy")
    assert np.nanmean(pearson_columns(fit_v.predict(np.load(out / "betas_ventral_test.npy")), low[test["nsd_id"]])) < np.nanmean(r)


# ---------------------------------------------------------------- bad input
def test_missing_session_names_the_file(tmp_path):
    root = _write_tiny_nsd(tmp_path / "nsd")
    nsd.path(root, "betas_hdf5", "subj01", 2).unlink()
    with pytest.raises(nsd.NSDError, match=r"missing NSD file .*betas_session02\.hdf5.*download"):
        _ingest(root, tmp_path / "out")
    assert not (tmp_path / "out" / "train.tsv").exists()


def test_grid_mismatch_names_both_files(tmp_path):
    root = _write_tiny_nsd(tmp_path / "nsd")
    file = nsd.path(root, "betas_hdf5", "subj01", 1)
    with h5py.File(file, "w") as f:
        f["betas"] = np.zeros((4, 2, 2, 4), np.int16)
    with pytest.raises(nsd.NSDError, match=r"betas_session01\.hdf5 are on grid \(4, 2, 2\).*brainmask\.nii\.gz is \(3, 2, 2\)"):
        _ingest(root, tmp_path / "out")


@pytest.mark.parametrize("fmt", ["hdf5", "nifti"])
def test_truncated_betas_name_the_file(tmp_path, fmt):
    root = _write_tiny_nsd(tmp_path / "nsd")
    file = nsd.path(root, "betas_" + fmt, "subj01", 2)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    suffix = r"hdf5" if fmt == "hdf5" else r"nii\.gz"
    with pytest.raises(nsd.NSDError, match=r"betas_session02\." + suffix + ".*corrupt or truncated"):
        _ingest(root, tmp_path / "out", fmt)
    assert not list((tmp_path / "out").glob(".tmp-*"))  # session 2 failed while read ahead: nothing left behind


def test_read_ahead_keeps_order_reads_the_next_item_early_and_raises_in_place():
    import threading

    from brainldm.ingest import _read_ahead

    started = []
    second_started = threading.Event()

    def read(k):
        started.append(k)
        if k == 2:
            second_started.set()
        if k == 3:
            raise ValueError("item 3 is bad")
        return k * 10

    items = _read_ahead([1, 2, 3], read)
    assert next(items) == 10
    assert second_started.wait(5)  # item 2 is read while the caller still works on item 1
    assert next(items) == 20
    with pytest.raises(ValueError, match="item 3 is bad"):
        next(items)
    assert started == [1, 2, 3]


def test_earlier_outputs_survive_a_failed_rerun(tmp_path):
    root = _write_tiny_nsd(tmp_path / "nsd")
    out = tmp_path / "out"
    _ingest(root, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    nsd.path(root, "betas_hdf5", "subj01", 2).write_bytes(b"not hdf5")
    with pytest.raises(nsd.NSDError):
        _ingest(root, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing overwritten, no temporaries left


def test_roi_without_voxels_is_named(tmp_path):
    root = _write_tiny_nsd(tmp_path / "nsd")
    with pytest.raises(nsd.NSDError, match="ROI 'parietal' has no voxels.*ingest.rois"):
        ingest_subject(
            "subj01", [nsd.path(root, "betas_hdf5", "subj01", 1)], nsd.path(root, "brainmask", "subj01"),
            {"streams": nsd.path(root, "roi_streams", "subj01")}, {"subj01": nsd.path(root, "responses", "subj01")},
            nsd.path(root, "expdesign"), {"parietal": {"atlas": "streams", "labels": [7]}}, tmp_path / "out",
        )


def test_unknown_subject():
    with pytest.raises(nsd.NSDError, match="unknown subject 9.*subj01..subj08"):
        nsd.subject_name(9)
    with pytest.raises(nsd.NSDError, match="unknown subject 'subjXY'"):
        nsd.relpath("responses", "subjXY")


def test_image_id_outside_imgbrick_and_missing_captions(synthetic_root, tmp_path):
    root = synthetic_root
    files = {"train2017": nsd.path(root, "captions_train"), "val2017": nsd.path(root, "captions_val")}
    with pytest.raises(nsd.NSDError, match=r"image id 1400 is outside imgBrick of .*nsd_stimuli\.hdf5 \(1400 images\)"):
        nsd.read_images(nsd.path(root, "stimuli"), [0, 1400])
    # a caption file that lacks one image's cocoId
    info = nsd.read_stim_info(nsd.path(root, "stim_info"))
    responses = nsd.read_responses(nsd.path(root, "responses", "subj01"))
    first = int(responses["nsd_id"].iloc[0])
    split = info.loc[first, "cocoSplit"]
    kind = "captions_train" if split == "train2017" else "captions_val"
    import json

    coco = json.loads(nsd.path(root, kind).read_text())
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != int(info.loc[first, "cocoId"])]
    broken = tmp_path / f"captions_{split}.json"
    broken.write_text(json.dumps(coco))
    files[split] = broken
    with pytest.raises(nsd.NSDError, match=rf"caption file .*captions_{split}\.json has no captions for cocoId {int(info.loc[first, 'cocoId'])}"):
        stimuli_table([nsd.path(root, "responses", "subj01")], 4, nsd.path(root, "stim_info"), nsd.path(root, "stimuli"), files, tmp_path / "s.tsv")
    assert not (tmp_path / "s.tsv").exists()


# ---------------------------------------------------------------- NSD quirks
def test_nsd_quirks_are_handled(tmp_path, pycortex_cache):
    """synthetic.nsd_quirks: -1 ROI labels, edge voxels all 0 in the last session, one
    session fewer and a grid of its own for subj02, unseen images in imgBrick. Ingestion
    stays finite, ROIs exclude -1, constant voxels z-score to exactly 0, and the planted
    signal is recovered in both subjects."""
    from brainldm.synthetic import SyntheticDesign, write_synthetic_nsd

    root = tmp_path / "nsd"
    design = SyntheticDesign(subjects=(1, 2), n_sessions=4, trials_per_session=150, n_shared_images=40,
                             n_images=1400, image_size=32, snr=1.0, seed=0, nsd_quirks=True)
    write_synthetic_nsd(root, design, pycortex_cache)
    streams, _ = nsd.read_volume(nsd.path(root, "roi_streams", "subj01"))
    brainmask, _ = nsd.read_volume(nsd.path(root, "brainmask", "subj01"))
    assert (streams == -1).any() and ((streams == -1) == (brainmask == 0)).all()
    assert nsd.read_responses(nsd.path(root, "responses", "subj02"))["SESSION"].max() == 3
    assert not nsd.path(root, "betas_hdf5", "subj02", 4).exists()
    seen = set()
    for s in ("subj01", "subj02"):
        seen |= set(nsd.read_responses(nsd.path(root, "responses", s))["nsd_id"])
    assert nsd.n_images(nsd.path(root, "stimuli")) > len(seen)
    with h5py.File(nsd.path(root, "betas_hdf5", "subj01", 1), "r") as f:  # NSD's chunks, outside the brain unwritten
        assert f["betas"].chunks == (150, 1, 1, 1) and f["betas"].compression is None
        assert f["betas"].id.get_num_chunks() == int((brainmask > 0).sum())
    for s in (1, 4):  # the HDF5 and NIfTI copies agree
        assert np.array_equal(nsd.read_betas(nsd.path(root, "betas_hdf5", "subj01", s), np.argwhere(brainmask > 0)),
                              nsd.read_betas(nsd.path(root, "betas_nifti", "subj01", s), np.argwhere(brainmask > 0)))

    out = tmp_path / "out"
    rois = {"early": {"atlas": "streams", "labels": [1]}, "ventral": {"atlas": "streams", "labels": [5]},
            "outside": {"atlas": "streams", "labels": [-1, 1]}}
    ingest_subject(
        "subj01", [nsd.path(root, "betas_hdf5", "subj01", s) for s in range(1, 5)], nsd.path(root, "brainmask", "subj01"),
        {"streams": nsd.path(root, "roi_streams", "subj01"), "prf-visualrois": nsd.path(root, "roi_prf-visualrois", "subj01")},
        {s: nsd.path(root, "responses", s) for s in ("subj01", "subj02")}, nsd.path(root, "expdesign"), rois, out,
        zscore=True, sessions={"subj02": 3},
    )
    for name in ("early", "ventral", "brain", "outside"):
        for split in ("train", "test"):
            assert np.isfinite(np.load(out / f"betas_{name}_{split}.npy")).all()
        voxels = np.load(out / f"voxels_{name}.npy")
        assert (streams[tuple(voxels.T)] != -1).all() and (brainmask[tuple(voxels.T)] > 0).all()
    # even a ROI that lists -1 keeps only brain voxels: the same as early
    assert np.array_equal(np.load(out / "voxels_outside.npy"), np.load(out / "voxels_early.npy"))
    # the edge voxels: exactly 0 in every train trial of the last session, z-scored elsewhere
    train = pd.read_csv(out / "train.tsv", sep="\t")
    X = np.load(out / "betas_brain_train.npy")
    voxels = np.load(out / "voxels_brain.npy")
    edge = voxels[:, 2] >= np.quantile(voxels[:, 2], 0.98)
    last = (train["session"] == 4).to_numpy()
    assert edge.any() and (X[np.ix_(last, edge)] == 0.0).all()
    assert np.allclose(X[np.ix_(~last, edge)].std(axis=0), 1.0, atol=0.1)
    # test set: shared images both subjects saw in their own sessions (subj02: 1-3), repeats present averaged
    test = pd.read_csv(out / "test.tsv", sep="\t")
    resp2 = nsd.read_responses(nsd.path(root, "responses", "subj02"))
    assert set(test["nsd_id"]) <= set(resp2["nsd_id"]) and len(test) > 30
    # the planted signal: early voxels predict held-out low-level features
    low = np.load(root / "ground_truth" / "low_level.npy").reshape(1400, -1)
    X_train, X_test = np.load(out / "betas_early_train.npy"), np.load(out / "betas_early_test.npy")
    alphas = np.logspace(0, 5, 11)
    r = pearson_columns(fit_ridge(X_train, low[train["nsd_id"]], alphas, cv=5, backend="numpy")
                        .predict(X_test), low[test["nsd_id"]])
    ids = np.random.default_rng(0).permutation(train["nsd_id"])
    r_null = pearson_columns(fit_ridge(X_train, low[ids], alphas, cv=5, backend="numpy").predict(X_test),
                             low[test["nsd_id"]])
    assert np.nanmean(r) > 0.6 and np.nanmean(r) > np.nanmean(r_null) + 0.3

    # subj02 has its own grid: the same brain, padded, every voxel at the same scanner position
    from nibabel.affines import apply_affine

    from brainldm.synthetic import GRID_PAD

    mask2, affine2 = nsd.read_volume(nsd.path(root, "brainmask", "subj02"))
    _, affine1 = nsd.read_volume(nsd.path(root, "brainmask", "subj01"))
    assert mask2.shape == tuple(n + a + b for n, (a, b) in zip(brainmask.shape, GRID_PAD))
    v1, v2 = np.argwhere(brainmask > 0), np.argwhere(mask2 > 0)
    np.testing.assert_allclose(apply_affine(affine2, v2), apply_affine(affine1, v1), atol=1e-4)  # float32 sform
    out2 = tmp_path / "out2"
    ingest_subject(
        "subj02", [nsd.path(root, "betas_hdf5", "subj02", s) for s in range(1, 4)], nsd.path(root, "brainmask", "subj02"),
        {"streams": nsd.path(root, "roi_streams", "subj02"), "prf-visualrois": nsd.path(root, "roi_prf-visualrois", "subj02")},
        {s: nsd.path(root, "responses", s) for s in ("subj01", "subj02")}, nsd.path(root, "expdesign"), rois, out2,
        zscore=True, sessions={"subj01": 4},
    )
    np.testing.assert_array_equal(np.load(out2 / "voxels_brain.npy"), v2)
    train2 = pd.read_csv(out2 / "train.tsv", sep="\t")
    X2, X2_test = np.load(out2 / "betas_early_train.npy"), np.load(out2 / "betas_early_test.npy")
    r2 = pearson_columns(fit_ridge(X2, low[train2["nsd_id"]], alphas, cv=5, backend="numpy").predict(X2_test),
                         low[test["nsd_id"]])
    assert np.nanmean(r2) > 0.5, np.nanmean(r2)


def test_constant_voxels_zscore_to_exactly_zero():
    rng = np.random.default_rng(0)
    betas = rng.normal(size=(50, 6)).astype(np.float32)
    betas[:, 1] = 0.0
    betas[:, 2] = np.float32(0.1)  # float32 rounding would give a tiny sd and ±1 values
    betas[:, 3] = np.float32(1234.567)
    z = zscore_sessionwise(betas, block=4)
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert (z[:, 1:4] == 0.0).all()
    assert np.allclose(z[:, [0, 4, 5]].mean(axis=0), 0, atol=1e-6)
    assert np.allclose(z[:, [0, 4, 5]].std(axis=0), 1, atol=1e-5)
