"""The entry point is workflow/Snakefile (the catalog's layout); the top-level Snakefile
only includes it. A bare `snakemake` (no --cores, no --workflow-profile) picks up the
workstation profile workflow/profiles/default, from the repository root and with
`-s workflow/Snakefile`, and both plan the same jobs."""

from __future__ import annotations

import shutil
import subprocess

from .conftest import REPO, copy_workflow, parse_dry_run, snakemake_command, workflow_env


def _bare_dry_run(wf, *args: str) -> str:
    proc = subprocess.run(
        [*snakemake_command(), "-n", *args, "--configfile", "config/demo.yaml", "config/test.yaml"],
        cwd=wf, env=workflow_env(wf), capture_output=True, text=True, timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def test_bare_snakemake_uses_the_default_profile_from_either_snakefile(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    shutil.copy2(REPO / "profiles", wf / "profiles", follow_symlinks=False)  # the repository's link
    assert (REPO / "workflow" / "Snakefile").is_file()
    code = [l for l in (REPO / "Snakefile").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert code == ['workflow.include("workflow/Snakefile", overwrite_default_target=True)']

    from_root = _bare_dry_run(wf)
    assert "Using workflow specific profile profiles/default" in from_root, from_root[-3000:]
    jobs = parse_dry_run(from_root)
    assert jobs["all"] == 1 and jobs["synthetic_nsd"] == 1, jobs  # rule all is the default target

    bare = copy_workflow(tmp_path / "without_link")  # found next to workflow/Snakefile
    from_workflow = _bare_dry_run(bare, "-s", "workflow/Snakefile")
    assert "Using workflow specific profile workflow/profiles/default" in from_workflow, from_workflow[-3000:]
    assert parse_dry_run(from_workflow) == jobs
