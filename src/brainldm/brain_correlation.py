"""Brain correlation of the reconstructions (in the spirit of MindEye2's metric).

An encoding model predicts each voxel's response from an image's z (VAE latent); the
predicted voxel pattern of a reconstruction is correlated with the measured test
pattern of its original (betas averaged over repeats), per ROI. MindEye2 uses GNet; here
the encoding model is the project's own: a ridge (:func:`brainldm.ridge.fit_ridge`, one
CV alpha per voxel) from the flattened z of the training images (no PCA) to the
single-trial training betas of every brain-mask voxel, fitted inside the evaluation
because the encoding stage saves only scores. The originals' row (condition
``original``) is this encoding model's ceiling.

Shapes: z (n_images, d) float32 flattened; betas train (n_trials, n_vox), test
(n_test, n_vox) float32; ROI masks (n_vox,) bool over the brain-mask columns.
Scores are Pearson r across the voxels of an ROI, one per image (mean over samples).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from brainldm.ridge import fit_ridge, ridge_design, voxel_batches
from brainldm.scores import StreamingPearsonRows

log = logging.getLogger(__name__)

#: ``convention`` of the brain-correlation rows of scores.tsv and metrics.csv.
CONVENTION = "brain correlation (project's own z encoding model, not MindEye2's GNet)"
#: condition of the originals' rows (the encoding model's ceiling).
ORIGINAL = "original"


class BrainCorrelationError(ValueError):
    """An input the brain correlation cannot use; says which file and the fix."""


def roi_masks(brain_voxels: np.ndarray, roi_voxels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ROI name -> (n_vox,) bool over the brain-mask columns.

    brain_voxels: (n_vox, 3) int (x, y, z) of each brain column (ingestion's
    voxels_brain.npy); roi_voxels: name -> (n_roi, 3) coordinates (voxels_{roi}.npy).
    A voxel of an ROI outside the brain mask raises.
    """
    index = {tuple(int(c) for c in v): k for k, v in enumerate(np.asarray(brain_voxels))}
    out = {}
    for name, vox in roi_voxels.items():
        cols = [index.get(tuple(int(c) for c in v), -1) for v in np.asarray(vox)]
        if any(c < 0 for c in cols):
            raise BrainCorrelationError(
                f"ROI {name!r}: {sum(c < 0 for c in cols)} voxel(s) outside the brain mask's voxels; rerun ingest"
            )
        mask = np.zeros(len(index), dtype=bool)
        mask[cols] = True
        out[name] = mask
    return out


def brain_correlations(
    z_train: np.ndarray,
    betas_train: np.ndarray,
    train_groups: np.ndarray,
    z_eval: np.ndarray,
    measured: np.ndarray,
    masks: dict[str, np.ndarray],
    alphas: Sequence[float],
    cv_folds: int = 5,
    backend: str = "auto",
    voxel_batch: int | None = None,
    image_of: np.ndarray | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Per image and ROI: Pearson r across the ROI's voxels between the encoding model's
    prediction from z_eval and the measured pattern.

    z_train: (n_trials, d) z of each training trial's image; betas_train: (n_trials, n_vox);
    train_groups: (n_trials,) nsd_id (trials of one image share a CV fold); z_eval:
    (n_eval, d) z of the images to score; measured: (n_meas, n_vox) measured patterns;
    image_of: (n_eval,) row of measured each z_eval row is compared with (None: the same
    row, n_meas = n_eval); masks: ROI -> (n_vox,) bool. The ridge is fitted per voxel
    batch (``voxel_batch`` voxels, None = all) and predictions reduced to running sums,
    so memory stays bounded. Returns ROI -> (n_eval,) float64 (NaN for a constant pattern).
    """
    z_train = np.asarray(z_train, dtype=np.float32).reshape(len(z_train), -1)
    z_eval = np.asarray(z_eval, dtype=np.float32).reshape(len(z_eval), -1)
    n_vox = betas_train.shape[1]
    image_of = np.arange(len(z_eval)) if image_of is None else np.asarray(image_of, dtype=np.int64)
    if measured.ndim != 2 or measured.shape[1] != n_vox or image_of.shape != (len(z_eval),) \
            or (len(image_of) and (image_of.min() < 0 or image_of.max() >= len(measured))):
        raise BrainCorrelationError(
            f"measured patterns {measured.shape} must be (n_meas, n_vox={n_vox}) and image_of {image_of.shape} "
            f"(n_eval={len(z_eval)},) rows of it")
    for name, m in masks.items():
        if m.shape != (n_vox,) or not m.any():
            raise BrainCorrelationError(f"ROI {name!r}: mask {m.shape} with {int(m.sum())} voxels; need ({n_vox},) and >= 1")
    moments = {name: StreamingPearsonRows(len(z_eval)) for name in masks}
    cv = dict(cv=cv_folds, groups=train_groups, backend=backend)
    # the decompositions of z are made once for every voxel batch (primal solver: n >= d)
    design = ridge_design(z_train, alphas, n_targets=n_vox, **cv) if z_train.shape[0] >= z_train.shape[1] else None
    for sl in voxel_batches(n_vox, voxel_batch):
        fit = fit_ridge(z_train, np.asarray(betas_train[:, sl], dtype=np.float32), alphas, fit_intercept=True,
                        design=design, **cv)
        pred = fit.predict(z_eval)
        meas = np.asarray(measured[:, sl], dtype=np.float32)[image_of]
        for name, m in masks.items():
            cols = m[sl]
            if cols.any():
                moments[name].add(pred[:, cols], meas[:, cols])
        if progress:
            progress(f"encoding ridge voxels {sl.start}-{sl.stop} of {n_vox}")
    return {name: mom.r() for name, mom in moments.items()}


def _read_z(z_h5: str, ids: np.ndarray) -> np.ndarray:
    """z of the given nsd_ids from the features stage's z.h5 -> (len(ids), d) float32."""
    from brainldm.encoding import image_rows, read_feature_file

    all_ids, datasets, fh = read_feature_file(z_h5)
    try:
        if "z" not in datasets:
            raise BrainCorrelationError(f"{z_h5} has no dataset 'z' (found {sorted(datasets)}); rerun the features stage")
        rows = image_rows(all_ids, ids, z_h5)
        uniq, inverse = np.unique(rows, return_inverse=True)
        z = datasets["z"][uniq].reshape(len(uniq), -1).astype(np.float32)
    finally:
        fh.close()
    return z[inverse]


def score_subject(
    recons_path: str,
    subject: str,
    ingest: dict[str, str],
    z_h5: str,
    model: str,
    z_settings: dict,
    encoding: dict,
    conditions: Sequence[str],
    device: str | None = None,
    local_files_only: bool = True,
    batch_size: int = 16,
) -> "pd.DataFrame":
    """Brain-correlation rows of scores.tsv (columns of :data:`brainldm.metrics.SCORE_COLUMNS`).

    ingest: train, test (betas_brain_*.npy), train_tsv, test_tsv and voxels_{roi} for
    every ROI incl. ``voxels_brain`` (ingestion outputs); z_h5: results/features/z.h5
    (z of the training images and of the originals); model: the folder or hub id the
    features stage loads; z_settings: features.z_resolution, z_posterior, seed (the
    reconstructions are encoded like the stimuli); encoding: alphas, cv_folds, backend,
    voxel_batch (the encoding stage's settings). One row per test image, condition
    (``conditions`` and :data:`ORIGINAL`) and ROI (metric), score in Pearson r.
    """
    import h5py
    import pandas as pd

    from brainldm.encoding import load_subject
    from brainldm.features import encode_z
    from brainldm.models import load_pipeline

    data = load_subject(ingest["train"], ingest["test"], ingest["train_tsv"], ingest["test_tsv"])
    vox = {k[len("voxels_"):]: np.load(p) for k, p in ingest.items() if k.startswith("voxels_")}
    if "brain" not in vox:
        raise BrainCorrelationError("input voxels_brain (results/{subject}/ingest/voxels_brain.npy) is missing")
    if len(vox["brain"]) != data.n_vox:
        raise BrainCorrelationError(
            f"{ingest['voxels_brain']} has {len(vox['brain'])} voxels but {ingest['train']} {data.n_vox}; rerun ingest")
    masks = roi_masks(vox["brain"], {k: v for k, v in vox.items()})
    with h5py.File(recons_path, "r") as f:
        nsd_id = f["nsd_id"][:].astype(np.int64)
        test_pos = {int(i): k for k, i in enumerate(data.test_ids)}
        missing = [int(i) for i in nsd_id if int(i) not in test_pos]
        if missing:
            raise BrainCorrelationError(
                f"{recons_path}: {len(missing)} image(s) (e.g. nsd_id {missing[0]}) are not in {ingest['test_tsv']}; "
                "rerun the reconstruction stage")
        measured_one = np.asarray(data.test)[[test_pos[int(i)] for i in nsd_id]]
        pipe = load_pipeline(model, device=device, local_files_only=local_files_only)
        z_eval = [_read_z(z_h5, nsd_id)]
        labels = [(ORIGINAL, np.arange(len(nsd_id)))]
        for cond in conditions:
            ds = f[cond]
            s = ds.shape[1]
            per = max(1, batch_size // s)
            zs = []
            for a in range(0, len(nsd_id), per):
                imgs = ds[a:a + per]
                ids = np.repeat(nsd_id[a:a + per], s)
                zs.append(encode_z(pipe, imgs.reshape((-1,) + imgs.shape[2:]), z_settings["z_resolution"],
                                   z_settings["z_posterior"], nsd_ids=ids,
                                   seed=z_settings["seed"]).reshape(len(ids), -1))
            z_eval.append(np.concatenate(zs))
            labels.append((cond, np.repeat(np.arange(len(nsd_id)), s)))
    del pipe
    image_of = np.concatenate([idx for _, idx in labels])
    z_all = np.concatenate(z_eval)
    z_train = _read_z(z_h5, data.train_ids)
    r = brain_correlations(z_train, data.train, data.train_ids, z_all, measured_one, masks,
                           encoding["alphas"], encoding["cv_folds"], encoding["backend"],
                           encoding["voxel_batch"], image_of=image_of, progress=log.info)
    rows = []
    start = 0
    for cond, idx in labels:
        stop = start + len(idx)
        for roi, values in r.items():
            per_image = pd.Series(values[start:stop]).groupby(idx).mean()  # mean over samples
            rows += [dict(subject=subject, nsd_id=int(nsd_id[k]), condition=cond, convention=CONVENTION,
                          metric=roi, unit="pearson r", score=float(per_image[k]),
                          weights=f"ridge z->voxels ({model})") for k in range(len(nsd_id))]
        start = stop
    return pd.DataFrame(rows)
