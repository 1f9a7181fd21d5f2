"""Best-of-n_samples selection for figures, as the paper showed its examples.

Picking the sample most similar to the original *uses the original*, so it is biased
upward: it is for figure grids only. The unbiased numbers (metrics.csv) average over
all samples and never use this module.

Entry points:

- :func:`best_sample_indices` scores the samples in memory (no evaluation outputs
  needed), pixels resized as the evaluation's PixCorr and SSIM resize them.
- :func:`pixel_similarity` with :func:`best_indices` does the same on the images as
  given (the reconstruction stage's grid, drawn from the stored images).
- :func:`best_samples_from_table` reads the per-sample similarities the evaluation
  stage already wrote (``results/{subject}/evaluation/sample_scores.tsv``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainldm.metric_features import FEATURE_SPECS, MetricNetworks, WeightsConfig, pixel_images
from brainldm.scores import pixel_correlations, ssim_scores, standardize_rows

#: Metrics that need no network.
PIXEL_METRICS = ("pixcorr", "ssim")
#: Every metric name accepted by :func:`best_sample_indices`.
SELECTION_METRICS = PIXEL_METRICS + tuple(s.key for s in FEATURE_SPECS)


def sample_similarity(
    original: np.ndarray,
    samples: np.ndarray,
    metric: str = "pixcorr",
    weights: WeightsConfig | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Similarity of each sample to its original: (n, s) float64, higher = more similar.

    original: (n, H, W, 3) uint8; samples: (n, s, H', W', 3) uint8 (sizes may differ,
    each metric resizes as its reference does). metric: "pixcorr" (Pearson r of pixels at
    425 px), "ssim", or a feature space "convention/metric" of
    :data:`brainldm.metric_features.FEATURE_SPECS` (Pearson r of features, e.g.
    "takagi/clip", "mindeye/alexnet2"). weights: networks' weights for feature spaces
    (default: seeded random). Raises ValueError for an unknown metric or unavailable weights.
    """
    if original.ndim != 4 or samples.ndim != 5 or len(original) != len(samples):
        raise ValueError(f"original (n, H, W, 3) and samples (n, s, H, W, 3) expected, got {original.shape}, {samples.shape}")
    n, s = samples.shape[:2]
    if metric in PIXEL_METRICS:
        return pixel_similarity(pixel_images(original), pixel_images(samples), metric)
    specs = tuple(sp for sp in FEATURE_SPECS if sp.key == metric)
    if not specs:
        raise ValueError(f"unknown selection metric {metric!r}; use one of {SELECTION_METRICS}")
    nets = MetricNetworks(weights or WeightsConfig(mode="random"), specs=specs)
    if metric in nets.unavailable:
        raise ValueError(f"cannot select by {metric}: {nets.unavailable[metric]}")
    out = np.empty((n, s))
    step = max(1, batch_size // s)
    for a in range(0, n, step):
        b = min(n, a + step)
        fo = standardize_rows(nets.extract(original[a:b])[metric])
        fs = standardize_rows(nets.extract(samples[a:b].reshape((-1,) + samples.shape[2:]))[metric])
        out[a:b] = np.einsum("nd,nsd->ns", fo, fs.reshape(b - a, s, -1))
    return out


def pixel_similarity(original: np.ndarray, samples: np.ndarray, metric: str = "pixcorr") -> np.ndarray:
    """PixCorr or SSIM of each sample to its original on the images as given: (n, s) float64.

    original: (n, H, W, 3); samples: (n, s, H, W, 3), uint8 or float in [0, 1] (no resizing).
    metric: "pixcorr" (NaN for a constant image) or "ssim".
    """
    if metric not in PIXEL_METRICS:
        raise ValueError(f"unknown pixel metric {metric!r}; use one of {PIXEL_METRICS}")
    return pixel_correlations(original, samples) if metric == "pixcorr" else ssim_scores(original, samples)


def best_indices(similarity: np.ndarray) -> np.ndarray:
    """Index of the most similar sample per image: similarity (n, s) -> (n,) int64.

    Ties go to the lowest index; NaN similarities (constant images) never win unless all
    of an image's samples are NaN (then 0).
    """
    return np.argmax(np.nan_to_num(similarity, nan=-np.inf), axis=1).astype(np.int64)


def best_sample_indices(
    original: np.ndarray,
    samples: np.ndarray,
    metric: str = "pixcorr",
    weights: WeightsConfig | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Index of the sample most similar to its original, per image: (n,) int64.

    Arguments as :func:`sample_similarity`; ties and NaNs as :func:`best_indices`.
    """
    return best_indices(sample_similarity(original, samples, metric, weights, batch_size))


def best_samples_from_table(
    sample_scores: str | pd.DataFrame,
    condition: str,
    metric: str = "pixcorr",
    convention: str = "mindeye",
) -> pd.Series:
    """Best sample per image from an evaluation ``sample_scores.tsv`` (or its DataFrame).

    Returns a Series indexed by nsd_id with the sample index of the highest similarity
    for (condition, convention, metric); raises ValueError when the table lacks them.
    """
    df = pd.read_csv(sample_scores, sep="\t") if not isinstance(sample_scores, pd.DataFrame) else sample_scores
    sel = df[(df["condition"] == condition) & (df["convention"] == convention) & (df["metric"] == metric)]
    if sel.empty:
        have = sorted(set(zip(df["convention"], df["metric"])))
        raise ValueError(f"no similarities for condition {condition!r}, {convention}/{metric}; the table has {have}")
    sel = sel.assign(_sim=sel["similarity"].fillna(-np.inf)).sort_values(["nsd_id", "_sim", "sample"],
                                                                        ascending=[True, False, True])
    return sel.groupby("nsd_id", sort=True)["sample"].first().astype(np.int64)
