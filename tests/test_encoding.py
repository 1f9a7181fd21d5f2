"""Encoding models: statistics, PCA, planted structure recovery, bad inputs."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from brainldm import encoding
from brainldm.scores import pearson_columns

# ----------------------------------------------------------------------------- statistics


def test_null_pvalues_match_simulation_of_independent_gaussians():
    rng = np.random.default_rng(0)
    n, sims = 12, 20000
    a = rng.standard_normal((n, sims))
    b = rng.standard_normal((n, sims))
    r = pearson_columns(a, b)
    p = encoding.r_pvalues(r, n)
    for alpha in (0.01, 0.05, 0.2, 0.5):
        rate = (p <= alpha).mean()
        assert abs(rate - alpha) < 4 * np.sqrt(alpha * (1 - alpha) / sims), (alpha, rate)
    # the simulated r's quantiles give the same p as the formula
    r_obs = np.array([0.2, 0.5, 0.7])
    p_sim = np.array([(r >= x).mean() for x in r_obs])
    np.testing.assert_allclose(encoding.r_pvalues(r_obs, n), p_sim, atol=0.01)
    # and scipy's exact one-sided test agrees
    x = rng.standard_normal(n)
    y = x + rng.standard_normal(n)
    ref = scipy.stats.pearsonr(x, y, alternative="greater").pvalue
    np.testing.assert_allclose(encoding.r_pvalues(np.corrcoef(x, y)[0, 1], n), ref, rtol=1e-6)
    assert encoding.r_pvalues(np.array([np.nan]), n)[0] == 1.0


def test_bh_fdr_matches_hand_worked_cases():
    # sorted p 0.004 0.025 0.028 0.039 0.3 vs thresholds q k/m = .01 .02 .03 .04 .05:
    # 0.025 > 0.02 alone, but the step-up takes the largest k with p(k) <= q k/m (k=4).
    p = np.array([0.039, 0.3, 0.004, 0.028, 0.025])
    np.testing.assert_array_equal(encoding.fdr_significant(p, 0.05), [True, False, True, True, True])
    # no k passes: 0.02 > 0.01, 0.03 > 0.02, ...
    np.testing.assert_array_equal(encoding.fdr_significant(np.array([0.02, 0.03, 0.045, 0.5, 0.9]), 0.05), [False] * 5)
    # shape kept
    assert encoding.fdr_significant(np.full((2, 3), 0.001)).shape == (2, 3)
    with pytest.raises(ValueError, match="encoding.q"):
        encoding.fdr_significant(p, 1.5)


def test_best_layer_picks_highest_significant():
    r = np.array([[0.5, 0.1, 0.3, 0.2], [0.4, 0.3, 0.6, 0.1]])
    sig = np.array([[False, True, True, False], [True, True, True, False]])
    np.testing.assert_array_equal(encoding.best_layer(r, sig), [1, 1, 1, -1])


def test_pca_is_fitted_on_training_rows_only():
    rng = np.random.default_rng(1)
    train = np.zeros((50, 5), np.float32)
    train[:, :2] = rng.standard_normal((50, 2))
    test = np.zeros((10, 5), np.float32)
    test[:, 4] = 1000.0 * rng.standard_normal(10)  # huge variance only in the test rows
    feats = np.vstack([train, test])
    out = encoding.pca_reduce(feats, np.arange(50), n_components=2)
    assert out.shape == (60, 2)
    # fitted on train only: axis 4 is not a component, test rows project near the training mean (~0)
    assert np.abs(out[50:]).max() < 1.0
    # had the test rows leaked in, the first component would be axis 4
    leaked = encoding.pca_reduce(feats, np.arange(60), n_components=2)
    assert np.abs(leaked[50:]).max() > 100
    # n_components capped at the number of training rows
    assert encoding.pca_reduce(feats, np.arange(3), n_components=10).shape == (60, 3)


# ----------------------------------------------------------------------------- planted data


N_TRAIN_IMG, N_TEST, REPS, D = 120, 40, 2, 16
N_A, N_B, N_NOISE = 60, 60, 400


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Voxels 0..59 driven by feature space A, 60..119 by B, the rest pure noise.

    z.h5 holds A, c.h5 holds B, zc.h5 noise/s0.50 = B and noise/s0.80 = A (+ small
    noise), unet.h5 down1 = A and mid = B at f0.50.
    """
    rng = np.random.default_rng(0)
    tmp = tmp_path_factory.mktemp("planted")
    n_img = N_TRAIN_IMG + N_TEST
    ids = rng.permutation(1000)[:n_img].astype(np.int64)
    train_ids, test_ids = ids[:N_TRAIN_IMG], np.sort(ids[N_TRAIN_IMG:])
    A = {int(i): v for i, v in zip(ids, rng.standard_normal((n_img, D)))}
    B = {int(i): v for i, v in zip(ids, rng.standard_normal((n_img, D)))}
    wa, wb = rng.standard_normal((D, N_A)), rng.standard_normal((D, N_B))

    def response(img_ids, noise_sd):
        a = np.stack([A[int(i)] for i in img_ids])
        b = np.stack([B[int(i)] for i in img_ids])
        sig = np.hstack([a @ wa, b @ wb, np.zeros((len(img_ids), N_NOISE))]) / np.sqrt(D)
        return (sig + noise_sd * rng.standard_normal(sig.shape)).astype(np.float32)

    trial_ids = rng.permutation(np.repeat(train_ids, REPS))
    np.save(tmp / "train.npy", response(trial_ids, 1.5))
    np.save(tmp / "test.npy", response(test_ids, 1.5 / np.sqrt(3)))
    pd.DataFrame({"row": range(len(trial_ids)), "nsd_id": trial_ids, "session": 1, "trial": range(len(trial_ids))}).to_csv(tmp / "train.tsv", sep="\t", index=False)
    pd.DataFrame({"row": range(N_TEST), "nsd_id": test_ids, "n_repeats": 3}).to_csv(tmp / "test.tsv", sep="\t", index=False)

    order = np.sort(ids)
    fa = np.stack([A[int(i)] for i in order]).reshape(-1, 1, 4, 4).astype(np.float32)
    fb = np.stack([B[int(i)] for i in order]).reshape(-1, 1, 4, 4).astype(np.float32)
    jitter = lambda x: x + 0.1 * rng.standard_normal(x.shape).astype(np.float32)  # noqa: E731
    files = {"z": {"z": fa}, "c": {"c": fb}, "zc": {"noise/s0.50": jitter(fb), "noise/s0.80": jitter(fa)},
             "unet": {"down1/f0.50": jitter(fa), "mid/f0.50": jitter(fb)}}
    for fam, sets in files.items():
        with h5py.File(tmp / f"{fam}.h5", "w") as fh:
            fh["nsd_id"] = order
            for name, arr in sets.items():
                fh[name] = arr
    inputs = {k: str(tmp / f"{k}.h5") for k in files}
    inputs.update(train=str(tmp / "train.npy"), test=str(tmp / "test.npy"),
                  train_tsv=str(tmp / "train.tsv"), test_tsv=str(tmp / "test.tsv"))
    return tmp, inputs


SETTINGS = dict(n_components=64, alphas=[1, 10, 100, 1000, 1e4], cv_folds=3, n_iter=8, backend="numpy", voxel_batch=300)
EARLY = slice(0, N_A)
VENTRAL = slice(N_A, N_A + N_B)
NOISE = slice(N_A + N_B, None)


def test_single_models_recover_planted_structure(planted):
    tmp, inputs = planted
    encoding.run("single", inputs, SETTINGS, str(tmp / "single.npz"))
    res = np.load(tmp / "single.npz")
    assert list(res["names"]) == ["z", "c", "zc"]
    sig_z, sig_c = res["significant"][0], res["significant"][1]
    # z's significant voxels are mostly the A-driven ("early") ones
    assert sig_z[EARLY].mean() > 0.8
    assert sig_z[EARLY].sum() / sig_z.sum() > 0.9
    # c's best voxels are the B-driven ("ventral") ones
    top = np.argsort(-res["r"][1])[:N_B]
    assert np.isin(top, np.arange(N_A, N_A + N_B)).mean() > 0.9
    assert sig_c[VENTRAL].mean() > 0.8
    # noise-only voxels rarely pass FDR, for every model
    for k in range(3):
        assert res["significant"][k][NOISE].mean() <= 0.05
        assert res["significant"][k][NOISE].sum() / max(res["significant"][k].sum(), 1) <= 0.1
    # zc (noise/s0.80 = A) behaves like z
    assert res["significant"][2][EARLY].mean() > 0.8
    assert str(res["zc_dataset"]) == "noise/s0.80"


def test_joint_model_unique_variance(planted):
    tmp, inputs = planted
    encoding.run("noise", inputs, {**SETTINGS, "noise_levels": [0.5]}, str(tmp / "noise.npz"))
    res = np.load(tmp / "noise.npz")
    assert list(res["datasets"]) == ["noise/s0.50"]
    sig = res["significant"][0]
    assert sig[EARLY].mean() > 0.8 and sig[VENTRAL].mean() > 0.8 and sig[NOISE].mean() <= 0.05
    uz, uzc = res["unique_z"][0], res["unique_zc"][0]
    # at s0.50 zc carries B: early voxels are explained uniquely by z, ventral ones by zc
    assert np.median(uz[EARLY]) > 0.1 > np.median(uzc[EARLY])
    assert np.median(uzc[VENTRAL]) > 0.1 > np.median(uz[VENTRAL])
    # himalaya's split scores agree: the z part explains early voxels, the zc part ventral ones
    split = res["split_r2"][0]
    assert np.median(split[0, EARLY]) > 0.1 > np.median(split[1, EARLY])
    assert np.median(split[1, VENTRAL]) > 0.1 > np.median(split[0, VENTRAL])


def test_layers_best_layer(planted):
    tmp, inputs = planted
    encoding.run("layers", inputs, SETTINGS, str(tmp / "layers.npz"))
    res = np.load(tmp / "layers.npz")
    assert list(res["layers"]) == ["down1", "mid"]
    best = res["best_layer"][0]
    assert (best[EARLY] == 0).mean() > 0.8
    assert (best[VENTRAL] == 1).mean() > 0.8
    assert (best[NOISE] == -1).mean() > 0.9


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_stop_with_clear_messages(planted, tmp_path):
    tmp, inputs = planted
    with pytest.raises(FileNotFoundError, match="missing.h5.*features stage"):
        encoding.run("single", {**inputs, "z": str(tmp_path / "missing.h5")}, SETTINGS, str(tmp_path / "x.npz"))
    with pytest.raises(ValueError, match=r"encoding.zc_strength: 0.3.*\[0.5, 0.8\]"):
        encoding.run("single", inputs, {**SETTINGS, "zc_strength": 0.3}, str(tmp_path / "x.npz"))
    with pytest.raises(ValueError, match="encoding.layers"):
        encoding.run("layers", inputs, {**SETTINGS, "layers": ["up9"]}, str(tmp_path / "x.npz"))
    bad = tmp_path / "corrupt.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="corrupt.h5.*not readable HDF5"):
        encoding.run("single", {**inputs, "c": str(bad)}, SETTINGS, str(tmp_path / "x.npz"))
    short = tmp_path / "train.tsv"
    pd.read_csv(inputs["train_tsv"], sep="\t").iloc[:-1].to_csv(short, sep="\t", index=False)
    with pytest.raises(ValueError, match="row counts differ"):
        encoding.run("single", {**inputs, "train_tsv": str(short)}, SETTINGS, str(tmp_path / "x.npz"))
    with pytest.raises(ValueError, match="encoding.alphas"):
        encoding.run("single", inputs, {**SETTINGS, "alphas": [-1]}, str(tmp_path / "x.npz"))
    with pytest.raises(ValueError, match="unknown encoding analysis"):
        encoding.run("bogus", inputs, SETTINGS, str(tmp_path / "x.npz"))
    assert not (tmp_path / "x.npz").exists()
