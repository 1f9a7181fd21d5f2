"""brainldm.ridge: the himalaya layer shared by decoding and encoding."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from brainldm.ridge import check_alphas, fit_ridge, make_cv, pearson_columns, pearson_rows


def _data(n=120, p=30, t=8, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * rng.uniform(0.5, 3, size=p) + rng.normal(size=p) * 5
    W = rng.normal(size=(p, t))
    Y = X @ W + noise * rng.normal(size=(n, t)) * np.std(X @ W, axis=0) + 10.0
    return X.astype(np.float32), Y.astype(np.float32)


@pytest.mark.parametrize("solver", ["primal", "kernel"])
def test_matches_sklearn_ridge_on_standardised_x(solver):
    X, Y = _data()
    fit = fit_ridge(X[:100], Y[:100], alphas=[3.0], cv=5, backend="numpy", solver=solver)
    mu, sd = X[:100].mean(0), X[:100].std(0)
    ref = Ridge(alpha=3.0, fit_intercept=True).fit((X[:100] - mu) / sd, Y[:100])
    expected = ref.predict((X[100:] - mu) / sd)
    np.testing.assert_allclose(fit.predict(X[100:]), expected, rtol=1e-3, atol=1e-3)
    assert fit.solver == solver
    assert fit.predict(X[100:]).dtype == np.float32


def test_solver_chosen_by_shape():
    X, Y = _data(n=40, p=60, t=3)
    assert fit_ridge(X, Y, alphas=[1.0], backend="numpy").solver == "kernel"
    X, Y = _data(n=60, p=20, t=3)
    assert fit_ridge(X, Y, alphas=[1.0], backend="numpy").solver == "primal"


def test_per_target_alphas_follow_noise():
    rng = np.random.default_rng(1)
    n, p = 200, 40
    X = rng.normal(size=(n, p)).astype(np.float32)
    signal = X @ rng.normal(size=(p, 2)) * 0.3
    Y = np.column_stack([signal[:, 0], signal[:, 1] + 20 * rng.normal(size=n)]).astype(np.float32)
    fit = fit_ridge(X, Y, alphas=np.logspace(-2, 5, 8), cv=5, backend="numpy")
    assert fit.best_alphas.shape == (2,)
    assert fit.best_alphas[1] > 10 * fit.best_alphas[0]


def test_fit_intercept_adds_training_mean_back():
    X, Y = _data(noise=0.1)
    with_mean = fit_ridge(X[:100], Y[:100], alphas=[1.0], backend="numpy", fit_intercept=True)
    without = fit_ridge(X[:100], Y[:100], alphas=[1.0], backend="numpy", fit_intercept=False)
    np.testing.assert_allclose(with_mean.y_offset, Y[:100].mean(0), rtol=1e-5)
    assert np.allclose(without.y_offset, 0)
    err_with = np.abs(with_mean.predict(X[100:]) - Y[100:]).mean()
    err_without = np.abs(without.predict(X[100:]) - Y[100:]).mean()
    assert err_with < 0.5 * err_without  # the reference's choice loses the offset of 10


def test_torch_backend_agrees_with_numpy():
    X, Y = _data()
    a = fit_ridge(X, Y, alphas=[0.1, 1, 10], backend="numpy").predict(X[:10])
    b = fit_ridge(X, Y, alphas=[0.1, 1, 10], backend="torch", n_targets_batch=3,
                  n_alphas_batch=1).predict(X[:10])
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_group_cv_keeps_groups_together():
    groups = np.repeat([1, 2, 3, 4, 5, 6], 10)
    splits = make_cv(5, groups, 60)
    assert len(splits) == 5
    for train, val in splits:
        assert not set(groups[train]) & set(groups[val])
    assert len(make_cv(5, np.repeat([1, 2, 3], 20), 60)) == 3  # capped at n_groups
    with pytest.raises(ValueError, match="at least 2 groups"):
        make_cv(5, np.ones(60), 60)
    X, Y = _data(n=60)
    fit = fit_ridge(X, Y, alphas=[1.0, 10.0], cv=5, groups=groups, backend="numpy")
    assert fit.best_alphas.shape == (Y.shape[1],)


@pytest.mark.parametrize("alphas", [[0.0, 1.0], [-1.0], []])
def test_bad_alphas_are_rejected(alphas):
    with pytest.raises(ValueError, match="decoding.alphas"):
        check_alphas(alphas)


def test_bad_inputs_are_rejected():
    X, Y = _data()
    with pytest.raises(ValueError, match="backend must be one of"):
        fit_ridge(X, Y, alphas=[1.0], backend="cupy-gpu")
    with pytest.raises(ValueError, match="no columns"):
        fit_ridge(X[:, :0], Y, alphas=[1.0], backend="numpy")
    with pytest.raises(ValueError, match="rows"):
        fit_ridge(X[:50], Y, alphas=[1.0], backend="numpy")
    fit = fit_ridge(X, Y, alphas=[1.0], backend="numpy")
    with pytest.raises(ValueError, match="like the training data"):
        fit.predict(X[:, :5])


def test_pearson_helpers_match_corrcoef():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    cols = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(5)]
    rows = [np.corrcoef(a[i], b[i])[0, 1] for i in range(7)]
    np.testing.assert_allclose(pearson_columns(a, b), cols, rtol=1e-5)
    np.testing.assert_allclose(pearson_rows(a, b), rows, rtol=1e-5)
    a[:, 0] = 1.0
    assert np.isnan(pearson_columns(a, b)[0])


@pytest.mark.parametrize("solver", ["primal", "kernel"])
def test_batching_changes_memory_not_results(solver):
    X, Y = _data(n=60, p=40, t=10)
    a = fit_ridge(X, Y, alphas=[0.1, 1, 10], backend="numpy", solver=solver)
    b = fit_ridge(X, Y, alphas=[0.1, 1, 10], backend="numpy", solver=solver, n_targets_batch=3, n_alphas_batch=1)
    np.testing.assert_array_equal(a.best_alphas, b.best_alphas)
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-4, atol=1e-4)
