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
