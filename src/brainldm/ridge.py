"""Cross-validated ridge regression from voxels to features.

- the solver is chosen by shape. When n_samples >= n_features: ``PrimalRidgeCV``,
  which computes exactly what himalaya's ``RidgeCV`` computes (tests compare the
  two) with far less arithmetic, by diagonalising each fold's XᵀX once and pricing
  every alpha at one (n_val, p) x (p, n_targets) product; himalaya's RidgeCV builds
  an (n_alphas, p, n_train) matrix per fold and refits every used alpha on every
  target (benchmarks/ridge.py measures both). When n_samples < n_features:
  himalaya's ``KernelRidgeCV`` with a linear kernel (dual, eigendecomposition of
  X Xᵀ), which is cheaper and smaller there;
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
- the backend (``numpy``, ``torch``, ``torch_cuda``, ``auto``) and target batching
  (``n_targets_batch``) are arguments.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from brainldm.logs import progress

BACKENDS = ("auto", "numpy", "torch", "torch_cuda")
SOLVERS = ("auto", "primal", "kernel")


def resolve_backend(backend: str = "auto") -> str:
    """Name of the himalaya backend to use.

    ``auto`` is ``torch_cuda`` when a CUDA GPU is visible, else ``numpy`` (on CPU the
    primal solver is about 1.5x faster with numpy and scipy's eigensolver than with
    torch, benchmarks/ridge.py).
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
    return "torch_cuda" if torch.cuda.is_available() else "numpy"


def voxel_batches(n_vox: int, batch: int | None) -> list[slice]:
    """Contiguous voxel (target column) slices of at most ``batch`` voxels (None = all at once)."""
    step = n_vox if not batch else int(batch)
    return [slice(s, min(s + step, n_vox)) for s in range(0, n_vox, step)]


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
    solver, backend : what was used; strategy : ``PrimalRidgeCV``'s (``folds`` / ``hat``).
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
    strategy: str = ""

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


class _Ops:
    """The few array operations the primal solver needs, on numpy (CPU) or torch (CPU/GPU).

    numpy uses LAPACK's divide-and-conquer symmetric eigensolver (``syevd`` through
    scipy), about 2x faster here than ``numpy.linalg.eigh``.
    """

    def __init__(self, backend: str) -> None:
        self.torch = None
        if backend != "numpy":
            import torch

            self.torch = torch
            self.device = "cuda" if backend == "torch_cuda" else "cpu"

    def asarray(self, a: np.ndarray) -> Any:
        if self.torch is None:
            return np.asarray(a)
        return self.torch.as_tensor(np.asarray(a), device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        return a if self.torch is None else a.cpu().numpy()

    def eigh(self, G: Any) -> tuple[Any, Any]:
        """Eigenvalues (ascending, clipped at 0) and eigenvectors of a symmetric PSD matrix."""
        if self.torch is None:
            import scipy.linalg

            lam, V = scipy.linalg.eigh(G, driver="evd", overwrite_a=True, check_finite=False)
            return np.maximum(lam, 0), V
        lam, V = self.torch.linalg.eigh(G)
        return lam.clamp(min=0), V

    def inv_eye_minus_gram(self, S: Any) -> Any | None:
        """(I - S Sᵀ)⁻¹ (m, m) float32 for S (m, k), by Cholesky (numpy: BLAS syrk and LAPACK
        potrf/potri on one triangle); None when I - S Sᵀ is not positive definite
        (numerically)."""
        if self.torch is None:
            from scipy.linalg import blas, lapack

            lower = blas.ssyrk(-1.0, S, lower=1)  # -S Sᵀ, lower triangle
            lower[np.diag_indices_from(lower)] += 1.0
            factor, info = lapack.spotrf(lower, lower=1, clean=1, overwrite_a=1)
            if info != 0:
                return None
            inv, info = lapack.spotri(factor, lower=1, overwrite_c=1)
            if info != 0:
                return None
            return np.tril(inv) + np.tril(inv, -1).T
        eye = self.torch.eye(S.shape[0], dtype=S.dtype, device=S.device)
        L, info = self.torch.linalg.cholesky_ex(eye - S @ S.T)
        if int(info) != 0:
            return None
        return self.torch.cholesky_inverse(L)


#: Largest cache of per-fold, per-alpha (n_val, n_val) matrices the "hat" strategy may keep.
HAT_CACHE_BYTES = 1e9


def primal_cv_costs(n: int, p: int, n_targets: int, n_folds: int, n_alphas: int) -> dict[str, float]:
    """Multiply-adds of the two ``PrimalRidgeCV`` strategies (a symmetric eigensolver of
    size p counted as 3 p³, as measured against matrix products here), and the bytes
    of the "hat" strategy's cache. n_val is the largest fold."""
    n_val = -(-n // n_folds)
    eig = 3.0 * p**3
    folds = 3.0 * n * p * p + (n_folds + 1) * eig + n_targets * ((2 + n_alphas) * n * p + (n_folds + 2) * p * p)
    hat = (2.0 * n * p * p + eig + n_alphas * (n * n_val * p + n_folds * n_val**3)
           + n_targets * ((1 + n_alphas) * n * p + n_alphas * n * n_val + p * p))
    return dict(folds=folds, hat=hat, hat_cache_bytes=4.0 * n_folds * n_alphas * n_val**2)


class PrimalRidgeCV:
    """Ridge with one alpha per target chosen by cross-validation, in the eigenbasis of XᵀX.

    The same estimator as himalaya's ``RidgeCV(fit_intercept=False, local_alpha=True)``
    with its default score (negative mean squared error averaged over folds, ties to
    the larger alpha), computed with less arithmetic. himalaya forms, for every fold
    and alpha, the (n_features, n_train) matrix V diag(s/(s²+α)) Uᵀ, multiplies it by
    Y, and refits every used alpha on every target. Here, with XᵀX = V diag(λ) Vᵀ:

    - ``folds``: each fold's Gram matrix XᵀX - X_valᵀX_val is diagonalised once,
      XᵀY is computed once and downdated per fold, and every alpha costs one
      (n_val, p) x (p, n_targets) product per fold;
    - ``hat``: only XᵀX is diagonalised. For each alpha the whole-data fit's
      residuals R are computed, and a fold's validation residuals follow exactly from
      the ridge hat matrix H = X (XᵀX + αI)⁻¹ Xᵀ: (I - H_val,val)⁻¹ R_val (the
      leave-a-block-out identity). Cheaper when folds are small next to p, at the cost
      of caching n_folds x n_alphas (n_val, n_val) matrices;
    - ``auto`` picks the one with fewer multiply-adds (``primal_cv_costs``) whose
      cache fits in ``HAT_CACHE_BYTES``.

    Fitting several Y on the same X reuses the decompositions (``fit`` may be called
    many times).

    X : (n_samples, n_features) float32, already standardised.
    alphas : (n_alphas,) sorted penalties > 0.
    splits : [(train_idx, val_idx), ...] row indices of each fold.
    backend : ``numpy``, ``torch`` or ``torch_cuda``.
    n_targets : expected number of targets, for the ``auto`` choice.
    x_stats : (x_mean, x_scale), each (n_features,), that X was standardised with
        (kept for ``fit_ridge``, which then does not standardise X again).

    Memory (float32): X, one or (folds + 1) (p, p) eigenvector matrices, (n_samples, p)
    more (X V), the ``hat`` cache, and buffers of (n_samples + 5 p) x n_targets_batch.
    Gram matrices and eigenvectors are float32: eigenvalues below ~1e-7 of the largest
    are not resolved, which only matters for alphas that small relative to the
    spectrum (near-OLS fits).
    """

    def __init__(self, X: np.ndarray, alphas: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]],
                 backend: str = "numpy", n_targets: int = 1, strategy: str = "auto",
                 x_stats: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.ops = ops = _Ops(backend)
        # (n_features,) means and scales X was standardised with, where the caller gave them
        self.x_mean, self.x_scale = x_stats if x_stats is not None else (None, None)
        self.alphas = np.asarray(alphas, dtype=np.float64)
        self.n_samples, self.n_features = X.shape
        for train, val in splits:
            if len(val) == 0 or len(train) == 0:
                raise ValueError("a cross-validation fold has an empty training or validation set")
        if strategy == "auto":
            costs = primal_cv_costs(self.n_samples, self.n_features, n_targets, len(splits), len(self.alphas))
            small = costs["hat_cache_bytes"] <= HAT_CACHE_BYTES
            strategy = "hat" if small and costs["hat"] < costs["folds"] else "folds"
        if strategy not in ("folds", "hat"):
            raise ValueError(f"strategy must be auto, folds or hat, got {strategy!r}")
        self.strategy = strategy
        self.X = ops.asarray(np.asarray(X, dtype=np.float32))
        gram = self.X.T @ self.X
        self.folds = []
        for _, val in splits:
            fold = dict(val=ops.asarray(np.asarray(val)))
            if strategy == "folds":
                x_val = self.X[fold["val"]]
                fold["lam"], fold["V"] = ops.eigh(gram - x_val.T @ x_val)
                fold["xv_V"] = x_val @ fold["V"]
                del x_val
            self.folds.append(fold)
        self.lam, self.V = ops.eigh(gram)
        del gram
        if strategy == "hat":
            self.XV = self.X @ self.V
            for fold in self.folds:
                xv_V = self.XV[fold["val"]]
                # H_val,val = X_val (XᵀX + αI)⁻¹ X_valᵀ = S Sᵀ with S = X_val V diag(λ + α)^-1/2
                fold["inv"] = [ops.inv_eye_minus_gram(xv_V / (self.lam + alpha) ** 0.5)
                               for alpha in self.alphas.astype(np.float32)]

    def _fold_scores(self, y: Any) -> tuple[np.ndarray, Any]:
        """Validation scores (n_alphas, t) float64 and C = VᵀXᵀY (p, t), strategy ``folds``."""
        xty = self.X.T @ y
        scores = np.zeros((len(self.alphas), y.shape[1]))
        for fold in self.folds:
            y_val = y[fold["val"]]
            proj = fold["V"].T @ (xty - self.X[fold["val"]].T @ y_val)  # Vᵀ X_trainᵀ Y_train
            for a, alpha in enumerate(self.alphas.astype(np.float32)):
                resid = (fold["xv_V"] / (fold["lam"] + alpha)) @ proj
                resid -= y_val
                scores[a] -= self.ops.to_numpy((resid * resid).sum(0)) / y_val.shape[0]
        return scores, self.V.T @ xty

    def _hat_scores(self, y: Any) -> tuple[np.ndarray, Any]:
        """Validation scores (n_alphas, t) float64 and C = VᵀXᵀY (p, t), strategy ``hat``."""
        proj = self.XV.T @ y
        scores = np.zeros((len(self.alphas), y.shape[1]))
        for a, alpha in enumerate(self.alphas.astype(np.float32)):
            resid = y - (self.XV / (self.lam + alpha)) @ proj  # whole-data fit residuals
            for fold in self.folds:
                inv = fold["inv"][a]
                if inv is None:  # I - H not positive definite in float32: alpha unusable
                    scores[a] = -np.inf
                    continue
                err = inv @ resid[fold["val"]]
                scores[a] -= self.ops.to_numpy((err * err).sum(0)) / err.shape[0]
        return scores, proj

    def fit(self, Y: np.ndarray, n_targets_batch: int | None = None, desc: str = "ridge") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Y (n_samples, n_targets) float32 -> coef (n_features, n_targets), best_alphas and
        cv_scores (n_targets,), all numpy float32."""
        ops = self.ops
        n_targets = Y.shape[1]
        step = n_targets if not n_targets_batch else int(n_targets_batch)
        coef = np.empty((self.n_features, n_targets), dtype=np.float32)
        best_alphas = np.empty(n_targets, dtype=np.float32)
        cv_scores = np.empty(n_targets, dtype=np.float32)
        starts = range(0, n_targets, step)
        for start in (progress(starts, f"{desc} target batches") if len(starts) > 1 else starts):
            sl = slice(start, min(start + step, n_targets))
            y = ops.asarray(np.ascontiguousarray(Y[:, sl], dtype=np.float32))
            scores, proj = self._fold_scores(y) if self.strategy == "folds" else self._hat_scores(y)
            scores /= len(self.folds)
            # ties go to the larger alpha, as in himalaya
            best = np.argmax(scores + np.log(self.alphas)[:, None] * 1e-10, axis=0)
            cv_scores[sl] = scores[best, np.arange(scores.shape[1])]
            best_alphas[sl] = self.alphas[best]
            shrink = 1.0 / (self.lam[:, None] + ops.asarray(best_alphas[sl])[None, :])
            coef[:, sl] = ops.to_numpy(self.V @ (proj * shrink))
        return coef, best_alphas, cv_scores


def _splits(cv: int | Any, n_samples: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Materialise ``make_cv``'s result as a list of (train, val) index arrays."""
    from sklearn.model_selection import check_cv

    if isinstance(cv, list):
        return cv
    return list(check_cv(cv).split(np.zeros((n_samples, 1))))


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
    design: PrimalRidgeCV | None = None,
) -> RidgeFit:
    """Fit a cross-validated ridge regression Y ~ X with one alpha per target.

    X : (n_samples, n_features) e.g. single-trial betas (n_trials, n_voxels).
    Y : (n_samples, n_targets) e.g. flattened features (n_trials, 4*h*w).
    alphas : grid of penalties (> 0) searched per target.
    cv : int, or a scikit-learn splitter; with ``groups`` (n_samples,) an int gives
        GroupKFold (see ``make_cv``).
    backend : ``numpy``, ``torch``, ``torch_cuda`` or ``auto`` (torch_cuda if a GPU is
        present, else numpy).
    n_targets_batch : targets handled at once (bounds memory), None = all.
    fit_intercept : centre Y with its training means and add them back at prediction.
        False reproduces the reference (no offset in the predictions).
    solver : ``auto`` (by shape), ``primal`` (``PrimalRidgeCV``) or ``kernel``
        (himalaya ``KernelRidgeCV``, linear kernel).
    n_alphas_batch : kernel solver only: alphas handled at once inside himalaya, None =
        all (1 bounds the memory of big fits, same arithmetic).
    overwrite_Y : centre a float32 Y in place instead of copying it (saves one copy
        of Y, e.g. 5.9 GB for the full-size c decoder); Y is then modified.
    design : a ``PrimalRidgeCV`` already built on this X by ``ridge_design`` (same
        alphas, folds and backend): its decompositions are reused.
    """
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

    if solver == "auto":
        solver = "kernel" if n_samples < n_features else "primal"
    if design is not None and solver == "primal":
        if (design.n_samples, design.n_features) != X.shape:
            raise ValueError(f"design was built on X of shape {(design.n_samples, design.n_features)}, not on this X {X.shape}")
        if design.x_mean is None:
            raise ValueError("design has no standardisation statistics (x_stats); build it with ridge_design")
        x_mean, x_scale = design.x_mean, design.x_scale  # X was standardised once, when the design was built
    else:
        x_mean, x_scale, Xs = standardise_columns(X)
    Yc = Y if (overwrite_Y and Y.dtype == np.float32) else np.array(Y, dtype=np.float32, copy=True)
    y_offset = np.zeros(Y.shape[1], dtype=np.float32)
    if fit_intercept:
        y_offset = Yc.mean(axis=0)
        Yc -= y_offset

    name = resolve_backend(backend)
    stats = dict(x_mean=x_mean, x_scale=x_scale, y_offset=y_offset, solver=solver, backend=name)
    if solver == "primal":
        if design is None:
            design = PrimalRidgeCV(Xs, alphas, _splits(make_cv(cv, groups, n_samples), n_samples), name,
                                   n_targets=Y.shape[1])
        coef, best_alphas, cv_scores = design.fit(Yc, n_targets_batch)
        return RidgeFit(best_alphas=best_alphas, cv_scores=cv_scores, coef=coef, strategy=design.strategy, **stats)
    return _fit_kernel(Xs, Yc, alphas, make_cv(cv, groups, n_samples), name, n_targets_batch, n_alphas_batch, stats)


def ridge_design(X: np.ndarray, alphas: Sequence[float], cv: int | Any = 5, groups: np.ndarray | None = None,
                 backend: str = "auto", n_targets: int = 1) -> PrimalRidgeCV:
    """A ``PrimalRidgeCV`` on standardised X, to pass as ``fit_ridge(design=...)`` when
    many target batches are fitted on the same X (e.g. voxel batches of an encoding model)."""
    X = np.asarray(X)
    x_mean, x_scale, Xs = standardise_columns(X)
    return PrimalRidgeCV(Xs, check_alphas(alphas), _splits(make_cv(cv, groups, X.shape[0]), X.shape[0]),
                         resolve_backend(backend), n_targets=n_targets, x_stats=(x_mean, x_scale))


def standardise_columns(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X (n, p) -> column means (p,), scales (p,) and standardised X (n, p) float32
    (scikit-learn's StandardScaler: population std, constant columns scaled by 1)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler(with_mean=True, with_std=True).fit(X)
    Xs = scaler.transform(X).astype(np.float32, copy=False)
    return scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32), Xs


def _fit_kernel(Xs: np.ndarray, Yc: np.ndarray, alphas: np.ndarray, cv_arg: Any, name: str,
                n_targets_batch: int | None, n_alphas_batch: int | None, stats: dict) -> RidgeFit:
    """himalaya KernelRidgeCV with a linear kernel on standardised Xs and prepared Yc."""
    from himalaya.backend import get_backend, set_backend
    from himalaya.kernel_ridge import KernelRidgeCV

    previous = get_backend()
    bk = set_backend(name, on_error="warn")
    params = {}
    if n_targets_batch is not None:
        params = dict(n_targets_batch=int(n_targets_batch), n_targets_batch_refit=int(n_targets_batch))
    if n_alphas_batch is not None:
        params["n_alphas_batch"] = int(n_alphas_batch)
    # On a GPU keep a big Y (e.g. 5.9 GB for the full c decoder) in CPU memory; himalaya
    # then moves one target batch at a time.
    y_in_cpu = name == "torch_cuda" and Yc.nbytes > 2e9
    try:
        with warnings.catch_warnings():
            # himalaya warns when X/Y are not float32 on torch
            warnings.filterwarnings("ignore", category=UserWarning, module="himalaya")
            model = KernelRidgeCV(alphas=alphas, kernel="linear", cv=cv_arg, fit_intercept=False,
                                  solver_params=params or None, Y_in_cpu=y_in_cpu)
            model.fit(Xs, Yc)
            dual = _to_numpy(bk, model.dual_coef_)
            fit = RidgeFit(best_alphas=_to_numpy(bk, model.best_alphas_),
                           cv_scores=_to_numpy(bk, model.cv_scores_),
                           x_fit=Xs, dual_coef=dual[:, None] if dual.ndim == 1 else dual, **stats)
    finally:
        set_backend(previous, on_error="warn")
    return fit
