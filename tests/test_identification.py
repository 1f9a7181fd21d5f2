"""Identification conventions, pixel metrics and statistics on hand-built arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats

from brainldm import identification as ident

# r[i, j] = corr(original_i, reconstruction_j), one sample: unequal diagonals make the
# row-wise (Takagi) and column-wise (MindEye) comparisons disagree.
R_ONE = np.array([
    [0.9, 0.3, 0.0],
    [0.0, 0.1, 0.0],
    [0.0, 0.0, 0.5],
])


def test_three_images_by_hand_takagi():
    # row 0: 0.9 > 0.3, 0.9 > 0.0; row 1: 0.1 > 0.0 twice; row 2: 0.5 > 0.0 twice
    np.testing.assert_allclose(ident.takagi_identification(R_ONE), [1.0, 1.0, 1.0])


def test_three_images_by_hand_mindeye():
    # column 1: r[1,1] = 0.1 is not above r[0,1] = 0.3 (fail), but is above r[2,1] = 0.0
    np.testing.assert_allclose(ident.two_way_identification(R_ONE), [1.0, 0.5, 1.0])
    assert ident.two_way_identification(R_ONE).mean() == pytest.approx(5 / 6)
    assert ident.takagi_identification(R_ONE).mean() == pytest.approx(1.0)


def test_three_images_two_samples_by_hand():
    r = np.zeros((3, 3, 2))
    r[..., 0] = [[0.8, 0.6, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]]
    r[..., 1] = [[0.2, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]]
    # Takagi averages r over samples first: row 0 is 0.5 vs (0.3, 0.0) -> wins both
    np.testing.assert_allclose(ident.takagi_identification(r), [1.0, 1.0, 1.0])
    # MindEye scores each sample: image 1 is 0.5 (sample 0 loses to r[0,1,0] = 0.6) and 1.0
    np.testing.assert_allclose(ident.two_way_identification(r), [1.0, 0.75, 1.0])


def test_ties_count_as_failures():
    r = np.full((4, 4), 0.3)
    assert np.all(ident.takagi_identification(r) == 0)
    assert np.all(ident.two_way_identification(r) == 0)
    r = R_ONE.copy()
    r[0, 1] = 0.9  # tie with r[0, 0]: Takagi row 0 loses one comparison
    np.testing.assert_allclose(ident.takagi_identification(r), [0.5, 1.0, 1.0])


def test_nan_correlations_fail():
    r = R_ONE.copy()
    r[1, 1] = np.nan  # constant reconstruction: no correlation
    assert ident.takagi_identification(r)[1] == 0
    assert ident.two_way_identification(r)[1] == 0


def test_identical_features_give_100_percent():
    rng = np.random.default_rng(0)
    orig = rng.normal(size=(20, 50))
    recon = np.repeat(orig[:, None], 3, axis=1)
    r = ident.sample_correlations(orig, recon)
    assert np.all(ident.takagi_identification(r) == 1)
    assert np.all(ident.two_way_identification(r) == 1)
    np.testing.assert_allclose(ident.correlation_distance(r), 0, atol=1e-6)


@pytest.mark.parametrize("convention", [ident.takagi_identification, ident.two_way_identification])
def test_independent_features_give_chance(convention):
    # Under the null, each image's accuracy is its normalised rank among n - 1 others,
    # about uniform on [0, 1] (variance 1/12); images are nearly independent, so the
    # mean over n images has sd ~ sqrt(1 / (12 n)). Allow 4.5 sd.
    n = 300
    rng = np.random.default_rng(1)
    r = ident.sample_correlations(rng.normal(size=(n, 40)), rng.normal(size=(n, 2, 40)))
    tol = 4.5 * np.sqrt(1 / (12 * n))
    assert abs(convention(r).mean() - 0.5) < tol


def test_correlations_match_numpy_and_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(4, 3, 5)), rng.normal(size=(6, 15))
    np.testing.assert_allclose(ident.correlation_matrix(a, b), np.corrcoef(a.reshape(4, -1), b)[:4, 4:], atol=1e-6)
    orig, recon = rng.normal(size=(3, 8)), rng.normal(size=(3, 2, 8))
    r = ident.sample_correlations(orig, recon)
    want = [np.mean([scipy.spatial.distance.correlation(orig[i], recon[i, k]) for k in range(2)]) for i in range(3)]
    np.testing.assert_allclose(ident.correlation_distance(r), want, atol=1e-6)
    assert r[1, 2, 1] == pytest.approx(np.corrcoef(orig[1], recon[2, 1])[0, 1], abs=1e-6)


def test_pixel_correlations_and_ssim():
    rng = np.random.default_rng(3)
    orig = rng.uniform(size=(2, 24, 24, 3))
    recon = np.stack([orig, np.clip(orig + rng.normal(0, 0.3, orig.shape), 0, 1)], axis=1)
    pc = ident.pixel_correlations(orig, recon)
    np.testing.assert_allclose(pc[:, 0], 1.0, atol=1e-6)
    assert pc[0, 1] == pytest.approx(np.corrcoef(orig[0].ravel(), recon[0, 1].ravel())[0, 1], abs=1e-6)
    ss = ident.ssim_scores(orig, recon)
    np.testing.assert_allclose(ss[:, 0], 1.0, atol=1e-9)
    assert np.all(ss[:, 1] < 0.9)


def test_sem_matches_scipy():
    x = np.random.default_rng(4).normal(size=17)
    assert ident.sem(x) == pytest.approx(scipy.stats.sem(x))
    assert ident.sem(np.append(x, np.nan)) == pytest.approx(scipy.stats.sem(x))
    assert np.isnan(ident.sem([1.0]))


def test_wilcoxon_matches_scipy():
    rng = np.random.default_rng(5)
    scores = {"z": rng.normal(size=30), "c": rng.normal(size=30) + 0.8, "zc": rng.normal(size=30)}
    res = ident.wilcoxon_pairs(scores).set_index(["condition_a", "condition_b"])
    assert list(res.index) == [("z", "c"), ("z", "zc"), ("c", "zc")]
    for a, b in res.index:
        want = scipy.stats.wilcoxon(scores[a], scores[b], alternative="two-sided")
        assert res.loc[(a, b), "statistic"] == pytest.approx(want.statistic)
        assert res.loc[(a, b), "p_value"] == pytest.approx(want.pvalue)
    assert res.loc[("z", "c"), "p_value"] < 0.01
    same = ident.wilcoxon_pairs({"z": np.ones(5), "c": np.ones(5)})
    assert np.isnan(same.loc[0, "p_value"])


def test_holm_by_hand():
    adj = ident.holm(np.array([0.01, 0.04, 0.03, np.nan]))
    # sorted 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> monotone 0.06
    np.testing.assert_allclose(adj[:3], [0.03, 0.06, 0.06])
    assert np.isnan(adj[3])
    np.testing.assert_allclose(ident.holm(np.array([0.5, 0.9])), [1.0, 1.0])


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        ident.takagi_identification(np.ones((1, 1)))
    with pytest.raises(ValueError, match="n_samples"):
        ident.two_way_identification(np.ones((2, 3)))
