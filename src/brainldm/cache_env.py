"""Environment that keeps every tool's cache under the project, whatever HOME and TMPDIR are."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def project_cache_env(workdir: str | os.PathLike, environ: Mapping[str, str]) -> dict[str, str]:
    """Variables to set so caches live in ``<workdir>/.cache/``.

    matplotlib (MPLCONFIGDIR), fontconfig and other XDG users (XDG_CACHE_HOME),
    torch inductor and triton (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR) always go
    there. Hugging Face keeps the user's HF_HOME if set (it holds their model cache),
    else their existing default cache (~/.cache/huggingface) if there is one, else
    ``<workdir>/.cache/huggingface``. Returns absolute paths; the folders are not created.
    """
    cache = Path(workdir).resolve() / ".cache"
    env = {
        "MPLCONFIGDIR": str(cache / "matplotlib"),
        "XDG_CACHE_HOME": str(cache),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
    }
    if not environ.get("HF_HOME"):
        old_xdg, home = environ.get("XDG_CACHE_HOME"), environ.get("HOME")
        default = Path(old_xdg) / "huggingface" if old_xdg else (Path(home) / ".cache" / "huggingface" if home else None)
        env["HF_HOME"] = str(default) if default is not None and default.is_dir() else str(cache / "huggingface")
    return env
