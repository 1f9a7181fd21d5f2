"""Partial reruns on a finished demo run (README: "Re-running one stage").

- rerun one stage of one subject only (target files + --forcerun);
- a changed parameter makes a dry run list only that rule and its downstream rules;
- --until stops after a stage;
- a job killed half-way is detected as incomplete, rerun, and its outputs then equal
  those of the uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml

from .conftest import (
    WorkflowRun,
    content_difference,
    downstream,
    parse_dry_run,
    rule_graph,
    snakemake_command,
    upstream,
    workflow_env,
)

pytestmark = pytest.mark.slow

# Rerunning one subject's reconstruction: force the shard rule for that subject's
# final files; the gather and the grid of that subject follow, nothing else.
SUBJECT_FORCE = "reconstruct_shard"
SUBJECT_TARGETS = [
    "results/{subject}/reconstruction/recons.h5",
    "results/{subject}/reconstruction/grid.png",
]
SUBJECT_RULES = {"reconstruct_shard", "reconstruct_gather", "reconstruct_grid"}
# A reconstruction parameter: only the reconstruction and what uses it rerun.
PARAM_RULE = "reconstruct_shard"
PARAM_CHANGE = {"reconstruction": {"strength": 0.7}}
# The stage `--until` stops at.
UNTIL_RULE = "decode"
# A rule that writes several outputs one after the other, killed once the first
# output (KILL_WHEN) exists and before it is done.
KILL_RULE = "synthetic_nsd"
KILL_WHEN = "results/synthetic_nsd/nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"


@pytest.fixture(scope="module")
def graph(demo_run) -> dict[str, set[str]]:
    return rule_graph(demo_run)


def mtimes(run: WorkflowRun, pattern: str) -> dict[str, int]:
    return {
        str(p.relative_to(run.workdir)): p.stat().st_mtime_ns
        for p in sorted(run.workdir.glob(pattern))
        if p.is_file()
    }


def test_nothing_to_do_after_the_demo(demo_run):
    assert demo_run.dry_run() == {}, demo_run.history[-1].stdout[-3000:]


def test_forcerun_one_subject_reruns_only_that_job(demo_run, graph, tmp_path):
    run = demo_run.clone(tmp_path / "wf")
    subjects = sorted(p.name for p in (run.workdir / "results").glob("subj0*"))
    assert len(subjects) >= 2, "the rerun tests need a demo run with two subjects"
    one, other = subjects[:2]
    targets = [t.format(subject=one) for t in SUBJECT_TARGETS]
    jobs = run.dry_run("--forcerun", SUBJECT_FORCE, "--", *targets)
    assert set(jobs) == SUBJECT_RULES, jobs
    assert jobs[SUBJECT_FORCE] >= 1

    before = mtimes(run, "results/**/*")
    run.snakemake("--forcerun", SUBJECT_FORCE, "--", *targets)
    after = mtimes(run, "results/**/*")
    changed = {f for f in before if after.get(f) != before[f]}
    assert set(targets) <= changed
    outside = {f for f in changed if one not in f}  # results/{one}/..., logs/.../{one}_...
    assert not outside, f"files of other subjects or stages changed: {sorted(outside)}"

    # The rest of the DAG sees the newer files: a full run now reruns only jobs
    # downstream of them, for that subject (and summaries over subjects).
    jobs = run.dry_run()
    assert jobs, "nothing downstream of the reconstruction?"
    assert set(jobs) <= downstream(graph, SUBJECT_FORCE) - SUBJECT_RULES, jobs
    reasons = run.history[-1].stdout
    assert other not in "".join(l for l in reasons.splitlines() if "wildcards:" in l), reasons


def test_forcerun_one_feature_family_reruns_only_that_family(demo_run):
    """One rule computes z and c (wildcard family): forcing c.h5 plans the features job
    of c alone (z.h5 is not recomputed; what reads c follows)."""
    proc = demo_run.snakemake("-n", "--forcerun", "results/features/c.h5")
    text = proc.stdout + proc.stderr
    jobs = parse_dry_run(text)
    assert jobs.get("features") == 1, jobs
    assert "output: results/features/c.h5" in text and "output: results/features/z.h5" not in text, text[-3000:]


def test_changed_param_reruns_only_that_rule_and_downstream(demo_run, graph, tmp_path):
    change = tmp_path / "change.yaml"
    change.write_text(yaml.safe_dump(PARAM_CHANGE))
    jobs = demo_run.dry_run("--configfile", "config/demo.yaml", "config/test.yaml", str(change))
    dry_output = demo_run.history[-1].stdout + demo_run.history[-1].stderr
    assert PARAM_RULE in jobs, jobs
    assert set(jobs) <= downstream(graph, PARAM_RULE), jobs
    assert not set(jobs) & (upstream(graph, PARAM_RULE) - {PARAM_RULE}), jobs
    # The reason Snakemake gives is the changed parameter.
    assert "params have changed" in dry_output.lower(), dry_output[-3000:]


def test_until_stops_after_the_stage(demo_run, graph):
    jobs = demo_run.dry_run("--forceall", "--until", UNTIL_RULE)
    assert UNTIL_RULE in jobs
    assert set(jobs) == upstream(graph, UNTIL_RULE), jobs


def test_killed_job_is_incomplete_then_resumed_to_the_same_outputs(demo_run, tmp_path):
    run = demo_run.clone(tmp_path / "wf")
    (run.workdir / KILL_WHEN).unlink()  # so that its reappearance marks progress
    cmd = snakemake_command() + run.config_args + [
        "--cores", "2", "--forcerun", KILL_RULE, "--until", KILL_RULE,
    ] + (["--", *run.targets] if run.targets else [])
    started = time.time()
    proc = subprocess.Popen(
        cmd, cwd=run.workdir, env=workflow_env(run.workdir), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not (run.workdir / KILL_WHEN).exists():
            assert proc.poll() is None, f"snakemake ended ({proc.returncode}) before {KILL_WHEN}"
            assert time.monotonic() < deadline, f"{KILL_WHEN} did not appear"
            time.sleep(0.05)
    finally:  # like a node failure: Snakemake and the job die at once, nothing cleans up
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    # The killed Snakemake left its lock, as after a power cut: remove it as a user would.
    run.snakemake("--unlock")
    # Snakemake refuses to go on with the half-written outputs ...
    dry = run.snakemake("-n", check=False)
    assert dry.returncode != 0
    assert "IncompleteFilesException" in dry.stderr + dry.stdout
    assert KILL_WHEN in dry.stderr + dry.stdout
    # ... and with --rerun-incomplete reruns the job (downstream outputs are newer
    # than nothing, so only KILL_RULE's own job is needed for its files).
    jobs = run.dry_run("--rerun-incomplete", "--until", KILL_RULE)
    assert jobs == {KILL_RULE: 1}, jobs
    run.snakemake("--rerun-incomplete", "--until", KILL_RULE)

    outputs = [
        p for p in (run.workdir / "results").rglob("*")
        if p.is_file() and not p.is_relative_to(run.workdir / "results" / "logs")
        and not p.is_relative_to(run.workdir / "results" / "benchmarks")
    ]
    rerun_files = [p for p in outputs if p.stat().st_mtime >= started]
    assert (run.workdir / KILL_WHEN) in rerun_files
    for p in rerun_files:
        rel = p.relative_to(run.workdir)
        diff = content_difference(p, demo_run.workdir / rel)
        assert diff is None, f"{rel}: {diff} after resuming"

