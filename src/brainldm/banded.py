"""Banded ridge regression: one penalty per feature space, found by random search.

The estimator is himalaya's ``GroupRidgeCV(solver="random_search")`` (Nunez-Elizalde
et al. 2019; Dupré la Tour et al. 2022) with its defaults: candidate space weights
gamma drawn from a Dirichlet distribution (the first candidate is the equal
weighting), features of space k scaled by sqrt(gamma_k), one alpha per target chosen
by cross-validation for every candidate (negative mean squared error averaged over
folds, ties to the larger alpha), and per target the candidate with the best score
(a later candidate replaces an earlier one only when it beats it by more than
float32's epsilon). The refit on all training samples uses the chosen candidate and
alpha. Tests compare the two on the same data (``tests/test_banded.py``).

What differs is the arithmetic. For every candidate and fold himalaya takes an SVD
of the scaled training features and forms the (n_alphas, n_val, n_train) matrix that
every target is multiplied by; called on voxel batches it redoes the SVDs for every
batch. Here every candidate is one :class:`brainldm.ridge.PrimalRidgeCV` on the
scaled features (each fold's XᵀX diagonalised once) that all voxel batches reuse, so
the decompositions are made once per candidate for the whole brain, and a voxel
costs matrix products of the eigenbasis size (``ridge.primal_cv_costs``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from brainldm.logs import progress
from brainldm.ridge import PrimalRidgeCV, check_alphas, voxel_batches

log = logging.getLogger("brainldm.banded")

#: himalaya's default Dirichlet concentrations, cycled through candidate by candidate.
CONCENTRATIONS = (0.1, 1.0)


def dirichlet_gammas(n_iter: int, n_spaces: int, seed: int | None = None,
                     concentration: Sequence[float] = CONCENTRATIONS) -> np.ndarray:
    """Candidate space weights (n_iter, n_spaces) float64, each row on the simplex.

    The candidates himalaya's random search tries for ``random_state=seed``: per
    concentration c, ``n_iter / len(concentration)`` (rounded up) draws of
    Dirichlet([c] * n_spaces) from ``numpy.random.RandomState(seed)``, interleaved
    (c0, c1, c0, c1, ...), the first replaced by equal weights 1 / n_spaces.
    """
    if n_iter < 1 or n_spaces < 1:
        raise ValueError(f"need n_iter >= 1 and n_spaces >= 1, got {n_iter} and {n_spaces}")
    rng = np.random.RandomState(seed)
    conc = np.atleast_1d(np.asarray(concentration, dtype=float))
    per = -(-n_iter // len(conc))
    draws = np.stack([rng.dirichlet([c] * n_spaces, per) for c in conc], axis=1)  # (per, n_conc, n_spaces)
    gammas = draws.reshape(per * len(conc), n_spaces)[:n_iter]
    gammas[0] = 1.0 / n_spaces
    return gammas


@dataclass
class BandedFit:
    """What the random search chose, per target. Arrays are numpy.

    gammas : (n_iter, n_spaces) the candidate space weights tried.
    best_iter : (n_targets,) int, the row of ``gammas`` chosen for each target.
    best_alphas : (n_targets,) float32, the alpha chosen with it.
    cv_scores : (n_iter, n_targets) float32, cross-validated score of each candidate
        at its best alpha (negative mean squared error, averaged over folds).
    y_mean : (n_targets,) float32, the training means removed from Y before fitting.
    test_parts : (n_spaces, n_test, n_targets) float32, each space's part of the
        refit model's prediction of the test samples (Y's means not included), or
        None when no test features were given.
    """

    gammas: np.ndarray
    best_iter: np.ndarray
    best_alphas: np.ndarray
    cv_scores: np.ndarray
    y_mean: np.ndarray
    test_parts: np.ndarray | None

    @property
    def best_gammas(self) -> np.ndarray:
        """(n_spaces, n_targets) the chosen space weights."""
        return self.gammas[self.best_iter].T

    @property
    def deltas(self) -> np.ndarray:
        """(n_spaces, n_targets) log(gamma / alpha): himalaya's ``deltas_``."""
        return np.log(self.best_gammas / self.best_alphas[None, :])


def solve_banded_ridge_random_search(
    Xs: Sequence[np.ndarray],
    Y: np.ndarray,
    gammas: np.ndarray,
    alphas: Sequence[float],
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    Xs_test: Sequence[np.ndarray] | None = None,
    n_targets_batch: int | None = None,
    fit_batch: int | None = None,
    backend: str = "numpy",
    center_Y: bool = True,
    desc: str = "banded",
) -> BandedFit:
    """Banded ridge of every column of Y on the feature spaces Xs.

    Xs : n_spaces arrays (n_samples, n_features_k), already standardised (no
        intercept is fitted on X).
    Y : (n_samples, n_targets), e.g. training betas (n_trials, n_voxels); may be a
        memory map: it is read one batch of ``n_targets_batch`` columns at a time,
        once per candidate.
    gammas : (n_iter, n_spaces) candidate weights, e.g. ``dirichlet_gammas``.
    alphas : penalties (> 0) searched per target for every candidate.
    splits : [(train_idx, val_idx), ...] cross-validation folds over samples.
    Xs_test : n_spaces arrays (n_test, n_features_k) standardised like Xs; their
        per-space predictions are returned (the refit weights are not: at whole-brain
        size they would be (n_features, n_voxels), 10.7 GB at NSD's shape).
    fit_batch : targets solved at once within a batch (bounds the solver's work
        arrays), None = the whole batch.
    backend : ``numpy``, ``torch`` or ``torch_cuda`` (see ``brainldm.ridge``).
    center_Y : remove each column's mean over samples before fitting (the intercept),
        returned as ``y_mean``; False fits Y as it is.

    Memory: the stacked features, one ``PrimalRidgeCV`` (per fold a (p, p) eigenbasis
    and (n_val, p) projection), one Y batch, and (n_spaces, n_test, n_targets) parts.
    """
    alphas = check_alphas(alphas, "encoding.alphas")
    gammas = np.atleast_2d(np.asarray(gammas, dtype=np.float64))
    sizes = [x.shape[1] for x in Xs]
    if gammas.shape[1] != len(Xs):
        raise ValueError(f"gammas has {gammas.shape[1]} columns but there are {len(Xs)} feature spaces")
    X = np.hstack([np.asarray(x, dtype=np.float32) for x in Xs])
    n_samples, n_targets = Y.shape
    if X.shape[0] != n_samples:
        raise ValueError(f"the feature spaces have {X.shape[0]} rows but Y has {n_samples}; they must match")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    cols = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    batches = voxel_batches(n_targets, n_targets_batch)

    y_mean = np.zeros(n_targets, dtype=np.float32)  # filled on the first candidate's pass over Y
    x_test = None
    test_parts = None
    if Xs_test is not None:
        x_test = [np.asarray(x, dtype=np.float32) for x in Xs_test]
        test_parts = np.zeros((len(Xs), x_test[0].shape[0], n_targets), dtype=np.float32)

    eps = np.finfo(np.float32).eps
    best = np.full(n_targets, -np.inf, dtype=np.float32)
    best_iter = np.zeros(n_targets, dtype=np.int64)
    best_alphas = np.ones(n_targets, dtype=np.float32)
    cv_scores = np.zeros((len(gammas), n_targets), dtype=np.float32)
    for ii, gamma in enumerate(progress(gammas, f"{desc} candidate space weights")):
        scale = np.sqrt(gamma).astype(np.float32)
        xg = X.copy()
        for k, c in enumerate(cols):
            xg[:, c] *= scale[k]
        design = PrimalRidgeCV(xg, alphas, splits, backend, n_targets=n_targets)
        del xg
        for sl in batches:
            y = np.asarray(Y[:, sl], dtype=np.float32)
            if center_Y:
                if ii == 0:
                    y_mean[sl] = y.mean(0)
                y = y - y_mean[sl]
            coef, batch_alphas, scores = design.fit(y, fit_batch, desc)
            cv_scores[ii, sl] = scores
            better = scores > best[sl] + eps
            if not better.any():
                continue
            idx = np.flatnonzero(better) + sl.start
            best[idx], best_iter[idx], best_alphas[idx] = scores[better], ii, batch_alphas[better]
            if x_test is not None:
                for k, c in enumerate(cols):
                    # weights on the scaled features times sqrt(gamma_k) = weights on the unscaled ones
                    test_parts[k][:, idx] = x_test[k] @ (coef[c][:, better] * scale[k])
        del design
        log.info("%s: candidate %d/%d (gamma %s): best for %d targets so far", desc, ii + 1, len(gammas),
                 "/".join(f"{g:.3f}" for g in gamma), int((best_iter == ii).sum()))
    return BandedFit(gammas=gammas, best_iter=best_iter, best_alphas=best_alphas, cv_scores=cv_scores,
                     y_mean=y_mean, test_parts=test_parts)
