"""Logging for rule scripts: everything a script prints goes to the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def redirect_to_log(log_file: str | os.PathLike) -> Iterator[None]:
    """Send stdout, stderr and ``logging`` (also :class:`Progress` lines) to ``log_file``.

    An exception is written to the log as one plain ``ERROR:`` line (the message
    names the file or key and the fix) before it propagates, so Snakemake marks
    the job failed and ``--show-failed-logs`` shows the reason.
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    with open(log_file, "w", buffering=1) as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        logging.basicConfig(stream=handle, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
        try:
            yield
        except BaseException as err:
            print(f"ERROR: {type(err).__name__}: {err}", file=handle)
            print(f"ERROR: {err}", file=sys.__stderr__)
            raise


def _amount(n: float, unit: str) -> str:
    """``n`` with its unit; bytes in binary multiples (``1.5 GiB``)."""
    if unit != "B":
        return f"{int(n)}{(' ' + unit) if unit else ''}"
    for prefix in ("", "Ki", "Mi", "Gi", "Ti"):
        if abs(n) < 1024 or prefix == "Ti":
            return f"{n:.0f} B" if not prefix else f"{n:.1f} {prefix}B"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Progress of a long step as plain log lines, one per update at most every
    ``every_s`` seconds and one at the end, e.g.
    ``subj01 sessions: 12/40 (30%), 95 s, about 222 s left``.

    Lines go to ``logging`` (the rule's log file under :func:`redirect_to_log`); they
    never repaint in place, so ``less`` and ``grep`` read them. Use as a context
    manager and call :meth:`update` with the amount done since the last call.
    total: the amount at the end (trials, shards, bytes with unit "B"); initial: the
    amount already done (a resumed download).
    """

    def __init__(self, total: int, desc: str, unit: str = "", initial: int = 0, every_s: float = 10.0,
                 logger: logging.Logger | None = None) -> None:
        self.total, self.desc, self.unit, self.every_s = int(total), desc, unit, every_s
        self.done = self.initial = int(initial)
        self.log = logger or logging.getLogger("brainldm.progress")
        self.start = self.last = time.monotonic()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.line()

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        now = time.monotonic()
        if now - self.last >= self.every_s and self.done < self.total:
            self.line()

    def line(self) -> None:
        """Log the state now: done/total (percent), seconds so far, seconds left."""
        self.last = now = time.monotonic()
        elapsed = now - self.start
        text = f"{self.desc}: {_amount(self.done, self.unit)}/{_amount(self.total, self.unit)}"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {elapsed:.0f} s"
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        if 0 < self.done < self.total and rate > 0:
            text += f", about {(self.total - self.done) / rate:.0f} s left"
        if logging.getLogger().handlers:  # a rule's log (redirect_to_log) or an app's logging
            self.log.info(text)
        else:
            print(text, file=sys.stderr, flush=True)


def progress(items: Iterable[T], desc: str, every_s: float = 10.0) -> Iterator[T]:
    """``items`` one by one, logging :class:`Progress` lines (count of items done)."""
    items = items if hasattr(items, "__len__") else list(items)
    with Progress(len(items), desc, every_s=every_s) as bar:
        for item in items:
            yield item
            bar.update(1)
