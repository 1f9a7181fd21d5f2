"""The files the Snakemake workflow catalog and snakedeploy look for: workflow/Snakefile,
config/README.md, .snakemake-workflow-catalog.yml with its usage keys, a LICENSE naming
pyproject.toml's license, and a test config that is valid over the demo."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[1]


def test_catalog_files_and_usage_keys():
    assert (REPO / "workflow" / "Snakefile").is_file() and (REPO / "config" / "README.md").is_file()
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment", "report"}
    assert {"desc", "flags"} <= set(usage["mandatory-flags"])
    assert usage["software-stack-deployment"]["conda"] is True and usage["report"] is True


def test_license_file_is_pyprojects():
    license = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]["text"]
    assert (REPO / "LICENSE").read_text().splitlines()[0] == f"{license} License"


def test_test_config_is_valid_over_the_demo():
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    for key, value in yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text()).items():
        config[key] = {**config.get(key, {}), **value}
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    assert config["synthetic"]["trials_per_session"] == 105
