"""Parsing the workflow (a dry run, as on the login node and in every cluster job, which
re-parses it) imports no part of the heavy stack: parse-time code uses only the standard
library, PyYAML/pandas-level packages and brainldm's light modules (nsd_layout,
model_files, feature_keys, metric_weights); torch, h5py, nibabel and scipy load in jobs."""

from __future__ import annotations

import os
import subprocess

import yaml

from .conftest import copy_workflow, model_folder_layout, snakemake_command, workflow_env

HEAVY = ("torch", "torchvision", "diffusers", "transformers", "h5py", "nibabel", "scipy",
         "sklearn", "skimage", "himalaya", "cortex", "matplotlib")

# Written into a folder put first on PYTHONPATH: Python imports it at start-up, and at exit
# it records which top-level packages the process (snakemake parsing the workflow) loaded.
SITECUSTOMIZE = """\
import atexit, os, sys

def _record():
    with open(os.environ["BRAINLDM_TEST_MODULES"], "w") as f:
        f.write("\\n".join(sorted({name.split(".")[0] for name in sys.modules})))

atexit.register(_record)
"""


def _modules_loaded_by_dry_run(tmp_path, wf, cwd, *args: str) -> set[str]:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    record = tmp_path / "modules.txt"
    record.unlink(missing_ok=True)
    env = workflow_env(cwd)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)
    env["BRAINLDM_TEST_MODULES"] = str(record)
    proc = subprocess.run([*snakemake_command(), "-n", "--cores", "1", "-s", str(wf / "Snakefile"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "Job stats" in proc.stdout, proc.stdout[-3000:]
    modules = set(record.read_text().split())
    assert "snakemake" in modules  # the hook ran in the parsing process
    return modules


def test_demo_dry_run_imports_no_heavy_package(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    loaded = _modules_loaded_by_dry_run(tmp_path, wf, wf, "--configfile", "config/demo.yaml", "config/test.yaml")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_real_config_dry_run_imports_no_heavy_package(tmp_path):
    """The real run's parse: NSD download planning, the model-folder check and the
    pretrained metric weights' start-up warning."""
    wf = copy_workflow(tmp_path / "wf")
    base = yaml.safe_load((wf / "config" / "config.yaml").read_text())
    assert base["data"]["source"] == "nsd" and base["evaluation"]["metrics_weights"] == "pretrained"
    work = tmp_path / "work"
    work.mkdir()
    model_folder_layout(tmp_path / "sd")
    (work / "my.yaml").write_text(yaml.safe_dump({"model": {"name": str(tmp_path / "sd")}}))
    loaded = _modules_loaded_by_dry_run(tmp_path, wf, work, "--directory", str(work), "--configfile", "my.yaml")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
