"""Evaluation end to end on fake recons.h5 files with random-weight networks, plus bad inputs."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from brainldm import metrics, selection
from brainldm.metric_features import MetricNetworks, MetricWeightsError, WeightsConfig

N, S, H = 4, 2, 32
NOISE = {"z": 10.0, "c": 60.0, "zc": 120.0}  # z closest to the originals, zc farthest


def write_recons(path, seed: int, n: int = N, s: int = S) -> None:
    """A recons.h5 per docs/contracts.md: reconstructions = originals + condition noise."""
    rng = np.random.default_rng(seed)
    orig = rng.integers(0, 256, (n, H, H, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f["nsd_id"] = np.arange(n, dtype=np.int64) * 10
        f["original"] = orig
        for cond, sd in NOISE.items():
            noisy = orig[:, None].astype(float) + rng.normal(0, sd, (n, s, H, H, 3))
            f[cond] = np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def nets():
    # one thread: the forward passes are small, and spare threads only spin on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield MetricNetworks(WeightsConfig(mode="random", seed=0), device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scored(tmp_path_factory, nets):
    """subj01 scored by the networks; subj02 its scores plus noise (the networks are the slow part)."""
    tmp = tmp_path_factory.mktemp("eval")
    write_recons(tmp / "subj01.h5", 0)
    out = {"subj01": metrics.score_subject(str(tmp / "subj01.h5"), "subj01", WeightsConfig(mode="random"),
                                           batch_size=8, networks=nets)}
    scores, samples = (df.assign(subject="subj02") for df in out["subj01"])
    scores["score"] += np.random.default_rng(1).normal(0, 0.01, len(scores))
    out["subj02"] = (scores, samples)
    return tmp, out


def test_scores_cover_every_metric_condition_and_image(scored):
    _, out = scored
    scores, samples = out["subj01"]
    assert list(scores.columns) == metrics.SCORE_COLUMNS
    assert len(scores) == len(metrics.METRICS) * 3 * N
    assert scores["score"].notna().all()
    assert (scores["weights"] != "").all()
    assert set(scores.loc[scores["metric"] == "pixcorr", "weights"]) == {"none (pixels)"}
    assert set(scores.loc[scores["metric"] == "clip_h6", "weights"]) == {"random(seed=0,small-config)"}
    ident = scores[scores["unit"] == metrics.UNIT_IDENT]["score"]
    assert ident.between(0, 100).all()
    # the planted ordering: z (little noise) is closer to the originals than zc (much noise)
    mean = scores.groupby(["metric", "condition"])["score"].mean()
    assert mean[("pixcorr", "z")] > mean[("pixcorr", "zc")]
    assert mean[("ssim", "z")] > mean[("ssim", "zc")]
    assert mean[("swav", "z")] < mean[("swav", "zc")]  # a distance
    # z reconstructions are near copies: identified perfectly by pixels-near features
    assert mean[("alexnet2", "z")] == 100
    assert len(samples) == (len(metrics.METRICS) - 2 + 2) * 3 * N * S
    assert set(samples["sample"]) == set(range(S))


def test_summary_outputs(scored, tmp_path):
    tmp, out = scored
    paths = []
    for subject, (scores, _) in out.items():
        p = tmp_path / f"{subject}_scores.tsv"
        scores.to_csv(p, sep="\t", index=False)
        paths.append(str(p))
    o = {k: tmp_path / "evaluation" / f"{k}" for k in ("metrics.csv", "metrics.md", "metrics.png", "wilcoxon.tsv")}
    metrics.summarize(paths, str(o["metrics.csv"]), str(o["metrics.md"]), str(o["metrics.png"]),
                      str(o["wilcoxon.tsv"]), conditions=["z", "c", "zc"])
    table = pd.read_csv(o["metrics.csv"])
    assert list(table.columns) == metrics.METRIC_COLUMNS
    assert set(table["subject"]) == {"subj01", "subj02", "all"}
    assert len(table) == 3 * 3 * len(metrics.METRICS)
    # pooled = mean over images of the per-image mean over subjects
    both = pd.concat([s for s, _ in out.values()])
    sel = both[(both["metric"] == "pixcorr") & (both["condition"] == "c")]
    per_image = sel.groupby("nsd_id")["score"].mean()
    row = table[(table["subject"] == "all") & (table["metric"] == "pixcorr") & (table["condition"] == "c")].iloc[0]
    assert row["accuracy"] == pytest.approx(per_image.mean(), rel=1e-5)
    assert row["n"] == N
    tests = pd.read_csv(o["wilcoxon.tsv"], sep="\t")
    assert len(tests) == 3 * len(metrics.METRICS) * 3
    assert tests["p_holm"].dropna().ge(tests["p_value"].dropna()).all()
    md = o["metrics.md"].read_text()
    assert "Random network weights" in md and "| all | PixCorr |" in md
    assert o["metrics.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unavailable_pretrained_weights_are_reported(tmp_path):
    write_recons(tmp_path / "r.h5", 3, n=3, s=1)
    cfg = WeightsConfig(mode="pretrained", torch_weights_dir=str(tmp_path / "none"),
                        clip_model=str(tmp_path / "no-clip"), swav_weights="")
    nets = MetricNetworks(cfg, device="cpu")
    assert set(nets.unavailable) == {s.key for s in nets.specs}
    scores, _ = metrics.score_subject(str(tmp_path / "r.h5"), "subj01", cfg, networks=nets)
    net_rows = scores[~scores["metric"].isin(["pixcorr", "ssim"])]
    assert (net_rows["weights"] == "unavailable").all() and net_rows["score"].isna().all()
    assert scores.loc[scores["metric"].isin(["pixcorr", "ssim"]), "score"].notna().all()
    table = metrics.metrics_table(metrics.pool_subjects(scores))
    row = table[(table["metric"] == "swav") & (table["subject"] == "all")].iloc[0]
    assert row["weights"] == "unavailable" and np.isnan(row["accuracy"]) and row["n"] == 0


def test_corrupt_weights_file_names_the_file(tmp_path):
    (tmp_path / "alexnet-owt-7be5be79.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MetricWeightsError, match="alexnet-owt-7be5be79.pth"):
        from brainldm.metric_features import load_network

        load_network("alexnet", WeightsConfig(mode="pretrained", torch_weights_dir=str(tmp_path)))


def test_bad_weights_mode_names_the_key():
    with pytest.raises(MetricWeightsError, match="evaluation.metrics_weights"):
        WeightsConfig(mode="imagenet")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f.__delitem__("zc"), r"lacks dataset\(s\) \['zc'\]"),
        (lambda f: (f.__delitem__("c"), f.create_dataset("c", data=np.zeros((N, S, H, H), np.uint8))), "dataset 'c'"),
        (lambda f: (f.__delitem__("z"), f.create_dataset("z", data=np.zeros((N, S, H, H, 3), np.float32))), "uint8"),
        (lambda f: (f.__delitem__("nsd_id"), f.create_dataset("nsd_id", data=np.arange(N + 1))), "n_test >= 2"),
    ],
)
def test_bad_recons_files_are_named(tmp_path, nets, damage, message):
    path = tmp_path / "recons.h5"
    write_recons(path, 0)
    with h5py.File(path, "a") as f:
        damage(f)
    with pytest.raises(metrics.EvaluationInputError, match=message) as err:
        metrics.score_subject(str(path), "subj01", WeightsConfig(mode="random"), networks=nets)
    assert str(path) in str(err.value)


def test_corrupt_or_missing_recons_file(tmp_path, nets):
    bad = tmp_path / "recons.h5"
    bad.write_bytes(b"garbage")
    with pytest.raises(metrics.EvaluationInputError, match="cannot open .*recons.h5 as HDF5"):
        metrics.score_subject(str(bad), "subj01", WeightsConfig(mode="random"), networks=nets)
    with pytest.raises(metrics.EvaluationInputError, match="missing.h5"):
        metrics.score_subject(str(tmp_path / "missing.h5"), "subj01", WeightsConfig(mode="random"), networks=nets)


def test_bad_scores_table_is_named(tmp_path):
    p = tmp_path / "scores.tsv"
    pd.DataFrame({"subject": ["subj01"], "score": [1.0]}).to_csv(p, sep="\t", index=False)
    with pytest.raises(metrics.EvaluationInputError, match="scores.tsv lacks columns"):
        metrics.summarize([str(p)], *(str(tmp_path / n) for n in ("a.csv", "a.md", "a.png", "a.tsv")))


def test_best_sample_selection(scored):
    rng = np.random.default_rng(7)
    orig = rng.integers(0, 256, (3, H, H, 3), dtype=np.uint8)
    samples = rng.integers(0, 256, (3, 3, H, H, 3), dtype=np.uint8)
    samples[0, 2], samples[1, 0], samples[2, 1] = orig[0], orig[1], orig[2]
    for metric in ("pixcorr", "ssim", "takagi/clip"):
        np.testing.assert_array_equal(selection.best_sample_indices(orig, samples, metric), [2, 0, 1])
    with pytest.raises(ValueError, match="unknown selection metric"):
        selection.best_sample_indices(orig, samples, "lpips")
    _, out = scored
    _, table = out["subj01"]
    best = selection.best_samples_from_table(table, "zc", "pixcorr")
    sel = table[(table["condition"] == "zc") & (table["metric"] == "pixcorr")]
    want = sel.loc[sel.groupby("nsd_id")["similarity"].idxmax(), ["nsd_id", "sample"]].set_index("nsd_id")["sample"]
    pd.testing.assert_series_equal(best, want, check_names=False)


def test_pretrained_weights_load_from_local_files(tmp_path, monkeypatch):
    """The pretrained code path on stand-in files: torchvision's file name, SwAV's
    "module."-prefixed checkpoint, a CLIP folder; each row then names its weights.
    (A stand-in cannot carry the real SHA-256 prefix: the name check, tested in
    test_weights.py, is switched off here.)"""
    import torchvision
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from brainldm import metric_features
    from brainldm.metric_features import SMALL_CLIP, load_network

    monkeypatch.setattr(metric_features, "check_hash_in_name", lambda path, source="": None)

    effnet = torchvision.models.efficientnet_b1(weights=None)
    torch.save(effnet.state_dict(), tmp_path / "efficientnet_b1-c27df63c.pth")
    swav = torchvision.models.resnet50(weights=None)
    state = {f"module.{k}": v for k, v in swav.state_dict().items() if not k.startswith("fc.")}
    torch.save({"state_dict": state}, tmp_path / "swav.pth.tar")
    CLIPVisionModelWithProjection(CLIPVisionConfig(**SMALL_CLIP)).save_pretrained(tmp_path / "clip")
    cfg = WeightsConfig(mode="pretrained", torch_weights_dir=str(tmp_path), clip_model=str(tmp_path / "clip"),
                        swav_weights=str(tmp_path / "swav.pth.tar"))

    net = load_network("efficientnet_b1", cfg)
    assert net.weights == "EfficientNet_B1_Weights.IMAGENET1K_V2"
    assert torch.equal(net.module.features[0][0].weight, effnet.features[0][0].weight)
    net = load_network("swav", cfg)
    assert net.weights == "swav:swav.pth.tar"
    assert torch.equal(net.module.conv1.weight, swav.conv1.weight)
    assert load_network("clip", cfg).weights == str(tmp_path / "clip")

    torch.save({"conv1.weight": swav.conv1.weight}, tmp_path / "other.pth")
    with pytest.raises(MetricWeightsError, match="not a SwAV ResNet-50 checkpoint"):
        load_network("swav", WeightsConfig(mode="pretrained", swav_weights=str(tmp_path / "other.pth")))


def test_missing_weights_names_each_absent_network_without_loading(tmp_path):
    """Start-up check of pretrained metric weights: each absent file is named with how to get it."""
    from brainldm.metric_features import missing_weights

    assert missing_weights(WeightsConfig(mode="random")) == {}
    cfg = WeightsConfig(mode="pretrained", torch_weights_dir=str(tmp_path), clip_model=str(tmp_path / "clip"),
                        swav_weights="")
    missing = missing_weights(cfg)
    assert set(missing) == {"alexnet", "inception_v3", "efficientnet_b1", "swav", "clip"}
    assert missing["alexnet"] == (f"{tmp_path / 'alexnet-owt-7be5be79.pth'} not found (put "
                                  "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth there, "
                                  "or set evaluation.torch_weights_dir)")
    assert "evaluation.swav_weights=''" in missing["swav"]
    assert "hf download" in missing["clip"]

    (tmp_path / "alexnet-owt-7be5be79.pth").write_bytes(b"x")
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text("{}")
    (tmp_path / "swav.pth.tar").write_bytes(b"x")
    cfg.swav_weights = str(tmp_path / "swav.pth.tar")
    assert set(missing_weights(cfg)) == {"inception_v3", "efficientnet_b1"}


def test_summary_with_brain_correlation_rows(scored, tmp_path, monkeypatch):
    """Brain-correlation rows of scores.tsv become metrics.csv rows and their own Markdown
    section (not retrieval); the originals' ceiling is not a Wilcoxon condition."""
    from brainldm import brain_correlation as bc

    _, out = scored
    scores = out["subj01"][0]
    rng = np.random.default_rng(3)
    rows = [dict(subject="subj01", nsd_id=int(i), condition=cond, convention=bc.CONVENTION, metric=roi,
                 unit=metrics.UNIT_R, score=float(rng.uniform(-1, 1)), weights="ridge z->voxels (tiny)")
            for cond in ("z", "c", "zc", bc.ORIGINAL) for roi in ("early", "brain") for i in scores["nsd_id"].unique()]
    brain = pd.DataFrame(rows, columns=metrics.SCORE_COLUMNS)
    p = tmp_path / "scores.tsv"
    pd.concat([scores, brain]).to_csv(p, sep="\t", index=False)
    o = {k: tmp_path / k for k in ("metrics.csv", "metrics.md", "metrics.png", "wilcoxon.tsv")}
    metrics.summarize([str(p)], *(str(o[k]) for k in ("metrics.csv", "metrics.md", "metrics.png", "wilcoxon.tsv")),
                      conditions=["z", "c", "zc"])
    table = pd.read_csv(o["metrics.csv"])
    sub = table[table["convention"] == bc.CONVENTION]
    assert len(sub) == 2 * 4 * 2  # subjects (subj01, all) x conditions x ROIs
    row = sub[(sub["subject"] == "subj01") & (sub["condition"] == bc.ORIGINAL) & (sub["metric"] == "early")].iloc[0]
    want = brain[(brain["condition"] == bc.ORIGINAL) & (brain["metric"] == "early")]["score"]
    assert row["accuracy"] == pytest.approx(want.mean(), rel=1e-5) and row["n"] == N
    tests = pd.read_csv(o["wilcoxon.tsv"], sep="\t")
    bt = tests[tests["convention"] == bc.CONVENTION]
    assert len(bt) == 2 * 2 * 3 and bc.ORIGINAL not in set(bt["condition_a"]) | set(bt["condition_b"])
    md = o["metrics.md"].read_text()
    section = md.split("## Brain correlation")[1].split("## ")[0]
    assert "| subj01 | early |" in section and "original" in section

    drawn = []
    real = metrics._plot_brain_correlation
    monkeypatch.setattr(metrics, "_plot_brain_correlation",
                        lambda ax, b, c, first: (drawn.append(sorted(set(b["condition"]) | set(b["metric"]))),
                                                 real(ax, b, c, first)))
    metrics.summarize([str(p)], *(str(o[k]) for k in ("metrics.csv", "metrics.md", "metrics.png", "wilcoxon.tsv")),
                      conditions=["z", "c", "zc"])
    assert drawn == [sorted({"z", "c", "zc", bc.ORIGINAL, "early", "brain"})] * 2  # a panel per subject row
    assert "## Retrieval" not in md


def test_summary_lists_sessions_and_warns_of_excluded_ones(scored, tmp_path):
    _, out = scored
    paths, sessions = [], {}
    for subject, (scores, _) in out.items():
        p = tmp_path / f"{subject}_scores.tsv"
        scores.to_csv(p, sep="\t", index=False)
        paths.append(str(p))
        rows = [(s, f"/nsd/{subject}/betas_session{s:02d}.hdf5", "used", "") for s in range(1, 6)]
        if subject == "subj02":
            rows[3] = (4, rows[3][1], "excluded", "all zero")
        sessions[subject] = tmp_path / f"{subject}_sessions.tsv"
        pd.DataFrame(rows, columns=["session", "file", "status", "reason"]).to_csv(sessions[subject], sep="\t", index=False)
    o = [str(tmp_path / n) for n in ("m.csv", "m.md", "m.png", "w.tsv")]
    metrics.summarize(paths, *o, conditions=["z", "c", "zc"], sessions_paths=sessions)
    md = (tmp_path / "m.md").read_text()
    warning = md.index("**Sessions excluded** (1;")
    assert warning < md.index("## Takagi")  # seen before any number
    assert "subj02 session 4 (all zero: `/nsd/subj02/betas_session04.hdf5`)" in md
    assert "| subj01 | 5 | 1-5 | - |" in md and "| subj02 | 4 | 1-3, 5 | 4 |" in md
    # a clean run says which sessions were used and warns of nothing
    for subject in sessions:
        df = pd.read_csv(sessions[subject], sep="\t")
        df["status"], df["reason"] = "used", ""
        df.to_csv(sessions[subject], sep="\t", index=False)
    metrics.summarize(paths, *o, conditions=["z", "c", "zc"], sessions_paths=sessions)
    md = (tmp_path / "m.md").read_text()
    assert "Sessions excluded" not in md and "| subj02 | 5 | 1-5 | - |" in md
    sessions["subj01"].write_text("session\tfile\n1\tx\n")
    with pytest.raises(Exception, match=r"subj01_sessions\.tsv lacks columns \['reason', 'status'\]; rerun rule ingest"):
        metrics.summarize(paths, *o, conditions=["z", "c", "zc"], sessions_paths=sessions)
