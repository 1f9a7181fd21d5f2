"""The synthetic mini-NSD reads back through NSD's readers with NSD's shapes, dtypes, labels and ids."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest

from brainldm import nsd, scenes
from brainldm.synthetic import SyntheticDesign

SUBJECTS = ("subj01", "subj02")


def test_design_files_are_nsd_shaped(synthetic_root):
    exp = nsd.read_expdesign(nsd.path(synthetic_root, "expdesign"))
    assert exp["subjectim"].shape == (8, 200)
    assert exp["masterordering"].shape == (1, 600)
    assert exp["sharedix"].shape == (1, 40)
    # 1-based: masterordering indexes the 200 columns of subjectim; ids index 1400 images
    assert exp["masterordering"].min() == 1 and exp["masterordering"].max() == 200
    assert exp["subjectim"].min() >= 1 and exp["subjectim"].max() <= 1400
    # the first n_shared columns of subjectim are the shared images, the same for everybody
    assert np.all(exp["subjectim"][:, :40] == exp["sharedix"])
    # every image is shown 3 times
    assert np.all(np.bincount(exp["masterordering"][0])[1:] == 3)
    info = nsd.read_stim_info(nsd.path(synthetic_root, "stim_info"))
    for column in ["cocoId", "cocoSplit", "cropBox", "loss", "nsdId", "flagged", "BOLD5000", "shared1000",
                   "subject1", "subject8", "subject1_rep0", "subject8_rep2"]:
        assert column in info.columns
    assert np.array_equal(info["nsdId"], np.arange(1400))
    assert set(info["cocoSplit"]) == {"train2017", "val2017"}
    assert info["shared1000"].sum() == 40


def test_responses_match_the_design(synthetic_root):
    exp = nsd.read_expdesign(nsd.path(synthetic_root, "expdesign"))
    for k, subject in enumerate(SUBJECTS):
        table = nsd.read_responses(nsd.path(synthetic_root, "responses", subject))
        assert len(table) == 600
        assert table["73KID"].min() >= 1  # 1-based
        expected = exp["subjectim"][k, exp["masterordering"][0] - 1]
        assert np.array_equal(table["73KID"], expected)
        assert np.array_equal(table["nsd_id"], expected - 1)
        assert list(table.groupby("SESSION").size()) == [150] * 4


def test_volumes_have_nsd_labels_and_both_betas_formats_agree(synthetic_root):
    mask, affine = nsd.read_volume(nsd.path(synthetic_root, "brainmask", "subj01"))
    streams, _ = nsd.read_volume(nsd.path(synthetic_root, "roi_streams", "subj01"))
    prf, _ = nsd.read_volume(nsd.path(synthetic_root, "roi_prf-visualrois", "subj01"))
    assert mask.shape == streams.shape == prf.shape == (100, 100, 31)  # pycortex S1 fullhead (x, y, z)
    assert set(np.unique(streams)) == {0, 1, 5}  # 1 early, 5 ventral
    assert set(np.unique(prf)) == {0, 1, 2, 3, 4, 5, 6}  # V1v..V3d
    assert np.all(mask[streams > 0] == 1) and np.all((prf > 0) == (streams == 1))
    h5 = nsd.path(synthetic_root, "betas_hdf5", "subj01", 2)
    nii = nsd.path(synthetic_root, "betas_nifti", "subj01", 2)
    with h5py.File(h5, "r") as f:
        assert f["betas"].shape == (150, 31, 100, 100) and f["betas"].dtype == np.int16
        from_h5 = f["betas"][:]
    img = nib.load(str(nii))
    assert img.shape == (100, 100, 31, 150) and img.get_data_dtype() == np.int16
    assert np.array_equal(np.asarray(img.dataobj), from_h5.transpose(3, 2, 1, 0))
    np.testing.assert_allclose(img.affine, affine)
    # values are percent signal change x 300: a few percent, so hundreds in int16 units
    inside = from_h5[:, mask.T > 0]
    assert 50 < np.abs(inside).mean() < 3000 and np.all(from_h5[:, mask.T == 0] == 0)
    voxels = np.argwhere(mask > 0)[:500]
    assert np.array_equal(nsd.read_betas(h5, voxels), nsd.read_betas(nii, voxels))


def test_images_and_captions(synthetic_root):
    with h5py.File(nsd.path(synthetic_root, "stimuli"), "r") as f:
        assert f["imgBrick"].shape == (1400, 64, 64, 3) and f["imgBrick"].dtype == np.uint8
    info = nsd.read_stim_info(nsd.path(synthetic_root, "stim_info"))
    files = {"train2017": nsd.path(synthetic_root, "captions_train"), "val2017": nsd.path(synthetic_root, "captions_val")}
    caps = nsd.read_captions(info, files, [0, 1, 1399])
    assert [len(c) for c in caps] == [5, 5, 5]
    assert len(set(caps[0])) == 5  # five different wordings
    images = nsd.read_images(nsd.path(synthetic_root, "stimuli"), [3, 1, 3])
    assert images.shape == (3, 64, 64, 3) and np.array_equal(images[0], images[2])


def test_captions_tell_the_truth():
    rng = np.random.default_rng(1)
    for _ in range(20):
        scene = scenes.random_scene(rng)
        for caption in scenes.captions(scene, rng):
            for obj in scene.objects:
                assert obj.shape in caption
            assert all(word not in caption for word in scenes.SHAPES if word not in {o.shape for o in scene.objects})


def test_ground_truth_is_written(synthetic_root):
    truth = np.load(synthetic_root / "ground_truth" / "subj01.npz")
    assert set(np.unique(truth["role"])) == {0, 1, 2}
    assert np.all(truth["w_low"][truth["role"] != 1] == 0) and np.all(truth["w_attr"][truth["role"] != 2] == 0)


def test_design_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="divisible by 3"):
        SyntheticDesign((1,), 1, 10, 2, 100, 32, 1.0, 0).check()
    with pytest.raises(ValueError, match="synthetic.n_images"):
        SyntheticDesign((1,), 2, 150, 10, 50, 32, 1.0, 0).check()


def test_per_subject_session_mapping_writes_each_subjects_sessions(tmp_path, pycortex_cache):
    """synthetic.n_sessions {1: 3, 2: 2}: subj01 gets 3 sessions, subj02 2 (responses and betas)."""
    from brainldm.synthetic import write_synthetic_nsd

    design = SyntheticDesign(subjects=(1, 2), n_sessions={1: 3, 2: 2}, trials_per_session=60, n_shared_images=10,
                             n_images=450, image_size=32, snr=1.0, seed=0)
    write_synthetic_nsd(tmp_path, design, pycortex_cache)
    for subject, n in (("subj01", 3), ("subj02", 2)):
        responses = nsd.read_responses(nsd.path(tmp_path, "responses", subject))
        assert sorted(responses["SESSION"].unique()) == list(range(1, n + 1))
        assert len(responses) == n * 60
        for fmt in ("hdf5", "nifti"):
            assert all(nsd.path(tmp_path, f"betas_{fmt}", subject, s).is_file() for s in range(1, n + 1))
            assert not nsd.path(tmp_path, f"betas_{fmt}", subject, n + 1).exists()


def test_per_subject_session_mapping_accepts_int_and_str_keys():
    from brainldm.nsd_layout import synthetic_session_counts

    assert synthetic_session_counts({1: 3, 2: 2}, [1, 2]) == {1: 3, 2: 2}
    assert synthetic_session_counts({"1": 3, "subj02": 2}, [1, 2], nsd_quirks=True) == {1: 3, 2: 2}
    assert synthetic_session_counts(4, [1, 2], nsd_quirks=True) == {1: 4, 2: 3}
    design = SyntheticDesign((1, 2), {"1": 3, "2": 2}, 60, 10, 450, 32, 1.0, 0)
    assert (design.sessions_of(1), design.sessions_of(2), design.n_trials) == (3, 2, 180)


def test_per_subject_session_mapping_must_name_every_subject():
    with pytest.raises(ValueError, match=r"synthetic\.n_sessions.*subj02"):
        SyntheticDesign((1, 2), {1: 3}, 60, 10, 450, 32, 1.0, 0).check()
    with pytest.raises(ValueError, match=r"synthetic\.n_sessions.*subj05"):
        SyntheticDesign((1, 5), {"1": 3, "2": 3}, 60, 10, 450, 32, 1.0, 0).check()
