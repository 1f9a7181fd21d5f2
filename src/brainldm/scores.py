"""Every score of the project: Pearson r, R², two-way identification, retrieval, PixCorr, SSIM.

Each score is written once, here; the stages (decoding, encoding, reconstruction grid,
evaluation) call these functions. Everything works on arrays already in memory; the
networks that make the evaluation's features live in :mod:`brainldm.metric_features`.

**NaN policy.** A constant column (per-column scores) or a constant row (per-row scores,
:func:`standardize_rows`, :func:`correlation_matrix`) has no correlation: its r is NaN,
never 0. An R² with a constant true column is NaN. In identification and retrieval any
comparison with a NaN correlation fails.

**Identification.** Layout: ``n`` test images, ``s`` samples (reconstructions) per test
image, ``d`` feature dimensions. The correlation tensor

    ``r[i, j, k] = Pearson r(features(original_i), features(reconstruction_{j, k}))``

has shape ``(n, n, s)`` (or ``(n, n)`` for one sample) and is the only input the two
identification conventions need:

- **Takagi & Nishimoto** (``codes/utils/identification.py``): for original ``i``, average
  ``r`` over the samples, then count the other images ``j`` whose reconstructions
  correlate less with original ``i`` than its own do: ``mean_k r[i,i,k] > mean_k r[i,j,k]``.
  Rows of the matrix (original fixed, reconstruction varies).
- **Brain-Diffuser / MindEye** (``pairwise_corr_all``, ``two_way_identification``): for
  reconstruction ``i`` (one sample at a time), count the other originals ``j`` that
  correlate less with it than its own original does: ``r[j,i,k] < r[i,i,k]``. Columns of
  the matrix (reconstruction fixed, original varies). With several samples, each sample
  is scored alone and the image's accuracy is the mean over its samples. The decoders'
  identification (decoded latent vs true latents) is this convention with one sample.

Both divide the count by ``n - 1``. Ties count as failures, and so does any comparison
with a NaN correlation (e.g. from a constant feature vector): a comparison is won only
when the own correlation exceeds the other by more than ``tolerance`` (default
:data:`TIE_TOLERANCE`). Identical reconstructions (a collapsed decoder) give correlations
that differ only by float32 rounding of the networks and GEMMs (~1e-7); a strict ``>``
would score them 0.15-1.1 % instead of 0 %. A genuine difference smaller than 1e-6 in r
also counts as a tie: with random network weights (features of all images correlate at
r > 0.999) this moves scores a little. The decoding stage scores its float64 latents with
``tolerance=0`` (strict ``>``), as it always has.
"""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

#: Two correlations closer than this are a tie (a failed comparison); see the module docstring.
TIE_TOLERANCE = 1e-6

# ----------------------------------------------------------------------------- Pearson r and R²


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
    """Pearson r of every column: a, b (n, d) -> (d,) float32, NaN where a column is constant.

    E.g. (test images, voxels) -> r per voxel; himalaya ``correlation_score(a, b)``.
    """
    return _pearson(a, b, axis=0)


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of every row: a, b (n, d) -> (n,) float32, NaN where a row is constant.

    With (images, feature dims) this is the reference's per-image score
    (himalaya ``correlation_score(a.T, b.T)``).
    """
    return _pearson(a, b, axis=1)


class StreamingPearsonRows:
    """``pearson_rows`` of (n, d) arrays given a block of columns at a time: running
    float64 sums per row, so d can be too large to hold (e.g. every brain voxel of
    several thousand predicted patterns). ``r()`` equals ``pearson_rows`` of the
    concatenated blocks up to float64 rounding (NaN for a constant row)."""

    def __init__(self, n: int) -> None:
        self._sums = {k: np.zeros(n) for k in ("n", "a", "b", "aa", "bb", "ab")}

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        """a, b: (n, m) the next m columns of both arrays."""
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        s = self._sums
        s["n"] += a.shape[1]
        s["a"] += a.sum(1)
        s["b"] += b.sum(1)
        s["aa"] += (a * a).sum(1)
        s["bb"] += (b * b).sum(1)
        s["ab"] += (a * b).sum(1)

    def r(self) -> np.ndarray:
        """(n,) float64."""
        s = self._sums
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = s["ab"] - s["a"] * s["b"] / s["n"]
            va = s["aa"] - s["a"] ** 2 / s["n"]
            vb = s["bb"] - s["b"] ** 2 / s["n"]
            r = cov / np.sqrt(va * vb)
        return np.where((va > 0) & (vb > 0), r, np.nan)


def r2_columns(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column: (n, d) x2 -> (d,) float32, NaN for a constant true column.

    himalaya ``r2_score(y_true, y_pred)`` (1 - residual / total sum of squares about the true mean).
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.nan).astype(np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """(n, ...) -> (n, d) float64 rows centred and scaled to unit L2 norm; a constant row is all-NaN."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, x / norm, np.nan)


def standardize_rows(x: np.ndarray) -> np.ndarray:
    """Centre every row and scale it to unit L2 norm, so that dot products are Pearson r.

    x: (n, ...) any real dtype; each row is flattened. Returns (n, d) float32 (the
    evaluation keeps many of these in memory). A constant row has no correlation: it
    becomes all-NaN, and every comparison with it fails.
    """
    return _unit_rows(x).astype(np.float32)


def correlation_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between every row of ``a`` (n, ...) and every row of ``b`` (m, ...): (n, m) float64.

    Computed in float64; equals ``np.corrcoef(a, b)[:n, n:]`` for flattened rows, clipped
    to [-1, 1]. Rows or columns of a constant row are NaN.
    """
    return np.clip(_unit_rows(a) @ _unit_rows(b).T, -1.0, 1.0)


# ----------------------------------------------------------------------------- identification


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


def two_way_identification(r: np.ndarray, tolerance: float | None = None) -> np.ndarray:
    """Per-reconstruction accuracy, Brain-Diffuser / MindEye convention (fraction in [0, 1]).

    r: (n, n, s) or (n, n), r[i, j, k] = corr(original_i, recon_{j,k}). For sample k of
    image i, the fraction of the other n - 1 originals j with
    ``r[j, i, k] + tolerance < r[i, i, k]`` (ties fail; tolerance None = :data:`TIE_TOLERANCE`);
    returns (n,) float64, the mean over the s samples.
    """
    tolerance = TIE_TOLERANCE if tolerance is None else tolerance
    r = _check_r(r)
    n = r.shape[0]
    idx = np.arange(n)
    own = r[idx, idx, :]  # (i, k)
    wins = r + tolerance < own[None, :, :]  # (j, i, k): column i fixed, original j varies
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


# ----------------------------------------------------------------------------- pixels


def pixel_correlations(original: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """PixCorr: Pearson r of the flattened pixels of each original and each of its samples.

    original: (n, H, W, C); recon: (n, s, H, W, C), same H, W, C; any real dtype (uint8
    or float in [0, 1]). Rows are standardised in float32 (:func:`standardize_rows`).
    Returns (n, s) float64; NaN where an image is constant.
    """
    n, s = recon.shape[:2]
    zo = standardize_rows(original).astype(np.float64)
    zr = standardize_rows(recon.reshape(n * s, -1)).astype(np.float64).reshape(n, s, -1)
    return np.einsum("nd,nsd->ns", zo, zr)


def ssim_scores(original: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """SSIM of each original with each of its samples, as MindEye computes it.

    original: (n, H, W, 3) RGB, float in [0, 1] or uint8; recon: (n, s, H, W, 3), same
    size. Both are converted to grey with ``skimage.color.rgb2gray`` (float in [0, 1]);
    scikit-image's ``structural_similarity`` with Gaussian weights (sigma 1.5), population
    covariance and data_range 1. Returns (n, s) float64.

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
