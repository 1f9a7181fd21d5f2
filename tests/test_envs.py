"""The conda environment files pin exactly what pyproject.toml pins (one source of truth)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TEST_ONLY = {"pytest", "moto[server]"}


def _pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(d.split("==") for d in deps)
    assert all("==" in d for d in deps), "every dependency in pyproject.toml must be pinned with =="
    return pins


# What runs snakemake and parses the workflow (PyYAML: brainldm.config_check), not the
# jobs: never in a job's environment.
RUNNER = {"snakemake", "snakemake-executor-plugin-slurm", "pyyaml"}
# Only the download rules need these.
DOWNLOAD_ONLY = {"boto3"}


def _env(name: str) -> dict:
    return yaml.safe_load((REPO / "workflow" / "envs" / f"{name}.yaml").read_text())


def _env_pins(spec: dict) -> tuple[dict[str, str], list[str]]:
    """({package: version} of the pip section, its pip options such as --extra-index-url)."""
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    options = [p for p in pip if p.startswith("-")]
    return dict(p.split("==") for p in pip if not p.startswith("-")), options


def _expected(env: str) -> set[str]:
    jobs = set(_pyproject_pins()) - TEST_ONLY - RUNNER
    return {
        "cpu": jobs - DOWNLOAD_ONLY,
        "gpu": jobs - DOWNLOAD_ONLY - {"pycortex"},
        "download": DOWNLOAD_ONLY,
    }[env]


@pytest.mark.parametrize("env", ["cpu", "gpu", "download"])
def test_env_file_agrees_with_pyproject(env):
    spec = _env(env)
    pinned, options = _env_pins(spec)
    pins = _pyproject_pins()
    assert pinned == {k: pins[k] for k in _expected(env)}
    assert "python=3.11" in spec["dependencies"]
    cpu_index = "--extra-index-url https://download.pytorch.org/whl/cpu"
    assert options == ([cpu_index] if env == "cpu" else [])  # CPU torch here, CUDA torch in gpu


def test_every_job_package_is_in_an_env():
    held = set().union(*(_env_pins(_env(e))[0] for e in ("cpu", "gpu", "download")))
    assert held == set(_pyproject_pins()) - TEST_ONLY - RUNNER


def test_every_rule_uses_an_env_file_that_exists():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for ref in re.findall(r'"([./]*envs/[a-z]+\.yaml)"', smk.read_text()):
            assert (smk.parent / ref).resolve().is_file(), f"{smk.name}: conda env {ref} does not exist"


def test_lock_file_agrees_with_pyproject():
    lock = dict(l.split("==") for l in (REPO / "requirements.lock").read_text().split() if "==" in l)
    lock = {k.lower(): v for k, v in lock.items()}
    for name, version in _pyproject_pins().items():
        assert lock[name.split("[")[0].lower()] == version, f"{name}: pyproject {version}, requirements.lock {lock.get(name)}"
