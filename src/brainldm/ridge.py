"""Cross-validated ridge regression from voxels to features, a thin layer over himalaya.

Everything numerical (SVD / eigendecomposition, the alpha grid search, target
batching, backends) is done by himalaya; this module only adds what every caller
of the project needs:

- the solver is chosen by shape: ``himalaya.ridge.RidgeCV`` (primal, SVD of X)
  when n_samples >= n_features, ``himalaya.kernel_ridge.KernelRidgeCV`` with a
  linear kernel (dual, eigendecomposition of X Xᵀ) when n_samples < n_features.
  Both cost the same per target; they differ in the decomposition (n p² vs n² p + n³)
  and in what is stored (p x t primal weights vs n x t dual weights), so the smaller
  side wins in time and memory;
- X is standardised with training means and standard deviations (constant columns
  are left at zero), as the reference did with sklearn's StandardScaler;
- with ``fit_intercept=True`` Y is centred with its training means, which are added
  back at prediction. With ``fit_intercept=False`` Y is fitted as it is and
  predictions are ``X_std @ W`` with no offset: this is the reference's choice
  (himalaya's default) and it drops the training mean of every target;
- one alpha per target (himalaya's ``local_alpha``), chosen by cross-validation over
  ``cv`` (an int = contiguous KFold blocks as in the reference, a scikit-learn
  splitter, or an int with ``groups`` = GroupKFold that keeps each group, e.g. a
  session, inside one fold);
- the himalaya backend (``numpy``, ``torch``, ``torch_cuda``, ``auto``) and target
  batching (``n_targets_batch``) are arguments.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

BACKENDS = ("auto", "numpy", "torch", "torch_cuda")
SOLVERS = ("auto", "primal", "kernel")


def resolve_backend(backend: str = "auto") -> str:
    """Name of the himalaya backend to use.

    ``auto`` is ``torch_cuda`` when a CUDA GPU is visible, else ``torch`` (on CPU
    himalaya's torch backend is about 2x faster than numpy here), else ``numpy``.
    """
    if backend not in BACKENDS:
        raise ValueError(
            f"ridge backend must be one of {', '.join(BACKENDS)}, got {backend!r} "
            "(config key decoding.backend)"
        )
    if backend != "auto":
        return backend
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a project dependency
        return "numpy"
    return "torch_cuda" if torch.cuda.is_available() else "torch"


def check_alphas(alphas: Sequence[float], key: str = "decoding.alphas") -> np.ndarray:
    """The alpha grid as a sorted float64 array; every alpha must be a finite number > 0."""
    arr = np.asarray(list(alphas) if not np.isscalar(alphas) else [alphas], dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{key}: give a non-empty list of ridge penalties, got {alphas!r}")
    bad = arr[~np.isfinite(arr) | (arr <= 0)]
    if bad.size:
        raise ValueError(
            f"{key}: every ridge penalty (alpha) must be a finite number > 0, "
            f"got {bad.tolist()}; use e.g. [1e-6, 1e-5, ..., 1]"
        )
    return np.unique(arr)


def make_cv(cv: int | Any, groups: np.ndarray | None, n_samples: int) -> Any:
    """The cross-validation argument passed to himalaya.

    cv : int -> contiguous KFold (himalaya's default, as in the reference), or, when
        ``groups`` is given, GroupKFold with min(cv, n_groups) folds so that no group
        (e.g. session) is split between training and validation.
    cv : splitter object -> used as is; with ``groups`` its splits are materialised
        (himalaya calls ``cv.split(Y)`` without groups).
    """
    from sklearn.model_selection import GroupKFold

    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n_samples,):
            raise ValueError(
                f"groups must have one entry per training row ({n_samples}), got shape {groups.shape}"
            )
        if isinstance(cv, (int, np.integer)):
            n_groups = len(np.unique(groups))
            n_splits = min(int(cv), n_groups)
            if n_splits < 2:
                raise ValueError(
                    f"cross-validation needs at least 2 groups (sessions), got {n_groups}; "
                    "use more sessions or cv_by_session: false"
                )
            cv = GroupKFold(n_splits=n_splits)
        return list(cv.split(np.zeros((n_samples, 1)), groups=groups))
    if isinstance(cv, (int, np.integer)):
        if not 2 <= int(cv) <= n_samples:
            raise ValueError(f"cv folds must be between 2 and n_samples={n_samples}, got {cv}")
        return int(cv)
    return cv


@dataclass
class RidgeFit:
    """A fitted ridge decoder. Arrays are numpy float32.

    x_mean, x_scale : (n_features,) training statistics used to standardise X.
    y_offset : (n_targets,) added to every prediction (training means of Y when
        fit_intercept, else zeros).
    coef : (n_features, n_targets) primal weights (solver "primal"), or None.
    x_fit, dual_coef : (n_samples, n_features) standardised training X and
        (n_samples, n_targets) dual weights (solver "kernel"), or None.
    best_alphas : (n_targets,) alpha chosen for each target.
    cv_scores : (n_targets,) cross-validated score (himalaya's negative squared
        error) of the chosen alpha.
    solver, backend : what was used.
    """

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_offset: np.ndarray
    best_alphas: np.ndarray
    cv_scores: np.ndarray
    solver: str
    backend: str
    coef: np.ndarray | None = None
    x_fit: np.ndarray | None = None
    dual_coef: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return self.x_mean.shape[0]

    def standardise(self, X: np.ndarray) -> np.ndarray:
        """(n, n_features) -> (n, n_features) float32 standardised with training stats."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"X must be (n_samples, {self.n_features}) like the training data, got {X.shape}"
            )
        return (X - self.x_mean) / self.x_scale

    def predict(self, X: np.ndarray, batch: int = 4096) -> np.ndarray:
        """Predictions for X (n, n_features) -> (n, n_targets) float32."""
        Xs = self.standardise(X)
        out = np.empty((Xs.shape[0], self.y_offset.shape[0]), dtype=np.float32)
        for start in range(0, Xs.shape[0], batch):
            xb = Xs[start : start + batch]
            if self.coef is not None:
                out[start : start + batch] = xb @ self.coef
            else:
                out[start : start + batch] = (xb @ self.x_fit.T) @ self.dual_coef
        out += self.y_offset
        return out


def _to_numpy(backend: Any, array: Any) -> np.ndarray:
    return np.asarray(backend.to_numpy(array), dtype=np.float32)


def fit_ridge(
    X: np.ndarray,
    Y: np.ndarray,
    alphas: Sequence[float],
    cv: int | Any = 5,
    groups: np.ndarray | None = None,
    backend: str = "auto",
    n_targets_batch: int | None = None,
    fit_intercept: bool = True,
    solver: str = "auto",
    n_alphas_batch: int | None = None,
    overwrite_Y: bool = False,
) -> RidgeFit:
    """Fit a cross-validated ridge regression Y ~ X with one alpha per target.

    X : (n_samples, n_features) e.g. single-trial betas (n_trials, n_voxels).
    Y : (n_samples, n_targets) e.g. flattened features (n_trials, 4*h*w).
    alphas : grid of penalties (> 0) searched per target.
    cv : int, or a scikit-learn splitter; with ``groups`` (n_samples,) an int gives
        GroupKFold (see ``make_cv``).
    backend : himalaya backend, ``auto`` = torch_cuda if a GPU is present else torch.
    n_targets_batch : targets handled at once inside himalaya (bounds memory), None = all.
    fit_intercept : centre Y with its training means and add them back at prediction.
        False reproduces the reference (no offset in the predictions).
    solver : ``auto`` (by shape), ``primal`` (RidgeCV) or ``kernel`` (KernelRidgeCV).
    n_alphas_batch : alphas handled at once inside himalaya, None = all. himalaya builds
        (n_alphas_batch, n_test, n_train) and, at refit, (n_alphas_batch, n_features,
        n_samples) arrays, so 1 bounds the memory of big fits (same arithmetic).
    overwrite_Y : centre a float32 Y in place instead of copying it (saves one copy
        of Y, e.g. 5.9 GB for the full-size c decoder); Y is then modified.
    """
    from himalaya.backend import get_backend, set_backend
    from himalaya.kernel_ridge import KernelRidgeCV
    from himalaya.ridge import RidgeCV
    from sklearn.preprocessing import StandardScaler

    alphas = check_alphas(alphas)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    X = np.asarray(X)
    Y = np.asarray(Y)
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(f"X and Y must be 2-D (samples, columns), got {X.shape} and {Y.shape}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}; they must match")
    if X.shape[1] == 0:
        raise ValueError("X has no columns (an ROI with no voxels?)")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("X or Y contains NaN or infinite values")
    n_samples, n_features = X.shape
    for name, value in (("n_targets_batch", n_targets_batch), ("n_alphas_batch", n_alphas_batch)):
        if value is not None and value < 1:
            raise ValueError(f"decoding.{name} must be >= 1 or null, got {value}")

    scaler = StandardScaler(with_mean=True, with_std=True).fit(X)
    Xs = scaler.transform(X).astype(np.float32, copy=False)
    Yc = Y if (overwrite_Y and Y.dtype == np.float32) else np.array(Y, dtype=np.float32, copy=True)
    y_offset = np.zeros(Y.shape[1], dtype=np.float32)
    if fit_intercept:
        y_offset = Yc.mean(axis=0)
        Yc -= y_offset

    if solver == "auto":
        solver = "kernel" if n_samples < n_features else "primal"
    name = resolve_backend(backend)
    previous = get_backend()
    bk = set_backend(name, on_error="warn")
    params = {}
    if n_targets_batch is not None:
        params = dict(n_targets_batch=int(n_targets_batch), n_targets_batch_refit=int(n_targets_batch))
    if n_alphas_batch is not None:
        params["n_alphas_batch"] = int(n_alphas_batch)
    cv_arg = make_cv(cv, groups, n_samples)
    # On a GPU keep a big Y (e.g. 5.9 GB for the full c decoder) in CPU memory; himalaya
    # then moves one target batch at a time.
    y_in_cpu = name == "torch_cuda" and Yc.nbytes > 2e9
    try:
        with warnings.catch_warnings():
            # himalaya warns when X/Y are not float32 on torch, and about solver choice;
            # we choose the solver by shape ourselves.
            warnings.filterwarnings("ignore", category=UserWarning, module="himalaya")
            if solver == "primal":
                model = RidgeCV(alphas=alphas, cv=cv_arg, fit_intercept=False,
                                solver_params=params or None, Y_in_cpu=y_in_cpu)
            else:
                model = KernelRidgeCV(alphas=alphas, kernel="linear", cv=cv_arg,
                                      fit_intercept=False, solver_params=params or None,
                                      Y_in_cpu=y_in_cpu)
            model.fit(Xs, Yc)
            weights = (dict(coef=_to_numpy(bk, model.coef_)) if solver == "primal"
                       else dict(x_fit=Xs, dual_coef=_to_numpy(bk, model.dual_coef_)))
            fit = RidgeFit(x_mean=scaler.mean_.astype(np.float32),
                           x_scale=scaler.scale_.astype(np.float32),
                           y_offset=y_offset,
                           best_alphas=_to_numpy(bk, model.best_alphas_),
                           cv_scores=_to_numpy(bk, model.cv_scores_),
                           solver=solver, backend=name, **weights)
    finally:
        set_backend(previous, on_error="warn")
    if fit.coef is not None and fit.coef.ndim == 1:  # single target
        fit.coef = fit.coef[:, None]
    if fit.dual_coef is not None and fit.dual_coef.ndim == 1:
        fit.dual_coef = fit.dual_coef[:, None]
    return fit


def _pearson(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"pearson needs two 2-D arrays of the same shape, got {a.shape} and {b.shape}")
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    num = (a * b).sum(axis=axis)
    den = np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return r.astype(np.float32)


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of every column: a, b (n, d) -> (d,) (NaN where a column is constant)."""
    return _pearson(a, b, axis=0)


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of every row: a, b (n, d) -> (n,) (NaN where a row is constant).

    With (images, feature dims) this is the reference's per-image score
    (himalaya ``correlation_score(Y.T, pred.T)``).
    """
    return _pearson(a, b, axis=1)
