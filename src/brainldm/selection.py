"""Best-of-n_samples selection for figures, as the paper showed its examples.

Picking the sample most similar to the original *uses the original*, so it is biased
upward: it is for figure grids only. The unbiased numbers (metrics.csv) average over
all samples and never use this module.

Two entry points:

- :func:`best_sample_indices` scores the samples in memory (no evaluation outputs
  needed, e.g. while the reconstruction stage draws its grid).
- :func:`best_samples_from_table` reads the per-sample similarities the evaluation
  stage already wrote (``results/{subject}/evaluation/sample_scores.tsv``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainldm import identification as ident
from brainldm.metric_features import FEATURE_SPECS, MetricNetworks, WeightsConfig, pixel_images

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
        po, ps = pixel_images(original), pixel_images(samples)
        return ident.pixel_correlations(po, ps) if metric == "pixcorr" else ident.ssim_scores(po, ps)
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
        fo = ident.standardize_rows(nets.extract(original[a:b])[metric])
        fs = ident.standardize_rows(nets.extract(samples[a:b].reshape((-1,) + samples.shape[2:]))[metric])
        out[a:b] = np.einsum("nd,nsd->ns", fo, fs.reshape(b - a, s, -1))
    return out


def best_sample_indices(
    original: np.ndarray,
    samples: np.ndarray,
    metric: str = "pixcorr",
    weights: WeightsConfig | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Index of the sample most similar to its original, per image: (n,) int64.

    Arguments as :func:`sample_similarity`; ties go to the lowest index, NaN similarities
    (constant images) never win unless all of an image's samples are NaN (then 0).
    """
    sim = sample_similarity(original, samples, metric, weights, batch_size)
    return np.argmax(np.nan_to_num(sim, nan=-np.inf), axis=1).astype(np.int64)


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
