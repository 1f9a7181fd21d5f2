"""Logging for rule scripts: everything a script prints goes to the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def redirect_to_log(log_file: str | os.PathLike) -> Iterator[None]:
    """Send stdout, stderr (tqdm progress bars) and ``logging`` to ``log_file``.

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
