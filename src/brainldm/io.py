"""Small I/O helpers: atomic writes, stale temporaries, disk-full reports."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_TMP = re.compile(r"^\.tmp-(\d+)-(.+)$")


class DiskFullError(OSError):
    """A write failed because the file system is full; the message names the place and the free space."""


def _human(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n_bytes < 1024 or unit == "TB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TB"


def disk_full_message(where: str | os.PathLike) -> str:
    """``"disk full at <where>, <free> left"`` with the free space of the file system holding ``where``."""
    where = Path(where)
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = _human(shutil.disk_usage(probe).free)
    except OSError:
        free = "unknown space"
    return f"disk full at {where}, {free} left: free space there (or point results/ at a larger disk) and rerun"


@contextlib.contextmanager
def report_disk_full(where: str | os.PathLike) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT (or a short write on a nearly full disk) inside the block into a
    :class:`DiskFullError` naming ``where``."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT) or (err.errno is None and _nearly_full(where)):
            raise DiskFullError(errno.ENOSPC, disk_full_message(where)) from err
        raise


def _nearly_full(where: str | os.PathLike) -> bool:
    """True when the file system of ``where`` has under 64 MB free (numpy's short writes carry no errno)."""
    probe = Path(where)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free < 64 * 2**20
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(outputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Remove ``.tmp-<pid>-*<name>`` files beside each output whose process is dead.

    Such files are left by killed or crashed writers (:func:`atomic_path`, ingestion's
    memory maps). Temporaries of live processes (a concurrent job) are kept. Only
    temporaries of the given outputs' names are touched. Returns the removed paths.
    (On a cluster, a pid is checked on this host only; run rules of one output on one host.)
    """
    removed = []
    by_dir: dict[Path, set[str]] = {}
    for out in outputs:
        out = Path(out)
        by_dir.setdefault(out.parent, set()).add(out.name)
    for folder, names in by_dir.items():
        if not folder.is_dir():
            continue
        for tmp in folder.iterdir():
            match = _TMP.match(tmp.name)
            if not match or not any(match.group(2).endswith(name) for name in names):
                continue
            pid = int(match.group(1))
            if pid == os.getpid() or _pid_alive(pid):
                continue
            with contextlib.suppress(FileNotFoundError):
                size = tmp.stat().st_size
                tmp.unlink()
                removed.append(tmp)
                log.info("removed stale temporary %s (%s) of dead process %d", tmp, _human(size), pid)
    return removed


class NpyRows:
    """A ``.npy`` file of shape (n_rows, n_cols), written block of rows by block of rows.

    The file's blocks are reserved on disk when it is opened, so a full disk is an
    ENOSPC here (reported as :class:`DiskFullError`), never a SIGBUS later. Rows go
    to disk with ``pwrite``, not through a memory map, so what was written is the
    page cache's, not the writing process's resident memory. Use as a context manager.
    """

    def __init__(self, file: str | os.PathLike, shape: tuple[int, int], dtype=np.float32):
        self.file, self.shape, self.dtype = Path(file), tuple(int(n) for n in shape), np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        with report_disk_full(self.file):
            with open(self.file, "wb") as f:
                np.lib.format.write_array_header_1_0(f, header)
                self._data_start = f.tell()
                size = self._data_start + self.shape[0] * self.shape[1] * self.dtype.itemsize
                if size > self._data_start:
                    os.posix_fallocate(f.fileno(), 0, size)
        self._fd = os.open(self.file, os.O_WRONLY)

    def write(self, start: int, rows: np.ndarray) -> None:
        """Write rows (n, n_cols) of ``dtype`` at rows start..start+n."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != self.shape[1] or not 0 <= start <= self.shape[0] - len(rows):
            raise ValueError(f"rows {rows.shape} at {start} do not fit {self.file} of shape {self.shape}")
        with report_disk_full(self.file):
            self._write_bytes(self._data_start + start * self.shape[1] * self.dtype.itemsize, memoryview(rows).cast("B"))

    def write_each(self, start: int, rows: list[np.ndarray]) -> None:
        """Write rows (each (n_cols,) of ``dtype``, C-contiguous) at rows start.., without
        gathering them first (``pwritev`` of up to 512 rows at a time)."""
        if not 0 <= start <= self.shape[0] - len(rows):
            raise ValueError(f"{len(rows)} rows at {start} do not fit {self.file} of shape {self.shape}")
        row_bytes = self.shape[1] * self.dtype.itemsize
        for row in rows:
            if row.shape != (self.shape[1],) or row.dtype != self.dtype or not row.flags.c_contiguous:
                raise ValueError(f"rows must be contiguous ({self.shape[1]},) {self.dtype}, got {row.shape} {row.dtype}")
        offset = self._data_start + start * row_bytes
        with report_disk_full(self.file):
            for lo in range(0, len(rows), 512):
                views = [memoryview(r).cast("B") for r in rows[lo : lo + 512]]
                total = len(views) * row_bytes
                done = os.pwritev(self._fd, views, offset)
                if done < total:  # a short write: finish this group piece by piece
                    rest = b"".join(views)[done:]
                    self._write_bytes(offset + done, rest)
                offset += total

    def _write_bytes(self, offset: int, data: bytes | memoryview) -> None:
        """Write raw bytes at a file offset (the rest of a short write)."""
        view = memoryview(data)
        while len(view):
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "NpyRows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def atomic_path(file: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``file``; rename it to ``file`` only on success.

    The temporary name keeps the file's extensions (``.nii.gz``, ``.npy``), so
    writers that choose a format by extension work. A failure leaves ``file``
    untouched and removes the temporary; temporaries of ``file`` left by dead
    processes are removed first; a full disk is reported as :class:`DiskFullError`.
    """
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries([file])
    tmp = file.with_name(f".tmp-{os.getpid()}-{file.name}")
    try:
        with report_disk_full(file.parent):
            yield tmp
            os.replace(tmp, file)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside ``folder``; on success it replaces ``folder``
    (an existing one is removed first). A failure leaves ``folder`` as it was and removes
    the temporary folder."""
    import tempfile

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        tmp.chmod(0o755)
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
