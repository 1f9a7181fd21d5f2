"""Where the metric networks' pretrained weights come from and which are missing, without
loading a network: what the workflow checks (and warns about) while it parses, so this
module imports only the standard library (``huggingface_hub`` only inside
:func:`clip_missing`, to look up the local cache). :mod:`brainldm.metric_features`
loads the networks from these files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_MODES = ("pretrained", "random")


class MetricWeightsError(ValueError):
    """A weights file exists but cannot be used; the message names the file and the fix."""


@dataclass
class WeightsConfig:
    """Where the networks' weights come from (config section ``evaluation``).

    mode: "pretrained" or "random"; seed: seed of the random weights; torch_weights_dir:
    folder holding torchvision's checkpoint files under their download names ("" = the
    torch hub cache, ``$TORCH_HOME/hub/checkpoints``); clip_model: Hugging Face id (local
    cache only) or folder of CLIPVisionModelWithProjection; swav_weights: path of SwAV's
    ``swav_800ep_pretrain.pth.tar`` ("" = unavailable).
    """

    mode: str = "pretrained"
    seed: int = 0
    torch_weights_dir: str = ""
    clip_model: str = "openai/clip-vit-large-patch14"
    swav_weights: str = ""

    def __post_init__(self) -> None:
        if self.mode not in WEIGHTS_MODES:
            raise MetricWeightsError(
                f"evaluation.metrics_weights is {self.mode!r}; use one of {WEIGHTS_MODES}"
            )


#: torchvision's checkpoint URL of each network's pretrained weights (the ``url`` of
#: AlexNet_Weights.IMAGENET1K_V1, Inception_V3_Weights.IMAGENET1K_V1 and
#: EfficientNet_B1_Weights.DEFAULT; tests/test_metric_weights.py checks them against
#: torchvision); the file is looked for under its download name.
TORCHVISION_URLS = {
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "inception_v3": "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    "efficientnet_b1": "https://download.pytorch.org/models/efficientnet_b1-c27df63c.pth",
}


def torch_hub_dir(env: Mapping[str, str] = os.environ) -> str:
    """``torch.hub.get_dir()`` without importing torch: $TORCH_HOME/hub, where TORCH_HOME
    defaults to $XDG_CACHE_HOME/torch and XDG_CACHE_HOME to ~/.cache."""
    home = env.get("TORCH_HOME", os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return os.path.join(os.path.expanduser(home), "hub")


def torchvision_file(name: str, cfg: WeightsConfig) -> tuple[Path, str]:
    """Where torchvision network ``name``'s checkpoint must be, and why it is not there ("" if it is)."""
    url = TORCHVISION_URLS[name]
    folder = Path(cfg.torch_weights_dir) if cfg.torch_weights_dir else Path(torch_hub_dir()) / "checkpoints"
    path = folder / os.path.basename(url)
    if path.is_file():
        return path, ""
    return path, f"{path} not found (put {url} there, or set evaluation.torch_weights_dir)"


def swav_file(cfg: WeightsConfig) -> tuple[Path | None, str]:
    """SwAV's checkpoint path, and why it is not usable ("" if it is a file)."""
    path = Path(cfg.swav_weights) if cfg.swav_weights else None
    if path is not None and path.is_file():
        return path, ""
    return path, (
        f"evaluation.swav_weights={cfg.swav_weights!r} is not a file (set it to a local copy of "
        "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar)"
    )


def clip_missing(cfg: WeightsConfig) -> str:
    """Why CLIP cannot be loaded from a folder or the local Hugging Face cache ("" if it can), without loading it."""
    if Path(cfg.clip_model).is_dir():
        return "" if (Path(cfg.clip_model) / "config.json").is_file() else f"folder {cfg.clip_model} has no config.json"
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(cfg.clip_model, "config.json")
    except ValueError:  # not a valid repo id
        cached = None
    if isinstance(cached, str):
        return ""
    return (
        f"{cfg.clip_model!r} is not in the local Hugging Face cache nor a folder "
        f"(fetch it with: hf download {cfg.clip_model})"
    )


def missing_weights(cfg: WeightsConfig) -> dict[str, str]:
    """{network: why its pretrained weights are missing} without loading any network.

    Empty for ``mode="random"``. A missing network is scored as ``unavailable`` (NaN);
    the workflow warns at start-up so that is never a surprise after the GPU hours.
    """
    if cfg.mode == "random":
        return {}
    reasons = {name: torchvision_file(name, cfg)[1] for name in TORCHVISION_URLS}
    reasons["swav"] = swav_file(cfg)[1]
    reasons["clip"] = clip_missing(cfg)
    return {name: why for name, why in reasons.items() if why}
