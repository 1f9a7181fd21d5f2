"""`snakemake --lint` on the demo config reports nothing (every rule has a log, a
conda env, no hard-coded paths, ...)."""

from .conftest import WorkflowRun, copy_workflow


def test_lint_reports_nothing(tmp_path):
    run = WorkflowRun(copy_workflow(tmp_path / "wf"))
    # Snakemake 9.27 accepts `--lint json` but prints text either way: each finding
    # block starts with "Lints for snakefile ..." or "Lints for rule ...".
    proc = run.snakemake("--lint", check=False, timeout=300)
    output = proc.stdout + proc.stderr
    assert "Lints for" not in output, "snakemake --lint findings:\n" + output
    assert proc.returncode == 0, f"snakemake --lint exited with {proc.returncode}:\n{output}"
