"""Brain correlation: a planted linear encoding is recovered (true images high, shuffled ~ 0)."""
import numpy as np
import pytest

from brainldm.brain_correlation import BrainCorrelationError, brain_correlations, roi_masks


def _planted(seed=0, n_img=60, reps=3, n_test=24, d=12, n_vox=300, noise=0.5):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, n_vox)).astype(np.float32)
    z_img = rng.standard_normal((n_img, d)).astype(np.float32)
    ids = np.repeat(np.arange(n_img), reps)
    z_train = z_img[ids]
    betas = z_train @ w + noise * rng.standard_normal((len(ids), n_vox)).astype(np.float32)
    z_test = rng.standard_normal((n_test, d)).astype(np.float32)
    measured = z_test @ w + noise / np.sqrt(reps) * rng.standard_normal((n_test, n_vox)).astype(np.float32)
    return z_train, betas, ids, z_test, measured


def test_planted_encoding_true_high_shuffled_zero():
    z_train, betas, ids, z_test, measured = _planted()
    masks = {"brain": np.ones(betas.shape[1], bool), "early": np.arange(betas.shape[1]) < 50}
    alphas = [0.1, 1.0, 10.0, 100.0]
    true = brain_correlations(z_train, betas, ids, z_test, measured, masks, alphas, cv_folds=3, backend="numpy")
    perm = np.roll(np.arange(len(z_test)), 1)  # every image paired with another one
    shuf = brain_correlations(z_train, betas, ids, z_test[perm], measured, masks, alphas, cv_folds=3, backend="numpy")
    for roi in masks:
        assert true[roi].shape == (len(z_test),)
        assert true[roi].mean() > 0.9, roi
        assert abs(shuf[roi].mean()) < 0.15, roi
    # voxel batches and image_of (compare each z with a chosen row) give the same numbers
    batched = brain_correlations(z_train, betas, ids, np.concatenate([z_test, z_test]), measured, masks, alphas,
                                 cv_folds=3, backend="numpy", voxel_batch=70,
                                 image_of=np.concatenate([np.arange(len(z_test))] * 2))
    for roi in masks:
        np.testing.assert_allclose(batched[roi], np.concatenate([true[roi]] * 2), rtol=1e-4, atol=1e-5)


def test_noise_only_measurement_gives_zero():
    z_train, betas, ids, z_test, _ = _planted(seed=1)
    rng = np.random.default_rng(5)
    measured = rng.standard_normal((len(z_test), betas.shape[1])).astype(np.float32)
    r = brain_correlations(z_train, betas, ids, z_test, measured, {"brain": np.ones(betas.shape[1], bool)},
                           [1.0, 10.0], cv_folds=3, backend="numpy")["brain"]
    assert abs(r.mean()) < 0.1


def test_roi_masks_and_bad_input():
    brain = np.array([[0, 0, 0], [0, 0, 1], [1, 2, 3], [4, 4, 4]])
    masks = roi_masks(brain, {"early": brain[[3, 1]], "brain": brain})
    assert masks["early"].tolist() == [False, True, False, True]
    assert masks["brain"].all()
    with pytest.raises(BrainCorrelationError, match="outside the brain"):
        roi_masks(brain, {"ventral": np.array([[9, 9, 9]])})
    z_train, betas, ids, z_test, measured = _planted(n_vox=20)
    with pytest.raises(BrainCorrelationError, match="measured patterns"):
        brain_correlations(z_train, betas, ids, z_test, measured[:, :5], {"brain": np.ones(20, bool)}, [1.0])
    with pytest.raises(BrainCorrelationError, match="ROI 'x'"):
        brain_correlations(z_train, betas, ids, z_test, measured, {"x": np.zeros(20, bool)}, [1.0])


def test_score_subject_end_to_end_with_tiny_model(tmp_path):
    """Files as the workflow writes them; z reconstructions = copies of the originals (at the
    ceiling), c reconstructions = unrelated images (near 0)."""
    import h5py
    import pandas as pd
    import torch

    from brainldm import brain_correlation
    from brainldm.features import encode_z
    from brainldm.models import build_tiny_model, load_pipeline

    torch.set_num_threads(1)
    model = build_tiny_model(tmp_path / "tiny", seed=0)
    pipe = load_pipeline(model, device="cpu")
    rng = np.random.default_rng(0)
    n_train, n_test, res = 40, 6, 32
    images = rng.integers(0, 256, (n_train + n_test, res, res, 3), dtype=np.uint8)
    ids = np.arange(n_train + n_test, dtype=np.int64) + 100
    z = encode_z(pipe, images, res)
    with h5py.File(tmp_path / "z.h5", "w") as f:
        f["nsd_id"], f["z"] = ids, z
    zf = z.reshape(len(z), -1)
    zf = (zf - zf[:n_train].mean(0)) / zf[:n_train].std(0)
    n_vox = 60
    w = rng.standard_normal((zf.shape[1], n_vox)) / np.sqrt(zf.shape[1])
    train_ids = np.repeat(ids[:n_train], 2)
    pos = {int(i): k for k, i in enumerate(ids)}
    train = zf[[pos[int(i)] for i in train_ids]] @ w + 0.3 * rng.standard_normal((len(train_ids), n_vox))
    test = zf[n_train:] @ w + 0.2 * rng.standard_normal((n_test, n_vox))
    voxels = np.argwhere(np.ones((3, 4, 5), bool))  # 60 voxels
    ing = {"train": tmp_path / "tr.npy", "test": tmp_path / "te.npy", "train_tsv": tmp_path / "train.tsv",
           "test_tsv": tmp_path / "test.tsv", "voxels_brain": tmp_path / "vb.npy", "voxels_early": tmp_path / "ve.npy"}
    np.save(ing["train"], train.astype(np.float32))
    np.save(ing["test"], test.astype(np.float32))
    pd.DataFrame({"nsd_id": train_ids}).to_csv(ing["train_tsv"], sep="\t", index=False)
    pd.DataFrame({"nsd_id": ids[n_train:]}).to_csv(ing["test_tsv"], sep="\t", index=False)
    np.save(ing["voxels_brain"], voxels)
    np.save(ing["voxels_early"], voxels[:20])
    order = np.array([3, 1, 0, 2, 5, 4])  # recons in another order than test.tsv
    with h5py.File(tmp_path / "recons.h5", "w") as f:
        f["nsd_id"] = ids[n_train:][order]
        f["original"] = images[n_train:][order]
        f["z"] = np.repeat(images[n_train:][order][:, None], 2, axis=1)
        f["c"] = rng.integers(0, 256, (n_test, 2, res, res, 3), dtype=np.uint8)
    df = brain_correlation.score_subject(
        str(tmp_path / "recons.h5"), "subj01", {k: str(v) for k, v in ing.items()}, str(tmp_path / "z.h5"),
        str(model), {"z_resolution": res, "z_posterior": "mean", "seed": 0},
        {"alphas": [0.1, 1.0, 10.0, 100.0], "cv_folds": 3, "backend": "numpy", "voxel_batch": 25},
        ["z", "c"], device="cpu")
    assert len(df) == n_test * 3 * 2
    assert set(df["convention"]) == {brain_correlation.CONVENTION}
    mean = df.groupby(["condition", "metric"])["score"].mean()
    for roi in ("brain", "early"):
        assert mean[("original", roi)] > 0.7
        assert mean[("z", roi)] == pytest.approx(mean[("original", roi)], abs=1e-3)
        assert abs(mean[("c", roi)]) < 0.3
