"""io helpers: atomic writes, stale temporaries of dead processes, disk full reported as such."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from brainldm.io import DiskFullError, NpyRows, atomic_path, remove_stale_temporaries


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    out = tmp_path / "betas_brain_train.npy"
    dead = _dead_pid()
    stale = tmp_path / f".tmp-{dead}-betas_brain_train.npy"
    stale_kept = tmp_path / f".tmp-{dead}-kept-betas_brain_train.npy"
    live = tmp_path / f".tmp-{os.getppid()}-betas_brain_train.npy"  # a running process (pytest's parent)
    other = tmp_path / f".tmp-{dead}-someone_elses.npy"  # not a temporary of this output
    for f in (stale, stale_kept, live, other):
        f.write_bytes(b"x" * 100)
    removed = remove_stale_temporaries([out])
    assert sorted(removed) == sorted([stale, stale_kept])
    assert not stale.exists() and not stale_kept.exists() and live.exists() and other.exists()


def test_atomic_path_cleans_a_killed_writers_temporary(tmp_path):
    out = tmp_path / "test.tsv"
    stale = tmp_path / f".tmp-{_dead_pid()}-test.tsv"
    stale.write_text("half")
    with atomic_path(out) as tmp:
        tmp.write_text("done")
    assert out.read_text() == "done" and not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["test.tsv"]


def test_killed_ingest_leaves_nothing_after_the_next_run(tmp_path):
    """A temporary memory map of a killed ingest (kill -9) is removed by the next ingest of the subject."""
    from test_ingest import _ingest, _write_tiny_nsd

    root = _write_tiny_nsd(tmp_path / "nsd")
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import os, numpy as np, sys; "
        f"np.lib.format.open_memmap({str(out)!r} + f'/.tmp-{{os.getpid()}}-betas_brain_train.npy', mode='w+', dtype=np.float32, shape=(1000, 100)); "
        "os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code])
    assert [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]
    _ingest(root, out)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MB tmpfs (needs root); skipped where it cannot be mounted."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_row_file_on_a_full_disk_is_disk_full_when_opened(small_tmpfs):
    with pytest.raises(DiskFullError, match=rf"disk full at {small_tmpfs}/big\.npy, \d+\.\d (KB|MB) left"):
        NpyRows(small_tmpfs / "big.npy", (1000, 1000))  # 4 MB on a 2 MB disk


def test_row_file_is_a_npy_written_block_by_block(tmp_path):
    values = np.arange(35, dtype=np.float32).reshape(7, 5)
    with NpyRows(tmp_path / "rows.npy", values.shape) as rows:
        rows.write(4, values[4:])
        rows.write(0, values[:4])
        with pytest.raises(ValueError, match="do not fit"):
            rows.write(6, values[:2])
    loaded = np.load(tmp_path / "rows.npy")
    assert loaded.dtype == np.float32 and np.array_equal(loaded, values)
    # rows written one by one from their own memory (pwritev in groups of 512)
    many = np.random.default_rng(0).standard_normal((1300, 3), dtype=np.float32)
    order = np.random.default_rng(1).permutation(len(many))
    with NpyRows(tmp_path / "each.npy", (len(many) + 2, 3)) as rows:
        rows.write_each(2, [many[i] for i in order])
        rows.write(0, many[:2])
        with pytest.raises(ValueError, match="contiguous"):
            rows.write_each(0, [many[:, 0]])
    assert np.array_equal(np.load(tmp_path / "each.npy"), np.concatenate([many[:2], many[order]]))


def test_atomic_write_on_a_full_disk_is_disk_full(small_tmpfs):
    with pytest.raises(DiskFullError, match=rf"disk full at {small_tmpfs}, .* left"):
        with atomic_path(small_tmpfs / "x.npy") as tmp:
            np.save(tmp, np.zeros(1_000_000, np.float32))
    assert list(small_tmpfs.iterdir()) == []


def test_ingest_on_a_full_disk_says_disk_full(tmp_path, small_tmpfs):
    from brainldm import nsd
    from test_ingest import _ingest, _write_tiny_nsd

    root = _write_tiny_nsd(tmp_path / "nsd")
    filler = small_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill the disk
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    out = small_tmpfs / "out"
    with pytest.raises(DiskFullError, match=rf"disk full at {small_tmpfs}.* left"):
        _ingest(root, out)
    assert not out.exists() or not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert nsd.path(root, "brainmask", "subj01").exists()
