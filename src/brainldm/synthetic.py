"""A synthetic mini-NSD in NSD's exact layout and formats, with a planted brain-feature relation.

The anatomy is pycortex's bundled subject ``S1`` (transform ``fullhead``): the
functional grid is its reference volume (x, y, z) = (100, 100, 31). ``early``
voxels are S1's V1-V3, ``ventral`` voxels its FFA, PPA, OFA and EBA, so maps
land where a person expects them on the flatmap. The planted relation:

- early voxels respond linearly to local luminance / colour contrast inside a
  Gaussian receptive field (:func:`brainldm.scenes.local_contrast` of
  :func:`brainldm.scenes.low_level_features`): mostly what the captions do not
  say (lighting, exact layout), so the caption model c explains them only partly;
- ventral voxels respond linearly to the scene's semantic attributes that the
  captions state (:func:`brainldm.scenes.attributes`);
- every other brain voxel carries only noise.

Single-trial responses add Gaussian noise (signal sd / noise sd = ``snr``), then a
per-session offset and scale per voxel, as in real data, and are stored like NSD:
percent signal change x 300 as int16. The ground truth lands in
``nsd_root/ground_truth/`` for tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

from brainldm import nsd, scenes
from brainldm.io import atomic_path
from brainldm.logs import progress
from brainldm.nsd_layout import synthetic_session_counts

N_NSD_SUBJECTS = 8
#: pycortex S1 ROIs that make up each NSD ``streams`` label in the synthetic data.
EARLY_ROIS = ("V1", "V2", "V3")
VENTRAL_ROIS = ("FFA", "PPA", "OFA", "EBA")
#: Amplitude of the signal in percent signal change.
SIGNAL_PSC = 1.5
#: With nsd_quirks, every second subject's functional grid is S1's padded by these
#: (before, after) voxels along x, y, z (in NSD every subject has its own grid).
GRID_PAD = ((2, 1), (0, 3), (1, 0))


@dataclass(frozen=True)
class SyntheticDesign:
    """Sizes of the synthetic data set (see the ``synthetic`` config section)."""

    subjects: tuple[int, ...]
    #: One count for every subject, or {subject: count} naming every subject (int or str keys).
    n_sessions: int | Mapping[int | str, int]
    trials_per_session: int
    n_shared_images: int
    n_images: int
    image_size: int
    snr: float
    seed: int
    #: Real NSD's quirks: ROI volumes with -1 outside the brain, edge voxels all zero
    #: in the last session, one session fewer and a grid of its own (``GRID_PAD``)
    #: for every second subject, images in
    #: imgBrick that no subject saw, betas .hdf5 chunked as NSD's (one uncompressed
    #: chunk per voxel time series, only the brain's written; see :func:`write_synthetic_nsd`).
    nsd_quirks: bool = False

    def session_counts(self) -> dict[int, int]:
        """{subject: sessions written}: n_sessions (one fewer for every second subject of
        ``subjects`` with nsd_quirks, when n_sessions > 1), or the per-subject mapping as
        it is (NSDError naming synthetic.n_sessions when it lacks a subject)."""
        return synthetic_session_counts(self.n_sessions, self.subjects, self.nsd_quirks)

    def sessions_of(self, subject: int) -> int:
        """Sessions written for one subject (see :meth:`session_counts`)."""
        return self.session_counts()[int(nsd.subject_name(subject)[4:])]

    @property
    def max_sessions(self) -> int:
        """Sessions of the experimental design: the most any subject has."""
        return max(self.session_counts().values())

    @property
    def n_trials(self) -> int:
        return self.max_sessions * self.trials_per_session

    @property
    def images_per_subject(self) -> int:
        return self.n_trials // 3

    @property
    def n_unique_images(self) -> int:
        return self.images_per_subject - self.n_shared_images

    def check(self) -> None:
        """Raise ValueError naming the config key when the sizes cannot work."""
        self.session_counts()  # a per-subject mapping must name every subject
        if self.n_trials % 3:
            raise ValueError(
                f"synthetic.n_sessions (the most of any subject) x synthetic.trials_per_session = {self.n_trials} "
                "must be divisible by 3 "
                "(every image is shown 3 times)"
            )
        if self.n_unique_images < 1:
            raise ValueError(
                f"synthetic.n_shared_images ({self.n_shared_images}) must be smaller than the images a subject sees "
                f"({self.images_per_subject} = n_sessions x trials_per_session / 3)"
            )
        needed = self.n_shared_images + N_NSD_SUBJECTS * self.n_unique_images + int(self.nsd_quirks)
        if self.n_images < needed:
            raise ValueError(
                f"synthetic.n_images ({self.n_images}) is too small: the design needs {needed} "
                f"({self.n_shared_images} shared + 8 subjects x {self.n_unique_images} unique"
                f"{' + 1 that nobody sees, for synthetic.nsd_quirks' if self.nsd_quirks else ''}); raise it to at least {needed}"
            )


def s1_anatomy(pycortex_cache: str | os.PathLike) -> dict[str, np.ndarray]:
    """Brain mask and ROI label volumes on S1's ``fullhead`` grid, all (x, y, z).

    Returns brainmask (uint8), streams (uint8: 1 early, 5 ventral), prf (uint8:
    1 V1v, 2 V1d, 3 V2v, 4 V2d, 5 V3v, 6 V3d; ventral/dorsal split at the ROI's
    median height), affine (4, 4).
    """
    from brainldm.pycortex_db import prepare_filestore

    prepare_filestore(pycortex_cache)
    import cortex

    xfm = cortex.db.get_xfm("S1", "fullhead")
    mapper = cortex.get_mapper("S1", "fullhead", "line_nearest")
    n_verts = sum(m.shape[0] for m in mapper.masks)
    roi_verts = cortex.get_roi_verts("S1", roi=list(EARLY_ROIS + VENTRAL_ROIS))

    def roi_volume(name: str) -> np.ndarray:
        verts = np.zeros(n_verts)
        verts[roi_verts[name]] = 1.0
        return np.asarray(mapper.backwards(verts)) > 0.5  # (z, y, x)

    thin = np.asarray(cortex.db.get_mask("S1", "fullhead", "thin"))
    streams = np.zeros(thin.shape, dtype=np.uint8)
    prf = np.zeros(thin.shape, dtype=np.uint8)
    for k, name in enumerate(EARLY_ROIS):
        vol = roi_volume(name) & (streams == 0)
        streams[vol] = 1
        z = np.nonzero(vol)[0]
        lower = vol & (np.arange(vol.shape[0])[:, None, None] <= np.median(z))
        prf[lower] = 2 * k + 1
        prf[vol & ~lower] = 2 * k + 2
    for name in VENTRAL_ROIS:
        streams[roi_volume(name) & (streams == 0)] = 5
    brain = thin | (streams > 0)
    zyx_to_xyz = lambda a: np.ascontiguousarray(a.transpose(2, 1, 0))  # noqa: E731
    return {
        "brainmask": zyx_to_xyz(brain.astype(np.uint8)),
        "streams": zyx_to_xyz(streams),
        "prf": zyx_to_xyz(prf),
        "affine": np.asarray(xfm.reference.affine, dtype=np.float64),
    }


def padded_anatomy(anat: dict[str, np.ndarray], pad: tuple[tuple[int, int], ...]) -> dict[str, np.ndarray]:
    """``s1_anatomy``'s volumes on a grid padded by ``pad`` ((before, after) voxels along
    x, y, z), with the affine that keeps every voxel at its scanner position."""
    shift = np.eye(4)
    shift[:3, 3] = [-before for before, _ in pad]
    out = {k: np.pad(v, pad) for k, v in anat.items() if k != "affine"}
    out["affine"] = anat["affine"] @ shift
    return out


def _save_nifti(data: np.ndarray, affine: np.ndarray, file: Path) -> None:
    with atomic_path(file) as tmp:
        img = nib.Nifti1Image(data, affine)
        img.header.set_xyzt_units("mm", "sec")
        nib.save(img, str(tmp))


def _design(d: SyntheticDesign, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """NSD's expdesign: 1-based masterordering (1, n_trials), subjectim (8, K), sharedix (1, n_shared)."""
    ids = rng.permutation(d.n_images)  # 0-based 73k ids
    shared = np.sort(ids[: d.n_shared_images])
    subjectim = np.empty((N_NSD_SUBJECTS, d.images_per_subject), dtype=np.int64)
    for s in range(N_NSD_SUBJECTS):
        start = d.n_shared_images + s * d.n_unique_images
        subjectim[s] = np.concatenate([shared, ids[start : start + d.n_unique_images]])
    # Every image shown 3 times; repetitions spread over the sessions at random.
    order = rng.permutation(np.repeat(np.arange(d.images_per_subject), 3))
    return {
        "masterordering": order[None, :] + 1,
        "subjectim": subjectim + 1,
        "sharedix": shared[None, :] + 1,
    }


def _stim_info(d: SyntheticDesign, design: dict, rng: np.random.Generator) -> pd.DataFrame:
    """nsd_stim_info_merged.csv with NSD's columns; COCO ids are made up."""
    coco_ids = 100000 + 7 * np.arange(d.n_images) + rng.integers(0, 7, d.n_images)
    split = np.where(rng.random(d.n_images) < 0.1, "val2017", "train2017")
    table = pd.DataFrame({
        "cocoId": coco_ids,
        "cocoSplit": split,
        "cropBox": ["(0, 0, 0, 0)"] * d.n_images,
        "loss": np.zeros(d.n_images),
        "nsdId": np.arange(d.n_images),
        "flagged": False,
        "BOLD5000": False,
        "shared1000": np.isin(np.arange(d.n_images), design["sharedix"][0] - 1),
    })
    master = design["masterordering"][0] - 1
    for s in range(N_NSD_SUBJECTS):
        table[f"subject{s + 1}"] = np.isin(np.arange(d.n_images), design["subjectim"][s] - 1).astype(int)
    for s in range(N_NSD_SUBJECTS):
        reps = np.zeros((d.n_images, 3), dtype=int)
        seen = np.zeros(d.n_images, dtype=int)
        for trial, k in enumerate(master):
            img = design["subjectim"][s, k] - 1
            reps[img, seen[img]] = trial + 1  # 1-based trial number
            seen[img] += 1
        for r in range(3):
            table[f"subject{s + 1}_rep{r}"] = reps[:, r]
    return table


def _responses(subject: int, d: SyntheticDesign, design: dict, rng: np.random.Generator) -> pd.DataFrame:
    """responses.tsv of one subject, rows in chronological order (= order of the betas)."""
    master = design["masterordering"][0] - 1
    ids73 = design["subjectim"][subject - 1, master]  # 1-based
    session = np.repeat(np.arange(1, d.max_sessions + 1), d.trials_per_session)
    within = np.tile(np.arange(d.trials_per_session), d.max_sessions)
    runs = 12
    per_run = int(np.ceil(d.trials_per_session / runs))
    first_seen = {}
    isold = np.zeros(d.n_trials, dtype=int)
    for t, img in enumerate(ids73):
        isold[t] = int(img in first_seen)
        first_seen.setdefault(img, t)
    return pd.DataFrame({
        "SUBJECT": subject,
        "SESSION": session,
        "RUN": within // per_run + 1,
        "TRIAL": within % per_run + 1,
        "73KID": ids73,
        "10KID": master + 1,
        "TIME": np.round(session * 1000 + within * 4.0 / 86400, 6),
        "ISOLD": isold,
        "ISCORRECT": (rng.random(d.n_trials) < 0.8).astype(int),
        "RT": np.round(rng.uniform(400, 1200, d.n_trials), 1),
        "CHANGEMIND": 0,
        "MEMORYRECENT": 0,
        "MEMORYFIRST": 0,
        "ISOLDCURRENT": isold,
        "ISCORRECTCURRENT": 1,
        "TOTAL1": 1,
        "TOTAL2": 0,
        "BUTTON": 1 + isold,
        "MISSINGDATA": 0,
    })


def _voxel_weights(anat: dict, n_low: tuple[int, int, int], n_attr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Planted encoding weights for every brain voxel.

    Returns voxels (n_vox, 3) (x, y, z), role (n_vox,) 0 none / 1 early / 2 ventral,
    w_low (n_vox, 3*g*g) and w_attr (n_vox, n_attr).
    """
    voxels = np.argwhere(anat["brainmask"] > 0)
    labels = anat["streams"][tuple(voxels.T)]
    role = np.where(labels == 1, 1, np.where(labels == 5, 2, 0))
    channels, g, _ = n_low
    n_vox = len(voxels)
    w_low = np.zeros((n_vox, channels, g, g), dtype=np.float32)
    early = np.flatnonzero(role == 1)
    # Receptive fields: a Gaussian on the grid, centre drawn per voxel; channel mix per voxel.
    gy, gx = np.mgrid[0:g, 0:g]
    centres = rng.uniform(0, g - 1, size=(len(early), 2))
    widths = rng.uniform(0.8, 2.0, size=len(early))
    rf = np.exp(-((gx[None] - centres[:, 0, None, None]) ** 2 + (gy[None] - centres[:, 1, None, None]) ** 2) / (2 * widths[:, None, None] ** 2))
    mix = rng.normal(size=(len(early), channels)) + np.array([1.5, 0.0, 0.0])  # luminance-dominated
    w_low[early] = (mix[:, :, None, None] * rf[:, None]).astype(np.float32)
    w_attr = np.zeros((n_vox, n_attr), dtype=np.float32)
    ventral = np.flatnonzero(role == 2)
    w_attr[ventral] = rng.normal(size=(len(ventral), n_attr)).astype(np.float32)
    return {"voxels": voxels, "role": role, "w_low": w_low.reshape(n_vox, -1), "w_attr": w_attr}


def _standardise(signal: np.ndarray) -> np.ndarray:
    """Each column to zero mean and unit sd over images (constant columns stay 0)."""
    sd = signal.std(axis=0)
    return np.where(sd > 0, (signal - signal.mean(axis=0)) / np.where(sd > 0, sd, 1), 0).astype(np.float32)


def write_synthetic_nsd(root: str | os.PathLike, design: SyntheticDesign, pycortex_cache: str | os.PathLike) -> None:
    """Write the whole mini-NSD under ``root`` in NSD's layout (both betas formats).

    Files: see :mod:`brainldm.nsd`; plus ``ground_truth/`` with the planted weights,
    voxel roles and per-image low-level features and attributes.

    With ``design.nsd_quirks``: the ROI volumes are int16 with -1 outside the brain
    mask (NSD's "outside" label; 0 = brain without label); the brain voxels in the
    top 2 % of the z axis (the edge of the imaged slab) are exactly 0 in the last
    session; every second subject has one session fewer (responses and betas; not
    when ``design.n_sessions`` is a per-subject mapping, which is taken as it is); and
    every second subject's grid is S1's padded by ``GRID_PAD`` (its affine keeps every
    voxel's scanner position: the same brain on a grid of its own); and imgBrick holds
    at least one image that no subject saw.
    """
    design.check()
    root = Path(root)
    rng = np.random.default_rng(design.seed)
    anat = s1_anatomy(pycortex_cache)

    # Stimuli and captions.
    scene_list = [scenes.random_scene(rng) for _ in range(design.n_images)]
    exp = _design(design, rng)
    info = _stim_info(design, exp, rng)
    stim_file = nsd.path(root, "stimuli")
    with atomic_path(stim_file) as tmp, h5py.File(tmp, "w") as f:
        brick = f.create_dataset("imgBrick", (design.n_images, design.image_size, design.image_size, 3), dtype=np.uint8, chunks=(1, design.image_size, design.image_size, 3))
        for i, scene in enumerate(progress(scene_list, "synthetic images")):
            brick[i] = scenes.render(scene, design.image_size)
    images_low = scenes.low_level_features(_read_all(stim_file))
    attrs = np.stack([scenes.attributes(s) for s in scene_list])
    for split in ("train2017", "val2017"):
        rows = info[info["cocoSplit"] == split]
        coco = {"info": {"description": "brainldm synthetic captions (COCO format)"}, "licenses": [],
                "images": [{"id": int(c), "file_name": f"{int(c):012d}.jpg"} for c in rows["cocoId"]], "annotations": []}
        for nsd_id, coco_id in zip(rows["nsdId"], rows["cocoId"]):
            for caption in scenes.captions(scene_list[nsd_id], rng):
                coco["annotations"].append({"image_id": int(coco_id), "id": len(coco["annotations"]) + 1, "caption": caption})
        kind = "captions_train" if split == "train2017" else "captions_val"
        with atomic_path(nsd.path(root, kind)) as tmp:
            tmp.write_text(json.dumps(coco))
    with atomic_path(nsd.path(root, "expdesign")) as tmp:
        scipy.io.savemat(tmp, exp)
    with atomic_path(nsd.path(root, "stim_info")) as tmp:
        info.to_csv(tmp)

    # Brain responses.
    low_std = _standardise(scenes.local_contrast(images_low).reshape(design.n_images, -1))
    attr_std = _standardise(attrs)
    truth_dir = root / "ground_truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    np.save(truth_dir / "low_level.npy", images_low)
    np.save(truth_dir / "attributes.npy", attrs)
    (truth_dir / "attribute_names.json").write_text(json.dumps(scenes.attribute_names()))
    for i, subject in enumerate(design.subjects):
        name = nsd.subject_name(subject)
        srng = np.random.default_rng([design.seed, subject])
        sanat = padded_anatomy(anat, GRID_PAD) if design.nsd_quirks and i % 2 == 1 else anat
        weights = _voxel_weights(sanat, images_low.shape[1:], attrs.shape[1], srng)
        signal = low_std @ weights["w_low"].T + attr_std @ weights["w_attr"].T  # (n_images, n_vox)
        signal = _standardise(signal)
        np.savez(truth_dir / f"{name}.npz", **weights)
        for kind, key in (("brainmask", "brainmask"), ("roi_streams", "streams"), ("roi_prf-visualrois", "prf")):
            volume = sanat[key]
            if design.nsd_quirks and key != "brainmask":
                volume = np.where(sanat["brainmask"] > 0, volume.astype(np.int16), np.int16(-1)).astype(np.int16)
            _save_nifti(volume, sanat["affine"], nsd.path(root, kind, name))
        responses = _responses(subject, design, exp, srng)
        responses = responses.loc[responses["SESSION"] <= design.sessions_of(subject)].reset_index(drop=True)
        with atomic_path(nsd.path(root, "responses", name)) as tmp:
            responses.to_csv(tmp, sep="\t", index=False)
        _write_betas(root, name, design, responses, signal, weights["voxels"], sanat["brainmask"].shape,
                     sanat["affine"], srng)


def _read_all(stim_file: Path) -> np.ndarray:
    with h5py.File(stim_file, "r") as f:
        return f["imgBrick"][:]


def _write_betas(root: Path, name: str, design: SyntheticDesign, responses: pd.DataFrame, signal: np.ndarray,
                 voxels: np.ndarray, grid: tuple[int, int, int], affine: np.ndarray, rng: np.random.Generator) -> None:
    """One .hdf5 (trials, z, y, x) and one .nii.gz (x, y, z, trials) per session, int16 = psc x 300."""
    n_vox = len(voxels)
    n_sessions = int(responses["SESSION"].max())
    if design.nsd_quirks:  # brain voxels at the top edge of the slab: no data in the last session
        edge_z = np.quantile(voxels[:, 2], 0.98)
        edge = voxels[:, 2] >= edge_z
    for session in progress(range(1, n_sessions + 1), f"{name} betas sessions"):
        rows = responses["SESSION"].to_numpy() == session
        ids = responses.loc[rows, "nsd_id"] if "nsd_id" in responses else responses.loc[rows, "73KID"] - 1
        clean = signal[ids.to_numpy()]
        noisy = clean + rng.normal(0, 1.0 / design.snr, size=clean.shape)
        scale = rng.uniform(0.7, 1.3, size=n_vox)
        offset = rng.normal(0, 0.5, size=n_vox)
        psc = SIGNAL_PSC * (noisy * scale + offset)
        values = np.clip(np.round(psc * nsd.BETA_SCALE), -32768, 32767).astype(np.int16)
        if design.nsd_quirks and session == n_sessions:
            values[:, edge] = 0
        vol = np.zeros((len(values),) + tuple(grid[::-1]), dtype=np.int16)  # (trials, z, y, x)
        vol[:, voxels[:, 2], voxels[:, 1], voxels[:, 0]] = values
        with atomic_path(nsd.path(root, "betas_hdf5", name, session)) as tmp, h5py.File(tmp, "w") as f:
            if design.nsd_quirks:  # NSD's layout: one uncompressed chunk per voxel time series (here only the brain's)
                dset = f.create_dataset("betas", shape=vol.shape, dtype="<i2", chunks=(len(values), 1, 1, 1), fillvalue=0)
                for series, (x, y, z) in zip(np.ascontiguousarray(values.T), voxels.tolist()):
                    dset.id.write_direct_chunk((0, z, y, x), series.tobytes())
            else:
                f.create_dataset("betas", data=vol, chunks=(len(values), 1, grid[1], grid[0]), compression="gzip", compression_opts=1)
        _save_nifti(np.ascontiguousarray(vol.transpose(3, 2, 1, 0)), affine, nsd.path(root, "betas_nifti", name, session))
