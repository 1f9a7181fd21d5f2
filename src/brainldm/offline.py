"""Offline mode for every job when the config says local_files_only (issue 17.4).

``from_pretrained(..., local_files_only=True)`` alone still lets the Hugging Face hub
client attempt network requests in some code paths (transformers looks up a registry;
errors are swallowed after a timeout). The hub's offline switches stop every attempt:
the Snakefile puts them into the environment the jobs inherit.
"""

from __future__ import annotations

import os

#: Environment variables that make huggingface_hub, transformers and diffusers offline.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def offline_env(local_files_only: bool) -> dict[str, str]:
    """The variables to set for jobs: OFFLINE_ENV when ``local_files_only`` (config
    model.local_files_only), else none (downloads allowed)."""
    return dict(OFFLINE_ENV) if local_files_only else {}


def apply_offline(local_files_only: bool, environ: dict | None = None) -> dict[str, str]:
    """Set :func:`offline_env` in ``environ`` (default ``os.environ``, inherited by the jobs)
    and, when huggingface_hub is already imported, its offline constant. Returns what was set."""
    env = offline_env(local_files_only)
    (os.environ if environ is None else environ).update(env)
    if env and environ is None:
        import sys

        hub = sys.modules.get("huggingface_hub.constants")
        if hub is not None:
            hub.HF_HUB_OFFLINE = True
    return env
