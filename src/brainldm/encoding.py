"""Voxel-wise encoding models: LDM features -> every voxel of the brain mask.

Four analyses per subject (Takagi & Nishimoto 2023, Figures 6-9):

- ``single``: z, c and zc each on their own (PCA, ridge with per-voxel CV alphas,
  Pearson r on the test images, exact null p, Benjamini-Hochberg FDR);
- ``noise``: z + zc jointly (banded ridge, one penalty per feature space) for each
  noise level (img2img strength); unique variance of z and of zc per voxel by
  variance partitioning (test R² of the joint model minus that of the other
  space's single model);
- ``stage``: the same for each denoising stage (fraction of the denoising run);
- ``layers``: for each denoising stage one model per U-Net layer; per voxel the
  layer with the highest test r among layers whose model is significant there.

Shapes: betas train (n_trials, n_vox) float32 single trials, test (n_test, n_vox)
float32 (mean over repeats); features (n_images, ...) per image, flattened to
(n_images, d). Ridge fits go through ``brainldm.ridge.fit_ridge`` (single spaces)
and ``brainldm.banded`` (banded, joint spaces: himalaya's GroupRidgeCV random search).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import scipy.stats
from brainldm.logs import progress
from brainldm.io import atomic_path
from brainldm.ridge import fit_ridge, make_cv, resolve_backend, ridge_design, voxel_batches
from brainldm.scores import pearson_columns, r2_columns
from brainldm.threads import limit_threads

log = logging.getLogger("brainldm.encoding")

ANALYSES = ("single", "noise", "stage", "layers")


# ----------------------------------------------------------------------------- statistics


def r_pvalues(r: np.ndarray, n: int) -> np.ndarray:
    """One-sided p of each r (H1: r > 0) under the null of two independent Gaussian vectors.

    Exact: t = r sqrt((n-2)/(1-r²)) follows Student's t with n-2 degrees of freedom.
    r: (...) Pearson correlations over n samples; NaN r -> p = 1.
    """
    if n < 3:
        raise ValueError(f"significance needs at least 3 test images, got {n}")
    r = np.asarray(r, dtype=np.float64)
    rc = np.clip(np.nan_to_num(r, nan=0.0), -1 + 1e-12, 1 - 1e-12)
    t = rc * np.sqrt((n - 2) / (1 - rc * rc))
    p = scipy.stats.t.sf(t, df=n - 2)
    return np.where(np.isnan(r), 1.0, p)


def fdr_significant(p: np.ndarray, q: float = 0.05) -> np.ndarray:
    """Benjamini-Hochberg at level q across all entries of p -> bool mask (same shape)."""
    if not 0 < q < 1:
        raise ValueError(f"encoding.q must be in (0, 1), got {q}")
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        return np.zeros(p.shape, dtype=bool)
    adjusted = scipy.stats.false_discovery_control(p.ravel(), method="bh")
    return (adjusted <= q).reshape(p.shape)


# ----------------------------------------------------------------------------- features


def read_feature_file(path: str | Path) -> tuple[np.ndarray, dict[str, h5py.Dataset], h5py.File]:
    """Open a features file: (nsd_id (n,), {dataset name: dataset}, open file).

    Every dataset except ``nsd_id`` whose first axis is the image axis is a feature.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file {path} is missing; run the features stage first")
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"features file {path} is not readable HDF5 ({err}); delete it and rerun the features stage") from err
    if "nsd_id" not in fh:
        fh.close()
        raise ValueError(f"features file {path} has no dataset 'nsd_id'; rerun the features stage")
    ids = fh["nsd_id"][:].astype(np.int64)
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and name != "nsd_id" and obj.ndim >= 1 and obj.shape[0] == len(ids):
            found[name] = obj

    fh.visititems(visit)
    return ids, found, fh


def select_by_number(names: Sequence[str], prefix: str, values: Sequence[float] | None, key: str) -> list[str]:
    """Datasets ``{prefix}/{letter}{number}`` whose number is in ``values`` (None = all), sorted by number."""
    pat = re.compile(rf"^{re.escape(prefix)}/[a-z]([0-9.]+)$")
    avail = {n: float(m.group(1)) for n in names if (m := pat.match(n))}
    if not avail:
        raise ValueError(f"no '{prefix}/...' datasets in the features file (found {sorted(names)}); rerun the features stage")
    if values is None:
        return sorted(avail, key=avail.get)
    out = []
    for v in values:
        match = [n for n, x in avail.items() if abs(x - float(v)) < 1e-6]
        if not match:
            raise ValueError(
                f"config encoding.{key}: {v} has no '{prefix}/...' dataset; available: "
                f"{sorted(avail.values())} (the features stage's config decides which exist)"
            )
        out.append(match[0])
    return out


def image_rows(feature_ids: np.ndarray, wanted: np.ndarray, path: str) -> np.ndarray:
    """Row of each wanted nsd_id in a features file's nsd_id axis."""
    index = {int(i): k for k, i in enumerate(feature_ids)}
    missing = [int(i) for i in wanted if int(i) not in index]
    if missing:
        raise ValueError(f"{path} lacks features of {len(missing)} images (e.g. nsd_id {missing[:5]}); rerun the features stage")
    return np.array([index[int(i)] for i in wanted], dtype=np.int64)


def pca_reduce(features: np.ndarray, train_rows: np.ndarray, n_components: int, seed: int = 0) -> np.ndarray:
    """PCA fitted on the training images only, applied to every image.

    features: (n_images, d) one row per image; train_rows: indices of the training
    images. n_components is capped at min(n_train_images, d). Returns
    (n_images, k) float32.
    """
    from sklearn.decomposition import PCA

    if n_components < 1:
        raise ValueError(f"encoding.n_components must be >= 1, got {n_components}")
    features = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    train = features[train_rows]
    k = int(min(n_components, train.shape[0], train.shape[1]))
    solver = "randomized" if k < 0.8 * min(train.shape) else "full"
    pca = PCA(n_components=k, svd_solver=solver, random_state=seed).fit(train)
    return pca.transform(features).astype(np.float32)


# ----------------------------------------------------------------------------- data


@dataclass
class SubjectData:
    """One subject's encoding data.

    train: (n_trials, n_vox) float32 (may be a memmap); test: (n_test, n_vox)
    float32; train_ids (n_trials,), test_ids (n_test,) nsd ids.
    """

    train: np.ndarray
    test: np.ndarray
    train_ids: np.ndarray
    test_ids: np.ndarray

    @property
    def n_vox(self) -> int:
        return self.train.shape[1]

    @property
    def images(self) -> np.ndarray:
        """Unique training images then test images (the rows features are read for)."""
        return np.concatenate([np.unique(self.train_ids), self.test_ids])


def load_subject(train_betas: str, test_betas: str, train_tsv: str, test_tsv: str) -> SubjectData:
    """Read ingestion outputs (docs/contracts.md) and check their shapes agree."""
    arrays = []
    for path in (train_betas, test_betas):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} is missing; run the ingest stage first")
        try:
            arrays.append(np.load(path, mmap_mode="r"))
        except ValueError as err:
            raise ValueError(f"{path} is not a readable .npy file ({err}); delete it and rerun ingest") from err
    train, test = arrays
    tables = []
    for path in (train_tsv, test_tsv):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} is missing; run the ingest stage first")
        table = pd.read_csv(path, sep="\t")
        if "nsd_id" not in table:
            raise ValueError(f"{path} has no nsd_id column; rerun the ingest stage")
        tables.append(table)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ValueError(
            f"{train_betas} {train.shape} and {test_betas} {test.shape} must be 2-D with the same voxel count"
        )
    if len(tables[0]) != train.shape[0] or len(tables[1]) != test.shape[0]:
        raise ValueError(
            f"row counts differ: {train_tsv} has {len(tables[0])} rows for {train.shape[0]} train betas, "
            f"{test_tsv} {len(tables[1])} rows for {test.shape[0]} test betas; rerun ingest"
        )
    return SubjectData(train, test, tables[0]["nsd_id"].to_numpy(np.int64), tables[1]["nsd_id"].to_numpy(np.int64))


def load_space(path: str, dataset: str | None, data: SubjectData, n_components: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One feature space, PCA-reduced: (X_train (n_trials, k), X_test (n_test, k)) float32.

    dataset None = the file's only feature dataset.
    """
    ids, datasets, fh = read_feature_file(path)
    try:
        if dataset is None:
            if len(datasets) != 1:
                raise ValueError(f"{path} holds several feature datasets {sorted(datasets)}; name one")
            dataset = next(iter(datasets))
        if dataset not in datasets:
            raise ValueError(f"{path} has no feature dataset {dataset!r}; it has {sorted(datasets)}")
        images = data.images
        rows = image_rows(ids, images, path)
        order = np.argsort(rows)  # h5py needs increasing indices
        feats = np.empty((len(rows),) + datasets[dataset].shape[1:], dtype=np.float32)
        feats[order] = datasets[dataset][rows[order]]
    finally:
        fh.close()
    feats = feats.reshape(len(images), -1)
    if not np.isfinite(feats).all():
        raise ValueError(f"{path}:{dataset} contains NaN or infinite values; rerun the features stage")
    n_train_img = len(np.unique(data.train_ids))
    reduced = pca_reduce(feats, np.arange(n_train_img), n_components, seed)
    pos = {int(i): k for k, i in enumerate(images[:n_train_img])}
    x_train = reduced[[pos[int(i)] for i in data.train_ids]]
    x_test = reduced[n_train_img:]
    return x_train, x_test


# ----------------------------------------------------------------------------- fits


def _test_scores(y_test: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    return dict(r=pearson_columns(y_test, pred), r2=r2_columns(y_test, pred))


def fit_single(x_train: np.ndarray, x_test: np.ndarray, data: SubjectData, settings: dict, desc: str = "") -> dict[str, np.ndarray]:
    """Ridge of one feature space on every voxel -> {r, r2, alpha} each (n_vox,) float32."""
    out = {k: np.empty(data.n_vox, dtype=np.float32) for k in ("r", "r2", "alpha")}
    batches = voxel_batches(data.n_vox, settings["voxel_batch"])
    cv = dict(cv=settings["cv_folds"], groups=data.train_ids, backend=settings["backend"])
    # the per-fold decompositions of the features are computed once for all voxel batches
    design = (ridge_design(x_train, settings["alphas"], n_targets=data.n_vox, **cv)
              if x_train.shape[0] >= x_train.shape[1] else None)
    for sl in progress(batches, f"ridge {desc} voxel batches"):
        y = np.asarray(data.train[:, sl], dtype=np.float32)
        fit = fit_ridge(x_train, y, settings["alphas"], n_targets_batch=settings["n_targets_batch"],
                        fit_intercept=True, design=design, **cv)
        scores = _test_scores(np.asarray(data.test[:, sl]), fit.predict(x_test))
        out["r"][sl], out["r2"][sl], out["alpha"][sl] = scores["r"], scores["r2"], fit.best_alphas
    return out


def fit_banded(spaces_train: Sequence[np.ndarray], spaces_test: Sequence[np.ndarray], data: SubjectData, settings: dict, desc: str = "") -> dict[str, np.ndarray]:
    """Banded ridge (one penalty per feature space, ``brainldm.banded``: himalaya's
    GroupRidgeCV random search) on every voxel.

    Each space is standardised with its training statistics; every voxel's training
    mean is its intercept. The decompositions of each candidate weighting are made once
    and shared by all voxel batches. Returns r, r2 (n_vox,) of the joint prediction and
    split_r2 (n_spaces, n_vox): himalaya's r2_score_split of the per-space parts of the
    prediction (test data and prediction centred on the test means; they sum to that
    centred R²).
    """
    from brainldm.banded import dirichlet_gammas, solve_banded_ridge_random_search
    from himalaya.scoring import r2_score_split
    from sklearn.preprocessing import StandardScaler

    scalers = [StandardScaler().fit(x) for x in spaces_train]
    xtr = [s.transform(x).astype(np.float32) for s, x in zip(scalers, spaces_train)]
    xte = [s.transform(x).astype(np.float32) for s, x in zip(scalers, spaces_test)]
    splits = make_cv(settings["cv_folds"], data.train_ids, len(data.train_ids))
    gammas = dirichlet_gammas(int(settings["n_iter"]), len(xtr), settings["seed"])
    fit = solve_banded_ridge_random_search(
        xtr, data.train, gammas, settings["alphas"], splits, xte, n_targets_batch=settings["voxel_batch"],
        fit_batch=settings["n_targets_batch"], backend=resolve_backend(settings["backend"]), desc=f"banded {desc}")
    out = dict(r=np.empty(data.n_vox, np.float32), r2=np.empty(data.n_vox, np.float32),
               split_r2=np.empty((len(xtr), data.n_vox), np.float32))
    for sl in voxel_batches(data.n_vox, settings["voxel_batch"]):
        parts = fit.test_parts[:, :, sl]
        y_test = np.asarray(data.test[:, sl], dtype=np.float32)
        pred = parts.sum(0) + fit.y_mean[sl]
        out["r"][sl] = pearson_columns(y_test, pred)
        out["r2"][sl] = r2_columns(y_test, pred)
        # himalaya's split R² needs a zero-mean y_true: test data centred on their own mean
        split = r2_score_split(y_test - y_test.mean(0), parts - parts.mean(1, keepdims=True))
        out["split_r2"][:, sl] = np.asarray(split, dtype=np.float32)
    return out


def significance(r: np.ndarray, n_test: int, q: float) -> tuple[np.ndarray, np.ndarray]:
    """(p, significant) for r (n_vox,): exact one-sided p, BH-FDR across voxels."""
    p = r_pvalues(r, n_test)
    return p.astype(np.float32), fdr_significant(p, q)


def best_layer(r: np.ndarray, significant: np.ndarray) -> np.ndarray:
    """Per voxel the index of the layer with the highest r among layers significant there.

    r, significant: (n_layers, n_vox). Returns (n_vox,) int16, -1 where no layer is significant.
    """
    masked = np.where(significant, np.nan_to_num(r, nan=-np.inf), -np.inf)
    best = masked.argmax(0).astype(np.int16)
    best[~significant.any(0)] = -1
    return best


# ----------------------------------------------------------------------------- analyses


def check_settings(settings: dict) -> dict:
    """The ``encoding:`` settings with the schema's defaults for absent keys; a bad value
    stops with the config key named (the schema's rules: ``config_check.section_settings``)."""
    from brainldm.config_check import section_settings

    return section_settings("encoding", settings)


def _save(npz_path: str, **arrays: Any) -> None:
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def run_single(data: SubjectData, z_h5: str, c_h5: str, zc_h5: str, settings: dict, npz_path: str) -> None:
    """Analysis 1: z, c, zc models on their own -> npz with names, r, r2, p, significant, alpha (3, n_vox)."""
    s = check_settings(settings)
    _, names, fh = read_feature_file(zc_h5)
    fh.close()
    zc_name = select_by_number(list(names), "noise", [s["zc_strength"]], "zc_strength")[0]
    spaces = [("z", z_h5, None), ("c", c_h5, None), ("zc", zc_h5, zc_name)]
    res: dict[str, list] = {k: [] for k in ("r", "r2", "alpha", "p", "significant")}
    for name, path, ds in spaces:
        x_train, x_test = load_space(path, ds, data, s["n_components"], s["seed"])
        log.info("single %s: %d train trials, %d components, %d voxels", name, len(x_train), x_train.shape[1], data.n_vox)
        fit = fit_single(x_train, x_test, data, s, name)
        p, sig = significance(fit["r"], len(data.test_ids), s["q"])
        log.info("single %s: median r %.3f, %d of %d voxels significant (BH q=%.2f)", name, np.nanmedian(fit["r"]), sig.sum(), data.n_vox, s["q"])
        for k, v in (*fit.items(), ("p", p), ("significant", sig)):
            res[k].append(v)
    _save(npz_path, analysis="single", names=np.array(["z", "c", "zc"]), zc_dataset=zc_name,
          n_test=len(data.test_ids), **{k: np.stack(v) for k, v in res.items()})


def run_joint(data: SubjectData, z_h5: str, zc_h5: str, kind: str, settings: dict, npz_path: str) -> None:
    """Analyses 2/3: z + zc (banded) per noise level (kind "noise") or denoising stage ("stage").

    Unique variance by variance partitioning on the test set:
    unique_z = R²(z+zc) - R²(zc), unique_zc = R²(z+zc) - R²(z). Writes levels (L,),
    r/r2/p/significant of the joint model (L, n_vox), r2_z (n_vox,), r2_zc,
    unique_z, unique_zc (L, n_vox), split_r2 (L, 2, n_vox).
    """
    s = check_settings(settings)
    if kind not in ("noise", "stage"):
        raise ValueError(f"kind must be noise or stage, got {kind!r}")
    _, names, fh = read_feature_file(zc_h5)
    fh.close()
    key = "noise_levels" if kind == "noise" else "fractions"
    selected = select_by_number(list(names), kind, s[key], key)
    z_train, z_test = load_space(z_h5, None, data, s["n_components"], s["seed"])
    z_fit = fit_single(z_train, z_test, data, s, "z")
    res: dict[str, list] = {k: [] for k in ("r", "r2", "p", "significant", "r2_zc", "unique_z", "unique_zc", "split_r2")}
    for ds in selected:
        zc_train, zc_test = load_space(zc_h5, ds, data, s["n_components"], s["seed"])
        zc_fit = fit_single(zc_train, zc_test, data, s, ds)
        joint = fit_banded([z_train, zc_train], [z_test, zc_test], data, s, f"z+{ds}")
        p, sig = significance(joint["r"], len(data.test_ids), s["q"])
        uz, uzc = joint["r2"] - zc_fit["r2"], joint["r2"] - z_fit["r2"]
        log.info("%s: joint median r %.3f, %d significant; mean unique z %.4f, zc %.4f over significant voxels",
                 ds, np.nanmedian(joint["r"]), sig.sum(), np.nanmean(uz[sig]) if sig.any() else np.nan,
                 np.nanmean(uzc[sig]) if sig.any() else np.nan)
        for k, v in (("r", joint["r"]), ("r2", joint["r2"]), ("p", p), ("significant", sig), ("r2_zc", zc_fit["r2"]),
                     ("unique_z", uz), ("unique_zc", uzc), ("split_r2", joint["split_r2"])):
            res[k].append(v)
    levels = np.array([float(re.sub(r"^.*/[a-z]", "", d)) for d in selected])
    _save(npz_path, analysis=kind, datasets=np.array(selected), levels=levels, n_test=len(data.test_ids),
          r2_z=z_fit["r2"], **{k: np.stack(v) for k, v in res.items()})


def run_layers(data: SubjectData, unet_h5: str, settings: dict, npz_path: str) -> None:
    """Analysis 4: per denoising stage one model per U-Net layer; best significant layer per voxel.

    Writes layers (nL,), fractions (F,), r/p/significant (F, nL, n_vox), best_layer (F, n_vox) (-1 = none).
    """
    s = check_settings(settings)
    _, names, fh = read_feature_file(unet_h5)
    fh.close()
    by_layer: dict[str, dict[float, str]] = {}
    for n in names:
        m = re.match(r"^([^/]+)/f([0-9.]+)$", n)
        if m:
            by_layer.setdefault(m.group(1), {})[float(m.group(2))] = n
    if not by_layer:
        raise ValueError(f"{unet_h5} has no '<layer>/f<fraction>' datasets (found {sorted(names)}); rerun the features stage")
    order = ["down1", "down2", "mid", "up1", "up2"]
    layers = sorted(by_layer, key=lambda x: (order.index(x) if x in order else len(order), x))
    if s["layers"] is not None:
        missing = [x for x in s["layers"] if x not in by_layer]
        if missing:
            raise ValueError(f"config encoding.layers: {missing} not in {unet_h5} (has {layers})")
        layers = [x for x in layers if x in s["layers"]]
    fracs = sorted(set.intersection(*(set(by_layer[x]) for x in layers)))
    if s["fractions"] is not None:
        missing = [f for f in s["fractions"] if not any(abs(f - g) < 1e-6 for g in fracs)]
        if missing:
            raise ValueError(f"config encoding.fractions: {missing} not in {unet_h5} (has {fracs})")
        fracs = [g for g in fracs if any(abs(f - g) < 1e-6 for f in s["fractions"])]
    r = np.empty((len(fracs), len(layers), data.n_vox), np.float32)
    p = np.empty_like(r)
    sig = np.zeros(r.shape, bool)
    for i, f in enumerate(fracs):
        for j, layer in enumerate(layers):
            ds = by_layer[layer][f]
            x_train, x_test = load_space(unet_h5, ds, data, s["n_components"], s["seed"])
            r[i, j] = fit_single(x_train, x_test, data, s, ds)["r"]
            p[i, j], sig[i, j] = significance(r[i, j], len(data.test_ids), s["q"])
            log.info("%s: median r %.3f, %d significant", ds, np.nanmedian(r[i, j]), sig[i, j].sum())
    best = np.stack([best_layer(r[i], sig[i]) for i in range(len(fracs))])
    _save(npz_path, analysis="layers", layers=np.array(layers), fractions=np.array(fracs), n_test=len(data.test_ids),
          r=r, p=p, significant=sig, best_layer=best)


def run(analysis: str, inputs: dict[str, str], settings: dict, npz_path: str, threads: int = 1) -> None:
    """Entry point of the encode_* rules: one analysis of one subject -> npz.

    threads: CPU threads for BLAS and torch (the rule's threads; at least 1).
    """
    limit_threads(max(1, int(threads)))
    data = load_subject(inputs["train"], inputs["test"], inputs["train_tsv"], inputs["test_tsv"])
    log.info("%s: %d train trials, %d test images, %d voxels", analysis, len(data.train_ids), len(data.test_ids), data.n_vox)
    if analysis == "single":
        run_single(data, inputs["z"], inputs["c"], inputs["zc"], settings, npz_path)
    elif analysis in ("noise", "stage"):
        run_joint(data, inputs["z"], inputs["zc"], analysis, settings, npz_path)
    elif analysis == "layers":
        run_layers(data, inputs["unet"], settings, npz_path)
    else:
        raise ValueError(f"unknown encoding analysis {analysis!r}; one of {ANALYSES}")
