"""Statistics behind the evaluation table, against scipy and by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from brainldm import stats


def test_sem_matches_scipy():
    x = np.random.default_rng(4).normal(size=17)
    assert stats.sem(x) == pytest.approx(scipy.stats.sem(x))
    assert stats.sem(np.append(x, np.nan)) == pytest.approx(scipy.stats.sem(x))
    assert np.isnan(stats.sem([1.0]))


def test_wilcoxon_matches_scipy():
    rng = np.random.default_rng(5)
    scores = {"z": rng.normal(size=30), "c": rng.normal(size=30) + 0.8, "zc": rng.normal(size=30)}
    res = stats.wilcoxon_pairs(scores).set_index(["condition_a", "condition_b"])
    assert list(res.index) == [("z", "c"), ("z", "zc"), ("c", "zc")]
    for a, b in res.index:
        want = scipy.stats.wilcoxon(scores[a], scores[b], alternative="two-sided")
        assert res.loc[(a, b), "statistic"] == pytest.approx(want.statistic)
        assert res.loc[(a, b), "p_value"] == pytest.approx(want.pvalue)
    assert res.loc[("z", "c"), "p_value"] < 0.01
    same = stats.wilcoxon_pairs({"z": np.ones(5), "c": np.ones(5)})
    assert np.isnan(same.loc[0, "p_value"])


def test_holm_by_hand():
    adj = stats.holm(np.array([0.01, 0.04, 0.03, np.nan]))
    # sorted 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> monotone 0.06
    np.testing.assert_allclose(adj[:3], [0.03, 0.06, 0.06])
    assert np.isnan(adj[3])
    np.testing.assert_allclose(stats.holm(np.array([0.5, 0.9])), [1.0, 1.0])


def test_p_binomial_matches_scipy():
    for acc, n in ((0.5, 20), (0.6, 20), (0.93, 50), (0.0, 5)):
        trials = n * (n - 1)
        want = scipy.stats.binomtest(round(acc * trials), trials, 0.5, alternative="greater").pvalue
        assert stats.p_binomial(acc, n) == pytest.approx(want, rel=1e-9)
    assert np.isnan(stats.p_binomial(float("nan"), 10))
