"""The encoding models of a finished demo run find the structure the synthetic mini-NSD
planted: early voxels (V1-V3) carry the image's local contrast, ventral voxels (FFA,
PPA, OFA, EBA) its captioned content, every other voxel only noise. Checked on the
workflow's own outputs (synthetic data -> tiny SD features -> ingestion -> encoding),
against the ground truth the data stage wrote."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

NONE, EARLY, VENTRAL = 0, 1, 2


@pytest.fixture(scope="module")
def single(demo_run) -> dict[str, dict[str, np.ndarray]]:
    """Per subject: role (n_vox,) from the ground truth, and the single models' r and
    significance (3, n_vox) in the brain mask's voxel order."""
    out = {}
    for truth_file in sorted(demo_run.workdir.glob("results/synthetic_nsd/**/ground_truth/subj0*.npz")):
        subject = truth_file.stem
        res = np.load(demo_run.path(f"results/{subject}/encoding/single.npz"))
        role = np.load(truth_file)["role"]
        assert res["r"].shape[1] == role.shape[0], "encoding voxels and ground-truth voxels differ"
        out[subject] = dict(role=role, names=list(res["names"]), r=res["r"], significant=res["significant"])
    assert out, "no ground truth found in the demo run"
    return out


def test_z_model_significant_voxels_are_mostly_early(single):
    for subject, s in single.items():
        sig = s["significant"][s["names"].index("z")]
        assert sig.sum() >= 30, f"{subject}: only {sig.sum()} voxels significant for z"
        assert (s["role"][sig] == EARLY).mean() > 0.8, subject


def test_c_model_best_voxels_are_mostly_ventral(single):
    for subject, s in single.items():
        r = np.nan_to_num(s["r"][s["names"].index("c")], nan=-1.0)
        n_top = min(200, int((s["role"] == VENTRAL).sum()))
        top = np.argsort(-r)[:n_top]
        assert (s["role"][top] == VENTRAL).mean() > 0.6, subject
        # and the c model explains ventral voxels better than early ones on average
        assert np.nanmedian(s["r"][1][s["role"] == VENTRAL]) > np.nanmedian(s["r"][1][s["role"] == EARLY]), subject


def test_noise_only_voxels_rarely_pass_fdr(single):
    """Noise-only voxels almost never pass BH-FDR (q = 0.05), and among all voxels
    declared significant (pooled over subjects and models) the share that carry only
    noise, the false discovery proportion, stays near q (BH bounds its expectation by
    q x the null share, here about 0.046)."""
    false, found = 0, 0
    for subject, s in single.items():
        noise = s["role"] == NONE
        for k, name in enumerate(s["names"]):
            sig = s["significant"][k]
            assert sig[noise].mean() < 0.01, (subject, name)
            false, found = false + int(sig[noise].sum()), found + int(sig.sum())
    assert found > 0 and false / found < 0.08, f"{false} of {found} discoveries are noise-only voxels"
