"""brainldm.decoding on a small planted data set in the ingestion/feature file formats."""

import h5py
import numpy as np
import pandas as pd
import pytest

from brainldm import decoding
from brainldm.decoding import DecodingError, DecodingSettings

Z_SHAPE, C_SHAPE = (4, 3, 3), (6, 8)


def _write_dataset(root, seed=0, n_train_images=150, n_test=24, n_sessions=3, snr=1.0):
    """early voxels see z, ventral voxels see c; files as docs/contracts.md describes."""
    rng = np.random.default_rng(seed)
    n_images = n_train_images + n_test
    nsd_ids = rng.choice(5000, size=n_images, replace=False)
    z = rng.normal(size=(n_images,) + Z_SHAPE).astype(np.float32)
    c = rng.normal(size=(n_images,) + C_SHAPE).astype(np.float32) + 3.0
    w_early = rng.normal(size=(z[0].size, 60))
    w_ventral = rng.normal(size=(c[0].size, 50))
    train_img = np.repeat(np.arange(n_train_images), 2)
    rng.shuffle(train_img)
    sessions = np.sort(rng.integers(1, n_sessions + 1, size=train_img.size))

    def responses(img_idx):
        e = z.reshape(n_images, -1)[img_idx] @ w_early
        v = (c.reshape(n_images, -1)[img_idx] - 3.0) @ w_ventral
        e += rng.normal(size=e.shape) * e.std() / snr
        v += rng.normal(size=v.shape) * v.std() / snr
        return e.astype(np.float32), v.astype(np.float32)

    ingest = root / "ingest"
    ingest.mkdir(parents=True)
    e_tr, v_tr = responses(train_img)
    test_idx = np.arange(n_train_images, n_images)
    reps = [responses(test_idx) for _ in range(3)]
    e_te = np.mean([r[0] for r in reps], 0)
    v_te = np.mean([r[1] for r in reps], 0)
    for roi, tr, te in [("early", e_tr, e_te), ("ventral", v_tr, v_te)]:
        np.save(ingest / f"betas_{roi}_train.npy", tr)
        np.save(ingest / f"betas_{roi}_test.npy", te)
    pd.DataFrame(dict(row=np.arange(train_img.size), nsd_id=nsd_ids[train_img], session=sessions,
                      trial=np.arange(train_img.size))).to_csv(ingest / "train.tsv", sep="\t", index=False)
    order = np.argsort(nsd_ids[test_idx])
    for roi, te in [("early", e_te), ("ventral", v_te)]:
        np.save(ingest / f"betas_{roi}_test.npy", te[order])
    pd.DataFrame(dict(row=np.arange(n_test), nsd_id=nsd_ids[test_idx][order],
                      n_repeats=3)).to_csv(ingest / "test.tsv", sep="\t", index=False)
    feats = root / "features"
    feats.mkdir()
    file_order = rng.permutation(n_images)  # rows must be matched by nsd_id, not position
    for name, arr in [("z", z), ("c", c)]:
        with h5py.File(feats / f"{name}.h5", "w") as f:
            f["nsd_id"] = nsd_ids[file_order].astype(np.int64)
            f[name] = arr[file_order]
    return ingest, feats


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("decoding"))


def _run(dataset, target, rois, tmp_path, **settings):
    ingest, feats = dataset
    out = tmp_path / f"{target}_{'_'.join(rois)}"
    settings = dict(dict(backend="numpy", alphas="wide"), **settings)
    return decoding.run(
        [ingest / f"betas_{r}_train.npy" for r in rois], [ingest / f"betas_{r}_test.npy" for r in rois],
        ingest / "train.tsv", ingest / "test.tsv", feats / f"{target}.h5",
        out / f"{target}.npz", out / "scores.tsv", subject="subj01", target=target, rois=rois,
        settings=settings,
    ), out


def test_z_from_early_and_c_from_ventral_beat_the_other_roi_and_the_control(dataset, tmp_path):
    z_early, out = _run(dataset, "z", ["early"], tmp_path)
    z_ventral, _ = _run(dataset, "z", ["ventral"], tmp_path)
    c_ventral, _ = _run(dataset, "c", ["ventral"], tmp_path)
    c_early, _ = _run(dataset, "c", ["early"], tmp_path)
    assert np.mean(z_early.r_dim) > np.mean(z_ventral.r_dim) + 0.3
    assert np.mean(c_ventral.r_dim) > np.mean(c_early.r_dim) + 0.3
    for good in (z_early, c_ventral):
        assert np.mean(good.r_dim) > 0.5
        assert np.mean(good.r_dim) > np.mean(good.shuffled["r_dim"]) + 0.4
        assert abs(np.mean(good.shuffled["r_dim"])) < 0.15
    # latent identification: decoded vs true test latents, two-way
    assert z_early.identification.mean() > 0.9
    assert 0.3 < z_early.shuffled["identification"].mean() < 0.7

    saved = np.load(out / "z.npz")
    test = pd.read_csv(dataset[0] / "test.tsv", sep="\t")
    assert saved["pred"].shape == (len(test),) + Z_SHAPE and saved["pred"].dtype == np.float32
    np.testing.assert_array_equal(saved["nsd_id"], test["nsd_id"])
    assert saved["best_alphas"].shape == (int(np.prod(Z_SHAPE)),)
    assert saved["r_image"].shape == saved["shuffled_r_image"].shape == (len(test),)
    scores = pd.read_csv(out / "scores.tsv", sep="\t")
    assert list(scores["fit"]) == ["decoder", "shuffled"]


def test_several_rois_are_stacked_and_intercept_switch(dataset, tmp_path):
    both, _ = _run(dataset, "c", ["early", "ventral"], tmp_path, shuffle_control=False)
    assert both.info["n_voxels"] == 110 and not both.shuffled
    # c has mean 3: without an intercept (the reference) the decoded c loses it
    no_icpt, _ = _run(dataset, "c", ["ventral"], tmp_path, fit_intercept=False, shuffle_control=False)
    assert abs(both.pred.mean() - 3.0) < 0.3
    assert abs(no_icpt.pred.mean()) < 0.3


def test_bad_inputs(dataset, tmp_path):
    ingest, feats = dataset
    np.save(tmp_path / "betas_empty_train.npy", np.zeros((300, 0), np.float32))
    np.save(tmp_path / "betas_empty_test.npy", np.zeros((24, 0), np.float32))
    with pytest.raises(DecodingError, match="ROI 'empty' has no voxels.*ingest.rois"):
        decoding.decode_subject([tmp_path / "betas_empty_train.npy"], [tmp_path / "betas_empty_test.npy"],
                                ingest / "train.tsv", ingest / "test.tsv", feats / "z.h5", "z",
                                ["empty"], DecodingSettings.from_config({}))
    with pytest.raises(DecodingError, match="missing betas file .*betas_nope_train.npy"):
        decoding.read_betas([ingest / "betas_nope_train.npy"], 300, ["nope"])
    with pytest.raises(DecodingError, match=r"shape \(300, 60\), expected \(10, n_voxels\)"):
        decoding.read_betas([ingest / "betas_early_train.npy"], 10, ["early"])
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(DecodingError, match="cannot read betas file .*bad.npy"):
        decoding.read_betas([tmp_path / "bad.npy"], 300, ["early"])
    with pytest.raises(DecodingError, match="has no 'z' for 1 image"):
        decoding.read_features(feats / "z.h5", "z", np.array([999999]))
    with pytest.raises(DecodingError, match="must hold datasets"):
        decoding.read_features(feats / "z.h5", "c", np.array([1]))
    with pytest.raises(ValueError, match="decoding.alphas"):
        DecodingSettings.from_config({"alphas": [0.0, 1.0]})
    with pytest.raises(ValueError, match="decoding.alphas"):
        DecodingSettings.from_config({"alphas": "huge"})
    # the schema's defaults, not a second copy (n_targets_batch 4096, n_alphas_batch 1)
    from brainldm.config_check import load_schema

    schema = load_schema()["properties"]["decoding"]["properties"]
    assert DecodingSettings.from_config({}) == DecodingSettings(**{
        k: schema[k]["default"] for k in DecodingSettings.__dataclass_fields__})


# ----------------------------------------------------------------------------- synthetic NSD


@pytest.fixture(scope="module")
def synthetic_decoding(synthetic_root, synthetic_ingested, tmp_path_factory):
    """The lead's synthetic mini-NSD, ingested for subj01, with z and c of the tiny model,
    decoded from early and from ventral: {(target, roi): DecodingResult}."""
    from brainldm import nsd
    from brainldm.features import encode_c, encode_z
    from brainldm.models import build_tiny_model, load_pipeline

    root, work = synthetic_root, tmp_path_factory.mktemp("synthetic_decoding")
    ingest = synthetic_ingested
    ids = np.unique(np.concatenate([pd.read_csv(ingest / f"{split}.tsv", sep="\t")["nsd_id"]
                                    for split in ("train", "test")]))
    # a VAE fitted briefly to scenes (as the workflow builds it), so that z is image-like
    pipe = load_pipeline(build_tiny_model(work / "tiny", vae_steps=100), device="cpu")
    images = nsd.read_images(nsd.path(root, "stimuli"), ids)
    captions = nsd.read_captions(nsd.read_stim_info(nsd.path(root, "stim_info")),
                                 {"train2017": nsd.path(root, "captions_train"),
                                  "val2017": nsd.path(root, "captions_val")}, ids)
    for name, values in (("z", encode_z(pipe, images, 64)), ("c", encode_c(pipe, captions, ids))):
        with h5py.File(work / f"{name}.h5", "w") as f:
            f["nsd_id"], f[name] = ids, values
    out = {}
    for target in ("z", "c"):
        for roi in ("early", "ventral"):
            out[target, roi] = decoding.run(
                [ingest / f"betas_{roi}_train.npy"], [ingest / f"betas_{roi}_test.npy"], ingest / "train.tsv",
                ingest / "test.tsv", work / f"{target}.h5", work / f"{target}_{roi}.npz", work / f"{target}_{roi}.tsv",
                subject="subj01", target=target, rois=[roi], settings=dict(alphas="wide", backend="numpy"))
    return out


@pytest.mark.slow
def test_c_decodes_from_ventral_on_the_synthetic_data(synthetic_decoding):
    ventral, early = synthetic_decoding["c", "ventral"], synthetic_decoding["c", "early"]
    assert np.nanmean(ventral.r_dim) > np.nanmean(early.r_dim) + 0.2
    assert np.nanmean(ventral.r_dim) > np.nanmean(ventral.shuffled["r_dim"]) + 0.4
    assert ventral.identification.mean() > 0.9 > 0.7 > ventral.shuffled["identification"].mean()


@pytest.mark.slow
def test_z_decodes_from_early_on_the_synthetic_data(synthetic_decoding):
    early, ventral = synthetic_decoding["z", "early"], synthetic_decoding["z", "ventral"]
    assert np.nanmean(early.r_dim) > np.nanmean(ventral.r_dim)
    assert np.nanmean(early.r_dim) > np.nanmean(early.shuffled["r_dim"]) + 0.2
    assert early.identification.mean() > 0.75
