"""Decoders from fMRI betas to the latent diffusion model's z and c (paper §3.2).

For one subject and one target (``z`` or ``c``): X = h-stacked single-trial betas of
the configured ROIs (n_trials, n_vox), Y = the target feature of the image of every
trial, flattened (n_trials, D). A cross-validated ridge (``brainldm.ridge``) is fitted
and applied to the test betas (mean over repetitions of each shared image). Scores
against the true test features:

- ``r_dim`` (D,): Pearson r over test images of every feature dimension;
- ``r_image`` (n_test,): Pearson r over feature dimensions of every test image
  (the reference's ``correlation_score(Y.T, pred.T)``);
- ``identification`` (n_test,): two-way identification of every decoded latent,
  the fraction of other test images j with r(pred_i, true_i) > r(pred_i, true_j)
  (:func:`brainldm.scores.two_way_identification`, strict: no tie tolerance).

All three come from :mod:`brainldm.scores`; a constant row or column has r = NaN and a
comparison with a NaN r fails. (Until the scores were merged, identification gave a
constant row r = 0 instead; that differs only when a *true* latent is constant, which
image latents never are: a constant decoded row lost every comparison either way.)

The same scores come from a control fit in which the training trials were shuffled
(rows of X permuted against Y), so chance levels are measured, not assumed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import pandas as pd

from brainldm.io import atomic_path
from brainldm.ridge import check_alphas, fit_ridge
from brainldm.scores import correlation_matrix, pearson_columns, pearson_rows, two_way_identification
from brainldm.threads import limit_threads

#: The reference's grid for z and c (codes/utils/ridge.py L40-43), on standardised X.
REFERENCE_ALPHAS = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0]
#: A wider grid reaching the penalties that matter when trials are few or noisy.
WIDE_ALPHAS = [float(10.0**k) for k in range(-6, 7)]
ALPHA_GRIDS = {"reference": REFERENCE_ALPHAS, "wide": WIDE_ALPHAS}


class DecodingError(ValueError):
    """Bad decoding input; the message names the file or config key and the fix."""


@dataclass
class DecodingSettings:
    """How one target is decoded (config section ``decoding``; defaults and rules in the
    schema: build it with :meth:`from_config`)."""

    alphas: Sequence[float] | str
    cv_folds: int
    cv_by_session: bool
    fit_intercept: bool
    backend: str
    n_targets_batch: int | None
    n_alphas_batch: int | None
    shuffle_control: bool
    seed: int

    @classmethod
    def from_config(cls, settings: Mapping[str, Any]) -> "DecodingSettings":
        """From ``decoding:`` keys (absent ones take the schema's defaults); a bad value
        raises ``config_check.ConfigError`` naming the key."""
        from brainldm.config_check import section_settings

        full = section_settings("decoding", settings)
        return cls(**{f.name: full[f.name] for f in fields(cls)})

    def alpha_grid(self) -> np.ndarray:
        """The alpha grid: a named grid (``reference``, ``wide``) or an explicit list."""
        if isinstance(self.alphas, str):
            if self.alphas not in ALPHA_GRIDS:
                raise DecodingError(
                    f"decoding.alphas: unknown grid {self.alphas!r}; use one of "
                    f"{sorted(ALPHA_GRIDS)} or a list of numbers > 0"
                )
            return np.asarray(ALPHA_GRIDS[self.alphas], dtype=float)
        return check_alphas(self.alphas, key="decoding.alphas")


@dataclass
class DecodingResult:
    """Decoded test features and scores of one subject and target."""

    target: str
    rois: list[str]
    nsd_id: np.ndarray  # (n_test,) int64
    pred: np.ndarray  # (n_test, *feature_shape) float32
    best_alphas: np.ndarray  # (D,)
    r_dim: np.ndarray  # (D,)
    r_image: np.ndarray  # (n_test,)
    identification: np.ndarray  # (n_test,)
    info: dict = field(default_factory=dict)
    shuffled: dict = field(default_factory=dict)  # best_alphas, r_dim, r_image, identification


# ----------------------------------------------------------------------------- inputs


def read_table(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    """An ingestion TSV (train.tsv / test.tsv) with the given columns."""
    path = Path(path)
    if not path.is_file():
        raise DecodingError(f"missing ingestion table {path}; run the ingest rule first")
    table = pd.read_csv(path, sep="\t")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DecodingError(
            f"{path} lacks column(s) {missing} (has {list(table.columns)}); "
            "it must follow docs/contracts.md, re-run ingestion"
        )
    return table


def read_betas(paths: Sequence[str | os.PathLike], n_rows: int, rois: Sequence[str]) -> np.ndarray:
    """The betas of several ROIs h-stacked: (n_rows, sum of n_vox) float32."""
    blocks = []
    for roi, path in zip(rois, paths):
        path = Path(path)
        if not path.is_file():
            raise DecodingError(f"missing betas file {path} (ROI {roi!r}); run ingestion first")
        try:
            arr = np.load(path, mmap_mode="r")
        except Exception as err:  # corrupt or not an .npy file
            raise DecodingError(f"cannot read betas file {path}: {err}; delete it and re-run ingestion") from err
        if arr.ndim != 2 or arr.shape[0] != n_rows:
            raise DecodingError(
                f"{path} has shape {arr.shape}, expected ({n_rows}, n_voxels) to match its table; "
                "re-run ingestion"
            )
        if arr.shape[1] == 0:
            raise DecodingError(
                f"ROI {roi!r} has no voxels ({path} is {arr.shape}); check its labels in config "
                "ingest.rois or choose other ROIs in decoding.targets"
            )
        blocks.append(np.asarray(arr, dtype=np.float32))
    return blocks[0] if len(blocks) == 1 else np.hstack(blocks)


def read_features(path: str | os.PathLike, dataset: str, nsd_ids: np.ndarray) -> np.ndarray:
    """Rows of ``dataset`` in a feature HDF5 for the given nsd_ids: (len(nsd_ids), ...) float32.

    Only the distinct images needed are read (in file order, as h5py requires).
    """
    path = Path(path)
    if not path.is_file():
        raise DecodingError(f"missing feature file {path}; run the features stage first")
    nsd_ids = np.asarray(nsd_ids, dtype=np.int64)
    try:
        with h5py.File(path, "r") as f:
            if "nsd_id" not in f or dataset not in f:
                raise DecodingError(
                    f"{path} must hold datasets 'nsd_id' and {dataset!r} (has {list(f.keys())}); "
                    "re-run the features stage"
                )
            file_ids = f["nsd_id"][:].astype(np.int64)
            where = {int(i): k for k, i in enumerate(file_ids)}
            absent = sorted(set(nsd_ids.tolist()) - set(where))
            if absent:
                raise DecodingError(
                    f"{path} has no {dataset!r} for {len(absent)} image(s) with nsd_id "
                    f"{absent[:5]}...; the features must cover results/stimuli/stimuli.tsv, re-run features"
                )
            unique = np.unique(nsd_ids)
            rows = np.array([where[int(i)] for i in unique])
            order = np.argsort(rows)
            block = np.empty((len(unique),) + f[dataset].shape[1:], dtype=np.float32)
            block[order] = f[dataset][rows[order]]
    except OSError as err:
        raise DecodingError(f"cannot read feature file {path}: {err}; delete it and re-run features") from err
    return block[np.searchsorted(unique, nsd_ids)]


# ----------------------------------------------------------------------------- scores


def _scores(pred: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """r_dim (D,), r_image (n,) and identification (n,) float32 of pred against true (n, D).

    Identification is strict (``tolerance=0``): a decoded row wins against true row j
    when r(pred_i, true_i) > r(pred_i, true_j), in float64.
    """
    if len(pred) < 2:
        raise DecodingError("identification needs at least 2 test images")
    r = correlation_matrix(true, pred)  # r[j, i] = corr(true_j, pred_i)
    return {
        "r_dim": pearson_columns(true, pred),
        "r_image": pearson_rows(true, pred),
        "identification": two_way_identification(r, tolerance=0.0).astype(np.float32),
    }


# ----------------------------------------------------------------------------- fit


def decode(
    X_train: np.ndarray,
    Y_train: np.ndarray,
    X_test: np.ndarray,
    Y_test: np.ndarray,
    settings: DecodingSettings,
    sessions: np.ndarray | None = None,
) -> tuple[np.ndarray, dict, dict]:
    """Fit on (X_train (n, v), Y_train (n, D)), predict X_test (m, v) -> (m, D) and score
    against Y_test (m, D). Returns (pred, scores, shuffled_scores); Y_train may be
    centred in place. Shuffled scores are empty when settings.shuffle_control is False.
    """
    alphas = settings.alpha_grid()
    Y_train = np.asarray(Y_train, dtype=np.float32)
    groups = sessions if settings.cv_by_session else None
    common = dict(alphas=alphas, cv=settings.cv_folds, groups=groups, backend=settings.backend,
                  n_targets_batch=settings.n_targets_batch, n_alphas_batch=settings.n_alphas_batch,
                  fit_intercept=settings.fit_intercept)
    fit = fit_ridge(X_train, Y_train, overwrite_Y=True, **common)
    Y_train += fit.y_offset  # undo the in-place centring for the control fit
    pred = fit.predict(X_test)
    scores = dict(best_alphas=fit.best_alphas, **_scores(pred, Y_test))
    solver, backend, strategy = fit.solver, fit.backend, fit.strategy
    del fit
    shuffled: dict = {}
    if settings.shuffle_control:
        # Rows of X (the smaller array) are permuted against Y: a decoder of the same
        # size and settings that has lost the trial-to-image pairing.
        perm = np.random.default_rng(settings.seed).permutation(X_train.shape[0])
        control = fit_ridge(X_train[perm], Y_train, overwrite_Y=True, **common)
        shuffled = dict(best_alphas=control.best_alphas, **_scores(control.predict(X_test), Y_test))
        del control
    info = dict(solver=solver, strategy=strategy, backend=backend, n_train=X_train.shape[0],
                n_voxels=X_train.shape[1], n_dims=Y_train.shape[1], n_test=X_test.shape[0])
    return pred, scores, dict(shuffled=shuffled, info=info)


def decode_subject(
    train_betas: Sequence[str | os.PathLike],
    test_betas: Sequence[str | os.PathLike],
    train_tsv: str | os.PathLike,
    test_tsv: str | os.PathLike,
    features: str | os.PathLike,
    target: str,
    rois: Sequence[str],
    settings: DecodingSettings,
) -> DecodingResult:
    """Decode one target of one subject from the ingestion outputs and a feature file.

    train_betas / test_betas: one ``betas_{roi}_{train,test}.npy`` per ROI, in ``rois`` order.
    features: ``results/features/{target}.h5`` with datasets ``nsd_id`` and ``target``.
    """
    if not rois:
        raise DecodingError(f"decoding.targets.{target}: give at least one ROI")
    if len(train_betas) != len(rois) or len(test_betas) != len(rois):
        raise DecodingError("one train and one test betas file per ROI are needed")
    train = read_table(train_tsv, ["nsd_id", "session"])
    test = read_table(test_tsv, ["nsd_id"])
    X_train = read_betas(train_betas, len(train), rois)
    X_test = read_betas(test_betas, len(test), rois)
    if X_train.shape[1] != X_test.shape[1]:
        raise DecodingError(
            f"train and test betas have {X_train.shape[1]} and {X_test.shape[1]} voxels; "
            "re-run ingestion so both come from the same ROI masks"
        )
    Y_test_full = read_features(features, target, test["nsd_id"].to_numpy())
    feature_shape = Y_test_full.shape[1:]
    Y_test = Y_test_full.reshape(len(test), -1)
    Y_train = read_features(features, target, train["nsd_id"].to_numpy()).reshape(len(train), -1)
    print(f"decoding {target} from {'+'.join(rois)}: X {X_train.shape}, Y {Y_train.shape}, "
          f"test {X_test.shape}", file=sys.stderr, flush=True)
    pred, scores, extra = decode(X_train, Y_train, X_test, Y_test, settings,
                                 sessions=train["session"].to_numpy())
    return DecodingResult(
        target=target, rois=list(rois), nsd_id=test["nsd_id"].to_numpy().astype(np.int64),
        pred=pred.reshape((len(test),) + feature_shape), best_alphas=scores["best_alphas"],
        r_dim=scores["r_dim"], r_image=scores["r_image"], identification=scores["identification"],
        info=extra["info"], shuffled=extra["shuffled"],
    )


# ----------------------------------------------------------------------------- outputs


def summary_rows(result: DecodingResult, subject: str, settings: DecodingSettings) -> pd.DataFrame:
    """One row per fit (decoder, shuffled control) with mean scores."""
    rows = []
    fits = [("decoder", dict(best_alphas=result.best_alphas, r_dim=result.r_dim,
                             r_image=result.r_image, identification=result.identification))]
    if result.shuffled:
        fits.append(("shuffled", result.shuffled))
    for name, s in fits:
        rows.append(dict(
            subject=subject, target=result.target, rois="+".join(result.rois), fit=name,
            mean_r_dim=float(np.nanmean(s["r_dim"])), median_r_dim=float(np.nanmedian(s["r_dim"])),
            mean_r_image=float(np.nanmean(s["r_image"])),
            identification=float(np.mean(s["identification"])),
            median_alpha=float(np.median(s["best_alphas"])),
            n_train=result.info["n_train"], n_test=result.info["n_test"],
            n_voxels=result.info["n_voxels"], n_dims=result.info["n_dims"],
            solver=result.info["solver"], backend=result.info["backend"],
            fit_intercept=settings.fit_intercept,
        ))
    return pd.DataFrame(rows)


def write_result(result: DecodingResult, npz_path: str | os.PathLike, tsv_path: str | os.PathLike,
                 subject: str, settings: DecodingSettings) -> None:
    """Write ``{target}.npz`` (arrays, see module doc) and the scores TSV, atomically."""
    arrays = dict(pred=result.pred, nsd_id=result.nsd_id, best_alphas=result.best_alphas,
                  r_dim=result.r_dim, r_image=result.r_image, identification=result.identification,
                  rois=np.array(result.rois), fit_intercept=np.array(settings.fit_intercept),
                  alphas=settings.alpha_grid())
    for key, value in result.shuffled.items():
        arrays[f"shuffled_{key}"] = value
    with atomic_path(npz_path) as tmp:
        np.savez(tmp, **arrays)
    with atomic_path(tsv_path) as tmp:
        summary_rows(result, subject, settings).to_csv(tmp, sep="\t", index=False, float_format="%.4f")


def run(train_betas, test_betas, train_tsv, test_tsv, features, npz_path, tsv_path,
        subject: str, target: str, rois: Sequence[str], settings: dict,
        threads: int | None = None) -> DecodingResult:
    """Entry point of workflow/scripts/decode.py: decode and write one subject's target.

    threads: CPU threads for BLAS and torch (the rule's threads; None = library defaults).
    """
    s = DecodingSettings.from_config(settings)
    limit_threads(threads)
    result = decode_subject(train_betas, test_betas, train_tsv, test_tsv, features, target, rois, s)
    write_result(result, npz_path, tsv_path, subject, s)
    print(summary_rows(result, subject, s).to_string(index=False), file=sys.stderr, flush=True)
    return result


def gather_scores(tsv_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike) -> pd.DataFrame:
    """Concatenate per-subject score tables into one TSV."""
    table = pd.concat([pd.read_csv(p, sep="\t") for p in tsv_paths], ignore_index=True)
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    return table
