"""brainldm.logs: progress as plain log lines (no carriage returns), the rule log redirect."""

import logging

from brainldm.logs import Progress, progress, redirect_to_log


def test_progress_writes_plain_lines_to_the_rule_log(tmp_path):
    log = tmp_path / "job.log"
    with redirect_to_log(log):
        for _ in progress(range(4), "subj01 sessions", every_s=0):
            pass
        with Progress(3 * 2**30, "nsd_stimuli.hdf5", unit="B", initial=2**30, every_s=1e9) as bar:
            bar.update(2**30)  # no line before every_s has passed ...
            bar.update(2**30)  # ... and the end gets one
    text = log.read_text()
    assert b"\r" not in log.read_bytes()  # (text mode would turn a "\r\n" into "\n")
    lines = [line for line in text.splitlines() if "progress" in line]
    assert [line.split(": ", 1)[1] for line in lines[:4]] == [
        "subj01 sessions: 1/4 (25%), 0 s, about 0 s left",
        "subj01 sessions: 2/4 (50%), 0 s, about 0 s left",
        "subj01 sessions: 3/4 (75%), 0 s, about 0 s left",
        "subj01 sessions: 4/4 (100%), 0 s",
    ]
    assert lines[4:] == [lines[4]] and lines[4].endswith("nsd_stimuli.hdf5: 3.0 GiB/3.0 GiB (100%), 0 s")


def test_progress_without_logging_prints_to_stderr(capsys):
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        with Progress(10, "shards", every_s=1e9) as bar:
            bar.update(10)
    finally:
        root.handlers[:] = saved
    assert capsys.readouterr().err == "shards: 10/10 (100%), 0 s\n"
