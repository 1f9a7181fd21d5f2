"""brainldm.features / feature_shards: z, c, zc and U-Net features with the tiny model, offline."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from brainldm import feature_shards
from brainldm.feature_shards import extract_family, family_settings
from brainldm.features import (
    FeatureError,
    FeatureSettings,
    compute_family,
    encode_c,
    encode_text,
    encode_z,
    image_seed,
    img2img_features,
    resolve_module,
)
from brainldm.models import build_tiny_model, load_pipeline
from brainldm.nsd import NSDError

torch.set_num_threads(1)

FAST = dict(z_resolution=32, num_inference_steps=10, strengths=[0.2, 0.5, 0.8], stage_strength=0.8,
            fractions=[0.0, 0.5, 0.875, 1.0], batch_size=4, shard_size=5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="module")
def pipe(model_dir):
    return load_pipeline(model_dir, device="cpu")


@pytest.fixture(scope="module")
def settings():
    return FeatureSettings.from_config(FAST)


@pytest.fixture(scope="module")
def batch(pipe, settings):
    """4 images (48 px), their captions, z and c."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    captions = [["a red circle on the left"], ["a blue square", "two small stars", "a star at the top"],
                ["zebra crossing"], ["a large green triangle on a grey background"]]
    ids = np.array([3, 7, 11, 20])
    z = encode_z(pipe, images, settings.z_resolution)
    c = encode_c(pipe, captions, ids)
    return dict(ids=ids, images=images, captions=captions, z=z, c=c)


@pytest.fixture()
def stimuli(tmp_path):
    """A 12-image mini stimulus set in NSD's file formats (imgBrick, stim info, COCO captions)."""
    rng = np.random.default_rng(1)
    n_brick = 20
    files = {"stimuli": tmp_path / "nsd_stimuli.hdf5", "stim_info": tmp_path / "stim_info.csv",
             "captions_train": tmp_path / "captions_train2017.json",
             "captions_val": tmp_path / "captions_val2017.json", "table": tmp_path / "stimuli.tsv"}
    with h5py.File(files["stimuli"], "w") as f:
        f["imgBrick"] = rng.integers(0, 256, (n_brick, 40, 40, 3), dtype=np.uint8)
    split = np.where(np.arange(n_brick) % 3 == 0, "val2017", "train2017")
    info = pd.DataFrame({"nsdId": np.arange(n_brick), "cocoId": 1000 + np.arange(n_brick), "cocoSplit": split})
    info.to_csv(files["stim_info"])
    words = ["red", "blue", "green", "yellow"]
    for s, key in (("train2017", "captions_train"), ("val2017", "captions_val")):
        anns = [{"image_id": int(1000 + i), "id": int(10 * i + k), "caption": f"a {words[(i + k) % 4]} circle"}
                for i in range(n_brick) if split[i] == s for k in range(1 + i % 3)]
        files[key].write_text(json.dumps({"annotations": anns}))
    ids = np.sort(rng.choice(n_brick, 12, replace=False))
    pd.DataFrame({"nsd_id": ids, "cocoId": 1000 + ids, "cocoSplit": split[ids]}).to_csv(
        files["table"], sep="\t", index=False)
    return files


def _extract(family, files, out_dir, model_dir, settings=FAST, **kw):
    return extract_family(
        family, files["table"], out_dir / f"{family}.h5", model=str(model_dir), settings=settings,
        stimuli_hdf5=files["stimuli"], stim_info=files["stim_info"], captions_train=files["captions_train"],
        captions_val=files["captions_val"], z_file=out_dir / "z.h5", c_file=out_dir / "c.h5", device="cpu", **kw)


def _read(file):
    with h5py.File(file, "r") as f:
        out = {}
        f.visititems(lambda k, v: out.__setitem__(k, (v[...], dict(v.attrs))) if isinstance(v, h5py.Dataset) else None)
        return out


# ---------------------------------------------------------------- settings
def _count_img2img_passes(monkeypatch) -> list[float]:
    """Record the strength of every img2img_features call from now on (a list that fills up)."""
    from brainldm import features

    passes = []
    real = features.img2img_features

    def counting(*a, **k):
        passes.append(a[4])
        return real(*a, **k)

    monkeypatch.setattr(features, "img2img_features", counting)
    return passes


@pytest.mark.parametrize("section, message", [
    (dict(strengths=[0.0, 0.5]), r"features.strengths has 0.0: a strength must be in \(0, 1\]"),
    (dict(strengths=[0.5, 1.5]), r"features.strengths has 1.5: a strength must be in \(0, 1\]"),
    (dict(stage_strength=0.0), r"features.stage_strength has 0.0"),
    (dict(fractions=[-0.1, 0.5]), r"features.fractions has -0.1: a denoising fraction must be in \[0, 1\]"),
    (dict(fractions=[0.5, 1.2]), r"features.fractions has 1.2"),
    (dict(fractions=[0.441, 0.44]), r"features.fractions .* must differ at 2 decimals"),
    (dict(num_inference_steps=2, strengths=[0.2]), r"features.strengths has 0.2: with features.num_inference_steps = 2"),
    (dict(z_resolution=100), r"features.z_resolution = 100: must be a positive multiple of 8"),
    (dict(z_posterior="mode"), r"features.z_posterior"),
    (dict(dtype="int8"), r"features.dtype"),
    (dict(strenghts=[0.5]), r"unknown key\(s\) features.strenghts"),
])
def test_bad_settings_name_the_key(section, message):
    with pytest.raises(FeatureError, match=message):
        FeatureSettings.from_config(section)


def test_family_settings_only_hold_what_changes_the_family():
    z = family_settings("z", FAST)
    assert "strengths" not in z and z["z_resolution"] == 32
    assert "z_resolution" not in family_settings("zc", FAST)
    assert "unet_layers" in family_settings("unet", FAST) and "unet_layers" not in family_settings("zc", FAST)


def test_image_seed_depends_on_id_and_base_only():
    assert image_seed(42, 7) == image_seed(42, 7)
    assert len({image_seed(42, i) for i in range(100)}) == 100
    assert image_seed(42, 7) != image_seed(43, 7)


# ---------------------------------------------------------------- z and c
def test_z_shapes_and_dtypes(pipe, batch):
    assert batch["z"].shape == (4, 4, 4, 4) and batch["z"].dtype == np.float32
    z64 = encode_z(pipe, batch["images"], 64)
    assert z64.shape == (4, 4, 8, 8) and z64.dtype == np.float32
    # posterior sample: seeded per image, differs from the mean
    s1 = encode_z(pipe, batch["images"], 32, "sample", batch["ids"], seed=5)
    s2 = encode_z(pipe, batch["images"], 32, "sample", batch["ids"], seed=5)
    np.testing.assert_array_equal(s1, s2)
    assert not np.allclose(s1, batch["z"])


def test_z_rejects_bad_images(pipe):
    with pytest.raises(FeatureError, match=r"images must be \(n, H, W, 3\) uint8"):
        encode_z(pipe, np.zeros((2, 32, 32), dtype=np.uint8), 32)
    with pytest.raises(FeatureError, match=r"images must be .* float64"):
        encode_z(pipe, np.zeros((2, 32, 32, 3)), 32)


def test_c_is_the_mean_of_per_caption_embeddings(pipe, batch):
    c = batch["c"]
    assert c.shape == (4, 77, 32) and c.dtype == np.float32
    for k, caps in enumerate(batch["captions"]):
        singles = torch.cat([encode_text(pipe, [t]) for t in caps]).float().numpy()
        np.testing.assert_allclose(c[k], singles.mean(0), atol=1e-5)
    # different captions give different embeddings (the test can fail)
    assert not np.allclose(c[0], c[1], atol=1e-3)


def test_image_without_captions_is_named(pipe):
    with pytest.raises(FeatureError, match="nsd_id 11 has no captions"):
        encode_c(pipe, [["a red circle"], []], nsd_ids=[3, 11])


# ---------------------------------------------------------------- zc and U-Net
def test_zc_and_unet_shapes(pipe, settings, batch):
    zc = compute_family("zc", pipe, settings, batch["ids"], z=batch["z"], c=batch["c"])
    expected = {f"noise/s{s:.2f}" for s in FAST["strengths"]} | {f"stage/f{f:.2f}" for f in FAST["fractions"]}
    assert set(zc) - {"_timesteps"} == expected
    for k in expected:
        assert zc[k].shape == (4, 4, 4, 4) and zc[k].dtype == np.float32
    np.testing.assert_array_equal(zc["stage/f1.00"], zc["noise/s0.80"])
    pooled = FeatureSettings.from_config({**FAST, "unet_pool_size": 2})
    un = compute_family("unet", pipe, pooled, batch["ids"], z=batch["z"], c=batch["c"])
    channels = {"down1": 32, "down2": 64, "mid": 64, "up1": 64, "up2": 32}
    assert set(un) - {"_timesteps"} == {f"{l}/f{f:.2f}" for l in channels for f in FAST["fractions"]}
    for layer, ch in channels.items():
        assert un[f"{layer}/f0.50"].shape == (4, ch, 2, 2)


def test_same_output_across_runs_and_batch_sizes(pipe, settings, batch):
    ids, z, c = batch["ids"], batch["z"], batch["c"]
    for family in ("zc", "unet"):
        together = compute_family(family, pipe, settings, ids, z=z, c=c)
        again = compute_family(family, pipe, settings, ids, z=z, c=c)
        singles = [compute_family(family, pipe, settings, ids[i:i + 1], z=z[i:i + 1], c=c[i:i + 1]) for i in range(4)]
        for k, v in together.items():
            if k.startswith("_"):
                continue
            np.testing.assert_array_equal(v, again[k])
            np.testing.assert_allclose(v, np.concatenate([s[k] for s in singles]), atol=1e-4, rtol=1e-4)
    z_one = np.concatenate([encode_z(pipe, batch["images"][i:i + 1], 32, "sample", ids[i:i + 1], 3) for i in range(4)])
    np.testing.assert_allclose(encode_z(pipe, batch["images"], 32, "sample", ids, 3), z_one, atol=1e-5)
    c_one = np.concatenate([encode_c(pipe, batch["captions"][i:i + 1]) for i in range(4)])
    np.testing.assert_allclose(c, c_one, atol=1e-5)
    # the noise follows the image's id, not its position in the batch
    perm = [2, 0, 3, 1]
    shuffled = compute_family("zc", pipe, settings, ids[perm], z=z[perm], c=c[perm])
    zc = compute_family("zc", pipe, settings, ids, z=z, c=c)
    np.testing.assert_allclose(shuffled["noise/s0.50"], zc["noise/s0.50"][perm], atol=1e-4)


def test_hooks_capture_the_named_blocks_at_the_right_steps(pipe, settings, batch):
    ids, z, c = batch["ids"], batch["z"], batch["c"]
    res = img2img_features(pipe, z, c, ids, 0.8, settings, stages=True, unet=True)
    n_steps = 8  # int(10 x 0.8)
    # the run's timesteps are the last 8 of the 10-step DDIM schedule
    np.testing.assert_array_equal(res["_timesteps"], pipe.scheduler.timesteps[-n_steps:].numpy())
    # fractions 0, 0.5, 0.875, 1 -> U-Net calls 0, 4, 7, 7 on the stage latents after 0, 4, 7 steps
    np.testing.assert_array_equal(res["down1/f1.00"], res["down1/f0.88"])
    uc = encode_text(pipe, [""])
    seen = {}
    handles = [resolve_module(pipe.unet, path).register_forward_hook(
        lambda _m, _a, out, name=name: seen.__setitem__(name, out[0] if isinstance(out, tuple) else out))
        for name, path in settings.unet_layers.items()]
    try:
        for f, k in ((0.0, 0), (0.5, 4), (0.875, 7)):
            lat = torch.from_numpy(res[f"stage/f{f:.2f}"])
            t = int(res["_timesteps"][k])
            with torch.no_grad():
                pipe.unet(torch.cat([lat, lat]), t, encoder_hidden_states=torch.cat(
                    [uc.expand(4, -1, -1), torch.from_numpy(c)]))
            for name, out in seen.items():
                expected = out[4:].mean(dim=(-2, -1)).numpy()  # conditional half, spatial mean
                assert res[f"{name}/f{f:.2f}"].shape == expected.shape == (4, out.shape[1])
                np.testing.assert_allclose(res[f"{name}/f{f:.2f}"], expected, atol=1e-5)
    finally:
        for h in handles:
            h.remove()
    # and a step the activations were not taken at differs
    assert not np.allclose(res["mid/f0.00"], res["mid/f0.50"])


def test_lower_strength_stays_closer_to_z(pipe, settings, batch):
    zc = compute_family("zc", pipe, settings, batch["ids"], z=batch["z"], c=batch["c"])
    dist = {s: np.sqrt(((zc[f"noise/s{s:.2f}"] - batch["z"]) ** 2).mean()) for s in FAST["strengths"]}
    assert dist[0.2] < dist[0.5] < dist[0.8]


def test_one_pass_gives_the_two_pass_zc_and_unet(pipe, settings, batch, monkeypatch):
    """issue 17.2: zc stage latents and U-Net activations from one stage-strength pass equal
    the reference two-pass computation (a zc pass and a separate unet pass), bit for bit."""
    from brainldm.features import compute_zc_unet

    args = (pipe, settings, batch["ids"])
    kw = dict(z=batch["z"], c=batch["c"])
    # reference: the two passes as computed before (each strength, then the U-Net pass again)
    uc = encode_text(pipe, [""])
    ref_zc = {}
    for s in dict.fromkeys([*settings.strengths, settings.stage_strength]):
        res = img2img_features(pipe, batch["z"], batch["c"], batch["ids"], s, settings,
                               stages=s == settings.stage_strength, uc=uc)
        ref_zc.update(res)
    ref_unet = img2img_features(pipe, batch["z"], batch["c"], batch["ids"], settings.stage_strength, settings,
                                unet=True)
    ref_unet.pop(f"noise/s{settings.stage_strength:.2f}")
    passes = _count_img2img_passes(monkeypatch)
    zc, unet = compute_zc_unet(*args, **kw)
    assert passes == list(dict.fromkeys([*settings.strengths, settings.stage_strength]))  # 0.8 once
    assert sorted(zc) == sorted(ref_zc) and sorted(unet) == sorted(ref_unet)
    for k in ref_zc:
        np.testing.assert_array_equal(zc[k], ref_zc[k], err_msg=k)
    for k in ref_unet:
        np.testing.assert_array_equal(unet[k], ref_unet[k], err_msg=k)
    # compute_family gives the same as before for each family alone
    np.testing.assert_array_equal(compute_family("zc", *args, **kw)["stage/f0.50"], ref_zc["stage/f0.50"])
    np.testing.assert_array_equal(compute_family("unet", *args, **kw)["mid/f1.00"], ref_unet["mid/f1.00"])


def test_unknown_unet_layer_is_named(pipe, batch):
    s = FeatureSettings.from_config({**FAST, "unet_layers": {"deep": "down_blocks.9"}})
    with pytest.raises(FeatureError, match="features.unet_layers: the U-Net has no module 'down_blocks.9'"):
        compute_family("unet", pipe, s, batch["ids"], z=batch["z"], c=batch["c"])


# ---------------------------------------------------------------- files, shards, resume
def test_extract_all_families_sharded(stimuli, tmp_path, model_dir, pipe):
    out = tmp_path / "features"
    for family in ("z", "c", "zc", "unet"):
        _extract(family, stimuli, out, model_dir)
    table = pd.read_csv(stimuli["table"], sep="\t")
    settings = FeatureSettings.from_config(FAST)
    files = {fam: _read(out / f"{fam}.h5") for fam in ("z", "c", "zc", "unet")}
    for fam, data in files.items():
        np.testing.assert_array_equal(data["nsd_id"][0], table["nsd_id"].to_numpy())
        assert data["nsd_id"][0].dtype == np.int64
        for name, (arr, attrs) in data.items():
            assert len(arr) == 12 and (name == "nsd_id" or attrs["description"])
    assert files["z"]["z"][0].shape == (12, 4, 4, 4)
    assert files["c"]["c"][0].shape == (12, 77, 32)
    assert files["zc"]["stage/f0.50"][1]["step"] == 4 and files["zc"]["noise/s0.20"][1]["strength"] == 0.2
    assert files["unet"]["mid/f1.00"][1]["step"] == 7 and files["unet"]["up2/f0.50"][1]["layer"] == "up2"
    # the sharded file equals one direct computation over all images
    ids = table["nsd_id"].to_numpy()
    from brainldm import nsd

    images = nsd.read_images(stimuli["stimuli"], ids)
    np.testing.assert_allclose(files["z"]["z"][0], encode_z(pipe, images, 32), atol=1e-5)
    direct = compute_family("zc", pipe, settings, ids, z=files["z"]["z"][0], c=files["c"]["c"][0])
    np.testing.assert_allclose(files["zc"]["noise/s0.50"][0], direct["noise/s0.50"], atol=1e-4)
    manifest = json.loads((out / "shards" / "zc" / "manifest.json").read_text())
    assert sorted(manifest["shards"]) == ["00000", "00001", "00002"]
    assert manifest["shards"]["00002"]["nsd_ids"] == ids[10:].tolist()
    assert manifest["shards"]["00000"]["datasets"]["stage/f0.50"] == {"shape": [5, 4, 4, 4], "dtype": "float32"}
    # issue 17.3: after the gather the shards are one hard link to the gathered file (no extra disk)
    assert [e["file_rows"] for e in manifest["shards"].values()] == [[0, 5], [5, 10], [10, 12]]
    for fam in ("z", "c", "zc", "unet"):
        shard_dir = out / "shards" / fam
        assert sorted(p.name for p in shard_dir.iterdir()) == ["gathered.h5", "manifest.json"]
        gathered, st = (shard_dir / "gathered.h5").stat(), (out / f"{fam}.h5").stat()
        assert (gathered.st_ino, gathered.st_dev) == (st.st_ino, st.st_dev) and st.st_nlink == 2


def _counting(monkeypatch):
    calls = []
    real = feature_shards.compute_family

    def counting(family, pipe, settings, nsd_ids, **kw):
        calls.append(list(nsd_ids))
        return real(family, pipe, settings, nsd_ids, **kw)

    monkeypatch.setattr(feature_shards, "compute_family", counting)
    return calls


def _forget_shard(out, family: str, name: str) -> None:
    """Lose one finished shard (its manifest entry), as a killed job that never recorded it."""
    path = out / "shards" / family / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["shards"][name]
    path.write_text(json.dumps(manifest))


def test_rerun_skips_finished_shards(stimuli, tmp_path, model_dir, monkeypatch):
    out = tmp_path / "features"
    _extract("z", stimuli, out, model_dir)
    first = _read(out / "z.h5")["z"][0]
    calls = _counting(monkeypatch)
    (out / "z.h5").unlink()
    _extract("z", stimuli, out, model_dir)
    assert calls == []  # every shard reused
    _forget_shard(out, "z", "00001")
    _extract("z", stimuli, out, model_dir)
    table = pd.read_csv(stimuli["table"], sep="\t")
    assert sum(calls, []) == table["nsd_id"].to_list()[5:10]  # only the missing shard
    np.testing.assert_allclose(_read(out / "z.h5")["z"][0], first, atol=1e-6)
    calls.clear()
    _extract("z", stimuli, out, model_dir, settings={**FAST, "z_resolution": 16})  # new fingerprint
    assert len(sum(calls, [])) == 12
    assert _read(out / "z.h5")["z"][0].shape == (12, 4, 2, 2)
    assert not list((out / "shards" / "z").glob(".*tmp*"))


def _copy_without_times(src, dst):
    """Copy a file or folder with fresh modification times (as cp without -p)."""
    import shutil

    if src.is_dir():
        shutil.copytree(src, dst, copy_function=shutil.copyfile)
    else:
        shutil.copyfile(src, dst)
    for p in [dst, *dst.rglob("*")] if dst.is_dir() else [dst]:
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))


def test_broken_model_folder_keeps_finished_shards(stimuli, tmp_path, model_dir, monkeypatch):
    """issue 18.2: a model folder with only model_index.json fails before any shard is removed."""
    from brainldm.models import ModelError

    out = tmp_path / "features"
    _extract("z", stimuli, out, model_dir)
    shards = sorted((out / "shards" / "z").glob("*.h5"))
    before = {p.name: p.read_bytes() for p in shards}
    manifest = (out / "shards" / "z" / "manifest.json").read_text()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_bytes((model_dir / "model_index.json").read_bytes())
    with pytest.raises(ModelError, match=r"broken lacks the component 'vae'"):
        _extract("z", stimuli, out, broken)
    assert {p.name: p.read_bytes() for p in sorted((out / "shards" / "z").glob("*.h5"))} == before
    assert (out / "shards" / "z" / "manifest.json").read_text() == manifest
    # the original model still finds every shard finished
    calls = _counting(monkeypatch)
    _extract("z", stimuli, out, model_dir)
    assert calls == []


def test_copied_model_and_stimuli_keep_shards(stimuli, tmp_path, model_dir, monkeypatch):
    """issue 18.2: fingerprints are by content: copies with new mtimes reuse the shards."""
    out = tmp_path / "features"
    _extract("z", stimuli, out, model_dir)
    first = _read(out / "z.h5")["z"][0]
    digests = json.loads((out / "shards" / "digests.json").read_text())
    assert any(k.endswith("nsd_stimuli.hdf5") for k in digests)
    copy = tmp_path / "copied_model"
    _copy_without_times(model_dir, copy)
    stim = stimuli["stimuli"]
    moved = tmp_path / "moved.hdf5"
    _copy_without_times(stim, moved)
    os.replace(moved, stim)  # same path, same bytes, new mtime
    calls = _counting(monkeypatch)
    _extract("z", stimuli, out, copy)
    assert calls == []
    np.testing.assert_array_equal(_read(out / "z.h5")["z"][0], first)
    # one byte changed in the stimuli (new mtime, new digest): every shard is recomputed
    with h5py.File(stim, "r+") as f:
        f["imgBrick"][0, 0, 0, 0] = (int(f["imgBrick"][0, 0, 0, 0]) + 1) % 256
    _extract("z", stimuli, out, copy)
    assert len(sum(calls, [])) == 12


def test_zc_job_writes_unet_from_the_same_pass(stimuli, tmp_path, model_dir, monkeypatch):
    """issue 17.2: extract_family("zc", unet_out_file=...) equals the separate zc and unet runs,
    with one img2img pass at the stage strength per batch; resumes each family's shards."""

    sep, one = tmp_path / "separate", tmp_path / "one"
    for out in (sep, one):
        _extract("z", stimuli, out, model_dir)
        _extract("c", stimuli, out, model_dir)
    _extract("zc", stimuli, sep, model_dir)
    _extract("unet", stimuli, sep, model_dir)
    passes = _count_img2img_passes(monkeypatch)
    _extract("zc", stimuli, one, model_dir, unet_out_file=one / "unet.h5")
    n_batches = 5  # shards of 5 (4 + 1), 5 (4 + 1) and 2 images
    assert passes.count(FAST["stage_strength"]) == n_batches and len(passes) == 3 * n_batches
    for fam in ("zc", "unet"):
        a, b = _read(sep / f"{fam}.h5"), _read(one / f"{fam}.h5")
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(a[k][0], b[k][0], err_msg=f"{fam} {k}")
            assert a[k][1] == b[k][1]
    # only the unet shard lost: recomputed alone (one pass), zc shards untouched
    _forget_shard(one, "unet", "00001")
    passes.clear()
    _extract("zc", stimuli, one, model_dir, unet_out_file=one / "unet.h5")
    assert passes == [FAST["stage_strength"]] * 2
    np.testing.assert_array_equal(_read(one / "unet.h5")["mid/f1.00"][0], _read(sep / "unet.h5")["mid/f1.00"][0])
    with pytest.raises(FeatureError, match="unet_out_file goes with the zc family"):
        _extract("z", stimuli, one, model_dir, unet_out_file=one / "unet.h5")


def test_shards_kept_where_no_hard_link_can_be_made(stimuli, tmp_path, model_dir, monkeypatch, capsys):
    """issue 17.3: on a filesystem without hard links (EXDEV, EPERM) the shard files stay."""
    import errno

    def no_link(src, dst):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(feature_shards.os, "link", no_link)
    out = tmp_path / "features"
    _extract("z", stimuli, out, model_dir)
    assert "cannot hard-link" in capsys.readouterr().err
    shard_dir = out / "shards" / "z"
    assert sorted(p.name for p in shard_dir.glob("*.h5")) == ["00000.h5", "00001.h5", "00002.h5"]
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    assert [e["file"] for e in manifest["shards"].values()] == ["00000.h5", "00001.h5", "00002.h5"]
    first = _read(out / "z.h5")["z"][0]
    monkeypatch.undo()
    calls = _counting(monkeypatch)
    (out / "z.h5").unlink()
    _extract("z", stimuli, out, model_dir)  # now linkable: gathered from the shard files, then linked
    assert calls == []
    np.testing.assert_array_equal(_read(out / "z.h5")["z"][0], first)
    assert sorted(p.name for p in shard_dir.glob("*.h5")) == ["gathered.h5"]


def test_float16_storage(stimuli, tmp_path, model_dir):
    out = tmp_path / "features"
    _extract("c", stimuli, out, model_dir, settings={**FAST, "dtype": "float16"})
    assert _read(out / "c.h5")["c"][0].dtype == np.float16


def test_bad_files_are_named(stimuli, tmp_path, model_dir):
    out = tmp_path / "features"
    with pytest.raises(FeatureError, match=r"missing stimulus table .*nope.tsv: run the rule stimuli_table"):
        extract_family("z", tmp_path / "nope.tsv", out / "z.h5", model=str(model_dir), settings=FAST,
                       stimuli_hdf5=stimuli["stimuli"])
    bad = tmp_path / "bad.tsv"
    pd.read_csv(stimuli["table"], sep="\t").drop(columns="cocoSplit").to_csv(bad, sep="\t", index=False)
    with pytest.raises(FeatureError, match=r"bad.tsv lacks the column\(s\) \['cocoSplit'\]"):
        extract_family("z", bad, out / "z.h5", model=str(model_dir), settings=FAST, stimuli_hdf5=stimuli["stimuli"])
    with pytest.raises(FeatureError, match=r"missing input file .*z.h5 \(z_file\) of the zc features"):
        _extract("zc", stimuli, out, model_dir)
    # an image whose captions are missing from the COCO file
    anns = json.loads(stimuli["captions_train"].read_text())
    table = pd.read_csv(stimuli["table"], sep="\t")
    victim = int(table.loc[table.cocoSplit == "train2017", "cocoId"].iloc[0])
    anns["annotations"] = [a for a in anns["annotations"] if a["image_id"] != victim]
    stimuli["captions_train"].write_text(json.dumps(anns))
    with pytest.raises(NSDError, match=rf"captions_train2017.json has no captions for cocoId {victim}"):
        _extract("c", stimuli, out, model_dir)


def test_stale_z_file_is_refused(stimuli, tmp_path, model_dir):
    out = tmp_path / "features"
    _extract("z", stimuli, out, model_dir)
    _extract("c", stimuli, out, model_dir)
    with h5py.File(out / "z.h5", "r+") as f:
        f["nsd_id"][0] = 999
    with pytest.raises(FeatureError, match=r"z.h5 is for other images than .*stimuli.tsv"):
        _extract("zc", stimuli, out, model_dir)


def test_zc_shards_survive_a_regather_of_z(stimuli, tmp_path, model_dir, monkeypatch):
    out = tmp_path / "features"
    for family in ("z", "c", "unet"):
        _extract(family, stimuli, out, model_dir)
    (out / "z.h5").unlink()
    _extract("z", stimuli, out, model_dir)  # same values, new file
    calls = []
    real = feature_shards.compute_family

    def counting(family, *args, **kw):
        calls.append(family)
        return real(family, *args, **kw)

    monkeypatch.setattr(feature_shards, "compute_family", counting)
    _extract("unet", stimuli, out, model_dir)
    assert calls == []
    # other z values (posterior samples): the unet shards are recomputed
    _extract("z", stimuli, out, model_dir, settings={**FAST, "z_posterior": "sample"})
    calls.clear()
    _extract("unet", stimuli, out, model_dir)
    assert calls == ["unet"] * 5  # shards of 5, 5 and 2 images in batches of at most 4
