"""Two-way identification, pixel metrics and the statistics behind the evaluation table.

Everything here works on arrays already in memory (features, images, scores); the
networks that make the features live in :mod:`brainldm.metric_features`.

Layout shared by the functions below: ``n`` test images, ``s`` samples (reconstructions)
per test image, ``d`` feature dimensions. The correlation tensor

    ``r[i, j, k] = Pearson r(features(original_i), features(reconstruction_{j, k}))``

has shape ``(n, n, s)`` and is the only input the two identification conventions need:

- **Takagi & Nishimoto** (``codes/utils/identification.py``): for original ``i``, average
  ``r`` over the samples, then count the other images ``j`` whose reconstructions
  correlate less with original ``i`` than its own do: ``mean_k r[i,i,k] > mean_k r[i,j,k]``.
  Rows of the matrix (original fixed, reconstruction varies).
- **Brain-Diffuser / MindEye** (``pairwise_corr_all``, ``two_way_identification``): for
  reconstruction ``i`` (one sample at a time), count the other originals ``j`` that
  correlate less with it than its own original does: ``r[j,i,k] < r[i,i,k]``. Columns of
  the matrix (reconstruction fixed, original varies). With several samples, each sample
  is scored alone and the image's accuracy is the mean over its samples.

Both divide the count by ``n - 1``. Ties count as failures, and so does any comparison
with a NaN correlation (e.g. from a constant feature vector): a comparison is won only
when the own correlation exceeds the other by more than :data:`TIE_TOLERANCE`. Identical
reconstructions (a collapsed decoder) give correlations that differ only by float32
rounding of the networks and GEMMs (~1e-7); a strict ``>`` would score them 0.15-1.1 %
instead of 0 %. A genuine difference smaller than 1e-6 in r also counts as a tie: with random
network weights (features of all images correlate at r > 0.999) this moves scores a little.

Retrieval (MindEye1/2) and the binomial p-value of two-way identification
(Brain-Diffuser) are here too: :func:`retrieval_top1`, :func:`p_binomial`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import scipy.stats
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

#: Two correlations closer than this are a tie (a failed comparison); see the module docstring.
TIE_TOLERANCE = 1e-6


def standardize_rows(x: np.ndarray) -> np.ndarray:
    """Centre every row and scale it to unit L2 norm, so that dot products are Pearson r.

    x: (n, ...) any real dtype; each row is flattened. Returns (n, d) float32. A constant
    row has no correlation: it becomes all-NaN, and every comparison with it fails.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(norm > 0, x / norm, np.nan)
    return x.astype(np.float32)


def correlation_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between every row of ``a`` (n, ...) and every row of ``b`` (m, ...): (n, m) float64.

    Equals ``np.corrcoef(a, b)[:n, n:]`` for flattened rows.
    """
    za = standardize_rows(a).astype(np.float64)
    zb = standardize_rows(b).astype(np.float64)
    return np.clip(za @ zb.T, -1.0, 1.0)


def sample_correlations(original: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """The correlation tensor of the module docstring.

    original: (n, d) features of the originals; recon: (n, s, d) features of the
    reconstructions (s samples per image). Returns r: (n, n, s) float64 with
    ``r[i, j, k] = corr(original_i, recon_{j,k})``.
    """
    n, s = recon.shape[:2]
    if len(original) != n:
        raise ValueError(f"original has {len(original)} images but recon has {n}")
    flat = recon.reshape(n * s, -1)
    return correlation_matrix(original, flat).reshape(n, n, s)


def _check_r(r: np.ndarray) -> np.ndarray:
    r = np.asarray(r, dtype=np.float64)
    if r.ndim == 2:
        r = r[:, :, None]
    if r.ndim != 3 or r.shape[0] != r.shape[1]:
        raise ValueError(f"r must be (n, n, n_samples) or (n, n), got {r.shape}")
    if r.shape[0] < 2:
        raise ValueError("two-way identification needs at least 2 test images")
    return r


def takagi_identification(r: np.ndarray) -> np.ndarray:
    """Per-original accuracy, Takagi & Nishimoto's convention (fraction in [0, 1]).

    r: (n, n, s) or (n, n), r[i, j, k] = corr(original_i, recon_{j,k}). Returns (n,):
    for each i the fraction of the other n - 1 images j with
    ``mean_k r[i, i, k] > mean_k r[i, j, k] + TIE_TOLERANCE`` (ties fail).
    """
    r = _check_r(r)
    mean_r = r.mean(axis=2)
    n = len(mean_r)
    own = np.diag(mean_r)[:, None]
    wins = own > mean_r + TIE_TOLERANCE  # (i, j): row i fixed, reconstruction j varies
    wins[np.arange(n), np.arange(n)] = False
    return wins.sum(axis=1) / (n - 1)


def two_way_identification(r: np.ndarray) -> np.ndarray:
    """Per-reconstruction accuracy, Brain-Diffuser / MindEye convention (fraction in [0, 1]).

    r: (n, n, s) or (n, n), r[i, j, k] = corr(original_i, recon_{j,k}). For sample k of
    image i, the fraction of the other n - 1 originals j with
    ``r[j, i, k] + TIE_TOLERANCE < r[i, i, k]`` (ties fail); returns (n,) the mean over the s samples.
    """
    r = _check_r(r)
    n = r.shape[0]
    idx = np.arange(n)
    own = r[idx, idx, :]  # (i, k)
    wins = r + TIE_TOLERANCE < own[None, :, :]  # (j, i, k): column i fixed, original j varies
    wins[idx, idx, :] = False
    return (wins.sum(axis=0) / (n - 1)).mean(axis=1)


def own_correlations(r: np.ndarray) -> np.ndarray:
    """r(original_i, recon_{i,k}) from the correlation tensor: (n, n, s) -> (n, s)."""
    r = _check_r(r)
    idx = np.arange(r.shape[0])
    return r[idx, idx, :]


def correlation_distance(r: np.ndarray) -> np.ndarray:
    """Mean over samples of scipy's correlation distance 1 - r(original_i, recon_{i,k}): (n,).

    The EffNet-B1 and SwAV scores of Brain-Diffuser / MindEye (lower is better).
    """
    return (1.0 - own_correlations(r)).mean(axis=1)


def pixel_correlations(original: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """PixCorr: Pearson r of the flattened pixels of each original and each of its samples.

    original: (n, H, W, C) float; recon: (n, s, H, W, C) float, same H, W, C.
    Returns (n, s) float64.
    """
    n, s = recon.shape[:2]
    zo = standardize_rows(original).astype(np.float64)
    zr = standardize_rows(recon.reshape(n * s, -1)).astype(np.float64).reshape(n, s, -1)
    return np.einsum("nd,nsd->ns", zo, zr)


def ssim_scores(original: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """SSIM of each original with each of its samples, as MindEye computes it.

    original: (n, H, W, 3) float RGB in [0, 1]; recon: (n, s, H, W, 3), same size. Both are
    converted to grey with ``skimage.color.rgb2gray``; scikit-image's
    ``structural_similarity`` with Gaussian weights (sigma 1.5), population covariance and
    data_range 1. Returns (n, s) float64.

    This is MindEye's 2-D SSIM of the grey images (scikit-image >= 0.20). Brain-Diffuser's
    published SSIM comes from scikit-image 0.17 with ``multichannel=True`` on the 2-D grey
    images, which treats every image column as a channel (a column-wise 1-D SSIM,
    averaged): a different number, not reproduced here.
    """
    n, s = recon.shape[:2]
    out = np.empty((n, s))
    for i in range(n):
        g0 = rgb2gray(original[i])
        for k in range(s):
            out[i, k] = structural_similarity(
                g0,
                rgb2gray(recon[i, k]),
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
            )
    return out


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


def retrieval_top1(brain: np.ndarray, image: np.ndarray, pool: int = 300, draws: int = 30,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Top-1 retrieval among ``pool`` test images, MindEye1/2's convention.

    brain: (n, ...) brain-derived embeddings (e.g. decoded c, or CLIP embeddings of the
    reconstructions); image: (n, ...) the true embeddings of the same n test images, same
    order. Each draw picks ``pool`` images without replacement (``numpy.random.default_rng(seed)``,
    ``pool`` capped at n) and computes cosine similarities of the L2-normalised, flattened
    embeddings (pool x pool). brain->image: for each brain embedding, its own image is more
    similar than every other image of the pool by more than :data:`TIE_TOLERANCE`;
    image->brain: the same per image over the pool's brain embeddings. Chance = 1 / pool.

    Returns {"brain_to_image": (draws,), "image_to_brain": (draws,)} fractions correct and
    "pool": the pool size used.
    """
    b = np.asarray(brain, dtype=np.float64).reshape(len(brain), -1)
    t = np.asarray(image, dtype=np.float64).reshape(len(image), -1)
    if b.shape != t.shape:
        raise ValueError(f"brain {b.shape} and image {t.shape} embeddings must have the same shape")
    n = len(b)
    if n < 2:
        raise ValueError("retrieval needs at least 2 test images")
    with np.errstate(invalid="ignore", divide="ignore"):
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        t = t / np.linalg.norm(t, axis=1, keepdims=True)
    pool = int(min(pool, n))
    rng = np.random.default_rng(seed)
    out = {"brain_to_image": np.empty(draws), "image_to_brain": np.empty(draws)}
    off = ~np.eye(pool, dtype=bool)
    for d in range(draws):
        idx = rng.choice(n, size=pool, replace=False)
        sim = b[idx] @ t[idx].T  # (brain i, image j)
        own = np.diag(sim)
        others = np.where(off, sim, -np.inf)
        out["brain_to_image"][d] = np.mean(own > others.max(axis=1) + TIE_TOLERANCE)
        out["image_to_brain"][d] = np.mean(own > others.max(axis=0) + TIE_TOLERANCE)
    out["pool"] = np.asarray(pool)
    return out
