"""Statistics behind the evaluation table: SEM, Holm correction, Wilcoxon pairs, binomial p.

The scores themselves (identification, retrieval, PixCorr, SSIM, Pearson r) live in
:mod:`brainldm.scores`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import scipy.stats


def sem(x: np.ndarray) -> float:
    """Standard error of the mean over the non-NaN values (ddof 1, as scipy.stats.sem)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return float("nan")
    return float(scipy.stats.sem(x))


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error); NaNs stay NaN and do not count.

    pvalues: (m,). Adjusted p_(k) = max_{j <= k} min(1, (m - j + 1) p_(j)) in ascending order.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def wilcoxon_pairs(scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """Two-sided Wilcoxon signed-rank tests between every pair of conditions.

    scores: condition -> (n,) per-image scores, paired by position. Images where either
    score is NaN are left out. Returns one row per pair (in the order of ``scores``):
    condition_a, condition_b, n, median_difference (a - b), statistic, p_value. A pair
    with no non-zero difference cannot be tested and gets NaN statistic and p_value.
    """
    rows = []
    for a, b in itertools.combinations(scores, 2):
        x, y = np.asarray(scores[a], float), np.asarray(scores[b], float)
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
        diff = x - y
        stat = pval = float("nan")
        if np.any(diff != 0):
            res = scipy.stats.wilcoxon(x, y, alternative="two-sided")
            stat, pval = float(res.statistic), float(res.pvalue)
        rows.append(
            {
                "condition_a": a,
                "condition_b": b,
                "n": int(keep.sum()),
                "median_difference": float(np.median(diff)) if len(diff) else float("nan"),
                "statistic": stat,
                "p_value": pval,
            }
        )
    return pd.DataFrame(rows, columns=["condition_a", "condition_b", "n", "median_difference", "statistic", "p_value"])


def p_binomial(accuracy: float, n: int) -> float:
    """Brain-Diffuser's binomial p-value of a two-way identification accuracy.

    accuracy: fraction correct in [0, 1] over the n (n - 1) ordered comparisons of ``n``
    test images. Returns P(X >= k) for X ~ Binomial(n (n - 1), 0.5) with
    k = round(accuracy n (n - 1)) (one-sided, ``scipy.stats.binom.sf(k - 1, ...)``, equal to
    ``scipy.stats.binomtest(k, N, 0.5, alternative="greater").pvalue``). The comparisons
    share images and are not independent, so the p-value is optimistic, as in the
    peers' reports. NaN for a NaN accuracy or n < 2.
    """
    if n < 2 or not np.isfinite(accuracy):
        return float("nan")
    trials = int(n) * (int(n) - 1)
    k = int(round(float(accuracy) * trials))
    return float(scipy.stats.binom.sf(k - 1, trials, 0.5))
