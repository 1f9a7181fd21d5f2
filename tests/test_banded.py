"""The banded ridge solver against himalaya's GroupRidgeCV (random search) on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from himalaya.ridge import GroupRidgeCV
from himalaya.ridge._random_search import generate_dirichlet_samples

from brainldm.banded import dirichlet_gammas, solve_banded_ridge_random_search
from brainldm.ridge import make_cv

ALPHAS = np.logspace(0, 5, 6)


def two_spaces(n: int, n_test: int, p1: int, p2: int, v: int, seed: int = 0):
    """Two standardised-like spaces and targets that weigh them differently per target."""
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((n + n_test, p1)).astype(np.float32)
    x2 = rng.standard_normal((n + n_test, p2)).astype(np.float32)
    y = (x1 @ rng.standard_normal((p1, v)) * rng.random(v) * 2
         + x2 @ rng.standard_normal((p2, v)) * rng.random(v) * 2
         + rng.standard_normal((n + n_test, v)) * 4 + 3.0).astype(np.float32)
    return [x1[:n], x2[:n]], [x1[n:], x2[n:]], y[:n]


def himalaya_fit(xs, xs_test, y, cv, n_iter, seed):
    sizes = [x.shape[1] for x in xs]
    groups = np.concatenate([np.full(k, g) for g, k in enumerate(sizes)])
    model = GroupRidgeCV(groups=groups, solver="random_search", fit_intercept=False, cv=cv, random_state=seed,
                         solver_params=dict(n_iter=n_iter, alphas=ALPHAS, progress_bar=False, warn=False))
    model.fit(np.hstack(xs), y - y.mean(0))
    coef = np.asarray(model.coef_)
    bounds = np.cumsum([0] + sizes)
    parts = np.stack([xt @ coef[a:b] for xt, a, b in zip(xs_test, bounds[:-1], bounds[1:])])
    return np.asarray(model.deltas_), np.asarray(model.cv_scores_), parts


def test_candidates_are_himalayas():
    for n_iter, n_spaces, seed in ((10, 2, 3), (7, 3, 0), (1, 2, 5)):
        expected = generate_dirichlet_samples(n_iter, n_spaces, [0.1, 1.0], random_state=seed)
        expected[0] = 1.0 / n_spaces
        np.testing.assert_array_equal(dirichlet_gammas(n_iter, n_spaces, seed), expected)
    with pytest.raises(ValueError, match="n_iter >= 1"):
        dirichlet_gammas(0, 2, 0)


@pytest.mark.parametrize("shape", [(300, 20, 30), (90, 40, 70)], ids=["n>p", "n<p"])
@pytest.mark.parametrize("batch", [None, 17])
def test_same_choices_scores_and_predictions_as_himalaya(shape, batch):
    n, p1, p2 = shape
    xs, xs_test, y = two_spaces(n, 40, p1, p2, 50)
    cv = make_cv(5, np.repeat(np.arange(n // 3), 3), n)  # GroupKFold splits, as the encoding stage uses
    deltas, cv_scores, parts = himalaya_fit(xs, xs_test, y, cv, 10, 3)
    fit = solve_banded_ridge_random_search(xs, y, dirichlet_gammas(10, 2, 3), ALPHAS, cv, xs_test, n_targets_batch=batch)
    np.testing.assert_allclose(fit.y_mean, y.mean(0), rtol=1e-6)
    np.testing.assert_allclose(fit.deltas, deltas, atol=1e-4)  # same gamma and alpha for every target
    np.testing.assert_allclose(fit.cv_scores, cv_scores, rtol=1e-4, atol=1e-4 * np.abs(cv_scores).max())
    np.testing.assert_allclose(fit.test_parts, parts, atol=1e-4 * np.abs(parts).max())
    # the planted mix is found: targets choose different space weights
    assert len(np.unique(fit.best_iter)) > 2


def test_reads_a_memory_map_in_batches_and_checks_shapes(tmp_path):
    xs, xs_test, y = two_spaces(120, 20, 6, 9, 30)
    path = tmp_path / "y.npy"
    np.save(path, y)
    splits = make_cv(4, None, 120)
    from brainldm.ridge import _splits

    splits = _splits(splits, 120)
    mapped = np.load(path, mmap_mode="r")
    whole = solve_banded_ridge_random_search(xs, y, dirichlet_gammas(4, 2, 0), ALPHAS, splits, xs_test)
    batched = solve_banded_ridge_random_search(xs, mapped, dirichlet_gammas(4, 2, 0), ALPHAS, splits, xs_test,
                                               n_targets_batch=7)
    np.testing.assert_array_equal(batched.best_iter, whole.best_iter)
    np.testing.assert_allclose(batched.test_parts, whole.test_parts, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="3 columns but there are 2 feature spaces"):
        solve_banded_ridge_random_search(xs, y, dirichlet_gammas(4, 3, 0), ALPHAS, splits)
    with pytest.raises(ValueError, match="Y has 119"):
        solve_banded_ridge_random_search(xs, y[:119], dirichlet_gammas(4, 2, 0), ALPHAS, splits)
