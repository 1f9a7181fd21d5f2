"""Which Stable Diffusion model a run uses and whether its folder is complete, without
loading it: the checks the workflow runs while it parses (a dry run stops on a model
that is not there), so this module imports only the standard library
(``huggingface_hub`` only inside :func:`resolve_model`, to look up the local cache).
:mod:`brainldm.models` re-exports these names next to the loader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Components every Stable Diffusion v1.x folder must hold, with the files that make them.
REQUIRED_COMPONENTS: dict[str, tuple[tuple[str, ...], ...]] = {
    # component: (config files (one of), weight-file name prefixes (one of))
    "vae": (("config.json",), ("diffusion_pytorch_model",)),
    "unet": (("config.json",), ("diffusion_pytorch_model",)),
    "text_encoder": (("config.json",), ("model", "pytorch_model")),
    "tokenizer": (("vocab.json", "tokenizer.json"), ()),
    "scheduler": (("scheduler_config.json",), ()),
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


class ModelError(ValueError):
    """A model that cannot be loaded; the message names the component or file and the fix."""


def _download_hint(repo_id: str) -> str:
    return (
        f"download it once, with network, into the Hugging Face cache (HF_HOME="
        f"{os.environ.get('HF_HOME', '~/.cache/huggingface')}):\n"
        f"    python -c \"from diffusers import StableDiffusionImg2ImgPipeline as P; "
        f"P.from_pretrained('{repo_id}')\"\n"
        f"or `hf download {repo_id} --exclude '*.ckpt'` (older huggingface_hub: "
        f"`huggingface-cli download {repo_id}`); or set model.name to a local folder "
        "written by save_pretrained, or model.local_files_only: false to let the workflow download it"
    )


def resolve_model(name_or_dir: str | os.PathLike, local_files_only: bool = True) -> str:
    """The folder (or, when downloads are allowed, the hub id) that ``from_pretrained`` gets.

    A path that exists is returned as is. A hub id (``owner/name``) is looked up in the
    local Hugging Face cache; with ``local_files_only`` and no cached copy this raises
    :class:`ModelError` saying how to download it.
    """
    name = str(name_or_dir)
    if name == "tiny":
        raise ModelError(
            "model.name 'tiny' is built by the workflow, not loaded by name: load the folder the "
            "rule build_tiny_model writes (results/models/tiny), see workflow/rules/features.smk"
        )
    if Path(name).exists():
        return name
    parts = name.split("/")
    if len(parts) != 2 or not all(parts) or name.startswith((".", "/")):
        raise ModelError(
            f"model folder {name} does not exist (and it is not a hub id 'owner/name'): "
            "fix model.name, or build the tiny model with the rule build_tiny_model"
        )
    if not local_files_only:
        return name
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(name, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as err:
        raise ModelError(f"model {name} is not in the local Hugging Face cache ({err.__class__.__name__}); "
                         + _download_hint(name)) from err


def check_model_folder(folder: str | os.PathLike) -> None:
    """Raise :class:`ModelError` naming the first missing component or file of a diffusers SD folder."""
    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        raise ModelError(
            f"{folder} is not a diffusers model folder: {index} is missing. Point model.name at a "
            "folder written by save_pretrained (e.g. a Stable Diffusion v1.x snapshot), or rebuild "
            "the tiny model with the rule build_tiny_model"
        )
    try:
        listed = json.loads(index.read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"{index} is not valid JSON ({err}); the folder is corrupt: save or download it again") from err
    for component, (configs, weights) in REQUIRED_COMPONENTS.items():
        where = folder / component
        entry = listed.get(component)
        if not entry or entry[0] is None or not where.is_dir():
            raise ModelError(
                f"{folder} lacks the component {component!r} ({where} or its entry in model_index.json "
                "is missing); a Stable Diffusion v1.x folder needs vae, unet, text_encoder, tokenizer and "
                "scheduler: save or download the model again"
            )
        if not any((where / c).is_file() for c in configs):
            raise ModelError(
                f"component {component!r} of {folder} is incomplete: {where} has none of {list(configs)}; "
                "save or download the model again"
            )
        if weights and not any(
            f.name.startswith(weights) and f.name.endswith(_WEIGHT_SUFFIXES) for f in where.iterdir()
        ):
            raise ModelError(
                f"component {component!r} of {folder} has no weights ({where}/{weights[0]}*.safetensors "
                "or .bin is missing); save or download the model again"
            )
