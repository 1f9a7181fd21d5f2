"""Weights files checked against the SHA-256 prefix their name carries (torch.hub style).

torchvision and torch.hub name checkpoints ``<name>-<first hex digits of SHA-256>.<ext>``
(e.g. ``alexnet-owt-7be5be79.pth``); torch.hub checks the prefix when it downloads. A
file put in place by hand is checked here before it is trusted as those weights.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

#: torch.hub's pattern for the hash in a file name: the hex digits after the last "-".
HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.")


class WeightsHashError(ValueError):
    """A weights file whose content does not match the SHA-256 prefix in its name."""


def hash_prefix(path: str | os.PathLike) -> str | None:
    """The SHA-256 prefix carried by the file name (``alexnet-owt-7be5be79.pth`` -> ``7be5be79``), or None."""
    found = HASH_IN_NAME.findall(Path(path).name)
    return found[-1] if found else None


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_hash_in_name(path: str | os.PathLike, source: str = "") -> None:
    """Raise :class:`WeightsHashError` when ``path``'s SHA-256 does not start with the prefix
    in its name (no prefix in the name: nothing to check). ``source``: where the right file
    comes from (a URL), for the message."""
    prefix = hash_prefix(path)
    if prefix is None:
        return
    digest = sha256_file(path)
    if not digest.startswith(prefix):
        raise WeightsHashError(
            f"{path} is not the file its name says: its name carries the SHA-256 prefix {prefix} but the "
            f"content hashes to {digest[:len(prefix)]}... (a different or damaged file under that name); "
            f"replace it with the original{' from ' + source if source else ''}, or remove it"
        )
