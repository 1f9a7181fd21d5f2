"""A writable pycortex filestore, shared by every stage that uses pycortex.

pycortex pins its filestore (the folder holding subjects such as ``S1``) in a user
config at first import and writes caches into it, so the installed copy may be
read-only or point at another prefix. ``prepare_filestore`` copies the bundled
filestore into a project folder once (atomically, safe for parallel jobs) and
points ``cortex.db`` at it.
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from brainldm.io import atomic_dir

_BUNDLED_SUBJECT = "S1"


def _set_env_defaults(cache_dir: Path) -> None:
    """Keep pycortex's user config and matplotlib's cache inside the project.

    Must run before ``import cortex`` to have an effect (pycortex reads its user
    config at import time); later calls are harmless.
    """
    os.environ.setdefault("XDG_CONFIG_HOME", str(cache_dir / "config"))
    os.environ.setdefault("XDG_DATA_HOME", str(cache_dir / "data"))
    os.environ.setdefault("MPLCONFIGDIR", str(cache_dir / "matplotlib"))
    os.environ.setdefault("MPLBACKEND", "Agg")


def bundled_filestore() -> Path:
    """The filestore installed with pycortex (holds subject ``S1``).

    Looks at ``<sys.prefix>/share/pycortex/db`` and at the path written into
    pycortex's ``defaults.cfg`` at build time, without importing cortex.
    """
    candidates = [Path(sys.prefix) / "share" / "pycortex" / "db"]
    import importlib.util

    spec = importlib.util.find_spec("cortex")
    if spec is not None and spec.origin is not None:
        cfg = configparser.ConfigParser()
        cfg.read(Path(spec.origin).parent / "defaults.cfg")
        if cfg.has_option("basic", "filestore"):
            candidates.append(Path(cfg.get("basic", "filestore")))
    for path in candidates:
        if (path / _BUNDLED_SUBJECT).is_dir():
            return path
    raise FileNotFoundError(
        "pycortex's bundled filestore (with subject S1) was not found in "
        + ", ".join(str(c) for c in candidates)
        + ". Reinstall pycortex (pip install pycortex==1.4.0) into this environment."
    )


@contextlib.contextmanager
def filestore_lock(filestore: str | os.PathLike) -> Iterator[None]:
    """Exclusive inter-process lock on a filestore.

    Hold it around pycortex calls that may write the filestore's cache (e.g. the
    first ``quickflat.make_png`` of a subject), so parallel jobs do not read
    half-written cache files.
    """
    lock_path = Path(filestore).parent / (Path(filestore).name + ".lock")
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare_filestore(cache_dir: str | os.PathLike, source: str | os.PathLike | None = None) -> Path:
    """Make (once) a writable copy of a pycortex filestore and point ``cortex.db`` at it.

    cache_dir: project folder for pycortex state; the copy is ``cache_dir/db``, and
        pycortex's user config / matplotlib's cache go to ``cache_dir/config`` and
        ``cache_dir/matplotlib`` unless XDG_CONFIG_HOME / MPLCONFIGDIR are set.
    source: filestore to copy; default: the one bundled with pycortex (subject S1).
        Put extra subjects (e.g. NSD subjects imported with
        ``cortex.freesurfer.import_subj``) into ``cache_dir/db`` next to S1.
    Returns the path of the writable filestore (absolute).
    """
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    _set_env_defaults(cache_dir)
    target = cache_dir / "db"
    src = Path(source) if source is not None else bundled_filestore()
    if not (src / _BUNDLED_SUBJECT).is_dir() and source is None:
        raise FileNotFoundError(f"{src} holds no pycortex subject {_BUNDLED_SUBJECT}")
    with filestore_lock(target):
        if not target.is_dir():
            with atomic_dir(target) as tmp:
                shutil.copytree(src, tmp, dirs_exist_ok=True)
    if not os.access(target, os.W_OK):
        raise PermissionError(f"pycortex filestore copy {target} is not writable; delete it or fix its permissions")

    import cortex

    cortex.db.filestore = str(target)
    cortex.db.reload_subjects()
    # quickflat and friends resolve paths through cortex.database.default_filestore
    # in a few places; keep it consistent with cortex.db.
    cortex.database.default_filestore = str(target)
    cortex.options.config.set("basic", "filestore", str(target))
    return target
