"""Each convention's preprocessing pinned to its definition; ties; retrieval and p-value rows of the metrics table."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from brainldm import stats
from brainldm import metrics
from brainldm.metric_features import (
    CLIP_MEAN,
    CLIP_STD,
    FEATURE_SPECS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MetricNetworks,
    MetricWeightsError,
    WeightsConfig,
    pixel_images,
    preprocess,
)

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
WIDE = RNG.integers(0, 256, (1, 30, 50, 3), dtype=np.uint8)  # not square: shows the crops


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def _mindeye_reference(images, size, mean, std, base=256):
    """MindEye's definition: Resize((256, 256)), Resize(size) bilinear on tensors, Normalize."""
    x = _tensor(images)
    if base:
        x = TF.resize(x, [base, base], antialias=True)
    x = TF.resize(x, [size], antialias=True)
    return TF.normalize(x, list(mean), list(std)) if mean is not None else x


@pytest.mark.parametrize(
    "name, size, mean, std",
    [
        ("mindeye_alexnet", 256, IMAGENET_MEAN, IMAGENET_STD),
        ("mindeye_inception", 342, IMAGENET_MEAN, IMAGENET_STD),
        ("mindeye_effnet", 255, IMAGENET_MEAN, IMAGENET_STD),
        ("mindeye_swav", 224, IMAGENET_MEAN, IMAGENET_STD),
        ("mindeye_clip", 224, CLIP_MEAN, CLIP_STD),
        ("pixels", 425, None, None),
    ],
)
def test_mindeye_preprocessing(name, size, mean, std):
    x = preprocess(IMAGES, name)
    assert x.shape == (2, 3, size, size)
    torch.testing.assert_close(x, _mindeye_reference(IMAGES, size, mean, std), atol=1e-6, rtol=0)
    # Normalize present where MindEye has it: an image of the mean colour maps to ~0
    colour = np.round(255 * np.asarray(mean if mean is not None else IMAGENET_MEAN)).astype(np.uint8)
    g = preprocess(np.broadcast_to(colour, (1, 8, 8, 3)).copy(), name)
    if mean is None:
        np.testing.assert_allclose(g[0, :, 0, 0].numpy(), colour / 255, atol=1e-6)
    else:
        assert g.abs().max() < 0.01


def test_mindeye_resolution_first_and_no_crop():
    big = RNG.integers(0, 256, (1, 512, 512, 3), dtype=np.uint8)
    at256 = preprocess(big, "mindeye_inception")
    native = preprocess(big, "mindeye_inception", {"mindeye": 0})
    assert at256.shape == native.shape == (1, 3, 342, 342)
    assert (at256 - native).abs().max() > 0.1  # the 256-px detour loses detail
    torch.testing.assert_close(native, _mindeye_reference(big, 342, IMAGENET_MEAN, IMAGENET_STD, base=0),
                               atol=1e-6, rtol=0)
    # MindEye's CLIP input: bilinear resize, no crop (a non-square image stays non-square)
    assert preprocess(WIDE, "mindeye_clip", {"mindeye": 0}).shape == (1, 3, 224, 373)
    assert pixel_images(big).shape == (1, 425, 425, 3)
    with pytest.raises(MetricWeightsError, match="evaluation.image_size"):
        preprocess(IMAGES, "pixels", {"mindeye": -1})


def _pil_reference(images, size, resample, mean, std):
    """Takagi's definition: uint8 PIL image, PIL resize of the short side, centre crop, Normalize."""
    out = []
    for im in images:
        pil = Image.fromarray(im)
        w, h = pil.size
        scale = size / min(w, h)
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        assert min(nw, nh) == size and scale > 0
        pil = pil.resize((nw, nh), resample)
        left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
        arr = np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        out.append((torch.from_numpy(arr).permute(2, 0, 1) - torch.tensor(mean)[:, None, None])
                   / torch.tensor(std)[:, None, None])
    return torch.stack(out)


@pytest.mark.parametrize(
    "name, size, resample, mean, std",
    [
        ("takagi", 299, Image.BILINEAR, IMAGENET_MEAN, IMAGENET_STD),
        ("takagi_clip", 224, Image.BICUBIC, CLIP_MEAN, CLIP_STD),
    ],
)
def test_takagi_preprocessing_is_pil(name, size, resample, mean, std):
    for images in (IMAGES, WIDE):
        x = preprocess(images, name)
        assert x.shape == (len(images), 3, size, size)  # centre crop
        torch.testing.assert_close(x, _pil_reference(images, size, resample, mean, std), atol=1e-5, rtol=0)
    # the uint8 PIL path is not the float-tensor path (what issue 15 fixed)
    t = TF.resize(_tensor(IMAGES), [size], interpolation=TF.InterpolationMode.BICUBIC
                  if resample == Image.BICUBIC else TF.InterpolationMode.BILINEAR, antialias=True)
    t = TF.normalize(TF.center_crop(t, [size, size]).clamp(0, 1), list(mean), list(std))
    assert (t - preprocess(IMAGES, name)).abs().max() > 1e-3


def test_specs_use_their_conventions_preprocessing():
    pre = {s.key: s.preprocess for s in FEATURE_SPECS}
    assert {pre[k] for k in ("takagi/clip", "takagi/clip_h6", "takagi/clip_h12")} == {"takagi_clip"}
    assert pre["mindeye/clip"] == "mindeye_clip"
    assert pre["mindeye/inception"] == "mindeye_inception" and pre["mindeye/effnet_b1"] == "mindeye_effnet"


def test_networks_get_the_normalised_input():
    """Seeded random EffNet-B1 and small CLIP: the extracted features are the network applied
    to the definition's input (Normalize for EffNet; bilinear 224 without crop for CLIP)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    from brainldm.metric_features import load_network

    torch.set_num_threads(1)
    cfg = WeightsConfig(mode="random", seed=0)
    specs = tuple(s for s in FEATURE_SPECS if s.key in ("mindeye/effnet_b1", "mindeye/clip", "takagi/clip"))
    nets = MetricNetworks(cfg, specs, device="cpu")
    feats = nets.extract(IMAGES)
    with torch.inference_mode():
        effnet = create_feature_extractor(load_network("efficientnet_b1", cfg).module, ["avgpool"])
        want = effnet(_mindeye_reference(IMAGES, 255, IMAGENET_MEAN, IMAGENET_STD))["avgpool"].reshape(2, -1)
        np.testing.assert_allclose(feats["mindeye/effnet_b1"], want.numpy(), atol=1e-5)
        clip = load_network("clip", cfg).module
        want = clip(pixel_values=_mindeye_reference(IMAGES, 224, CLIP_MEAN, CLIP_STD)).image_embeds
        np.testing.assert_allclose(feats["mindeye/clip"], want.numpy(), atol=1e-5)
        want = clip(pixel_values=_pil_reference(IMAGES, 224, Image.BICUBIC, CLIP_MEAN, CLIP_STD)).image_embeds
        np.testing.assert_allclose(feats["takagi/clip"], want.numpy(), atol=1e-5)


def test_reusing_freed_memory_changes_no_feature():
    """glibc's malloc kept from returning freed tensors to the OS: the same features, to the bit."""
    import platform

    from brainldm.metric_features import reuse_freed_memory

    torch.set_num_threads(1)
    specs = tuple(s for s in FEATURE_SPECS if s.network in ("alexnet", "efficientnet_b1"))
    nets = MetricNetworks(WeightsConfig(mode="random", seed=0), specs, device="cpu")
    before = nets.extract(IMAGES)
    assert reuse_freed_memory() == (platform.libc_ver()[0] == "glibc")
    for _ in range(2):  # the second pass runs in memory the first one freed
        after = nets.extract(IMAGES)
        assert after.keys() == before.keys()
        for key in before:
            np.testing.assert_array_equal(after[key], before[key], err_msg=key)


# ---------------------------------------------------------------------------- ties


class _JitterNets:
    """Stand-in for MetricNetworks: features = pixels + float32-rounding-sized jitter (1e-7),
    as identical images through a network in different batches get."""

    image_size = {"takagi": 0, "mindeye": 0}
    unavailable: dict = {}

    def __init__(self):
        self.rng = np.random.default_rng(5)
        self.weights = {"takagi/alexnet5": "jitter", "mindeye/alexnet2": "jitter"}

    def extract(self, images):
        x = images.reshape(len(images), -1)[:, :96].astype(np.float32) / 255.0
        x = x + self.rng.normal(0, 1e-7, x.shape).astype(np.float32)
        return {k: x for k in self.weights}


def _collapsed(path, n=10, s=2, h=8):
    orig = np.random.default_rng(1).integers(0, 256, (n, h, h, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f["nsd_id"] = np.arange(n)
        f["original"] = orig
        f["z"] = np.broadcast_to(orig[:1, None], (n, s, h, h, 3)).copy()  # a collapsed decoder


def test_identical_reconstructions_score_zero(tmp_path, monkeypatch):
    _collapsed(tmp_path / "r.h5")

    def takagi_score():
        scores, _ = metrics.score_subject(str(tmp_path / "r.h5"), "subj01", WeightsConfig(mode="random"),
                                          conditions=("z",), networks=_JitterNets())
        return scores.loc[(scores["convention"] == "takagi") & (scores["metric"] == "alexnet5"), "score"].mean()

    assert takagi_score() == 0.0
    monkeypatch.setattr("brainldm.scores.TIE_TOLERANCE", 0.0)
    assert takagi_score() > 10.0  # without the tolerance, rounding noise wins comparisons


# ---------------------------------------------------------------------------- retrieval and p-values in the metrics table


def test_retrieval_rows_reach_metrics_table(tmp_path):
    rng = np.random.default_rng(4)
    true = rng.normal(size=(12, 3, 4))
    emb = {"original": rng.normal(size=(12, 6)), "z": rng.normal(size=(12, 2, 6))}
    emb["c"] = emb["original"][:, None].repeat(2, 1)
    ret = metrics.retrieval_table("subj01", true + 0.01 * rng.normal(size=true.shape), true, emb, "random(seed=0)",
                                  pool=300, draws=4)
    assert list(ret.columns) == metrics.RETRIEVAL_COLUMNS
    assert set(ret["pool"]) == {12} and np.allclose(ret["chance"], 100 / 12)
    got = ret.set_index(["condition", "metric"])["accuracy"]
    assert got[("decoded_c", "retrieval_brain_to_image")] == 100.0 and got[("c", "retrieval_image_to_brain")] == 100.0
    ret.to_csv(tmp_path / "retrieval.tsv", sep="\t", index=False)
    scores = pd.DataFrame(dict(subject="subj01", nsd_id=np.arange(12), condition="z", convention="takagi",
                               metric="alexnet5", unit=metrics.UNIT_IDENT, score=75.0, weights="random(seed=0)"))
    scores.to_csv(tmp_path / "scores.tsv", sep="\t", index=False)
    out = [str(tmp_path / n) for n in ("m.csv", "m.md", "m.png", "w.tsv")]
    metrics.summarize([str(tmp_path / "scores.tsv")], *out, conditions=["z"],
                      retrieval_paths=[str(tmp_path / "retrieval.tsv")])
    table = pd.read_csv(out[0])
    assert list(table.columns) == metrics.METRIC_COLUMNS
    row = table[(table["subject"] == "subj01") & (table["metric"] == "alexnet5")].iloc[0]
    assert row["chance"] == 50 and row["p_binomial"] == pytest.approx(stats.p_binomial(0.75, 12))
    ret_rows = table[table["metric"].str.startswith("retrieval_")]
    assert set(ret_rows["subject"]) == {"subj01", "all"} and len(ret_rows) == 2 * 6
    md = (tmp_path / "m.md").read_text()
    assert "## Retrieval (MindEye1/2 convention)" in md and "| subj01 | decoded_c | 100.0" in md


def test_decoded_c_not_in_features_is_named(tmp_path):
    np.savez(tmp_path / "c.npz", pred=np.zeros((2, 3, 4), np.float32), nsd_id=np.array([1, 99]))
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["nsd_id"] = np.array([0, 1, 2])
        f["c"] = np.zeros((3, 3, 4), np.float32)
    with pytest.raises(metrics.EvaluationInputError, match="c.h5 lacks the c of 1 test image.*nsd_id 99"):
        metrics.read_c_pair(str(tmp_path / "c.npz"), str(tmp_path / "c.h5"))
    np.savez(tmp_path / "c.npz", pred=np.ones((2, 3, 4), np.float32), nsd_id=np.array([2, 0]))
    ids, pred, true = metrics.read_c_pair(str(tmp_path / "c.npz"), str(tmp_path / "c.h5"))
    np.testing.assert_array_equal(ids, [2, 0])
    assert pred.shape == true.shape == (2, 3, 4)
