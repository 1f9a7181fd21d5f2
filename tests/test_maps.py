"""Encoding maps: NIfTI volumes in the functional grid, pycortex flatmaps on S1, bad inputs."""

from __future__ import annotations

import logging
import os

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from brainldm import maps
from brainldm.pycortex_db import prepare_filestore


def _single_npz(path, n_vox, rng):
    r = rng.uniform(-0.1, 0.6, (3, n_vox)).astype(np.float32)
    sig = r > 0.3
    np.savez(path, analysis="single", names=np.array(["z", "c", "zc"]), r=r, significant=sig,
             p=np.zeros_like(r), r2=r**2, alpha=np.ones_like(r), n_test=40, zc_dataset="noise/s0.80")
    return r, sig


def _layers_npz(path, n_vox, rng):
    best = rng.integers(-1, 3, (1, n_vox)).astype(np.int16)
    np.savez(path, analysis="layers", layers=np.array(["down1", "mid", "up2"]), fractions=np.array([0.44]),
             r=rng.uniform(0, 0.5, (1, 3, n_vox)).astype(np.float32), p=np.zeros((1, 3, n_vox), np.float32),
             significant=np.ones((1, 3, n_vox), bool), best_layer=best, n_test=40)
    return best


@pytest.fixture
def small_grid(tmp_path):
    affine = np.diag([2.0, 2.5, 3.0, 1.0])
    affine[:3, 3] = [-5, 10, 2]
    mask = np.zeros((6, 5, 4), np.uint8)
    mask[1:5, 1:4, 1:3] = 1
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "brainmask.nii.gz")
    voxels = np.argwhere(mask).astype(np.int64)
    np.save(tmp_path / "voxels.npy", voxels)
    return tmp_path, affine, voxels


def test_nifti_maps_in_the_functional_grid(small_grid, caplog):
    tmp, affine, voxels = small_grid
    rng = np.random.default_rng(0)
    r, sig = _single_npz(tmp / "single.npz", len(voxels), rng)
    with caplog.at_level(logging.INFO, logger="brainldm.maps"):
        files = maps.write_maps(str(tmp / "single.npz"), str(tmp / "voxels.npy"), str(tmp / "brainmask.nii.gz"),
                                str(tmp / "out"), "subj01", None, None, str(tmp / "pcx"))
    names = {f.name for f in files}
    assert {"z_r.nii.gz", "c_r.nii.gz", "zc_r.nii.gz", "z_significant.nii.gz", "index.tsv"} <= names
    assert not any(n.endswith(".png") for n in names)
    assert "NIfTI maps only" in caplog.text
    img = nib.load(tmp / "out" / "c_r.nii.gz")
    np.testing.assert_allclose(img.affine, affine)
    assert img.shape == (6, 5, 4)
    data = img.get_fdata()
    np.testing.assert_allclose(data[tuple(voxels.T)], r[1], rtol=1e-6)
    outside = np.ones(img.shape, bool)
    outside[tuple(voxels.T)] = False
    assert np.isnan(data[outside]).all()
    sig_img = np.asarray(nib.load(tmp / "out" / "z_significant.nii.gz").dataobj)
    np.testing.assert_array_equal(sig_img[tuple(voxels.T)], sig[0].astype(int))
    index = (tmp / "out" / "index.tsv").read_text().splitlines()
    assert index[0] == "file\tdescription" and len(index) == len(names)  # header + every map


def test_best_layer_nifti_labels(small_grid):
    tmp, _, voxels = small_grid
    best = _layers_npz(tmp / "layers.npz", len(voxels), np.random.default_rng(1))
    maps.write_maps(str(tmp / "layers.npz"), str(tmp / "voxels.npy"), str(tmp / "brainmask.nii.gz"),
                    str(tmp / "out"), "subj01", None, None, str(tmp / "pcx"))
    vol = np.asarray(nib.load(tmp / "out" / "f0.44_best_layer.nii.gz").dataobj)
    np.testing.assert_array_equal(vol[tuple(voxels.T)], best[0] + 1)  # 0 = none, 1.. = layers
    assert "1 down1, 2 mid, 3 up2" in (tmp / "out" / "index.tsv").read_text()


def test_bad_inputs(small_grid, tmp_path, pycortex_cache):
    tmp, _, voxels = small_grid
    _single_npz(tmp / "single.npz", len(voxels), np.random.default_rng(0))
    args = [str(tmp / "single.npz"), str(tmp / "voxels.npy"), str(tmp / "brainmask.nii.gz"), str(tmp / "out"), "subj01"]
    with pytest.raises(FileNotFoundError, match="brain mask .*missing"):
        maps.write_maps(*args[:2], str(tmp / "nope.nii.gz"), *args[3:], None, None, str(tmp / "pcx"))
    (tmp_path / "bad.nii.gz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.nii.gz is not a readable 3-D NIfTI"):
        maps.write_maps(*args[:2], str(tmp_path / "bad.nii.gz"), *args[3:], None, None, str(tmp / "pcx"))
    np.save(tmp_path / "far.npy", voxels + 10)
    with pytest.raises(ValueError, match="outside the brain mask's grid"):
        maps.write_maps(args[0], str(tmp_path / "far.npy"), *args[2:], None, None, str(tmp / "pcx"))
    np.save(tmp_path / "few.npy", voxels[:5])
    with pytest.raises(ValueError, match="values for 5 voxels"):
        maps.write_maps(args[0], str(tmp_path / "few.npy"), *args[2:], None, None, str(tmp / "pcx"))
    with pytest.raises(ValueError, match=r"pycortex transform S1/fullhead expects a functional grid \(100, 100, 31\)"):
        maps.write_maps(*args, "S1", "fullhead", str(pycortex_cache))
    with pytest.raises(ValueError, match="encoding.pycortex_subject: 'subj01' is not in the pycortex filestore"):
        maps.write_maps(*args, "{subject}", "fullhead", str(pycortex_cache))
    assert not (tmp / "out").exists()


def test_prepare_filestore_is_writable_and_idempotent(pycortex_cache):
    path = prepare_filestore(pycortex_cache)
    assert (path / "S1" / "transforms" / "fullhead").is_dir()
    assert os.access(path, os.W_OK)
    assert prepare_filestore(pycortex_cache) == path
    import cortex

    assert cortex.db.filestore == str(path)


def test_flatmaps_on_S1(tmp_path, pycortex_cache):
    """Real pycortex renders of maps on the bundled subject S1 (fullhead grid)."""
    prepare_filestore(pycortex_cache)
    import cortex

    ref = cortex.db.get_xfm("S1", "fullhead").reference
    mask_zyx = cortex.db.get_mask("S1", "fullhead", "thick")
    mask = mask_zyx.T.astype(np.uint8)  # (x, y, z) like a NIfTI
    nib.save(nib.Nifti1Image(mask, ref.affine), tmp_path / "brainmask.nii.gz")
    voxels = np.argwhere(mask).astype(np.int64)
    np.save(tmp_path / "voxels.npy", voxels)
    rng = np.random.default_rng(0)
    _single_npz(tmp_path / "single.npz", len(voxels), rng)
    _layers_npz(tmp_path / "layers.npz", len(voxels), rng)
    for analysis in ("single", "layers"):
        files = maps.write_maps(str(tmp_path / f"{analysis}.npz"), str(tmp_path / "voxels.npy"),
                                str(tmp_path / "brainmask.nii.gz"), str(tmp_path / analysis), "subj01",
                                "S1", "fullhead", str(pycortex_cache))
        pngs = [f for f in files if f.suffix == ".png"]
        assert len(pngs) == (3 if analysis == "single" else 1)
        for png in pngs:
            im = np.asarray(Image.open(png).convert("RGB")).astype(int)
            assert im.shape[0] >= 700 and im.shape[1] > im.shape[0]
            # saturated (data-coloured) pixels, not only grey curvature and white background
            sat = im.max(2) - im.min(2)
            assert (sat > 80).mean() > 0.05, png
    # the layer legend colours appear in the best-layer map
    im = np.asarray(Image.open(tmp_path / "layers" / "f0.44_best_layer.png").convert("RGB")).astype(int)
    for hexcol in maps.LAYER_COLORS[:3]:
        rgb = np.array([int(hexcol[i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(im - rgb).sum(2) < 10).sum() > 100, hexcol


def test_to_reference_grid_undoes_a_padding_and_fills_nan_outside():
    rng = np.random.default_rng(0)
    ref_affine = np.diag([1.8, 1.8, 1.8, 1.0])
    ref_affine[:3, 3] = [-70, -90, -60]
    vol = rng.normal(size=(7, 6, 5)).astype(np.float32)
    pad = ((2, 1), (0, 3), (1, 0))
    padded = np.pad(vol, pad, constant_values=np.nan)
    shift = np.eye(4)
    shift[:3, 3] = [-2, 0, -1]
    np.testing.assert_array_equal(maps.to_reference_grid(padded, ref_affine @ shift, vol.shape, ref_affine), vol)
    # a grid that covers only part of the reference (its voxel 0 is the reference's x = 2): NaN elsewhere
    start = np.eye(4)
    start[0, 3] = 2
    part = maps.to_reference_grid(vol[2:], ref_affine @ start, vol.shape, ref_affine)
    np.testing.assert_array_equal(part[2:], vol[2:])
    assert np.isnan(part[:2]).all()


def test_flatmaps_of_a_padded_grid_equal_the_reference_grids_with_resampling(tmp_path, pycortex_cache):
    """A subject on its own grid (S1's, padded; the synthetic NSD quirk): with
    pycortex_resample its flatmaps are pixel for pixel those of the same maps on S1's grid;
    without, the grid mismatch stops with a message naming the key."""
    prepare_filestore(pycortex_cache)
    import cortex

    ref = cortex.db.get_xfm("S1", "fullhead").reference
    mask = cortex.db.get_mask("S1", "fullhead", "thick").T.astype(np.uint8)
    pad = ((2, 1), (0, 3), (1, 0))
    shift = np.eye(4)
    shift[:3, 3] = [-2, 0, -1]
    rng = np.random.default_rng(0)
    voxels = np.argwhere(mask).astype(np.int64)
    _single_npz(tmp_path / "single.npz", len(voxels), rng)
    pngs = {}
    for name, m, affine, vox in (("ref", mask, ref.affine, voxels),
                                 ("padded", np.pad(mask, pad), ref.affine @ shift, voxels + [2, 0, 1])):
        d = tmp_path / name
        d.mkdir()
        nib.save(nib.Nifti1Image(m, affine), d / "brainmask.nii.gz")
        np.save(d / "voxels.npy", vox)
        args = [str(tmp_path / "single.npz"), str(d / "voxels.npy"), str(d / "brainmask.nii.gz"), str(d / "maps"),
                "subj02", "S1", "fullhead", str(pycortex_cache)]
        if name == "padded":
            with pytest.raises(ValueError, match="encoding.pycortex_resample: true"):
                maps.write_maps(*args)
        files = maps.write_maps(*args, pycortex_resample=True)
        pngs[name] = {f.name: np.asarray(Image.open(f).convert("RGB")) for f in files if f.suffix == ".png"}
        # the NIfTI maps stay on the subject's own grid
        assert nib.load(d / "maps" / "z_r.nii.gz").shape == m.shape
    assert pngs["ref"].keys() == pngs["padded"].keys() and len(pngs["ref"]) == 3
    for key, im in pngs["ref"].items():
        np.testing.assert_array_equal(pngs["padded"][key], im)
