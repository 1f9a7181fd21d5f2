"""`--directory elsewhere --configfile my.yaml`: the workflow's own config/config.yaml is the
base config (issue 17.6), not the schema defaults; the user's file overrides what it sets."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.workflow.conftest import copy_workflow, model_folder_layout, snakemake_command, workflow_env


def _job_counts(stdout: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stdout, re.M)}


def test_directory_elsewhere_uses_the_workflow_base_config(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    base = yaml.safe_load((wf / "config" / "config.yaml").read_text())
    assert base["data"]["source"] != "synthetic"  # the base config is the real run's
    work = tmp_path / "elsewhere"
    work.mkdir()
    model_folder_layout(tmp_path / "sd")  # the base config's hub id is not cached here
    (work / "my.yaml").write_text(yaml.safe_dump({"reconstruction": {"shards": 2},
                                                  "model": {"name": str(tmp_path / "sd")}}))
    out = subprocess.run([*snakemake_command(), "-n", "--cores", "1", "-s", str(wf / "Snakefile"),
                          "--directory", str(work), "--configfile", "my.yaml"],
                         cwd=work, env=workflow_env(work), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs = _job_counts(out.stdout)
    n_subjects = len(base["data"]["subjects"])
    assert jobs["reconstruct_shard"] == 2 * n_subjects  # the user's key
    assert "download_nsd_file" in jobs and "synthetic_nsd" not in jobs  # data.source from the base config
    assert "features_unet" not in jobs and jobs["features_zc"] == 1  # one pass for zc and unet
