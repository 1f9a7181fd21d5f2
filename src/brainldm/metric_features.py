"""The networks behind the identification metrics, their weights, and their preprocessing.

Every feature space of both conventions is one :class:`FeatureSpec`: a network, the node
read out of it, and the preprocessing its reference code applies. Specs that share a
network *and* a preprocessing are computed by one forward pass
(``torchvision.models.feature_extraction.create_feature_extractor`` with all their nodes).

Preprocessing, per convention (images arrive as uint8 (b, H, W, 3)):

- **Takagi & Nishimoto** (``img2feat_decoded.py``): every image as a uint8 PIL image,
  resized by PIL as ``torchvision.transforms`` does on PIL input (optionally first to
  ``image_size["takagi"]`` square, default 0 = as stored).
  ``takagi``: Resize(299) of the short side (bilinear), CenterCrop(299), ImageNet
  mean/std, one tensor for Inception v3 and AlexNet. ``takagi_clip``: CLIP's own
  preprocess, Resize(224, bicubic) of the short side, CenterCrop(224), CLIP mean/std.
- **Brain-Diffuser / MindEye** (``final_evaluations.ipynb``, ``Reconstruction_Metrics.py``):
  every original and reconstruction first resized to ``image_size["mindeye"]`` square
  (default :data:`MINDEYE_IMAGE_SIZE` = 256, as MindEye does), then float tensors resized
  bilinearly with antialiasing, no crop:
  ``mindeye_alexnet`` Resize(256) + ImageNet mean/std; ``mindeye_inception`` Resize(342)
  + ImageNet mean/std; ``mindeye_clip`` Resize(224) + CLIP mean/std; ``mindeye_effnet``
  Resize(255) + ImageNet mean/std; ``mindeye_swav`` Resize(224) + ImageNet mean/std;
  ``pixels`` Resize(425), values in [0, 1] (PixCorr and SSIM).
  Antialiased tensor resizing equals MindEye's code under torchvision >= 0.17 (where
  ``antialias=True`` is the default), not under its pinned 0.15/0.16 (no antialiasing).

Networks run in the default (contiguous) memory format: ``channels_last`` was faster on
CPU but moved features by up to 6e-5.

Weights: ``pretrained`` loads torchvision ImageNet weights from local files only (never
downloads), the CLIP ViT-L/14 from a local Hugging Face cache or folder, and SwAV from a
local file. A network whose weights are not there is *unavailable*: its specs are reported
with weights ``"unavailable"`` and NaN scores. ``random`` builds the same torchvision
architectures with seeded random weights, and for CLIP a small configuration of the same
transformers class (:data:`SMALL_CLIP`), since ViT-L/14 is too slow on a laptop CPU.
"""

from __future__ import annotations

import ctypes
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from torchvision.models.feature_extraction import create_feature_extractor

from brainldm.metric_weights import (  # WeightsConfig, MetricWeightsError, missing_weights re-exported
    MetricWeightsError,
    WeightsConfig,
    missing_weights,
    swav_file,
    torchvision_file,
)
from brainldm.weights import WeightsHashError, check_hash_in_name

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Resolution (px) at which PixCorr and SSIM compare images (Brain-Diffuser / MindEye).
PIXEL_SIZE = 425

#: MindEye resizes every original and reconstruction to this square size before any metric.
MINDEYE_IMAGE_SIZE = 256

#: Square size (px) per convention before the metrics; 0 = the images as stored.
CONVENTION_IMAGE_SIZE = {"takagi": 0, "mindeye": MINDEYE_IMAGE_SIZE}

#: The small CLIP vision configuration used with random weights: same class and patch
#: size as ViT-L/14, 12 layers (hidden states 6 and 12 exist), narrow.
SMALL_CLIP = dict(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=12,
    num_attention_heads=4,
    image_size=224,
    patch_size=14,
    projection_dim=768,
)

@dataclass(frozen=True)
class FeatureSpec:
    """One feature space: ``convention/metric`` read from ``node`` of ``network``.

    kind: "identification" (two-way, per convention) or "distance" (mean correlation
    distance, lower is better).
    """

    convention: str
    metric: str
    network: str
    node: str
    preprocess: str
    kind: str = "identification"

    @property
    def key(self) -> str:
        return f"{self.convention}/{self.metric}"


#: Every network feature space of both conventions (PixCorr and SSIM need no network).
FEATURE_SPECS: tuple[FeatureSpec, ...] = (
    FeatureSpec("takagi", "alexnet5", "alexnet", "features.5", "takagi"),
    FeatureSpec("takagi", "alexnet12", "alexnet", "features.12", "takagi"),
    FeatureSpec("takagi", "alexnet18", "alexnet", "classifier.5", "takagi"),
    FeatureSpec("takagi", "inception", "inception_v3", "flatten", "takagi"),
    FeatureSpec("takagi", "clip", "clip", "image_embeds", "takagi_clip"),
    FeatureSpec("takagi", "clip_h6", "clip", "hidden_states.6", "takagi_clip"),
    FeatureSpec("takagi", "clip_h12", "clip", "hidden_states.12", "takagi_clip"),
    FeatureSpec("mindeye", "alexnet2", "alexnet", "features.4", "mindeye_alexnet"),
    FeatureSpec("mindeye", "alexnet5", "alexnet", "features.11", "mindeye_alexnet"),
    FeatureSpec("mindeye", "inception", "inception_v3", "avgpool", "mindeye_inception"),
    FeatureSpec("mindeye", "clip", "clip", "image_embeds", "mindeye_clip"),
    FeatureSpec("mindeye", "effnet_b1", "efficientnet_b1", "avgpool", "mindeye_effnet", "distance"),
    FeatureSpec("mindeye", "swav", "swav", "avgpool", "mindeye_swav", "distance"),
)

# name -> (convention, short-side size, centre crop or None, mean/std or None, interpolation)
_PREPROCESS = {
    "takagi": ("takagi", 299, 299, (IMAGENET_MEAN, IMAGENET_STD), "bilinear"),
    "takagi_clip": ("takagi", 224, 224, (CLIP_MEAN, CLIP_STD), "bicubic"),
    "mindeye_alexnet": ("mindeye", 256, None, (IMAGENET_MEAN, IMAGENET_STD), "bilinear"),
    "mindeye_inception": ("mindeye", 342, None, (IMAGENET_MEAN, IMAGENET_STD), "bilinear"),
    "mindeye_clip": ("mindeye", 224, None, (CLIP_MEAN, CLIP_STD), "bilinear"),
    "mindeye_effnet": ("mindeye", 255, None, (IMAGENET_MEAN, IMAGENET_STD), "bilinear"),
    "mindeye_swav": ("mindeye", 224, None, (IMAGENET_MEAN, IMAGENET_STD), "bilinear"),
    "pixels": ("mindeye", PIXEL_SIZE, None, None, "bilinear"),
}

# torchvision builder, weights enum member used in "pretrained" mode
_TORCHVISION = {
    "alexnet": ("alexnet", "AlexNet_Weights", "IMAGENET1K_V1"),
    "inception_v3": ("inception_v3", "Inception_V3_Weights", "IMAGENET1K_V1"),
    "efficientnet_b1": ("efficientnet_b1", "EfficientNet_B1_Weights", "DEFAULT"),
}


def _image_sizes(image_size: dict[str, int] | None) -> dict[str, int]:
    sizes = dict(CONVENTION_IMAGE_SIZE)
    sizes.update(image_size or {})
    bad = {k: v for k, v in sizes.items() if k not in CONVENTION_IMAGE_SIZE or int(v) < 0}
    if bad:
        raise MetricWeightsError(
            f"evaluation.image_size {bad} is invalid; use keys {list(CONVENTION_IMAGE_SIZE)} with sizes >= 0 (0 = as stored)"
        )
    return {k: int(v) for k, v in sizes.items()}


def _preprocess_pil(images: np.ndarray, size: int, crop: int | None, norm, interp: str, base: int) -> torch.Tensor:
    """Takagi's path: uint8 PIL images through ``torchvision.transforms`` (PIL resampling)."""
    from PIL import Image
    from torchvision import transforms as T

    mode = getattr(T.InterpolationMode, interp.upper())
    steps = [T.Resize((base, base), interpolation=T.InterpolationMode.BILINEAR)] if base else []
    steps += [T.Resize(size, interpolation=mode)]
    if crop is not None:
        steps.append(T.CenterCrop(crop))
    steps.append(T.ToTensor())
    if norm is not None:
        steps.append(T.Normalize(mean=list(norm[0]), std=list(norm[1])))
    tf = T.Compose(steps)
    return torch.stack([tf(Image.fromarray(np.ascontiguousarray(im))) for im in images])


def _preprocess_tensor(images: np.ndarray, size: int, crop: int | None, norm, interp: str, base: int) -> torch.Tensor:
    """MindEye's path: float tensors in [0, 1], antialiased resizes (first to base x base)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mode = getattr(TF.InterpolationMode, interp.upper())
    if base:
        x = TF.resize(x, [base, base], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    x = TF.resize(x, [size], interpolation=mode, antialias=True)
    if crop is not None:
        x = TF.center_crop(x, [crop, crop])
    if norm is not None:
        x = TF.normalize(x, mean=list(norm[0]), std=list(norm[1]))
    return x


def preprocess(images: np.ndarray, name: str, image_size: dict[str, int] | None = None) -> torch.Tensor:
    """uint8 (b, H, W, 3) images -> float32 (b, 3, h, w) network input for preprocessing ``name``.

    image_size: convention -> square size (px) every image is first resized to (0 = as
    stored); missing keys take :data:`CONVENTION_IMAGE_SIZE`. See the module docstring.
    """
    convention, size, crop, norm, interp = _PREPROCESS[name]
    base = _image_sizes(image_size)[convention]
    if convention == "takagi":
        return _preprocess_pil(images, size, crop, norm, interp, base)
    return _preprocess_tensor(images, size, crop, norm, interp, base)


def pixel_images(images: np.ndarray, image_size: dict[str, int] | None = None) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 425, 425, 3) in [0, 1] for PixCorr and SSIM (MindEye's path)."""
    lead = images.shape[:-3]
    flat = images.reshape((-1,) + images.shape[-3:])
    x = preprocess(flat, "pixels", image_size).clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()
    return x.reshape(lead + x.shape[1:])


#: glibc malloc's limits (bytes) raised by :func:`reuse_freed_memory`.
KEEP_FREED_BYTES = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def reuse_freed_memory() -> bool:
    """Make glibc's malloc serve large tensors from memory the process freed (heap, up to
    :data:`KEEP_FREED_BYTES`) instead of fresh mmap pages returned on free.

    Every layer output of the metric networks (many MB each) otherwise faults in new
    zeroed pages: on the demo a quarter of the evaluation's CPU time was that system
    time. Only addresses change, not a single computed value. Process-wide; call once
    at a rule script's start. Returns False (and changes nothing) without glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_FREED_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


@dataclass
class LoadedNetwork:
    """A network in eval mode (or None when unavailable) and a label of its weights."""

    name: str
    module: torch.nn.Module | None
    weights: str
    reason: str = ""


def _seeded(seed: int, name: str) -> None:
    torch.manual_seed(seed * 1000 + sum(map(ord, name)))


def _build_torchvision(name: str, cfg: WeightsConfig) -> LoadedNetwork:
    builder_name, enum_name, member = _TORCHVISION[name]
    builder = getattr(torchvision.models, builder_name)
    kwargs = {"aux_logits": True, "transform_input": True, "init_weights": True} if name == "inception_v3" else {}
    if cfg.mode == "random":
        _seeded(cfg.seed, name)
        return LoadedNetwork(name, builder(weights=None, **kwargs).eval(), f"random(seed={cfg.seed})")
    weights = getattr(getattr(torchvision.models, enum_name), member)
    path, reason = torchvision_file(name, cfg)
    label = f"{enum_name}.{weights.name}"
    if reason:
        log.warning("%s weights unavailable: %s", name, reason)
        return LoadedNetwork(name, None, "unavailable", reason)
    if name == "inception_v3":
        kwargs["init_weights"] = False
    model = builder(weights=None, **kwargs)
    try:
        check_hash_in_name(path, weights.url)
    except WeightsHashError as err:
        raise MetricWeightsError(f"{name} weights: {err}") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as err:  # corrupt or foreign file: a bad input, not a missing one
        raise MetricWeightsError(
            f"cannot load {name} weights from {path} ({err}); replace the file with {weights.url}"
        ) from err
    return LoadedNetwork(name, model.eval(), label)


def _build_swav(cfg: WeightsConfig) -> LoadedNetwork:
    if cfg.mode == "random":
        _seeded(cfg.seed, "swav")
        return LoadedNetwork("swav", torchvision.models.resnet50(weights=None).eval(), f"random(seed={cfg.seed})")
    path, reason = swav_file(cfg)
    if reason:
        log.warning("swav weights unavailable: %s", reason)
        return LoadedNetwork("swav", None, "unavailable", reason)
    model = torchvision.models.resnet50(weights=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        result = model.load_state_dict(state, strict=False)
    except Exception as err:
        raise MetricWeightsError(f"cannot load SwAV weights from {path} ({err}); check evaluation.swav_weights") from err
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing:
        raise MetricWeightsError(
            f"{path} is not a SwAV ResNet-50 checkpoint: {len(missing)} backbone weights missing "
            f"(e.g. {missing[0]}); check evaluation.swav_weights"
        )
    return LoadedNetwork("swav", model.eval(), f"swav:{path.name}")


def _build_clip(cfg: WeightsConfig) -> LoadedNetwork:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if cfg.mode == "random":
        _seeded(cfg.seed, "clip")
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**SMALL_CLIP))
        return LoadedNetwork("clip", model.eval(), f"random(seed={cfg.seed},small-config)")
    try:
        model = CLIPVisionModelWithProjection.from_pretrained(cfg.clip_model, local_files_only=True)
    except (OSError, ValueError) as err:  # not cached / not a folder / not a valid id, offline
        reason = f"{cfg.clip_model!r} is not in the local Hugging Face cache nor a folder ({err.__class__.__name__})"
        log.warning("clip weights unavailable: %s", reason)
        return LoadedNetwork("clip", None, "unavailable", reason)
    return LoadedNetwork("clip", model.eval(), cfg.clip_model)


def load_network(name: str, cfg: WeightsConfig) -> LoadedNetwork:
    """Build network ``name`` (alexnet, inception_v3, efficientnet_b1, swav, clip) per ``cfg``."""
    if name == "clip":
        return _build_clip(cfg)
    if name == "swav":
        return _build_swav(cfg)
    return _build_torchvision(name, cfg)


class _ClipReadout(torch.nn.Module):
    """Wraps CLIPVisionModelWithProjection to return the nodes Takagi and MindEye read."""

    def __init__(self, model: torch.nn.Module, nodes: list[str]):
        super().__init__()
        self.model, self.nodes = model, nodes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        need_hidden = any(n.startswith("hidden_states.") for n in self.nodes)
        out = self.model(pixel_values=x, output_hidden_states=need_hidden)
        res = {}
        for node in self.nodes:
            if node == "image_embeds":
                res[node] = out.image_embeds
            else:
                res[node] = out.hidden_states[int(node.split(".")[1])]
        return res


@dataclass
class _Group:
    network: str
    preprocess: str
    specs: list[FeatureSpec] = field(default_factory=list)
    extractor: torch.nn.Module | None = None


class MetricNetworks:
    """All networks of the requested specs, each run once per image and preprocessing.

    ``extract(images)`` returns {spec.key: (b, d) float32} for every *available* spec;
    ``weights[spec.key]`` says which weights made it ("unavailable" when none).
    """

    def __init__(self, cfg: WeightsConfig, specs: tuple[FeatureSpec, ...] = FEATURE_SPECS,
                 device: str | None = None, image_size: dict[str, int] | None = None):
        self.image_size = _image_sizes(image_size)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.specs = tuple(specs)
        nets = {name: load_network(name, cfg) for name in dict.fromkeys(s.network for s in self.specs)}
        self.weights = {s.key: nets[s.network].weights for s in self.specs}
        self.unavailable = {s.key: nets[s.network].reason for s in self.specs if nets[s.network].module is None}
        groups: dict[tuple[str, str], _Group] = {}
        for s in self.specs:
            if nets[s.network].module is None:
                continue
            groups.setdefault((s.network, s.preprocess), _Group(s.network, s.preprocess)).specs.append(s)
        for g in groups.values():
            module = nets[g.network].module.to(self.device)
            nodes = list(dict.fromkeys(s.node for s in g.specs))
            if g.network == "clip":
                g.extractor = _ClipReadout(module, nodes)
            else:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="NOTE: The nodes obtained by tracing")
                    g.extractor = create_feature_extractor(module, return_nodes=nodes).eval()
        self.groups = list(groups.values())

    @torch.inference_mode()
    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images: uint8 (b, H, W, 3) -> {spec key: (b, d) float32 flattened features}."""
        out: dict[str, np.ndarray] = {}
        inputs: dict[str, torch.Tensor] = {}
        for g in self.groups:
            if g.preprocess not in inputs:
                inputs[g.preprocess] = preprocess(images, g.preprocess, self.image_size).to(self.device)
            x = inputs[g.preprocess]
            feats = g.extractor(x)
            for s in g.specs:
                out[s.key] = feats[s.node].reshape(len(images), -1).float().cpu().numpy()
        return out
