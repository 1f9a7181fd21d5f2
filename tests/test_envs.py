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


@pytest.mark.parametrize("env", ["cpu", "gpu"])
def test_env_file_agrees_with_pyproject(env):
    spec = yaml.safe_load((REPO / "envs" / f"{env}.yaml").read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    pinned = dict(p.split("==") for p in pip)
    expected = {k: v for k, v in _pyproject_pins().items() if k not in TEST_ONLY}
    assert pinned == expected
    assert "python=3.11" in spec["dependencies"]


def test_every_rule_uses_an_env_file_that_exists():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for ref in re.findall(r'"([./]*envs/[a-z]+\.yaml)"', smk.read_text()):
            assert (smk.parent / ref).resolve().is_file(), f"{smk.name}: conda env {ref} does not exist"


def test_lock_file_agrees_with_pyproject():
    lock = dict(l.split("==") for l in (REPO / "requirements.lock").read_text().split() if "==" in l)
    lock = {k.lower(): v for k, v in lock.items()}
    for name, version in _pyproject_pins().items():
        assert lock[name.split("[")[0].lower()] == version, f"{name}: pyproject {version}, requirements.lock {lock.get(name)}"
