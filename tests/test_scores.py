"""Every score of brainldm.scores, each tested once: against numpy, scipy, scikit-image or
himalaya, and on hand-built arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial.distance
from himalaya.scoring import correlation_score, r2_score

from brainldm import scores


def _tensor(original: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """r[i, j, k] = corr(original_i, recon_{j,k}): original (n, d), recon (n, s, d) -> (n, n, s)."""
    n, s = recon.shape[:2]
    return scores.correlation_matrix(original, recon.reshape(n * s, -1)).reshape(n, n, s)


# ---------------------------------------------------------------------------- Pearson r, R²


def test_pearson_helpers_match_corrcoef():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    cols = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(5)]
    rows = [np.corrcoef(a[i], b[i])[0, 1] for i in range(7)]
    np.testing.assert_allclose(scores.pearson_columns(a, b), cols, rtol=1e-5)
    np.testing.assert_allclose(scores.pearson_rows(a, b), rows, rtol=1e-5)
    np.testing.assert_allclose(scores.pearson_columns(a, b), correlation_score(a, b), rtol=1e-5)
    np.testing.assert_allclose(scores.pearson_rows(a, b), correlation_score(a.T, b.T), rtol=1e-5)
    a[:, 0] = 1.0
    assert np.isnan(scores.pearson_columns(a, b)[0])
    a[2] = 1.0
    assert np.isnan(scores.pearson_rows(a, b)[2])


def test_streaming_pearson_rows_equals_pearson_rows_of_the_whole():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(6, 50)) + 3.0, rng.normal(size=(6, 50))
    b[:, :25] += 0.8 * a[:, :25]
    a[4] = 2.0  # a constant row: NaN
    stream = scores.StreamingPearsonRows(6)
    for start, stop in ((0, 7), (7, 30), (30, 50)):
        stream.add(a[:, start:stop], b[:, start:stop])
    whole = scores.pearson_rows(a, b)
    np.testing.assert_allclose(stream.r(), whole, rtol=1e-5, equal_nan=True)
    assert np.isnan(stream.r()[4]) and np.isfinite(np.delete(stream.r(), 4)).all()


def test_r2_matches_himalaya():
    rng = np.random.default_rng(6)
    y, pred = rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
    np.testing.assert_allclose(scores.r2_columns(y, pred), r2_score(y, pred), rtol=1e-5)
    np.testing.assert_allclose(scores.r2_columns(y, y), 1.0)
    y[:, 1] = 2.0
    assert np.isnan(scores.r2_columns(y, pred)[1])


# ---------------------------------------------------------------------------- identification


# r[i, j] = corr(original_i, reconstruction_j), one sample: unequal diagonals make the
# row-wise (Takagi) and column-wise (MindEye) comparisons disagree.
R_ONE = np.array([
    [0.9, 0.3, 0.0],
    [0.0, 0.1, 0.0],
    [0.0, 0.0, 0.5],
])


def test_three_images_by_hand_takagi():
    # row 0: 0.9 > 0.3, 0.9 > 0.0; row 1: 0.1 > 0.0 twice; row 2: 0.5 > 0.0 twice
    np.testing.assert_allclose(scores.takagi_identification(R_ONE), [1.0, 1.0, 1.0])


def test_three_images_by_hand_mindeye():
    # column 1: r[1,1] = 0.1 is not above r[0,1] = 0.3 (fail), but is above r[2,1] = 0.0
    np.testing.assert_allclose(scores.two_way_identification(R_ONE), [1.0, 0.5, 1.0])
    assert scores.two_way_identification(R_ONE).mean() == pytest.approx(5 / 6)
    assert scores.takagi_identification(R_ONE).mean() == pytest.approx(1.0)


def test_three_images_two_samples_by_hand():
    r = np.zeros((3, 3, 2))
    r[..., 0] = [[0.8, 0.6, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]]
    r[..., 1] = [[0.2, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]]
    # Takagi averages r over samples first: row 0 is 0.5 vs (0.3, 0.0) -> wins both
    np.testing.assert_allclose(scores.takagi_identification(r), [1.0, 1.0, 1.0])
    # MindEye scores each sample: image 1 is 0.5 (sample 0 loses to r[0,1,0] = 0.6) and 1.0
    np.testing.assert_allclose(scores.two_way_identification(r), [1.0, 0.75, 1.0])


def test_ties_count_as_failures():
    r = np.full((4, 4), 0.3)
    assert np.all(scores.takagi_identification(r) == 0)
    assert np.all(scores.two_way_identification(r) == 0)
    r = R_ONE.copy()
    r[0, 1] = 0.9  # tie with r[0, 0]: Takagi row 0 loses one comparison
    np.testing.assert_allclose(scores.takagi_identification(r), [0.5, 1.0, 1.0])


def test_nan_correlations_fail():
    r = R_ONE.copy()
    r[1, 1] = np.nan  # constant reconstruction: no correlation
    assert scores.takagi_identification(r)[1] == 0
    assert scores.two_way_identification(r)[1] == 0


def test_identical_features_give_100_percent():
    rng = np.random.default_rng(0)
    orig = rng.normal(size=(20, 50))
    recon = np.repeat(orig[:, None], 3, axis=1)
    r = _tensor(orig, recon)
    assert np.all(scores.takagi_identification(r) == 1)
    assert np.all(scores.two_way_identification(r) == 1)
    np.testing.assert_allclose(scores.correlation_distance(r), 0, atol=1e-6)


@pytest.mark.parametrize("convention", [scores.takagi_identification, scores.two_way_identification])
def test_independent_features_give_chance(convention):
    # Under the null, each image's accuracy is its normalised rank among n - 1 others,
    # about uniform on [0, 1] (variance 1/12); images are nearly independent, so the
    # mean over n images has sd ~ sqrt(1 / (12 n)). Allow 4.5 sd.
    n = 300
    rng = np.random.default_rng(1)
    r = _tensor(rng.normal(size=(n, 40)), rng.normal(size=(n, 2, 40)))
    tol = 4.5 * np.sqrt(1 / (12 * n))
    assert abs(convention(r).mean() - 0.5) < tol


def test_correlations_match_numpy_and_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(4, 3, 5)), rng.normal(size=(6, 15))
    np.testing.assert_allclose(scores.correlation_matrix(a, b), np.corrcoef(a.reshape(4, -1), b)[:4, 4:], atol=1e-6)
    orig, recon = rng.normal(size=(3, 8)), rng.normal(size=(3, 2, 8))
    r = _tensor(orig, recon)
    want = [np.mean([scipy.spatial.distance.correlation(orig[i], recon[i, k]) for k in range(2)]) for i in range(3)]
    np.testing.assert_allclose(scores.correlation_distance(r), want, atol=1e-6)
    assert r[1, 2, 1] == pytest.approx(np.corrcoef(orig[1], recon[2, 1])[0, 1], abs=1e-6)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        scores.takagi_identification(np.ones((1, 1)))
    with pytest.raises(ValueError, match="n_samples"):
        scores.two_way_identification(np.ones((2, 3)))

def test_decoding_identification_is_strict_two_way():
    # the decoders' convention: pred, true (n, D), r = correlation_matrix(true, pred), no tie tolerance
    rng = np.random.default_rng(0)
    true = rng.normal(size=(30, 50))
    assert scores.two_way_identification(scores.correlation_matrix(true, true.copy()), tolerance=0.0).mean() == 1.0
    acc = scores.two_way_identification(scores.correlation_matrix(true, rng.normal(size=(30, 50))), tolerance=0.0).mean()
    assert 0.3 < acc < 0.7
    r = np.full((3, 3), 0.3)
    r[0, 0] = 0.3 + 1e-9  # a genuine difference below TIE_TOLERANCE wins only when strict
    assert scores.two_way_identification(r, tolerance=0.0)[0] == 1.0
    assert scores.two_way_identification(r)[0] == 0.0


# ---------------------------------------------------------------------------- retrieval


def test_retrieval_identical_embeddings_is_perfect():
    emb = np.random.default_rng(2).normal(size=(400, 16))
    res = scores.retrieval_top1(emb, emb.copy(), pool=300, draws=5, seed=0)
    assert int(res["pool"]) == 300
    np.testing.assert_array_equal(res["brain_to_image"], 1.0)
    np.testing.assert_array_equal(res["image_to_brain"], 1.0)
    tied = scores.retrieval_top1(np.ones((10, 4)), np.ones((10, 4)), pool=300, draws=2)
    assert int(tied["pool"]) == 10 and tied["brain_to_image"].max() == 0.0  # ties fail; pool capped


def test_retrieval_independent_embeddings_is_chance():
    rng = np.random.default_rng(3)
    pool, draws = 300, 30
    res = scores.retrieval_top1(rng.normal(size=(3000, 8)), rng.normal(size=(3000, 8)), pool, draws, seed=1)
    p = 1.0 / pool
    tol = 4 * np.sqrt(p * (1 - p) / (pool * draws))  # 4 SD of the mean over pool x draws trials
    for direction in ("brain_to_image", "image_to_brain"):
        assert abs(res[direction].mean() - p) < tol


# ---------------------------------------------------------------------------- pixels


def test_pixel_correlations_and_ssim():
    rng = np.random.default_rng(3)
    orig = rng.uniform(size=(2, 24, 24, 3))
    recon = np.stack([orig, np.clip(orig + rng.normal(0, 0.3, orig.shape), 0, 1)], axis=1)
    pc = scores.pixel_correlations(orig, recon)
    np.testing.assert_allclose(pc[:, 0], 1.0, atol=1e-6)
    assert pc[0, 1] == pytest.approx(np.corrcoef(orig[0].ravel(), recon[0, 1].ravel())[0, 1], abs=1e-6)
    ss = scores.ssim_scores(orig, recon)
    np.testing.assert_allclose(ss[:, 0], 1.0, atol=1e-9)
    assert np.all(ss[:, 1] < 0.9)
