"""Load a Stable Diffusion v1.x model (real or tiny) through one diffusers code path.

Two sources, one loader:

- a diffusers Stable Diffusion v1.x checkpoint: a hub id such as
  ``CompVis/stable-diffusion-v1-4`` (read from the local Hugging Face cache) or a
  folder written by ``save_pretrained``;
- ``tiny``: a Stable-Diffusion-shaped model with weights fixed by a seed, optionally
  trained offline on procedural scenes with their captions (the VAE, see
  :mod:`brainldm.tiny_vae`; then the text encoder and U-Net, see
  :mod:`brainldm.tiny_diffusion`), built by :func:`build_tiny_model` and saved
  with ``save_pretrained``, so it is loaded by exactly the same ``from_pretrained``
  call as SD v1.4.

Pipelines have no safety checker and no feature extractor. They run in float16 on
CUDA and float32 on the CPU, with a DDIM scheduler (the reference's sampler).

Typical use::

    pipe = load_pipeline("results/models/tiny")            # img2img (features, reconstruction)
    t2i = text_to_image(pipe)                              # same modules, text-to-image
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import diffusers
import torch
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from brainldm.clip_tokenizer import DEFAULT_DIR as CLIP_TOKENIZER_DIR
from brainldm.clip_tokenizer import TokenizerBuildError, check_tokenizer_dir
from brainldm.io import atomic_dir
from brainldm.model_files import (  # re-exported: the checks run while the workflow parses
    REQUIRED_COMPONENTS,
    ModelError,
    check_model_folder,
    resolve_model,
)
from brainldm.tiny_diffusion import fit_diffusion
from brainldm.tiny_vae import fit_vae

#: The tiny model's tokenizer: CLIP's own (Stable Diffusion's), built by `make install`.
TINY_TOKENIZER_DIR = CLIP_TOKENIZER_DIR
#: Latent resolution the tiny U-Net is configured for (64 px images -> 4 x 8 x 8 latents).
TINY_SAMPLE_SIZE = 8
#: CLIP's context length; Stable Diffusion pads every prompt to it.
MAX_LENGTH = 77


def nvidia_driver() -> str:
    """The NVIDIA driver version reported by nvidia-smi, or "no NVIDIA driver found"."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "no NVIDIA driver found (nvidia-smi is not on PATH)"
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version,name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as err:
        return f"nvidia-smi failed ({err})"
    if out.returncode != 0:
        return f"nvidia-smi failed: {(out.stderr or out.stdout).strip()[:300] or 'exit ' + str(out.returncode)}"
    return "driver " + "; ".join(line.strip() for line in out.stdout.splitlines() if line.strip())


def cuda_diagnostics() -> str:
    """torch version, the CUDA it was built for, and the NVIDIA driver (for error messages)."""
    return (f"torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none (CPU-only build)'}, "
            f"{nvidia_driver()}")


def resolve_device(device: str | torch.device | None = None, require_gpu: bool = False) -> torch.device:
    """The device a job runs on.

    device: "cpu", "cuda" (or "cuda:N") or None/"auto" (CUDA when usable, else the CPU).
    require_gpu: the job was scheduled as GPU work (a rule with resources gpu=1, i.e. a
    real model): with "auto" and no usable CUDA it stops instead of running on the CPU
    for days. An explicit "cpu" is always honoured. Raises :class:`ModelError` with
    the torch/CUDA/driver versions when CUDA is asked for and not usable.
    """
    name = "auto" if device is None else str(device)
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda" if name == "auto" else name)
    if name == "auto" and not require_gpu:
        return torch.device("cpu")
    why = ("model.device is cuda" if name != "auto" else
           "this job runs a real model (rule resource gpu=1) with model.device: auto")
    raise ModelError(
        f"no usable CUDA GPU: {why}, but torch.cuda.is_available() is False ({cuda_diagnostics()}). "
        "Run the job on a GPU node whose driver supports this CUDA version (or install a torch "
        "wheel built for the node's CUDA), or set model.device: cpu to run on the CPU on purpose "
        "(very slow at full size: hours per image)"
    )


def describe_device(device: torch.device | str, dtype: torch.dtype) -> str:
    """One log line: device, dtype and, on CUDA, the GPU's name and memory."""
    device = torch.device(device)
    line = f"device {device}, dtype {str(dtype).replace('torch.', '')}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        line += f", GPU {props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return line


def default_dtype(device: torch.device | str) -> torch.dtype:
    """float16 on CUDA, float32 elsewhere."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


# ---------------------------------------------------------------- tiny model
def build_tiny_components(seed: int = 0, tokenizer_dir: str | os.PathLike = TINY_TOKENIZER_DIR,
                          vae_steps: int = 0, vae_image_size: int | None = None,
                          unet_steps: int = 0) -> dict:
    """The five modules of a tiny SD-shaped model, weights fixed by ``seed``.

    VAE: 4 blocks (x8 downsampling, 4 latent channels, 64 px sample size);
    U-Net: 2 down / 2 up blocks with cross-attention (dim 32), sample size 8;
    text encoder: 2-layer CLIP, hidden size 32, the vocabulary of the tokenizer files
    (CLIP's 49,408 tokens: :mod:`brainldm.clip_tokenizer`);
    scheduler: DDIM with SD v1's beta schedule. About 1.1 M parameters.
    All weights are drawn at random from ``seed``. With ``vae_steps`` > 0 the VAE is
    then trained for that many steps on random scenes of ``vae_image_size`` px
    (default: its sample size, 64) drawn from ``seed`` (:func:`brainldm.tiny_vae.fit_vae`),
    and its scaling factor set so that scaled latents have unit sd; with 0 it stays
    random with SD's scaling factor 0.18215. With ``unet_steps`` > 0 the text encoder
    and U-Net are then trained together for that many steps to predict the noise of
    (frozen) VAE latents of captioned scenes from ``seed``
    (:func:`brainldm.tiny_diffusion.fit_diffusion`); with 0 they stay random.
    """
    if vae_steps < 0:
        raise ModelError(f"model.tiny_vae_steps = {vae_steps}: use 0 (random VAE) or a positive number of steps")
    if unet_steps < 0:
        raise ModelError(f"model.tiny_unet_steps = {unet_steps}: use 0 (random U-Net and text encoder) "
                         "or a positive number of steps")
    try:
        tokenizer_dir = check_tokenizer_dir(tokenizer_dir)
    except TokenizerBuildError as err:
        raise ModelError(str(err)) from None
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=MAX_LENGTH)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=TINY_SAMPLE_SIZE * 8,
            scaling_factor=0.18215,
        )
        unet = UNet2DConditionModel(
            sample_size=TINY_SAMPLE_SIZE,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            layers_per_block=1,
            attention_head_dim=8,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=MAX_LENGTH,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    if vae_steps:
        fit_vae(vae, vae_steps, seed, image_size=vae_image_size)
    if unet_steps:
        fit_diffusion(unet, text_encoder, tokenizer, vae, scheduler, unet_steps, seed, image_size=vae_image_size)
    return dict(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0,
                     tokenizer_dir: str | os.PathLike = TINY_TOKENIZER_DIR,
                     vae_steps: int = 0, vae_image_size: int | None = None,
                     unet_steps: int = 0) -> Path:
    """Build the tiny model and ``save_pretrained`` it into ``out_dir`` (atomically).

    seed, vae_steps, vae_image_size, unet_steps: see :func:`build_tiny_components` (the
    workflow passes model.tiny_seed, model.tiny_vae_steps and model.tiny_unet_steps). The folder is written next to
    ``out_dir`` under a temporary name and renamed when complete; an existing
    ``out_dir`` is replaced. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    pipe = StableDiffusionImg2ImgPipeline(
        **build_tiny_components(seed, tokenizer_dir, vae_steps, vae_image_size, unet_steps),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with atomic_dir(out_dir) as tmp:
        pipe.save_pretrained(tmp)
    return out_dir


# ---------------------------------------------------------------- loading
def load_pipeline(name_or_dir: str | os.PathLike, device: str | torch.device | None = None,
                  local_files_only: bool = True, dtype: torch.dtype | None = None,
                  ddim: bool = True, require_gpu: bool = False) -> StableDiffusionImg2ImgPipeline:
    """Load a Stable Diffusion v1.x model folder or hub id as an img2img pipeline.

    name_or_dir: a folder written by ``save_pretrained`` (the tiny model:
    ``results/models/tiny``) or a hub id in the local cache (``CompVis/stable-diffusion-v1-4``).
    device: default CUDA if available, else CPU; with ``require_gpu`` (a GPU job) and no
    usable CUDA it raises instead (see :func:`resolve_device`). dtype: default float16 on
    CUDA, float32 on CPU. The device, dtype and GPU name are printed to stderr (the log).
    ddim: replace the checkpoint's scheduler by a DDIM scheduler built from its config.
    No safety checker, no feature extractor. Raises :class:`ModelError` for a folder
    without the expected components, a hub id not cached (with ``local_files_only``),
    or a tokenizer that does not cover the text encoder's vocabulary.
    """
    device = resolve_device(device, require_gpu)
    dtype = dtype or default_dtype(device)
    source = resolve_model(name_or_dir, local_files_only)
    if Path(source).exists():
        check_model_folder(source)
    # Loading bars and the `accelerate` notice would only clutter the rule's log file.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        source,
        dtype=dtype,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        local_files_only=local_files_only,
        low_cpu_mem_usage=False,
    )
    tok, enc = pipe.tokenizer, pipe.text_encoder
    # A tokenizer folder without its vocabulary loads as a 2-token tokenizer without an
    # error (e.g. CLIPTokenizer.from_pretrained of a hub id offline): catch it here.
    if len(tok) < enc.config.vocab_size:
        raise ModelError(
            f"the tokenizer of {name_or_dir} has {len(tok)} tokens but its text encoder expects "
            f"{enc.config.vocab_size} (a real CLIP tokenizer has > 1000): its vocab.json/merges.txt are "
            "missing or wrong; save or download the model again"
        )
    if tok.model_max_length > enc.config.max_position_embeddings:
        tok.model_max_length = enc.config.max_position_embeddings
    if ddim and not isinstance(pipe.scheduler, DDIMScheduler):
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    print(f"[model] {name_or_dir}: {describe_device(device, dtype)}", file=sys.stderr, flush=True)
    return pipe.to(device)


def text_to_image(pipe: StableDiffusionImg2ImgPipeline) -> StableDiffusionPipeline:
    """A text-to-image pipeline sharing ``pipe``'s modules (no copy, same device and dtype)."""
    return StableDiffusionPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
