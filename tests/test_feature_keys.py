"""The workflow's parse-time feature params (brainldm.feature_keys, no torch) equal the
checked settings the jobs use (brainldm.feature_shards.family_settings) for the shipped
configs, so a run's params, and with them its reruns, do not change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from brainldm.feature_keys import family_config
from brainldm.feature_shards import family_settings
from brainldm.features import FAMILIES

REPO = Path(__file__).resolve().parents[1]


def _features_section(*config_files: str, extra: dict | None = None) -> dict:
    """The features: section as the workflow sees it: the files merged, schema defaults filled."""
    config: dict = {}
    for name in config_files:
        for key, value in yaml.safe_load((REPO / "config" / name).read_text()).items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    if extra:
        config["features"] = {**config.get("features", {}), **extra}
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config["features"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("files, extra", [
    (("config.yaml",), None),
    (("config.yaml", "demo.yaml"), None),
    (("config.yaml",), {"strengths": [1, 0.5], "guidance_scale": 3, "unet_layers": {"mid": "mid_block"}}),
])
def test_family_config_equals_the_checked_settings(family, files, extra):
    section = _features_section(*files, extra=extra)
    light, checked = family_config(family, section), family_settings(family, section)
    assert json.dumps(light) == json.dumps(checked)  # also 1.0 vs 1: params compare as text
