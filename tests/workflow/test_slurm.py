"""A part of the demo DAG through a real (local, one-node) SLURM with the workflow's
SLURM profile: every job is an sbatch job that SLURM runs, with the resources the
rules declare, and the outputs equal those of the local run.

The local cluster has no accounting database, so the run adds the two options the
profile documents for that case (`--slurm-status-command squeue`,
`--slurm-no-account`) and polls early (`--slurm-init-seconds-before-status-checks`).
"""

from __future__ import annotations

import re
import time

import pytest

from .conftest import content_difference

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# Rerun through SLURM: the synthetic data set and, depending on it, both subjects'
# ingestion and the stimulus table (a two-level chain of four jobs).
FORCE = ["synthetic_nsd"]
UNTIL = ["ingest", "stimuli_table"]
# Rules of that part that request a GPU; the local cluster has none.
NO_GPU: list[str] = []

SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


def scontrol_job(cluster, jobid: str) -> dict[str, str]:
    """`scontrol show job` as {key: value} (MinJobAge keeps finished jobs for 300 s)."""
    text = cluster.command("scontrol", "show", "job", "-o", jobid)
    return dict(re.findall(r"(\w[\w/:]*)=(\S*)", text))


def test_demo_part_runs_as_slurm_jobs(demo_run, local_slurm, tmp_path):
    run = demo_run.clone(tmp_path / "wf")
    args = [
        "--workflow-profile", "workflow/profiles/slurm",
        "--slurm-status-command", "squeue",
        "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks", "2",
        "--forcerun", *FORCE,
        "--until", *UNTIL,
    ]
    if NO_GPU:
        args += ["--set-resources", *(f"{rule}:gpu=0" for rule in NO_GPU)]
    started = time.time()
    proc = run.snakemake(*args, extra_env=local_slurm.env(), timeout=900)
    out = proc.stdout + proc.stderr

    submitted = SUBMITTED.findall(out)
    assert submitted, "no job was submitted to SLURM:\n" + out[-3000:]
    assert len(submitted) == 1 + 2 * 1 + 1, submitted  # synthetic, 2 x ingest, stimuli
    rules_run = set()
    for jobid, slurm_id, log in submitted:
        info = scontrol_job(local_slurm, slurm_id)
        # the plugin comments each job "rule_<rule>[_wildcards_<values>]"
        rule = info["Comment"].removeprefix("rule_").split("_wildcards_")[0]
        rules_run.add(rule)
        assert info["JobState"] == "COMPLETED", (rule, info)
        assert info["WorkDir"] == str(run.workdir)
        assert info["NodeList"] == "localhost"
        # the rule's resources became the sbatch request
        resources = job_resources(out, jobid)
        assert info["MinMemoryNode"] == f"{resources['mem_mb']}M", (rule, info)
        assert time_limit_minutes(info["TimeLimit"]) == int(resources["runtime"]), (rule, info)
        # the SLURM log (kept by the profile) shows the rule ran inside that job
        text = open(log).read()
        assert f"rule {rule}:" in text or f"localrule {rule}:" in text, text[-2000:]
    assert rules_run == {"synthetic_nsd", "ingest", "stimuli_table"}, rules_run

    # the files the SLURM jobs wrote equal those of the local run
    rewritten = [
        f for f in (run.workdir / "results").rglob("*")
        if f.is_file() and f.stat().st_mtime >= started
        and f.relative_to(run.workdir).parts[1] not in ("logs", "benchmarks")
    ]
    assert any(f.name == "stimuli.tsv" for f in rewritten), rewritten
    for f in rewritten:
        rel = f.relative_to(run.workdir)
        assert content_difference(f, demo_run.workdir / rel) is None, rel


def job_resources(out: str, jobid: str) -> dict[str, str]:
    """The `resources:` line Snakemake printed for job `jobid`, as {name: value}."""
    for block in out.split("\n\n"):
        if re.search(rf"^\s+jobid: {jobid}$", block, re.M):
            line = re.search(r"^\s+resources: (.*)$", block, re.M)
            assert line, block
            return dict(kv.split("=", 1) for kv in line.group(1).split(", "))
    raise AssertionError(f"no job block for jobid {jobid}")


def time_limit_minutes(limit: str) -> int:
    """SLURM's [D-]HH:MM:SS as minutes."""
    days, _, hms = limit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + (s > 0)
