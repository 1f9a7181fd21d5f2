"""Config errors are short: the key, its value and the rule; YAML errors name file and line."""

from __future__ import annotations

import pytest
import yaml

from brainldm.config_check import ConfigError, check_yaml, describe_error
from brainldm.config_docs import SCHEMA

SCHEMA_DICT = yaml.safe_load(SCHEMA.read_text())


def test_one_letter_typo_names_the_key_and_the_fix_not_the_schema():
    msg = describe_error({"data": {"sesions": 2}}, SCHEMA_DICT)
    assert msg.startswith("config error at data: Additional properties are not allowed ('sesions' was unexpected)")
    assert "unknown key data.sesions (did you mean data.sessions?)" in msg
    assert "schema rule: additionalProperties: false" in msg
    assert len(msg.splitlines()) < 10 and len(msg) < 2000


def test_wrong_value_names_key_value_and_rule():
    msg = describe_error({"ingest": {"bad_sessions": "skip"}}, SCHEMA_DICT)
    assert msg.startswith("config error at ingest.bad_sessions: 'skip' is not one of ['error', 'exclude']")
    assert "value: 'skip'" in msg and 'schema rule: enum: ["error", "exclude"]' in msg
    assert len(msg) < 2000


def test_valid_config_has_no_error():
    assert describe_error({"ingest": {"bad_sessions": "exclude"}}, SCHEMA_DICT) is None


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    file = tmp_path / "config.yaml"
    file.write_text("data:\n  subjects: [1, 2\n  sessions: 2\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error in .*config\.yaml, line 3, column \d+: .*fix that line"):
        check_yaml(file)


def test_yaml_that_is_not_a_mapping(tmp_path):
    file = tmp_path / "config.yaml"
    file.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"config\.yaml must hold a mapping of config keys, not list"):
        check_yaml(file)


def test_check_files_names_the_yaml_error_of_a_user_config(tmp_path, capsys):
    from brainldm.config_check import main

    good = tmp_path / "good.yaml"
    good.write_text("data:\n  source: synthetic\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  source: synthetic\n   subjects: [1\n")
    assert main([str(good)]) == 0
    assert "config OK" in capsys.readouterr().out
    assert main([str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"YAML syntax error in {bad}, line 3" in out


def test_check_files_reports_schema_errors_of_the_merged_config(tmp_path):
    from brainldm.config_check import check_files

    typo = tmp_path / "typo.yaml"
    typo.write_text("data:\n  sesions: 2\n")
    with pytest.raises(ConfigError, match=r"did you mean data\.sessions\?[\s\S]*checked: .*typo\.yaml"):
        check_files([typo])
    with pytest.raises(ConfigError, match=r"config file .*missing\.yaml does not exist"):
        check_files([tmp_path / "missing.yaml"])


def test_section_settings_fill_the_schemas_defaults_and_check_its_rules():
    from brainldm.config_check import ConfigError, load_schema, section_settings

    schema = load_schema()["properties"]["encoding"]["properties"]
    got = section_settings("encoding", {"n_iter": 3})
    assert got["n_iter"] == 3
    assert {k: v for k, v in got.items() if k != "n_iter"} == {
        k: v["default"] for k, v in schema.items() if k != "n_iter"}
    for bad, where in (({"cv_folds": 1}, "encoding.cv_folds"), ({"alphas": [-1.0]}, "encoding.alphas.0"),
                       ({"q": 1.5}, "encoding.q"), ({"bogus": 1}, "unknown key encoding.bogus")):
        with pytest.raises(ConfigError, match=where):
            section_settings("encoding", bad)
