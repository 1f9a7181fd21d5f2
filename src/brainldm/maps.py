"""Cortical maps of the encoding results: NIfTI volumes and pycortex flatmaps.

Every map is written as a NIfTI volume in the subject's functional grid (affine and
header of the brain mask), so any viewer opens it, and, when a pycortex subject
and transform are configured, as a flatmap PNG:

- ``single``: r of the z, c and zc models (sequential, 0 to ``r_vmax``), shown
  where the model is significant (BH-FDR);
- ``noise`` / ``stage``: unique variance of zc minus that of z (diverging: blue =
  z, red = zc), shown where the joint model is significant;
- ``layers``: the best U-Net layer per voxel (categorical, with a legend).

ROI outlines are drawn when Inkscape is installed (pycortex needs it for them).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from brainldm.io import atomic_dir, atomic_path

log = logging.getLogger("brainldm.maps")

LAYER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def load_grid(brainmask: str | os.PathLike) -> nib.Nifti1Image:
    """The subject's functional grid: the brain mask NIfTI (x, y, z)."""
    path = Path(brainmask)
    if not path.is_file():
        raise FileNotFoundError(f"brain mask {path} is missing; it defines the grid of the maps (run the data stage)")
    try:
        img = nib.load(str(path))
        if len(img.shape) != 3:
            raise ValueError(f"shape {img.shape}")
    except Exception as err:  # nibabel raises several types for corrupt files
        raise ValueError(f"brain mask {path} is not a readable 3-D NIfTI ({err}); rerun the data stage") from err
    return img


def check_voxels(voxels: np.ndarray, shape: tuple[int, ...], source: str) -> np.ndarray:
    """(n_vox, 3) integer (x, y, z) indices inside ``shape``."""
    voxels = np.asarray(voxels)
    if voxels.ndim != 2 or voxels.shape[1] != 3 or not np.issubdtype(voxels.dtype, np.integer):
        raise ValueError(f"{source} must be (n_vox, 3) integer voxel indices, got {voxels.shape} {voxels.dtype}")
    if (voxels < 0).any() or (voxels >= np.array(shape[:3])).any():
        raise ValueError(f"{source} has voxel indices outside the brain mask's grid {shape[:3]}; rerun ingest")
    return voxels


def to_volume(values: np.ndarray, voxels: np.ndarray, shape: tuple[int, ...], fill: float = np.nan, dtype: Any = np.float32) -> np.ndarray:
    """Scatter per-voxel values (n_vox,) into an (x, y, z) volume; other voxels get ``fill``."""
    vol = np.full(shape[:3], fill, dtype=dtype)
    vol[voxels[:, 0], voxels[:, 1], voxels[:, 2]] = values
    return vol


def to_reference_grid(vol: np.ndarray, affine: np.ndarray, ref_shape: tuple[int, int, int],
                      ref_affine: np.ndarray) -> np.ndarray:
    """An (x, y, z) volume on grid ``affine`` resampled onto another grid (nearest neighbour).

    Each reference voxel takes the value of the voxel of ``vol`` nearest to the same
    scanner position (by the two affines); positions outside ``vol`` are NaN. Exact for
    grids that differ by whole voxels (e.g. a padded or cropped copy). Returns
    ``ref_shape`` float32.
    """
    ijk = np.indices(ref_shape).reshape(3, -1)
    to_vol = np.linalg.inv(affine) @ ref_affine  # reference voxel -> voxel of vol
    src = np.rint(to_vol[:3, :3] @ ijk + to_vol[:3, 3:]).astype(np.int64)
    inside = ((src >= 0) & (src < np.array(vol.shape[:3])[:, None])).all(0)
    out = np.full(ijk.shape[1], np.nan, dtype=np.float32)
    out[inside] = vol[src[0, inside], src[1, inside], src[2, inside]]
    return out.reshape(ref_shape)


def write_nifti(path: str | os.PathLike, vol: np.ndarray, grid: nib.Nifti1Image) -> None:
    """Write an (x, y, z) volume with the grid's affine and spatial header, atomically."""
    img = nib.Nifti1Image(vol, grid.affine)
    img.header.set_xyzt_units(*grid.header.get_xyzt_units())
    img.header.set_qform(grid.affine, code=int(grid.header["qform_code"]) or 1)
    img.header.set_sform(grid.affine, code=int(grid.header["sform_code"]) or 1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


class Flatmapper:
    """pycortex flatmaps of (x, y, z) volumes for one subject and transform."""

    def __init__(self, subject: str, xfm: str, grid: nib.Nifti1Image, cache_dir: str | os.PathLike,
                 filestore: str | None = None, resample: bool = False):
        """grid: the maps' functional grid (the brain mask). resample: when the
        transform's reference grid is another one, resample the maps onto it by the two
        affines (nearest neighbour) instead of stopping; see ``to_reference_grid``."""
        from brainldm.pycortex_db import prepare_filestore

        if filestore:
            os.environ.setdefault("MPLBACKEND", "Agg")
            import cortex

            if not Path(filestore).is_dir():
                raise FileNotFoundError(f"config encoding.pycortex_filestore: {filestore} is not a folder")
            cortex.db.filestore = str(filestore)
            cortex.db.reload_subjects()
            cortex.database.default_filestore = str(filestore)
            self.filestore = Path(filestore)
        else:
            self.filestore = prepare_filestore(cache_dir)
        import cortex

        if subject not in cortex.db.subjects:
            raise ValueError(
                f"config encoding.pycortex_subject: {subject!r} is not in the pycortex filestore {self.filestore} "
                f"(has {sorted(cortex.db.subjects)}); import it with cortex.freesurfer.import_subj (see config/README.md)"
            )
        try:
            ref = cortex.db.get_xfm(subject, xfm).reference
        except Exception as err:
            raise ValueError(f"config encoding.pycortex_xfm: transform {xfm!r} of pycortex subject {subject!r} not found ({err})") from err
        same_grid = tuple(ref.shape[:3]) == tuple(grid.shape[:3]) and np.allclose(ref.affine, grid.affine, atol=1e-4)
        self.resample = None
        if not same_grid and resample:
            self.resample = (grid.affine, tuple(ref.shape[:3]), ref.affine)
            log.info("maps on grid %s are resampled onto pycortex transform %s/%s's grid %s by their affines "
                     "(encoding.pycortex_resample)", tuple(grid.shape[:3]), subject, xfm, tuple(ref.shape[:3]))
        elif tuple(ref.shape[:3]) != tuple(grid.shape[:3]):
            raise ValueError(
                f"pycortex transform {subject}/{xfm} expects a functional grid {ref.shape[:3]} but the brain mask is "
                f"{tuple(grid.shape[:3])}; set encoding.pycortex_subject / pycortex_xfm to this subject's transform "
                "(or, for data in the transform reference's scanner space, encoding.pycortex_resample: true)"
            )
        self.subject, self.xfm = subject, xfm
        self.with_rois = shutil.which("inkscape") is not None
        if not self.with_rois:
            log.info("inkscape is not installed: flatmaps without ROI outlines")

    def png(self, path: str | os.PathLike, vol: np.ndarray, title: str, cmap: Any, vmin: float, vmax: float,
            legend: list[tuple[str, str]] | None = None) -> None:
        """Render an (x, y, z) volume (NaN = not shown) to a flatmap PNG, atomically."""
        import cortex
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch

        from brainldm.pycortex_db import filestore_lock

        if self.resample is not None:
            vol = to_reference_grid(vol, *self.resample)
        volume = cortex.Volume(np.ascontiguousarray(vol.T, dtype=np.float32), self.subject, self.xfm,
                               vmin=vmin, vmax=vmax, cmap=cmap)
        with filestore_lock(self.filestore):  # the first render writes the flatmap cache
            fig = cortex.quickflat.make_figure(volume, with_rois=self.with_rois, with_labels=self.with_rois,
                                               with_curvature=True, with_colorbar=legend is None, height=768)
        fig.suptitle(title, fontsize=14)
        if legend:
            fig.legend(handles=[Patch(color=c, label=lab) for lab, c in legend], loc="lower center",
                       ncol=len(legend), frameon=False, fontsize=12)
        with atomic_path(path) as tmp:
            fig.savefig(str(tmp), format="png", dpi=100, facecolor="white")
        plt.close(fig)


def _tag(dataset: str) -> str:
    """'noise/s0.50' -> 's0.50'."""
    return dataset.rsplit("/", 1)[-1]


def map_specs(npz: dict[str, np.ndarray], r_vmax: float) -> list[dict[str, Any]]:
    """The maps of one analysis: name, per-voxel values, whether rendered, colours, title."""
    analysis = str(npz["analysis"])
    specs: list[dict[str, Any]] = []
    if analysis == "single":
        for i, name in enumerate(npz["names"]):
            r, sig = npz["r"][i], npz["significant"][i]
            specs.append(dict(name=f"{name}_r", values=r, desc=f"test Pearson r of the {name} model (all voxels)"))
            specs.append(dict(name=f"{name}_significant", values=sig.astype(np.int16), fill=0, dtype=np.int16,
                              desc=f"1 where the {name} model is significant (BH-FDR)"))
            specs.append(dict(name=f"{name}_r", png=True, values=np.where(sig, r, np.nan), cmap="inferno", vmin=0.0,
                              vmax=r_vmax, title=f"{name} model: test r (significant voxels, {int(sig.sum())})",
                              desc=f"flatmap of {name}_r where significant"))
    elif analysis in ("noise", "stage"):
        what = "noise level (strength)" if analysis == "noise" else "denoising stage (fraction)"
        for i, ds in enumerate(npz["datasets"]):
            tag, sig = _tag(str(ds)), npz["significant"][i]
            uz, uzc = npz["unique_z"][i], npz["unique_zc"][i]
            for key, v, d in (("unique_z", uz, "unique variance (test R²) of z"), ("unique_zc", uzc, "unique variance of zc"),
                              ("joint_r", npz["r"][i], "test r of the joint z+zc model")):
                specs.append(dict(name=f"{tag}_{key}", values=v, desc=f"{d} at {what} {tag}"))
            specs.append(dict(name=f"{tag}_joint_significant", values=sig.astype(np.int16), fill=0, dtype=np.int16,
                              desc=f"1 where the joint model is significant at {tag}"))
            diff = np.where(sig, uzc - uz, np.nan)
            shown = np.abs(diff[np.isfinite(diff)])
            vmax = float(max(np.percentile(shown, 99), 1e-3)) if shown.size else 0.05
            specs.append(dict(name=f"{tag}_unique", png=True, values=diff, cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                              title=f"{analysis} {tag}: unique variance zc - z (blue: z, red: zc; joint model significant)",
                              desc=f"flatmap of unique_zc - unique_z at {tag} where the joint model is significant"))
    elif analysis == "layers":
        layers = [str(x) for x in npz["layers"]]
        for i, frac in enumerate(npz["fractions"]):
            tag = f"f{float(frac):.2f}"
            best = npz["best_layer"][i].astype(np.int16) + 1  # 0 = no significant layer
            specs.append(dict(name=f"{tag}_best_layer", values=best, fill=0, dtype=np.int16,
                              desc=f"best U-Net layer at stage {tag}: 0 none, " + ", ".join(f"{k + 1} {x}" for k, x in enumerate(layers))))
            for j, layer in enumerate(layers):
                specs.append(dict(name=f"{tag}_{layer}_r", values=npz["r"][i, j], desc=f"test r of the {layer} model at {tag}"))
            from matplotlib.colors import ListedColormap

            colors = [LAYER_COLORS[k % len(LAYER_COLORS)] for k in range(len(layers))]
            specs.append(dict(name=f"{tag}_best_layer", png=True, values=np.where(best > 0, best, np.nan).astype(np.float32),
                              cmap=ListedColormap(colors, name="layers"), vmin=0.5, vmax=len(layers) + 0.5,
                              legend=list(zip(layers, colors)),
                              title=f"stage {tag}: best U-Net layer (significant voxels, {int((best > 0).sum())})",
                              desc=f"flatmap of the best layer at {tag}"))
    else:
        raise ValueError(f"unknown encoding analysis {analysis!r} in the results file")
    return specs


def write_maps(npz_path: str, voxels_path: str, brainmask: str, out_dir: str, subject: str,
               pycortex_subject: str | None, pycortex_xfm: str | None, cache_dir: str,
               pycortex_filestore: str | None = None, r_vmax: float = 0.5, pycortex_resample: bool = False) -> list[Path]:
    """All maps of one analysis of one subject into ``out_dir`` (written whole, then renamed).

    npz_path: an encode_* result; voxels_path: (n_vox, 3) (x, y, z) indices of its
    voxels; brainmask: the subject's brain mask NIfTI (grid and affine).
    pycortex_subject / pycortex_xfm: pycortex names ("{subject}" is replaced by the
    subject), None = NIfTI only; pycortex_resample: see ``Flatmapper``. Writes
    ``index.tsv`` (file, description). Returns the files.
    """
    if not Path(npz_path).is_file():
        raise FileNotFoundError(f"{npz_path} is missing; run the encode rule first")
    with np.load(npz_path) as fh:
        npz = {k: fh[k] for k in fh.files}
    if not Path(voxels_path).is_file():
        raise FileNotFoundError(f"{voxels_path} is missing; run the ingest stage first")
    grid = load_grid(brainmask)
    voxels = check_voxels(np.load(voxels_path), grid.shape, voxels_path)
    specs = map_specs(npz, r_vmax)
    n_vox = len(voxels)
    for spec in specs:
        if spec["values"].shape != (n_vox,):
            raise ValueError(f"{npz_path} map {spec['name']} has {spec['values'].shape} values for {n_vox} voxels in {voxels_path}; rerun encoding")
    mapper = None
    if pycortex_subject and pycortex_xfm:
        mapper = Flatmapper(pycortex_subject.format(subject=subject), pycortex_xfm.format(subject=subject),
                            grid, cache_dir, pycortex_filestore, pycortex_resample)
    else:
        log.info("no pycortex subject/transform configured (encoding.pycortex_subject, encoding.pycortex_xfm): "
                 "writing NIfTI maps only. To get flatmaps, import the subject's FreeSurfer surfaces with "
                 "cortex.freesurfer.import_subj and name it in the config (see config/README.md).")
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        rows = []
        for spec in specs:
            vol = to_volume(spec["values"], voxels, grid.shape, spec.get("fill", np.nan), spec.get("dtype", np.float32))
            if spec.get("png"):
                if mapper is None:
                    continue
                fname = f"{spec['name']}.png"
                mapper.png(tmp / fname, vol, f"{subject} {spec['title']}", spec["cmap"], spec["vmin"], spec["vmax"], spec.get("legend"))
            else:
                fname = f"{spec['name']}.nii.gz"
                write_nifti(tmp / fname, vol, grid)
            rows.append(f"{fname}\t{spec['desc']}")
            log.info("wrote %s", fname)
        (tmp / "index.tsv").write_text("file\tdescription\n" + "\n".join(rows) + "\n")
    return sorted(out.iterdir())
