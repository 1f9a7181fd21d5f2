"""brainldm.ridge: the ridge layer shared by decoding and encoding (primal solver checked against himalaya)."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from brainldm.ridge import check_alphas, fit_ridge, make_cv


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


@pytest.mark.parametrize("solver", ["primal", "kernel"])
def test_batching_changes_memory_not_results(solver):
    X, Y = _data(n=60, p=40, t=10)
    a = fit_ridge(X, Y, alphas=[0.1, 1, 10], backend="numpy", solver=solver)
    b = fit_ridge(X, Y, alphas=[0.1, 1, 10], backend="numpy", solver=solver, n_targets_batch=3, n_alphas_batch=1)
    np.testing.assert_array_equal(a.best_alphas, b.best_alphas)
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strategy", ["folds", "hat"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_primal_solver_is_himalaya_ridgecv(backend, strategy):
    """PrimalRidgeCV computes what himalaya's RidgeCV computes: same alpha per target,
    same coefficients and CV scores, on data whose targets need different alphas and
    whose columns are correlated."""
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV

    from sklearn.model_selection import KFold

    from brainldm.ridge import PrimalRidgeCV, standardise_columns

    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 60)).astype(np.float32)
    X[:, 1] = 0.9 * X[:, 0] + 0.1 * X[:, 1]
    W = rng.standard_normal((60, 50)).astype(np.float32) * (rng.random(50) > 0.5)
    Y = X @ W + rng.standard_normal((300, 50)).astype(np.float32) * rng.uniform(0.5, 30, 50).astype(np.float32)
    alphas = np.logspace(-2, 5, 8)
    x_mean, x_scale, Xs = standardise_columns(X)
    splits = list(KFold(5).split(X))
    design = PrimalRidgeCV(Xs, alphas, splits, backend, strategy=strategy, x_stats=(x_mean, x_scale))
    ours = fit_ridge(X, Y, alphas, cv=splits, fit_intercept=False, backend=backend, design=design)
    set_backend("numpy")
    ref = RidgeCV(alphas=alphas, cv=5, fit_intercept=False).fit(Xs.astype(np.float64), Y.astype(np.float64))
    assert len(np.unique(ref.best_alphas_)) >= 4  # the comparison covers several alphas
    np.testing.assert_allclose(ours.best_alphas, ref.best_alphas_, rtol=1e-5)
    np.testing.assert_allclose(ours.coef, ref.coef_, atol=1e-4 * np.abs(ref.coef_).max())
    np.testing.assert_allclose(ours.cv_scores, ref.cv_scores_, rtol=1e-4)


def test_design_reused_across_target_batches():
    """A design built once gives the same fit as building it inside fit_ridge."""
    from brainldm.ridge import ridge_design

    X, Y = _data(t=12)
    groups = np.repeat(np.arange(6), 20)
    design = ridge_design(X, [0.1, 10, 1000], cv=3, groups=groups, backend="numpy")
    direct = fit_ridge(X, Y[:, 6:], [0.1, 10, 1000], cv=3, groups=groups, backend="numpy")
    reused = fit_ridge(X, Y[:, 6:], [0.1, 10, 1000], cv=3, groups=groups, backend="numpy", design=design)
    np.testing.assert_array_equal(direct.best_alphas, reused.best_alphas)
    np.testing.assert_allclose(direct.coef, reused.coef, rtol=1e-5, atol=1e-6)
    # the design's standardisation statistics are the ones fit_ridge computes itself
    np.testing.assert_array_equal(direct.x_mean, reused.x_mean)
    np.testing.assert_array_equal(direct.x_scale, reused.x_scale)
    with pytest.raises(ValueError, match=r"design was built on X of shape \(120, 30\), not on this X \(119, 30\)"):
        fit_ridge(X[1:], Y[1:], [0.1, 10, 1000], cv=3, backend="numpy", design=design)


def test_auto_strategy_follows_the_cost_model():
    """Small folds next to many features: the hat-matrix strategy; big folds: per-fold
    eigendecompositions; a hat cache beyond the limit: per-fold."""
    from brainldm.ridge import HAT_CACHE_BYTES, primal_cv_costs

    bench = primal_cv_costs(4000, 2500, 3200, 5, 7)
    assert bench["hat"] < bench["folds"] and bench["hat_cache_bytes"] <= HAT_CACHE_BYTES
    nsd_c = primal_cv_costs(24980, 8000, 59136, 5, 7)
    assert nsd_c["hat_cache_bytes"] > HAT_CACHE_BYTES
    nsd_z = primal_cv_costs(24980, 5000, 6400, 5, 7)
    assert nsd_z["folds"] < nsd_z["hat"]
