"""brainldm.models: the tiny model round-trips through the real from_pretrained path, offline."""

from __future__ import annotations

import functools
import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from transformers import CLIPTokenizer

from brainldm import scenes
from brainldm.models import (
    ModelError,
    build_tiny_model,
    check_model_folder,
    load_pipeline,
    text_to_image,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


def _copy(tiny_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_dir, dst)
    return dst


def test_offline_round_trip_through_from_pretrained(tiny_dir):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert (tiny_dir / "model_index.json").is_file()
    pipe = load_pipeline(tiny_dir, device="cpu")
    assert isinstance(pipe, StableDiffusionImg2ImgPipeline)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    assert len(pipe.tokenizer) == pipe.text_encoder.config.vocab_size
    assert pipe.tokenizer.model_max_length == 77
    # 64 px -> 4 x 8 x 8 latents, like SD's x8 VAE
    with torch.no_grad():
        z = pipe.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert z.shape == (1, 4, 8, 8)
    assert pipe.vae.config.scaling_factor == pytest.approx(0.18215)


def test_tiny_weights_fixed_by_seed(tiny_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again", seed=0)
    other = build_tiny_model(tmp_path / "other", seed=1)
    a, b, c = (load_pipeline(d, device="cpu").unet.conv_in.weight for d in (tiny_dir, again, other))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_build_replaces_existing_folder_without_leftovers(tmp_path):
    out = tmp_path / "tiny"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    build_tiny_model(out, seed=0)
    assert not (out / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiny.tmp")]


def test_text_to_image_shares_modules(tiny_dir):
    pipe = load_pipeline(tiny_dir, device="cpu")
    t2i = text_to_image(pipe)
    assert isinstance(t2i, StableDiffusionPipeline)
    assert t2i.unet is pipe.unet and t2i.vae is pipe.vae and t2i.text_encoder is pipe.text_encoder
    images = t2i(prompt="a red circle", num_inference_steps=1, height=32, width=32, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 32, 32, 3)


def test_tiny_model_tokenizes_as_stable_diffusion(tiny_dir):
    """issue 17.7: the tiny model carries CLIP's own tokenizer (49,408 tokens), its text encoder that vocabulary."""
    pipe = load_pipeline(tiny_dir, device="cpu")
    assert len(pipe.tokenizer) == 49408 == pipe.text_encoder.config.vocab_size
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    rng = np.random.default_rng(1)
    for caption in scenes.captions(scenes.random_scene(rng), rng):  # one token per word: CLIP knows them all
        words = caption.lower().replace(",", " ,").replace(".", " .").replace(":", " :").split()
        assert len(pipe.tokenizer(caption).input_ids) == len(words) + 2, caption


# ---------------------------------------------------------------- bad input
def test_missing_model_index(tmp_path):
    with pytest.raises(ModelError, match="model_index.json is missing"):
        load_pipeline(tmp_path, device="cpu")


def test_missing_component_is_named(tiny_dir, tmp_path):
    folder = _copy(tiny_dir, tmp_path)
    shutil.rmtree(folder / "unet")
    with pytest.raises(ModelError, match="lacks the component 'unet'"):
        load_pipeline(folder, device="cpu")


def test_missing_weights_are_named(tiny_dir, tmp_path):
    folder = _copy(tiny_dir, tmp_path)
    for f in (folder / "vae").glob("diffusion_pytorch_model*"):
        f.unlink()
    with pytest.raises(ModelError, match="component 'vae' .* has no weights"):
        check_model_folder(folder)


def test_corrupt_model_index(tiny_dir, tmp_path):
    folder = _copy(tiny_dir, tmp_path)
    (folder / "model_index.json").write_text("{not json")
    with pytest.raises(ModelError, match="model_index.json is not valid JSON"):
        load_pipeline(folder, device="cpu")


def test_degenerate_tokenizer_is_refused(tiny_dir, tmp_path):
    folder = _copy(tiny_dir, tmp_path)
    shutil.rmtree(folder / "tokenizer")
    CLIPTokenizer(model_max_length=77).save_pretrained(folder / "tokenizer")  # 3 tokens, no vocabulary
    with pytest.raises(ModelError, match=r"tokenizer .* has 2 tokens but its text encoder expects 49408"):
        load_pipeline(folder, device="cpu")


def test_uncached_hub_id_says_how_to_download():
    with pytest.raises(ModelError) as err:
        load_pipeline("brainldm-tests/not-a-cached-model", device="cpu")
    msg = str(err.value)
    assert "not in the local Hugging Face cache" in msg
    assert "hf download brainldm-tests/not-a-cached-model" in msg
    assert "from_pretrained('brainldm-tests/not-a-cached-model')" in msg


def test_missing_folder_and_tiny_name(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_pipeline(tmp_path / "no" / "such" / "model", device="cpu")
    with pytest.raises(ModelError, match="build_tiny_model"):
        load_pipeline("tiny", device="cpu")


def test_model_index_lists_the_five_components(tiny_dir):
    index = json.loads((tiny_dir / "model_index.json").read_text())
    for name in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
        assert index[name][0] is not None
    assert index.get("safety_checker", [None])[0] is None


# ---------------------------------------------------------------- the tiny VAE's fit
# A short fit (the workflow's default, model.tiny_vae_steps, is 300 steps, ~35 s on one core).
FIT_STEPS = 100


@functools.cache
def _heldout_scenes(n: int = 240, size: int = 64) -> np.ndarray:
    """Scenes from a stream neither the fit nor its held-out check uses: (n, size, size, 3) uint8."""
    rng = np.random.default_rng(2024)
    return np.stack([scenes.render(scenes.random_scene(rng), size) for _ in range(n)])


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@pytest.fixture(scope="module")
def vaes():
    """{'random': the seed-0 VAE as built, 'fitted': the same after FIT_STEPS steps}."""
    from brainldm.models import build_tiny_components

    torch.set_num_threads(1)
    return {"random": build_tiny_components(0)["vae"],
            "fitted": build_tiny_components(0, vae_steps=FIT_STEPS)["vae"]}


@torch.no_grad()
def _psnr(vae, x: torch.Tensor) -> float:
    recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    return 10 * np.log10(4 / float(((recon - x) ** 2).mean()))


def test_fitted_vae_reconstructs_heldout_scenes(vaes):
    x = _to_tensor(_heldout_scenes(64))
    baseline = 10 * np.log10(4 / float(((x - x.mean(0, keepdim=True)) ** 2).mean()))  # ~10.5 dB
    # measured: random VAE 9.1 dB, 100 steps 11.3 dB, 300 steps 14.9 dB
    assert _psnr(vaes["random"], x) < baseline
    assert _psnr(vaes["fitted"], x) > baseline + 0.4
    assert _psnr(vaes["fitted"], x) > _psnr(vaes["random"], x) + 1.5


@torch.no_grad()
def _low_level_to_z_r(vae) -> float:
    """Mean test r over z dims of a ridge (himalaya) from scenes.low_level_features to z."""
    from brainldm.ridge import fit_ridge
    from brainldm.scores import pearson_columns

    pixels = _heldout_scenes()
    z = (vae.encode(_to_tensor(pixels)).latent_dist.mean * vae.config.scaling_factor).flatten(1).numpy()
    low = scenes.low_level_features(pixels).reshape(len(pixels), -1)
    train = np.arange(len(pixels)) < 180
    fit = fit_ridge(low[train], z[train], np.logspace(-3, 4, 15), cv=5, backend="numpy")
    return float(np.nanmean(pearson_columns(fit.predict(low[~train]), z[~train])))


def test_fitted_vae_latent_is_image_like(vaes):
    # measured: random VAE r = 0.16, 50 steps 0.84, 100 steps 0.75, 300 steps 0.89
    assert _low_level_to_z_r(vaes["random"]) < 0.3
    assert _low_level_to_z_r(vaes["fitted"]) > 0.55


def test_fitted_scaling_factor_gives_unit_sd(vaes):
    assert vaes["random"].config.scaling_factor == pytest.approx(0.18215)
    vae = vaes["fitted"]
    with torch.no_grad():
        z = vae.encode(_to_tensor(_heldout_scenes(64))).latent_dist.mean * vae.config.scaling_factor
    assert 0.8 < float(z.std()) < 1.25
    assert vae.config.scaling_factor != pytest.approx(0.18215)


def test_vae_fit_is_deterministic_saved_and_leaves_torch_settings(tmp_path, caplog):
    from brainldm.models import build_tiny_components

    torch.set_num_threads(2)
    with caplog.at_level("INFO", logger="brainldm.tiny_vae"):
        a = build_tiny_components(0, vae_steps=2)["vae"]
    assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    assert "tiny VAE step 2/2: pixel MSE" in caplog.text and "scaling_factor" in caplog.text
    saved = load_pipeline(build_tiny_model(tmp_path / "fitted", seed=0, vae_steps=2), device="cpu")
    other = build_tiny_components(1, vae_steps=2)["vae"]
    random = build_tiny_components(0)
    assert saved.vae.config.scaling_factor == a.config.scaling_factor
    for name, weight in a.state_dict().items():
        assert torch.equal(weight, saved.vae.state_dict()[name]), name
    assert not torch.equal(a.encoder.conv_in.weight, random["vae"].encoder.conv_in.weight)
    assert not torch.equal(a.encoder.conv_in.weight, other.encoder.conv_in.weight)
    # U-Net and text encoder stay the random ones
    assert torch.equal(saved.unet.conv_in.weight, random["unet"].conv_in.weight)
    assert torch.equal(saved.text_encoder.get_input_embeddings().weight,
                       random["text_encoder"].get_input_embeddings().weight)


def test_bad_vae_fit_settings():
    from brainldm.models import build_tiny_components
    from brainldm.tiny_vae import VAEFitError

    with pytest.raises(ModelError, match="model.tiny_vae_steps = -1"):
        build_tiny_components(0, vae_steps=-1)
    with pytest.raises(VAEFitError, match="60 px: use a multiple of 8"):
        build_tiny_components(0, vae_steps=1, vae_image_size=60)


# ---------------------------------------------------------------- device (issue 17.1)
def _no_cuda(monkeypatch, smi=None):
    """Pretend this machine has no usable CUDA (and nvidia-smi at ``smi`` or none)."""
    import brainldm.models as models_mod

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: smi if name == "nvidia-smi" else None)
    return models_mod


def test_gpu_job_without_cuda_stops_with_versions(monkeypatch, tiny_dir):
    from brainldm.models import resolve_device

    _no_cuda(monkeypatch)
    with pytest.raises(ModelError) as err:
        resolve_device("auto", require_gpu=True)
    msg = str(err.value)
    assert "no usable CUDA GPU" in msg and "model.device: auto" in msg
    assert f"torch {torch.__version__}" in msg and f"CUDA {torch.version.cuda or 'none'}" in msg
    assert "no NVIDIA driver found" in msg and "set model.device: cpu" in msg
    with pytest.raises(ModelError, match="no usable CUDA GPU: model.device is cuda"):
        resolve_device("cuda")
    with pytest.raises(ModelError, match="no usable CUDA GPU"):
        load_pipeline(tiny_dir, device=None, require_gpu=True)
    # explicit cpu is honoured even for a GPU job; auto without a GPU job is the CPU
    assert resolve_device("cpu", require_gpu=True).type == "cpu"
    assert resolve_device(None).type == "cpu" and resolve_device("auto").type == "cpu"


def test_driver_version_in_message(monkeypatch, tmp_path):
    from brainldm.models import cuda_diagnostics

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '535.104.05, NVIDIA A100-SXM4-80GB'\n")
    smi.chmod(0o755)
    _no_cuda(monkeypatch, smi=str(smi))
    assert "driver 535.104.05, NVIDIA A100-SXM4-80GB" in cuda_diagnostics()


def test_tiny_model_auto_runs_on_cpu_and_logs_device(monkeypatch, tiny_dir, capsys):
    _no_cuda(monkeypatch)
    pipe = load_pipeline(tiny_dir, device=None)
    assert pipe.device.type == "cpu"
    assert "device cpu, dtype float32" in capsys.readouterr().err


def test_feature_job_without_cuda_stops_before_writing(monkeypatch, tiny_dir, tmp_path):
    """A GPU job (require_gpu, as the rule script passes for gpu=1) stops before writing anything."""
    from brainldm.feature_shards import extract_family

    table = tmp_path / "stimuli.tsv"
    table.write_text("nsd_id\tcocoId\tcocoSplit\n0\t1\ttrain2017\n")
    import h5py

    with h5py.File(tmp_path / "stim.hdf5", "w") as f:
        f["imgBrick"] = np.zeros((1, 16, 16, 3), np.uint8)
    _no_cuda(monkeypatch)
    with pytest.raises(ModelError, match="no usable CUDA GPU"):
        extract_family("z", table, tmp_path / "z.h5", model=str(tiny_dir), settings={"z_resolution": 32},
                       stimuli_hdf5=tmp_path / "stim.hdf5", require_gpu=True)
    assert not (tmp_path / "z.h5").exists()
