"""Evaluation of the reconstructions: per-image scores, the metrics table, its figure, statistics.

Two steps, one per rule:

1. :func:`evaluate_subject` reads ``results/{subject}/reconstruction/recons.h5`` and writes
   per-image scores (``scores.tsv``), per-sample similarities (``sample_scores.tsv``) and
   retrieval (``retrieval.tsv``, :func:`retrieval_table`). Every image goes through each network once; features of the reconstructions are
   reduced to correlations with the originals batch by batch, so memory stays small.
2. :func:`summarize` pools the subjects and writes ``metrics.csv`` (tidy), ``metrics.md``,
   ``metrics.png`` (like Fig. 5 of Takagi & Nishimoto) and ``wilcoxon.tsv``.

Units of ``accuracy`` (column ``unit``): two-way identification in percent correct
(chance 50); PixCorr a Pearson r and SSIM an index (higher is better); EffNet-B1 and SwAV
a correlation distance 1 - r (lower is better); retrieval top-1 in percent correct
(chance 100 / pool). ``metrics.csv`` also says each row's chance level and, for two-way
identification, Brain-Diffuser's binomial p-value (:func:`brainldm.stats.p_binomial`).
All numbers use every sample: a
best-of-samples selection for figures lives in :mod:`brainldm.selection`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from brainldm import stats
from brainldm.brain_correlation import CONVENTION as BRAIN_CONVENTION
from brainldm.brain_correlation import ORIGINAL as BRAIN_ORIGINAL
from brainldm.ingest import read_sessions
from brainldm.io import atomic_path
from brainldm.metric_features import FEATURE_SPECS, MetricNetworks, WeightsConfig, pixel_images
from brainldm.scores import (
    correlation_distance,
    own_correlations,
    pixel_correlations,
    retrieval_top1,
    ssim_scores,
    standardize_rows,
    takagi_identification,
    two_way_identification,
)

#: The CLIP feature space whose image embeddings the reconstruction retrieval uses.
RETRIEVAL_CLIP_KEY = "mindeye/clip"

log = logging.getLogger(__name__)

CONDITIONS = ("z", "c", "zc")
POOLED = "all"

#: Subjects' test images are pooled by averaging each image's score over subjects.
SCORE_COLUMNS = ["subject", "nsd_id", "condition", "convention", "metric", "unit", "score", "weights"]
SAMPLE_COLUMNS = ["subject", "nsd_id", "condition", "sample", "convention", "metric", "similarity", "weights"]
METRIC_COLUMNS = ["subject", "condition", "convention", "metric", "accuracy", "sem", "n", "weights", "unit",
                  "chance", "p_binomial", "ci_low", "ci_high"]
RETRIEVAL_COLUMNS = ["subject", "condition", "convention", "metric", "embedding", "pool", "draws", "n",
                     "accuracy", "ci_low", "ci_high", "chance", "unit", "weights"]
UNIT_RETRIEVAL = "percent correct (top-1 retrieval)"
RETRIEVAL_DIRECTIONS = ("brain_to_image", "image_to_brain")
#: condition of the retrieval rows from the decoded c (independent of the reconstructions)
DECODED_C = "decoded_c"


@dataclass(frozen=True)
class Metric:
    """One column of the table: how it is scored and displayed."""

    convention: str
    metric: str
    label: str
    unit: str


UNIT_IDENT = "percent correct (two-way)"
UNIT_R = "pearson r"
UNIT_SSIM = "ssim"
UNIT_DIST = "correlation distance"

#: Every metric, in table order.
METRICS: tuple[Metric, ...] = (
    Metric("takagi", "alexnet5", "AlexNet(5)", UNIT_IDENT),
    Metric("takagi", "alexnet12", "AlexNet(12)", UNIT_IDENT),
    Metric("takagi", "alexnet18", "AlexNet(18)", UNIT_IDENT),
    Metric("takagi", "inception", "Inception", UNIT_IDENT),
    Metric("takagi", "clip", "CLIP", UNIT_IDENT),
    Metric("takagi", "clip_h6", "CLIP h6", UNIT_IDENT),
    Metric("takagi", "clip_h12", "CLIP h12", UNIT_IDENT),
    Metric("mindeye", "pixcorr", "PixCorr", UNIT_R),
    Metric("mindeye", "ssim", "SSIM", UNIT_SSIM),
    Metric("mindeye", "alexnet2", "AlexNet(2)", UNIT_IDENT),
    Metric("mindeye", "alexnet5", "AlexNet(5)", UNIT_IDENT),
    Metric("mindeye", "inception", "Inception", UNIT_IDENT),
    Metric("mindeye", "clip", "CLIP", UNIT_IDENT),
    Metric("mindeye", "effnet_b1", "EffNet-B1", UNIT_DIST),
    Metric("mindeye", "swav", "SwAV", UNIT_DIST),
)
_BY_KEY = {f"{m.convention}/{m.metric}": m for m in METRICS}
CONVENTION_TITLES = {"takagi": "Takagi & Nishimoto", "mindeye": "Brain-Diffuser / MindEye"}


class EvaluationInputError(ValueError):
    """A reconstruction file or config value the evaluation cannot use; says which and why."""


# ---------------------------------------------------------------------------- inputs


def check_recons(f: h5py.File, path: str, conditions: tuple[str, ...]) -> tuple[int, int]:
    """Check recons.h5 against docs/contracts.md; returns (n_test, n_samples)."""
    missing = [k for k in ("nsd_id", "original", *conditions) if k not in f]
    if missing:
        raise EvaluationInputError(
            f"{path} lacks dataset(s) {missing}; the reconstruction stage must write nsd_id, "
            f"original and {list(conditions)} (see docs/contracts.md), or change evaluation.conditions"
        )
    n = f["nsd_id"].shape[0] if f["nsd_id"].ndim == 1 else -1
    orig = f["original"]
    if n < 2 or orig.ndim != 4 or orig.shape[0] != n or orig.shape[-1] != 3 or orig.dtype != np.uint8:
        raise EvaluationInputError(
            f"{path}: nsd_id {f['nsd_id'].shape} and original {orig.shape} {orig.dtype} must be "
            "(n_test,) and (n_test, H, W, 3) uint8 with n_test >= 2; rerun the reconstruction stage"
        )
    n_samples = None
    for cond in conditions:
        ds = f[cond]
        if ds.ndim != 5 or ds.shape[0] != n or ds.shape[-1] != 3 or ds.dtype != np.uint8 or ds.shape[1] < 1:
            raise EvaluationInputError(
                f"{path}: dataset {cond!r} is {ds.shape} {ds.dtype}; expected (n_test={n}, n_samples, H, W, 3) "
                "uint8; rerun the reconstruction stage"
            )
        if n_samples not in (None, ds.shape[1]):
            raise EvaluationInputError(f"{path}: conditions have different n_samples ({n_samples} vs {ds.shape[1]})")
        n_samples = ds.shape[1]
    return n, int(n_samples)


def _write_tsv(df: pd.DataFrame, path: str | Path, sep: str = "\t") -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep=sep, index=False, float_format="%.6g")


# ---------------------------------------------------------------------------- step 1


def score_subject(
    recons_path: str,
    subject: str,
    weights: WeightsConfig,
    conditions: tuple[str, ...] = CONDITIONS,
    batch_size: int = 16,
    networks: MetricNetworks | None = None,
    image_size: dict[str, int] | None = None,
    clip_embeddings: dict[str, np.ndarray] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score one subject's reconstructions with every metric.

    image_size: convention -> square size before the metrics (see
    :mod:`brainldm.metric_features`; ignored when ``networks`` is given). clip_embeddings:
    if a dict, it receives the raw image embeddings of :data:`RETRIEVAL_CLIP_KEY` (when
    available): "original" (n, d) and each condition (n, s, d), for :func:`retrieval_table`.

    Returns (scores, sample_scores): per image and metric the score in the metric's unit
    (columns :data:`SCORE_COLUMNS`), and per image, sample and feature space the
    similarity of that sample to its original (Pearson r, or SSIM; :data:`SAMPLE_COLUMNS`).
    """
    nets = networks or MetricNetworks(weights, image_size=image_size)
    for key, reason in nets.unavailable.items():
        log.warning("%s: weights unavailable, its scores are NaN: %s", key, reason)
    try:
        f = h5py.File(recons_path, "r")
    except OSError as err:
        raise EvaluationInputError(f"cannot open {recons_path} as HDF5 ({err}); rerun the reconstruction stage") from err
    with f:
        n, s = check_recons(f, recons_path, conditions)
        nsd_id = f["nsd_id"][:].astype(np.int64)
        original = f["original"][:]
        step = max(1, batch_size)
        orig_z: dict[str, list[np.ndarray]] = {}
        t0 = time.perf_counter()
        for a in range(0, n, step):
            for key, x in nets.extract(original[a : a + step]).items():
                orig_z.setdefault(key, []).append(standardize_rows(x))
                if clip_embeddings is not None and key == RETRIEVAL_CLIP_KEY:
                    clip_embeddings.setdefault("_original", []).append(x)
        if clip_embeddings is not None and "_original" in clip_embeddings:
            clip_embeddings["original"] = np.concatenate(clip_embeddings.pop("_original"))
        orig_feats = {k: np.concatenate(v) for k, v in orig_z.items()}
        log.info("%s original: %d images through the networks in %.1f s", subject, n, time.perf_counter() - t0)

        per_image: list[dict] = []
        per_sample: list[pd.DataFrame] = []
        images_per_batch = max(1, batch_size // s)
        for cond in conditions:
            ds = f[cond]
            r = {k: np.full((n, n, s), np.nan) for k in orig_feats}
            pix = np.full((n, s), np.nan)
            ssim = np.full((n, s), np.nan)
            emb = None
            for a in range(0, n, images_per_batch):
                t0 = time.perf_counter()
                b = min(n, a + images_per_batch)
                recon = ds[a:b]  # (m, s, H, W, 3)
                flat = recon.reshape((-1,) + recon.shape[2:])
                for key, x in nets.extract(flat).items():
                    z = standardize_rows(x)
                    r[key][:, a:b, :] = (orig_feats[key] @ z.T).reshape(n, b - a, s)
                    if clip_embeddings is not None and key == RETRIEVAL_CLIP_KEY:
                        if emb is None:
                            emb = np.full((n, s, x.shape[1]), np.nan, dtype=np.float32)
                        emb[a:b] = x.reshape(b - a, s, -1)
                po = pixel_images(original[a:b], nets.image_size)
                pr = pixel_images(recon, nets.image_size)
                pix[a:b] = pixel_correlations(po, pr)
                ssim[a:b] = ssim_scores(po, pr)
                log.info("%s %s: images %d-%d of %d (%d reconstructions) scored in %.1f s",
                         subject, cond, a, b, n, len(flat), time.perf_counter() - t0)
            if emb is not None:
                clip_embeddings[cond] = emb
            scores = _image_scores(r, pix, ssim, nets, n)
            for key, values in scores.items():
                conv, metric = key.split("/")
                m = _BY_KEY[key]
                w = _weights_of(key, nets)
                per_image += [
                    dict(subject=subject, nsd_id=int(i), condition=cond, convention=conv, metric=metric,
                         unit=m.unit, score=float(v), weights=w)
                    for i, v in zip(nsd_id, values)
                ]
            sims = {f"{sp.convention}/{sp.metric}": own_correlations(r[sp.key]) for sp in FEATURE_SPECS if sp.key in r}
            sims["mindeye/pixcorr"], sims["mindeye/ssim"] = pix, ssim
            for key, sim in sims.items():
                conv, metric = key.split("/")
                per_sample.append(pd.DataFrame(dict(
                    subject=subject, nsd_id=np.repeat(nsd_id, s), condition=cond,
                    sample=np.tile(np.arange(s), n), convention=conv, metric=metric,
                    similarity=sim.reshape(-1), weights=_weights_of(key, nets),
                )))
    return pd.DataFrame(per_image, columns=SCORE_COLUMNS), pd.concat(per_sample, ignore_index=True)[SAMPLE_COLUMNS]


def _weights_of(key: str, nets: MetricNetworks) -> str:
    return nets.weights.get(key, "none (pixels)")


def _image_scores(r: dict, pix: np.ndarray, ssim: np.ndarray, nets: MetricNetworks, n: int) -> dict[str, np.ndarray]:
    """Per-image score of every metric (NaN for unavailable networks)."""
    out: dict[str, np.ndarray] = {}
    for spec in FEATURE_SPECS:
        key = spec.key
        if key not in r:
            out[key] = np.full(n, np.nan)
        elif spec.kind == "distance":
            out[key] = correlation_distance(r[key])
        elif spec.convention == "takagi":
            out[key] = 100.0 * takagi_identification(r[key])
        else:
            out[key] = 100.0 * two_way_identification(r[key])
    out["mindeye/pixcorr"] = pix.mean(axis=1)
    out["mindeye/ssim"] = ssim.mean(axis=1)
    return {m.convention + "/" + m.metric: out[m.convention + "/" + m.metric] for m in METRICS}


def read_c_pair(decoded_path: str, features_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoded c of the test images and their true c, matched by nsd_id.

    decoded_path: ``results/{subject}/decoding/c.npz`` (``pred`` (n_test, 77, d), ``nsd_id``);
    features_path: ``results/features/c.h5`` (``c`` (n, 77, d), ``nsd_id``); only the test
    rows are read. Returns (nsd_id (n_test,), decoded (n_test, 77, d), true (n_test, 77, d)).
    """
    try:
        with np.load(decoded_path) as z:
            pred, ids = z["pred"], z["nsd_id"].astype(np.int64)
    except (OSError, KeyError, ValueError) as err:
        raise EvaluationInputError(
            f"cannot read pred and nsd_id from {decoded_path} ({err}); rerun the decoding stage for target c"
        ) from err
    try:
        with h5py.File(features_path, "r") as f:
            all_ids = f["nsd_id"][:].astype(np.int64)
            pos = {int(v): i for i, v in enumerate(all_ids)}
            missing = [int(i) for i in ids if int(i) not in pos]
            if missing:
                raise EvaluationInputError(
                    f"{features_path} lacks the c of {len(missing)} test image(s) (e.g. nsd_id {missing[0]}) "
                    f"decoded in {decoded_path}; rerun the features stage"
                )
            rows = np.array([pos[int(i)] for i in ids])
            order = np.argsort(rows)
            true = np.empty((len(rows),) + f["c"].shape[1:], dtype=np.float32)
            true[order] = f["c"][rows[order]]
    except (OSError, KeyError) as err:
        raise EvaluationInputError(
            f"cannot read c and nsd_id from {features_path} ({err}); rerun the features stage"
        ) from err
    if pred.shape != true.shape:
        raise EvaluationInputError(
            f"decoded c {pred.shape} in {decoded_path} and true c {true.shape} in {features_path} differ in shape; "
            "rerun the decoding stage"
        )
    return ids, pred, true


def retrieval_table(
    subject: str,
    decoded: np.ndarray | None,
    true: np.ndarray | None,
    clip_embeddings: dict[str, np.ndarray],
    clip_weights: str,
    pool: int = 300,
    draws: int = 30,
    seed: int = 0,
) -> pd.DataFrame:
    """Top-1 retrieval (MindEye1/2) of one subject: :data:`RETRIEVAL_COLUMNS`, one row per
    source x direction.

    decoded, true: (n, ...) decoded c and true c (condition :data:`DECODED_C`); clip_embeddings:
    as filled by :func:`score_subject` ("original" (n, d), condition -> (n, s, d)), one row
    pair per condition; samples are scored alone and their accuracies averaged per draw.
    accuracy: mean over draws (%), ci_low/ci_high: 2.5 and 97.5 percentiles over draws;
    chance: 100 / pool, pool capped at n (with a logged note).
    """
    rows = []

    def add(cond: str, embedding: str, weights: str, res: list[dict]) -> None:
        n_pool = int(res[0]["pool"])
        for direction in RETRIEVAL_DIRECTIONS:
            acc = 100.0 * np.mean([r[direction] for r in res], axis=0)  # (draws,)
            rows.append(dict(
                subject=subject, condition=cond, convention="mindeye", metric=f"retrieval_{direction}",
                embedding=embedding, pool=n_pool, draws=draws, n=n_images, accuracy=float(acc.mean()),
                ci_low=float(np.percentile(acc, 2.5)), ci_high=float(np.percentile(acc, 97.5)),
                chance=100.0 / n_pool, unit=UNIT_RETRIEVAL, weights=weights,
            ))

    n_images = 0
    if decoded is not None and true is not None:
        n_images = len(decoded)
        if pool > n_images:
            log.info("retrieval pool %d capped at the %d test images (chance 1/%d)", pool, n_images, n_images)
        add(DECODED_C, "decoded c vs true c (flattened, cosine)", "none (features c)",
            [retrieval_top1(decoded, true, pool, draws, seed)])
    if "original" in clip_embeddings:
        orig = clip_embeddings["original"]
        n_images = len(orig)
        for cond, emb in clip_embeddings.items():
            if cond == "original":
                continue
            res = [retrieval_top1(emb[:, k], orig, pool, draws, seed) for k in range(emb.shape[1])]
            add(cond, f"CLIP image embeddings ({RETRIEVAL_CLIP_KEY}) of reconstructions vs originals",
                clip_weights, res)
    return pd.DataFrame(rows, columns=RETRIEVAL_COLUMNS)


def evaluate_subject(
    recons_path: str,
    subject: str,
    scores_path: str,
    sample_scores_path: str,
    weights: dict | WeightsConfig,
    conditions: list[str] | tuple[str, ...] = CONDITIONS,
    batch_size: int = 16,
    image_size: dict[str, int] | None = None,
    retrieval_path: str | None = None,
    decoded_c_path: str | None = None,
    true_c_path: str | None = None,
    retrieval: dict | None = None,
    brain: dict | None = None,
) -> None:
    """Rule evaluate_subject: recons.h5 (+ decoded and true c) -> scores.tsv, sample_scores.tsv
    and retrieval.tsv (see :func:`score_subject`, :func:`retrieval_table`).

    retrieval: {"pool": int, "draws": int, "seed": int} (config ``evaluation.retrieval``).
    brain: keyword arguments of :func:`brainldm.brain_correlation.score_subject` except
    recons_path, subject, conditions and batch_size (None: no brain-correlation rows); its
    rows (convention :data:`brainldm.brain_correlation.CONVENTION`) join scores.tsv.
    """
    cfg = weights if isinstance(weights, WeightsConfig) else WeightsConfig(**weights)
    emb: dict[str, np.ndarray] = {}
    nets = MetricNetworks(cfg, image_size=image_size)
    scores, samples = score_subject(recons_path, subject, cfg, tuple(conditions), batch_size,
                                    networks=nets, clip_embeddings=emb)
    if brain is not None:
        from brainldm import brain_correlation

        bc = brain_correlation.score_subject(recons_path, subject, conditions=tuple(conditions),
                                             batch_size=batch_size, **brain)
        scores = pd.concat([scores, bc[SCORE_COLUMNS]], ignore_index=True)
    _write_tsv(scores, scores_path)
    _write_tsv(samples, sample_scores_path)
    if retrieval_path is not None:
        decoded = true = None
        if decoded_c_path and true_c_path:
            _, decoded, true = read_c_pair(decoded_c_path, true_c_path)
        ret = retrieval_table(subject, decoded, true, emb, nets.weights.get(RETRIEVAL_CLIP_KEY, "unavailable"),
                              **(retrieval or {}))
        _write_tsv(ret, retrieval_path)


# ---------------------------------------------------------------------------- step 2


def pool_subjects(scores: pd.DataFrame) -> pd.DataFrame:
    """Add subject "all": each image's score averaged over the subjects that have it."""
    keys = ["nsd_id", "condition", "convention", "metric"]
    pooled = (
        scores.groupby(keys, sort=False, dropna=False)
        .agg(score=("score", "mean"), unit=("unit", "first"),
             weights=("weights", lambda w: ";".join(dict.fromkeys(w))))
        .reset_index()
    )
    pooled["subject"] = POOLED
    return pd.concat([scores, pooled[SCORE_COLUMNS]], ignore_index=True)


def metrics_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per-image scores (with the pooled subject) -> tidy table of :data:`METRIC_COLUMNS`.

    accuracy: mean over images; sem: scipy.stats.sem over images; n: images with a score;
    chance: 50 for two-way identification (NaN otherwise); p_binomial: Brain-Diffuser's
    one-sided binomial p-value of the identification accuracy over n (n - 1) comparisons
    (:func:`brainldm.stats.p_binomial`); ci_low/ci_high: NaN (retrieval only).
    """
    rows = []
    for (subj, cond, conv, metric), g in scores.groupby(["subject", "condition", "convention", "metric"], sort=False):
        v = g["score"].to_numpy(float)
        ok = ~np.isnan(v)
        rows.append(dict(
            subject=subj, condition=cond, convention=conv, metric=metric,
            accuracy=float(v[ok].mean()) if ok.any() else float("nan"), sem=stats.sem(v), n=int(ok.sum()),
            weights=";".join(dict.fromkeys(g["weights"])), unit=g["unit"].iloc[0],
        ))
        is_ident = rows[-1]["unit"] == UNIT_IDENT
        rows[-1].update(
            chance=50.0 if is_ident else float("nan"),
            p_binomial=stats.p_binomial(rows[-1]["accuracy"] / 100.0, rows[-1]["n"]) if is_ident else float("nan"),
            ci_low=float("nan"), ci_high=float("nan"),
        )
    return _ordered(pd.DataFrame(rows, columns=METRIC_COLUMNS))


def retrieval_metrics(retrieval: pd.DataFrame) -> pd.DataFrame:
    """Per-subject retrieval.tsv rows -> rows of :data:`METRIC_COLUMNS`, plus subject "all"
    (mean over subjects; no CI). sem is NaN; n is the number of test images."""
    if retrieval.empty:
        return pd.DataFrame(columns=METRIC_COLUMNS)
    keys = ["condition", "convention", "metric"]
    pooled = (retrieval.groupby(keys, sort=False)
              .agg(accuracy=("accuracy", "mean"), n=("n", "min"), chance=("chance", "mean"),
                   unit=("unit", "first"), weights=("weights", lambda w: ";".join(dict.fromkeys(w))))
              .reset_index())
    pooled["subject"] = POOLED
    out = pd.concat([retrieval, pooled], ignore_index=True)
    out["sem"] = np.nan
    out["p_binomial"] = np.nan
    return out.reindex(columns=METRIC_COLUMNS)


def _ordered(df: pd.DataFrame, conditions: tuple[str, ...] | None = None) -> pd.DataFrame:
    subjects = sorted(s for s in df["subject"].unique() if s != POOLED) + [POOLED]
    order = {f"{m.convention}/{m.metric}": i for i, m in enumerate(METRICS)}
    conds = list(conditions or dict.fromkeys(df["condition"])) if "condition" in df else []
    key = df["convention"] + "/" + df["metric"]
    df = df.assign(_s=df["subject"].map({s: i for i, s in enumerate(subjects)}), _m=key.map(order))
    sort = ["_s", "_m"]
    if "condition" in df:
        df["_c"] = df["condition"].map({c: i for i, c in enumerate(conds)})
        sort.append("_c")
    return df.sort_values(sort, kind="stable").drop(columns=[c for c in ("_s", "_m", "_c") if c in df]).reset_index(drop=True)


def wilcoxon_table(scores: pd.DataFrame, conditions: tuple[str, ...], alpha: float = 0.05) -> pd.DataFrame:
    """Conditions compared per subject (incl. pooled), convention and metric.

    Two-sided Wilcoxon signed-rank across images, paired by nsd_id; p-values Holm-corrected
    within each subject's family (all its metrics x condition pairs).
    """
    parts = []
    for (subj, conv, metric), g in scores.groupby(["subject", "convention", "metric"], sort=False):
        wide = g.pivot_table(index="nsd_id", columns="condition", values="score", aggfunc="first", dropna=False)
        present = [c for c in conditions if c in wide]
        res = stats.wilcoxon_pairs({c: wide[c].to_numpy(float) for c in present})
        res.insert(0, "metric", metric)
        res.insert(0, "convention", conv)
        res.insert(0, "subject", subj)
        res["weights"] = ";".join(dict.fromkeys(g["weights"]))
        parts.append(res)
    out = pd.concat(parts, ignore_index=True)
    out["p_holm"] = np.nan
    for subj, idx in out.groupby("subject").groups.items():
        out.loc[idx, "p_holm"] = stats.holm(out.loc[idx, "p_value"].to_numpy(float))
    out["significant"] = out["p_holm"] < alpha
    cols = ["subject", "convention", "metric", "condition_a", "condition_b", "n", "median_difference",
            "statistic", "p_value", "p_holm", "significant", "weights"]
    return _ordered(out[cols])


def _mean_sem(row: pd.DataFrame, unit: str) -> str:
    """Markdown cell "mean ± SEM" of a one-row metrics table (no "±" where SEM is NaN)."""
    acc, se = float(row["accuracy"].iloc[0]), float(row["sem"].iloc[0])
    return _fmt(acc, unit) + ("" if math.isnan(se) else f" ± {_fmt(se, unit)}")


def _fmt(x: float, unit: str) -> str:
    if math.isnan(x):
        return "n/a"
    if unit == UNIT_IDENT:
        return f"{x:.1f}"
    return f"{x:.3g}" if unit == UNIT_DIST else f"{x:.3f}"


def session_lines(sessions: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Markdown lines on the NSD sessions used -> (warning, table).

    sessions: rows of ingest's sessions.tsv with a ``subject`` column added. The warning
    (empty when none was excluded) names each excluded session, its reason and its file;
    the table gives each subject's sessions used and excluded.
    """
    lines = []
    excluded = sessions[sessions["status"] != "used"]
    if not excluded.empty:
        lines += [f"**Sessions excluded** ({len(excluded)}; `ingest.bad_sessions: exclude`): every number below "
                  "comes from the other sessions only. "
                  + "; ".join(f"{r.subject} session {int(r.session)} ({r.reason}: `{r.file}`)" for r in excluded.itertuples())
                  + ".", ""]
    rows = []
    for subject, g in sessions.groupby("subject", sort=False):
        used = g.loc[g["status"] == "used", "session"].astype(int).tolist()
        left = g.loc[g["status"] != "used", "session"].astype(int).tolist()
        rows.append(f"| {subject} | {len(used)} | {_ranges(used)} | {_ranges(left) or '-'} |")
    return lines, ["## Sessions used", "", "| subject | n | sessions | excluded |", "|---|---|---|---|", *rows, ""]


def _ranges(values: list[int]) -> str:
    """[1, 2, 3, 5] -> "1-3, 5"."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def markdown_table(table: pd.DataFrame, tests: pd.DataFrame, conditions: tuple[str, ...],
                   sessions: pd.DataFrame | None = None) -> str:
    """The metrics table (mean ± SEM per condition) and the significant comparisons, as Markdown.

    sessions: ingest's sessions.tsv rows with a ``subject`` column; excluded sessions are
    then named in a warning before the first table, and a "Sessions used" table ends the page.
    """
    lines = ["# Reconstruction quality", ""]
    warning, session_table = session_lines(sessions) if sessions is not None else ([], [])
    lines += warning
    modes = sorted(set(table["weights"]))
    if any(w.startswith("random") for w in modes):
        lines += ["**Random network weights** (`evaluation.metrics_weights: random`): these numbers test the "
                  "pipeline and are not comparable with published ones.", ""]
    lines += ["Two-way identification in % correct (chance 50); PixCorr (r) and SSIM higher is better; "
              "EffNet-B1 and SwAV correlation distance lower is better. Mean ± SEM over test images; "
              "subject `all` averages each image over subjects first. `n/a`: network weights unavailable.", ""]
    lines += ["Two-way identification cells also give Brain-Diffuser's one-sided binomial p-value over the "
              "n (n - 1) comparisons (`p_binomial` in metrics.csv; comparisons are not independent).", ""]
    known = (table["convention"] + "/" + table["metric"]).isin(_BY_KEY)
    brain = table["convention"] == BRAIN_CONVENTION
    for conv, title in CONVENTION_TITLES.items():
        sub = table[(table["convention"] == conv) & known]
        if sub.empty:
            continue
        lines += [f"## {title} convention", "",
                  "| subject | metric | " + " | ".join(conditions) + " | n | weights |",
                  "|---|---|" + "---|" * len(conditions) + "---|---|"]
        for (subj, metric), g in sub.groupby(["subject", "metric"], sort=False):
            m = _BY_KEY[f"{conv}/{metric}"]
            cells = []
            for c in conditions:
                row = g[g["condition"] == c]
                if row.empty:
                    cells.append("")
                    continue
                cell = _mean_sem(row, m.unit)
                pb = float(row["p_binomial"].iloc[0]) if "p_binomial" in row else float("nan")
                cells.append(cell + ("" if math.isnan(pb) else f" (p={pb:.2g})"))
            lines.append(f"| {subj} | {m.label} | " + " | ".join(cells)
                         + f" | {int(g['n'].max())} | {';'.join(dict.fromkeys(g['weights']))} |")
        lines.append("")
    if brain.any():
        lines += _brain_lines(table[brain], conditions)
    ret = table[~known & ~brain]
    if not ret.empty:
        lines += ["## Retrieval (MindEye1/2 convention)", "",
                  "Top-1 retrieval among a pool of test images, mean over seeded random draws [2.5, 97.5 "
                  "percentiles over draws], in % correct. `decoded_c`: the decoded c (brain) against the true "
                  "c of the images; z, c, zc: CLIP image embeddings of the reconstructions against those of "
                  "the originals (the reconstruction plays the brain). brain→image: for each brain embedding, "
                  "its own image is the most similar of the pool; image→brain: the converse. The pool is "
                  "`evaluation.retrieval.pool` capped at the number of test images (chance = 1/pool); when it "
                  "holds every test image, all draws are the same set and the interval collapses.", "",
                  "| subject | source | brain→image | image→brain | chance | n | weights |",
                  "|---|---|---|---|---|---|---|"]
        for (subj, cond), g in ret.groupby(["subject", "condition"], sort=False):
            cells = []
            for direction in RETRIEVAL_DIRECTIONS:
                r = g[g["metric"] == f"retrieval_{direction}"]
                if r.empty:
                    cells.append("")
                    continue
                acc, lo, hi = (float(r[c].iloc[0]) for c in ("accuracy", "ci_low", "ci_high"))
                cells.append(f"{acc:.1f}" + ("" if math.isnan(lo) else f" [{lo:.1f}, {hi:.1f}]"))
            lines.append(f"| {subj} | {cond} | " + " | ".join(cells) + f" | {float(g['chance'].iloc[0]):.2g} | "
                         f"{int(g['n'].max())} | {';'.join(dict.fromkeys(g['weights']))} |")
        lines.append("")
    sig = tests[tests["significant"]]
    lines += ["## Condition comparisons", "",
              f"Two-sided Wilcoxon signed-rank across images, Holm-corrected within each subject: "
              f"{int(tests['significant'].sum())} of {int(tests['p_holm'].notna().sum())} tests significant "
              "(full table: wilcoxon.tsv).", ""]
    if not sig.empty:
        lines += ["| subject | convention | metric | pair | median diff | p (Holm) |", "|---|---|---|---|---|---|"]
        for _, t in sig.iterrows():
            lines.append(f"| {t.subject} | {t.convention} | {_label(t.convention, t.metric)} | "
                         f"{t.condition_a} vs {t.condition_b} | {t.median_difference:.3g} | {t.p_holm:.2g} |")
        lines.append("")
    lines += session_table
    return "\n".join(lines)


def _label(convention: str, metric: str) -> str:
    """Display label of a metric (the ROI name for brain correlation)."""
    m = _BY_KEY.get(f"{convention}/{metric}")
    return m.label if m else f"brain correlation {metric}" if convention == BRAIN_CONVENTION else metric


def _brain_lines(table: pd.DataFrame, conditions: tuple[str, ...]) -> list[str]:
    """Markdown section of the brain-correlation rows (mean ± SEM of the per-image r)."""
    conds = [*conditions, BRAIN_ORIGINAL]
    lines = ["## Brain correlation", "",
             f"Convention: {BRAIN_CONVENTION}. Per image, Pearson r across the ROI's voxels between the "
             "voxel pattern that a ridge encoding model (flattened z -> every brain-mask voxel, fitted on the "
             "training trials) predicts from the reconstruction's z and the measured test pattern (repeats "
             "averaged); mean ± SEM over images (samples averaged). `original`: the prediction from the original "
             "image's z, the ceiling of this encoding model.", "",
             "| subject | ROI | " + " | ".join(conds) + " | n |", "|---|---|" + "---|" * len(conds) + "---|"]
    for (subj, roi), g in table.groupby(["subject", "metric"], sort=False):
        cells = []
        for c in conds:
            row = g[g["condition"] == c]
            if row.empty:
                cells.append("")
                continue
            cells.append(_mean_sem(row, UNIT_R))
        lines.append(f"| {subj} | {roi} | " + " | ".join(cells) + f" | {int(g['n'].max())} |")
    return lines + [""]


_COLORS = {"z": "#4C72B0", "c": "#DD8452", "zc": "#55A868"}


def plot_metrics(table: pd.DataFrame, path: str | Path, conditions: tuple[str, ...]) -> None:
    """Bars per metric x condition with SEM error bars, one row per subject (last: pooled).

    Panels: Takagi identification, MindEye identification (chance line at 50%), PixCorr
    and SSIM, EffNet-B1 and SwAV distances, then (when present) retrieval and brain
    correlation per ROI (originals in grey: the encoding model's ceiling). Unavailable
    metrics are marked "n/a".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subjects = list(dict.fromkeys(table["subject"]))
    panels = [
        ("takagi", [m for m in METRICS if m.convention == "takagi"], "% correct"),
        ("mindeye", [m for m in METRICS if m.convention == "mindeye" and m.unit == UNIT_IDENT], "% correct"),
        ("mindeye", [m for m in METRICS if m.unit in (UNIT_R, UNIT_SSIM)], "r / SSIM"),
        ("mindeye", [m for m in METRICS if m.unit == UNIT_DIST], "1 - r"),
    ]
    titles = ["Takagi & Nishimoto: identification", "Brain-Diffuser/MindEye: identification",
              "PixCorr, SSIM (higher better)", "distance (lower better)"]
    known = (table["convention"] + "/" + table["metric"]).isin(_BY_KEY)
    ret = table[~known & (table["convention"] != BRAIN_CONVENTION)]
    brain = table[table["convention"] == BRAIN_CONVENTION]
    n_cols = len(panels) + (not ret.empty) + (not brain.empty)
    ratios = [7, 4, 2.5, 2.5] + [4] * (n_cols - len(panels))
    fig, axes = plt.subplots(len(subjects), n_cols, figsize=(16 + 4 * (n_cols - 4), 2.8 * len(subjects) + 0.6),
                             squeeze=False, gridspec_kw={"width_ratios": ratios})
    width = 0.8 / len(conditions)
    for row, subj in enumerate(subjects):
        for col, ((conv, metrics, ylabel), title) in enumerate(zip(panels, titles)):
            ax = axes[row, col]
            sub = table[(table["subject"] == subj) & (table["convention"] == conv)]
            for ci, cond in enumerate(conditions):
                vals, errs = [], []
                for m in metrics:
                    r = sub[(sub["metric"] == m.metric) & (sub["condition"] == cond)]
                    vals.append(float(r["accuracy"].iloc[0]) if len(r) else np.nan)
                    errs.append(float(r["sem"].iloc[0]) if len(r) else np.nan)
                x = np.arange(len(metrics)) + (ci - (len(conditions) - 1) / 2) * width
                ax.bar(x, np.nan_to_num(vals), width, yerr=np.nan_to_num(errs), capsize=2,
                       color=_COLORS.get(cond), label=cond if (row == 0 and col == 0) else None)
                for xi, v in zip(x, vals):
                    if np.isnan(v):
                        ax.text(xi, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7,
                                transform=ax.get_xaxis_transform())
            if ylabel == "% correct":
                ax.axhline(50, color="k", ls="--", lw=0.8)
                ax.set_ylim(0, 100)
            ax.set_xticks(np.arange(len(metrics)), [m.label for m in metrics], fontsize=8)
            ax.set_ylabel(f"{subj}\n{ylabel}" if col == 0 else ylabel, fontsize=8)
            if row == 0:
                ax.set_title(title, fontsize=9)
        if not ret.empty:
            _plot_retrieval(axes[row, len(panels)], ret[ret["subject"] == subj], subj, first=row == 0)
        if not brain.empty:
            _plot_brain_correlation(axes[row, -1], brain[brain["subject"] == subj], conditions, first=row == 0)
    weights = sorted(set(table["weights"]))
    note = "random network weights: not comparable with published numbers" if any(
        w.startswith("random") for w in weights) else "pretrained weights"
    fig.suptitle(f"Reconstruction quality per condition (mean ± SEM over images; {note})", fontsize=10)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper right", ncol=len(conditions), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _plot_brain_correlation(ax, brain: pd.DataFrame, conditions: tuple[str, ...], first: bool) -> None:
    """Brain-correlation bars: ROI x (conditions, then the originals in grey), mean ± SEM over images."""
    rois = list(dict.fromkeys(brain["metric"]))
    sources = [*conditions, BRAIN_ORIGINAL]
    width = 0.8 / len(sources)
    for si, src in enumerate(sources):
        rows = [brain[(brain["metric"] == roi) & (brain["condition"] == src)] for roi in rois]
        vals = [float(r["accuracy"].iloc[0]) if len(r) else np.nan for r in rows]
        errs = [float(r["sem"].iloc[0]) if len(r) else np.nan for r in rows]
        x = np.arange(len(rois)) + (si - (len(sources) - 1) / 2) * width
        ax.bar(x, np.nan_to_num(vals), width, yerr=np.nan_to_num(errs), capsize=2,
               color=_COLORS.get(src, "#999999"), label=src if src == BRAIN_ORIGINAL else None)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(rois)), rois, fontsize=8)
    ax.set_ylabel("pattern r", fontsize=8)
    ax.legend(fontsize=6, loc="upper right")
    if first:
        ax.set_title("brain correlation (own z encoding model)", fontsize=9)


def _plot_retrieval(ax, ret: pd.DataFrame, subj: str, first: bool) -> None:
    """Retrieval bars: sources (decoded_c, conditions) x direction, 2.5-97.5 % draw interval, chance line."""
    sources = list(dict.fromkeys(ret["condition"]))
    width = 0.4
    for di, (direction, color) in enumerate(zip(RETRIEVAL_DIRECTIONS, ("#8172B3", "#937860"))):
        vals, lo, hi = [], [], []
        for src in sources:
            r = ret[(ret["condition"] == src) & (ret["metric"] == f"retrieval_{direction}")]
            v = float(r["accuracy"].iloc[0]) if len(r) else np.nan
            vals.append(v)
            lo.append(v - float(r["ci_low"].iloc[0]) if len(r) else np.nan)
            hi.append(float(r["ci_high"].iloc[0]) - v if len(r) else np.nan)
        x = np.arange(len(sources)) + (di - 0.5) * width
        ax.bar(x, np.nan_to_num(vals), width, yerr=[np.nan_to_num(lo), np.nan_to_num(hi)], capsize=2, color=color,
               label=direction.replace("_to_", "→"))
    if len(ret):
        ax.axhline(float(ret["chance"].max()), color="k", ls="--", lw=0.8)
    ax.set_ylim(0, 100)
    ax.set_xticks(np.arange(len(sources)), sources, fontsize=8)
    ax.set_ylabel("% top-1", fontsize=8)
    ax.legend(fontsize=6, loc="upper right")
    if first:
        ax.set_title("retrieval top-1 (MindEye1/2; dashed: chance)", fontsize=9)


def summarize(
    scores_paths: list[str],
    metrics_csv: str,
    metrics_md: str,
    metrics_png: str,
    wilcoxon_tsv: str,
    conditions: list[str] | tuple[str, ...] = CONDITIONS,
    alpha: float = 0.05,
    retrieval_paths: list[str] | None = None,
    sessions_paths: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Rule evaluation_summary: per-subject scores.tsv (and retrieval.tsv) files ->
    metrics.csv/.md/.png and wilcoxon.tsv.

    sessions_paths: {subject: ingest's sessions.tsv}; metrics.md then says which sessions
    were used and warns of any excluded one.
    """
    conditions = tuple(conditions)
    sessions = None
    if sessions_paths:
        sessions = pd.concat([read_sessions(p).assign(subject=s) for s, p in sessions_paths.items()], ignore_index=True)
    frames = []
    for p in scores_paths:
        df = pd.read_csv(p, sep="\t", dtype={"subject": str})
        missing = set(SCORE_COLUMNS) - set(df.columns)
        if missing:
            raise EvaluationInputError(f"{p} lacks columns {sorted(missing)}; rerun rule evaluate_subject")
        frames.append(df[SCORE_COLUMNS])
    scores = pool_subjects(pd.concat(frames, ignore_index=True))
    table = metrics_table(scores)
    ret_frames = []
    for p in retrieval_paths or []:
        df = pd.read_csv(p, sep="\t", dtype={"subject": str})
        missing = set(RETRIEVAL_COLUMNS) - set(df.columns)
        if missing:
            raise EvaluationInputError(f"{p} lacks columns {sorted(missing)}; rerun rule evaluate_subject")
        ret_frames.append(df[RETRIEVAL_COLUMNS])
    if ret_frames:
        ret = retrieval_metrics(pd.concat(ret_frames, ignore_index=True))
        table = _ordered(pd.concat([table, ret], ignore_index=True))
    tests = wilcoxon_table(scores, conditions, alpha)
    with atomic_path(metrics_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    _write_tsv(tests, wilcoxon_tsv)
    with atomic_path(metrics_md) as tmp:
        tmp.write_text(markdown_table(table, tests, conditions, sessions))
    plot_metrics(table, metrics_png, conditions)
    return table
