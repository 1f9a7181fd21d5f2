"""LDM features of stimulus images: z, c, zc and U-Net activations (in memory).

All functions take a loaded diffusers pipeline (:func:`brainldm.models.load_pipeline`)
and arrays for a batch of images; randomness comes from per-image seeds derived from
a base seed and the image's nsd_id, so a feature never depends on batch composition.
Sharding, manifests and the HDF5 files are in :mod:`brainldm.feature_shards`.

Shapes use SD v1.4's sizes at the default z_resolution 320 (the tiny model's in brackets):
- z: (n, 4, 40, 40) [(n, 4, 8, 8) at 64 px], VAE latent x scaling factor;
- c: (n, 77, 768) [(n, 77, 32)], text-encoder last hidden state averaged over captions;
- zc: (n, 4, h, w) latents of img2img from z conditioned on c (DDIM);
- U-Net: (n, channels) (spatial mean) or (n, channels, s, s) (adaptive average pooling).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from PIL import Image

#: Families of features, one output file each.
FAMILIES = ("z", "c", "zc", "unet")

#: Default U-Net blocks: the two first-stage (highest-resolution) down blocks, the
#: bottleneck and the two last (highest-resolution) up blocks. Paths into the U-Net
#: module; integers index ModuleLists, negative ones from the end.
DEFAULT_UNET_LAYERS = {
    "down1": "down_blocks.0",
    "down2": "down_blocks.1",
    "mid": "mid_block",
    "up1": "up_blocks.-2",
    "up2": "up_blocks.-1",
}

# Streams of per-image randomness (one SeedSequence entry each).
_STREAM_Z_SAMPLE = 0
_STREAM_DIFFUSION = 1


class FeatureError(ValueError):
    """Bad feature input or setting; the message names the config key or file and the fix."""


@dataclass(frozen=True)
class FeatureSettings:
    """The ``features:`` config section (see workflow/schemas/config.schema.yaml)."""

    z_resolution: int = 320
    z_posterior: str = "mean"
    seed: int = 42
    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    eta: float = 0.0
    strengths: tuple[float, ...] = (0.2, 0.5, 0.8)
    stage_strength: float = 0.8
    fractions: tuple[float, ...] = (0.0, 0.2, 0.44, 0.66, 0.86, 1.0)
    unet_layers: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_UNET_LAYERS))
    unet_pool_size: int = 0
    batch_size: int = 8
    shard_size: int = 1000
    dtype: str = "float32"

    @classmethod
    def from_config(cls, section: dict | None) -> "FeatureSettings":
        """Settings from a ``features:`` config dict (missing keys take their defaults)."""
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise FeatureError(f"unknown key(s) features.{unknown[0]} (known: {sorted(known)})")
        for key in ("strengths", "fractions"):
            if key in section:
                section[key] = tuple(float(x) for x in section[key])
        settings = cls(**section)
        settings.validate()
        return settings

    def as_dict(self) -> dict:
        d = asdict(self)
        d["strengths"], d["fractions"] = list(self.strengths), list(self.fractions)
        return d

    def validate(self) -> None:
        """Raise :class:`FeatureError` naming the first bad key."""
        if self.z_resolution < 8 or self.z_resolution % 8:
            raise FeatureError(f"features.z_resolution = {self.z_resolution}: must be a positive multiple of 8 "
                               "(the VAE downsamples by 8), e.g. 320 for SD v1.4 or 64 for the tiny model")
        if self.z_posterior not in ("mean", "sample"):
            raise FeatureError(f"features.z_posterior = {self.z_posterior!r}: use 'mean' or 'sample'")
        if self.num_inference_steps < 1:
            raise FeatureError(f"features.num_inference_steps = {self.num_inference_steps}: must be >= 1 (paper: 50)")
        if self.eta < 0:
            raise FeatureError(f"features.eta = {self.eta}: must be >= 0 (DDIM; 0 is deterministic)")
        for s in (*self.strengths, self.stage_strength):
            key = "features.stage_strength" if s == self.stage_strength and s not in self.strengths else "features.strengths"
            if not 0 < s <= 1:
                raise FeatureError(f"{key} has {s}: a strength must be in (0, 1] (fraction of the "
                                   "diffusion that is noised and then denoised; paper: 0.8)")
            if int(self.num_inference_steps * s) < 1:
                raise FeatureError(f"{key} has {s}: with features.num_inference_steps = {self.num_inference_steps} "
                                   "it gives no denoising step; raise the strength or the number of steps")
        if not self.strengths:
            raise FeatureError("features.strengths is empty: give at least one strength in (0, 1]")
        for f in self.fractions:
            if not 0 <= f <= 1:
                raise FeatureError(f"features.fractions has {f}: a denoising fraction must be in [0, 1] "
                                   "(0 = the noised latent before denoising, 1 = the final latent)")
        for key, values in (("strengths", self.strengths), ("fractions", self.fractions)):
            names = [f"{v:.2f}" for v in values]
            if len(set(names)) != len(names):
                raise FeatureError(f"features.{key} = {list(values)}: values must differ at 2 decimals "
                                   "(they name the datasets, e.g. noise/s0.50, stage/f0.44)")
        if not self.unet_layers:
            raise FeatureError("features.unet_layers is empty: name at least one U-Net block")
        if self.unet_pool_size < 0:
            raise FeatureError(f"features.unet_pool_size = {self.unet_pool_size}: use 0 (spatial mean) or a size >= 1")
        if self.batch_size < 1 or self.shard_size < 1:
            raise FeatureError("features.batch_size and features.shard_size must be >= 1")
        if self.dtype not in ("float32", "float16"):
            raise FeatureError(f"features.dtype = {self.dtype!r}: use 'float32' or 'float16'")


# ---------------------------------------------------------------- seeds
def image_seed(base_seed: int, nsd_id: int, stream: int = _STREAM_DIFFUSION) -> int:
    """Seed of one image's randomness: a function of (base_seed, nsd_id, stream) only."""
    state = np.random.SeedSequence([int(base_seed), int(nsd_id), int(stream)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def image_generators(base_seed: int, nsd_ids, stream: int = _STREAM_DIFFUSION) -> list[torch.Generator]:
    """One seeded CPU generator per image (diffusers draws each image's noise from its own)."""
    return [torch.Generator("cpu").manual_seed(image_seed(base_seed, i, stream)) for i in np.asarray(nsd_ids)]


# ---------------------------------------------------------------- z
def preprocess_images(images: np.ndarray, resolution: int) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, resolution, resolution) float32 in [-1, 1] (LANCZOS resize)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise FeatureError(f"images must be (n, H, W, 3) uint8 (imgBrick), got {images.shape} {images.dtype}")
    out = np.empty((len(images), resolution, resolution, 3), dtype=np.float32)
    for k, img in enumerate(images):
        pil = Image.fromarray(img)
        if pil.size != (resolution, resolution):
            pil = pil.resize((resolution, resolution), Image.Resampling.LANCZOS)
        out[k] = np.asarray(pil, dtype=np.float32)
    return torch.from_numpy(out / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def encode_z(pipe, images: np.ndarray, resolution: int, posterior: str = "mean",
             nsd_ids=None, seed: int = 0) -> np.ndarray:
    """VAE latents x scaling factor: (n, 4, resolution/8, resolution/8) float32.

    posterior "mean" (default) or "sample" (the reference's choice; seeded per nsd_id).
    """
    x = preprocess_images(images, resolution).to(pipe.vae.device, pipe.vae.dtype)
    dist = pipe.vae.encode(x).latent_dist
    if posterior == "mean":
        z = dist.mean
    elif posterior == "sample":
        if nsd_ids is None:
            raise FeatureError("features.z_posterior = 'sample' needs the images' nsd_ids for their seeds")
        z = dist.sample(generator=image_generators(seed, nsd_ids, _STREAM_Z_SAMPLE))
    else:
        raise FeatureError(f"features.z_posterior = {posterior!r}: use 'mean' or 'sample'")
    return (z * pipe.vae.config.scaling_factor).float().cpu().numpy()


# ---------------------------------------------------------------- c
@torch.no_grad()
def encode_text(pipe, texts: list[str]) -> torch.Tensor:
    """Text-encoder last hidden state of each text, padded to 77 tokens: (m, 77, d) on the pipe's device."""
    embeds, _ = pipe.encode_prompt(list(texts), pipe.text_encoder.device, 1, False)
    return embeds


def encode_c(pipe, captions: list[list[str]], nsd_ids=None) -> np.ndarray:
    """Per image, the mean over its captions of their text embeddings: (n, 77, d) float32.

    All captions of the batch go through the text encoder in one call; padding
    positions are included in the mean (as in the reference).
    """
    for k, caps in enumerate(captions):
        if not caps or any(not isinstance(t, str) for t in caps):
            which = f"nsd_id {int(np.asarray(nsd_ids)[k])}" if nsd_ids is not None else f"image {k} of the batch"
            raise FeatureError(f"{which} has no captions: c is the mean over an image's captions; check the "
                               "COCO caption files (data.nsd_root .../annotations/captions_*2017.json)")
    flat = [t for caps in captions for t in caps]
    emb = encode_text(pipe, flat).float().cpu()
    counts = torch.tensor([len(c) for c in captions])
    starts = torch.cumsum(counts, 0) - counts
    return torch.stack([emb[s:s + n].mean(0) for s, n in zip(starts.tolist(), counts.tolist())]).numpy()


# ---------------------------------------------------------------- zc and U-Net
def n_denoising_steps(num_inference_steps: int, strength: float) -> int:
    """Denoising steps diffusers' img2img runs at this strength: int(steps x strength)."""
    return min(int(num_inference_steps * strength), num_inference_steps)


def stage_step(fraction: float, n_steps: int) -> int:
    """Steps done at a denoising fraction: round(fraction x n_steps), 0..n_steps."""
    return int(round(fraction * n_steps))


def unet_step(fraction: float, n_steps: int) -> int:
    """Index of the U-Net call whose input is the latent at that fraction (last call for 1.0)."""
    return min(stage_step(fraction, n_steps), n_steps - 1)


def resolve_module(unet: torch.nn.Module, path: str) -> torch.nn.Module:
    """``"down_blocks.0"`` / ``"up_blocks.-1"`` / ``"mid_block"`` -> the U-Net submodule."""
    mod = unet
    for part in path.split("."):
        try:
            mod = mod[int(part)] if part.lstrip("-").isdigit() else getattr(mod, part)
        except (AttributeError, IndexError, TypeError) as err:
            raise FeatureError(f"features.unet_layers: the U-Net has no module {path!r} ({err}); "
                               "use paths like down_blocks.0, mid_block, up_blocks.-1") from err
    return mod


def _pool(x: torch.Tensor, size: int) -> torch.Tensor:
    if size == 0:
        return x.float().mean(dim=(-2, -1))
    return torch.nn.functional.adaptive_avg_pool2d(x.float(), size)


@torch.no_grad()
def img2img_features(pipe, z: np.ndarray, c: np.ndarray, nsd_ids, strength: float,
                     settings: FeatureSettings, stages: bool = False, unet: bool = False,
                     uc: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Run DDIM img2img from latents z conditioned on c and collect latents / activations.

    z: (n, 4, h, w) scaled latents; c: (n, 77, d) text embeddings; strength in (0, 1].
    Returns float32 arrays keyed by dataset name:
    ``noise/s{strength:.2f}`` the final latent (n, 4, h, w); with ``stages``,
    ``stage/f{f:.2f}`` the latent after round(f x n_steps) steps; with ``unet``,
    ``{layer}/f{f:.2f}`` the pooled output of each block of ``settings.unet_layers``
    in the U-Net call on the stage-f latent (conditional half under guidance).
    uc: unconditional embedding (1, 77, d), default the empty prompt's.
    """
    n = len(z)
    device, dtype = pipe.unet.device, pipe.unet.dtype
    n_steps = n_denoising_steps(settings.num_inference_steps, strength)
    cfg = settings.guidance_scale > 1
    if uc is None:
        uc = encode_text(pipe, [""])
    stage_at: dict[int, list[float]] = {}
    if stages:
        for f in settings.fractions:
            stage_at.setdefault(stage_step(f, n_steps), []).append(f)
    unet_at: dict[int, list[float]] = {}
    if unet:
        for f in settings.fractions:
            unet_at.setdefault(unet_step(f, n_steps), []).append(f)
    calls = {"k": 0, "t": {}}
    latents: dict[int, torch.Tensor] = {}
    acts: dict[tuple[str, int], torch.Tensor] = {}

    def pre_hook(_module, args, kwargs):
        k = calls["k"]
        sample = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        calls["t"][k] = int(t)
        if k in stage_at:
            latents[k] = sample[:n].float().cpu()

    def post_hook(_module, _args, _out):
        calls["k"] += 1

    def block_hook(name):
        def hook(_module, _args, out):
            k = calls["k"]
            if k in unet_at:
                h = out[0] if isinstance(out, tuple) else out
                h = h[n:] if cfg else h
                acts[(name, k)] = _pool(h, settings.unet_pool_size).cpu()
        return hook

    handles = [pipe.unet.register_forward_pre_hook(pre_hook, with_kwargs=True),
               pipe.unet.register_forward_hook(post_hook)]
    if unet:
        handles += [resolve_module(pipe.unet, path).register_forward_hook(block_hook(name))
                    for name, path in settings.unet_layers.items()]
    try:
        c_t = torch.as_tensor(c).to(device, dtype)
        out = pipe(
            image=torch.as_tensor(z).to(device, dtype),
            prompt_embeds=c_t,
            negative_prompt_embeds=uc.to(device, dtype).expand(n, -1, -1),
            strength=strength,
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            eta=settings.eta,
            generator=image_generators(settings.seed, nsd_ids),
            output_type="latent",
        ).images.float().cpu()
    finally:
        for h in handles:
            h.remove()
    if calls["k"] != n_steps:
        raise RuntimeError(f"img2img ran {calls['k']} U-Net calls, expected {n_steps}")
    result = {f"noise/s{strength:.2f}": out.numpy()}
    for k, fs in stage_at.items():
        for f in fs:
            result[f"stage/f{f:.2f}"] = (out if k == n_steps else latents[k]).numpy()
    for k, fs in unet_at.items():
        for f in fs:
            for name in settings.unet_layers:
                result[f"{name}/f{f:.2f}"] = acts[(name, k)].numpy()
    result["_timesteps"] = np.array([calls["t"][k] for k in range(n_steps)], dtype=np.int64)
    return result


def dataset_attrs(name: str, settings: FeatureSettings, n_steps: int | None = None,
                  timesteps: np.ndarray | None = None) -> dict:
    """Attributes describing one feature dataset (what it is, at which strength/step/layer)."""
    s = settings
    if name == "z":
        return {"description": "VAE latent x scaling factor", "z_resolution": s.z_resolution,
                "posterior": s.z_posterior}
    if name == "c":
        return {"description": "text-encoder last hidden state (padded to 77 tokens), mean over the image's captions"}
    group, tag = name.split("/")
    common = {"num_inference_steps": s.num_inference_steps, "guidance_scale": s.guidance_scale,
              "eta": s.eta, "seed": s.seed}
    if group == "noise":
        strength = float(tag[1:])
        return {"description": "final img2img latent from z conditioned on c", "strength": strength,
                "n_steps": n_denoising_steps(s.num_inference_steps, strength), **common}
    fraction = float(tag[1:])
    if group == "stage":
        k = stage_step(fraction, n_steps)
        t = int(timesteps[k]) if k < n_steps else 0
        return {"description": f"img2img latent after {k} of {n_steps} denoising steps",
                "fraction": fraction, "strength": s.stage_strength, "step": k, "n_steps": n_steps,
                "timestep": t, **common}
    k = unet_step(fraction, n_steps)
    pooling = "spatial mean" if s.unet_pool_size == 0 else f"adaptive average pool {s.unet_pool_size}x{s.unet_pool_size}"
    return {"description": f"U-Net block output ({pooling}), conditional branch, call {k} of {n_steps}",
            "layer": group, "module": s.unet_layers[group], "fraction": fraction, "strength": s.stage_strength,
            "step": k, "n_steps": n_steps, "timestep": int(timesteps[k]), "pool_size": s.unet_pool_size, **common}


def compute_family(family: str, pipe, settings: FeatureSettings, nsd_ids, *, images=None,
                   captions=None, z=None, c=None) -> dict[str, np.ndarray]:
    """One batch of one family's features, keyed by dataset name, float32.

    z needs images (n, H, W, 3) uint8; c needs captions (one list per image);
    zc and unet need z (n, 4, h, w) and c (n, 77, d). Keys starting with ``_``
    (``_timesteps``) are bookkeeping, not features.
    """
    if family == "z":
        return {"z": encode_z(pipe, images, settings.z_resolution, settings.z_posterior, nsd_ids, settings.seed)}
    if family == "c":
        return {"c": encode_c(pipe, captions, nsd_ids)}
    if family == "zc":
        return compute_zc_unet(pipe, settings, nsd_ids, z, c, unet=False)[0]
    if family == "unet":
        res = img2img_features(pipe, z, c, nsd_ids, settings.stage_strength, settings, unet=True)
        res.pop(f"noise/s{settings.stage_strength:.2f}")
        return res
    raise FeatureError(f"unknown feature family {family!r}; known: {FAMILIES}")


def compute_zc_unet(pipe, settings: FeatureSettings, nsd_ids, z: np.ndarray, c: np.ndarray,
                    unet: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One batch of the zc features and (with ``unet``) the U-Net activations, with the
    img2img at ``settings.stage_strength`` run once for both (stage latents and block
    outputs come from the same denoising pass; the other strengths run once each).

    z: (n, 4, h, w) scaled latents; c: (n, 77, d). Returns (zc, unet) dicts as
    :func:`compute_family` gives them for "zc" and "unet" (unet empty without ``unet``);
    both carry ``_timesteps`` of the stage-strength pass.
    """
    uc = encode_text(pipe, [""])
    zc: dict[str, np.ndarray] = {}
    acts: dict[str, np.ndarray] = {}
    layer_prefixes = tuple(f"{name}/" for name in settings.unet_layers)
    for s in dict.fromkeys([*settings.strengths, settings.stage_strength]):
        at_stage = s == settings.stage_strength
        res = img2img_features(pipe, z, c, nsd_ids, s, settings, stages=at_stage, unet=at_stage and unet, uc=uc)
        if at_stage:
            zc["_timesteps"] = res["_timesteps"]
            if unet:
                acts = {k: v for k, v in res.items() if k.startswith(layer_prefixes)}
                acts["_timesteps"] = res["_timesteps"]
        if s not in settings.strengths:
            res.pop(f"noise/s{s:.2f}")
        zc.update({k: v for k, v in res.items() if k != "_timesteps" and not k.startswith(layer_prefixes)})
    return zc, acts
