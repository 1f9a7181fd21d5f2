"""Small I/O helpers: atomic writes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(file: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``file``; rename it to ``file`` only on success.

    The temporary name keeps the file's extensions (``.nii.gz``, ``.npy``), so
    writers that choose a format by extension work. A failure leaves ``file``
    untouched and removes the temporary.
    """
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".tmp-{os.getpid()}-{file.name}")
    try:
        yield tmp
        os.replace(tmp, file)
    finally:
        if tmp.exists():
            tmp.unlink()
