"""Every config key has a description and a default, and config/README.md is current."""

import yaml

from brainldm.config_docs import README, SCHEMA, iter_keys, render


def test_every_key_has_description_and_default():
    schema = yaml.safe_load(SCHEMA.read_text())
    missing = [key for key, sub in iter_keys(schema) if "description" not in sub or "default" not in sub]
    assert not missing, f"schema keys without description or default: {missing}"


def test_config_readme_is_generated_from_the_schema():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert README.read_text() == render(schema), "run `python -m brainldm.config_docs` and commit config/README.md"
