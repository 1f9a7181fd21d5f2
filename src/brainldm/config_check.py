"""Short config error messages: the offending key, its value and the schema rule; YAML errors with file and line."""

from __future__ import annotations

import copy
import difflib
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import yaml

from brainldm.config_docs import SCHEMA as SCHEMA_FILE  # the one place every key's type, range and default is written


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the file or key and the fix."""


@functools.cache
def load_schema() -> dict:
    """The config schema (``SCHEMA_FILE``) as a dict."""
    return yaml.safe_load(SCHEMA_FILE.read_text())


def section_settings(section: str, settings: Mapping) -> dict:
    """One config section as the workflow sees it, for a stage called from Python.

    ``settings`` with the schema's default filled in for every key it lacks, then checked
    against the schema's rules for the section: a wrong value or unknown key raises
    :class:`ConfigError` naming ``section.key``, the value and the rule (as at parse time).
    """
    schema = load_schema()
    sub = schema["properties"][section]
    out = {k: copy.deepcopy(v["default"]) for k, v in sub.get("properties", {}).items() if "default" in v}
    out.update(settings)
    message = describe_error({section: out}, {"type": "object", "properties": {section: sub}})
    if message is not None:
        raise ConfigError(message)
    return out


def _short(value, limit: int = 200) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_yaml(file: str | os.PathLike) -> dict:
    """Parse one YAML config file; a syntax error names the file, line and column."""
    file = Path(file)
    try:
        with open(file) as f:
            data = yaml.safe_load(f)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{file}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(file)
        raise ConfigError(f"YAML syntax error in {where}: {err.problem or err.context}; fix that line of the file") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"YAML error in {file}: {err}") from err
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{file} must hold a mapping of config keys, not {type(data).__name__}")
    return data or {}


def describe_error(config: Mapping, schema: Mapping) -> str | None:
    """One short paragraph about the most relevant schema violation of ``config``, or None if it is valid.

    Names the key (dotted path), its value and the schema rule it breaks, never the whole schema.
    """
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return None
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    rule = f"{error.validator}: {_short(error.validator_value)}"
    lines = [f"config error at {key}: {error.message if len(error.message) <= 300 else error.message[:297] + '...'}"]
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        for name in unknown:
            close = difflib.get_close_matches(str(name), allowed, n=1)
            hint = f" (did you mean {key + '.' if error.absolute_path else ''}{close[0]}?)" if close else ""
            lines.append(f"  unknown key {key + '.' if error.absolute_path else ''}{name}{hint}")
        lines.append(f"  allowed keys here: {', '.join(allowed)}")
        rule = "additionalProperties: false"
    else:
        lines.append(f"  value: {_short(error.instance)}")
    lines.append(f"  schema rule: {rule}")
    if error.schema.get("description"):
        lines.append(f"  the key: {' '.join(str(error.schema['description']).split())[:300]}")
    lines.append("  fix it in your config file (keys and defaults: config/README.md)")
    return "\n".join(lines)


def merge_configs(base: dict, update: Mapping) -> dict:
    """Deep-merge ``update`` into a copy of ``base`` (as Snakemake merges config files)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_configs(merged[key], value)
        else:
            merged[key] = value
    return merged


def check_files(files: list[str | os.PathLike], repo_dir: str | os.PathLike | None = None) -> dict:
    """Check config files as the workflow will see them: the base config/config.yaml, then each file.

    Raises ConfigError naming the file and line of a YAML error, or the key, value and
    schema rule of a schema violation. Returns the merged config.
    """
    repo = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parents[2]
    config: dict = {}
    for file in [repo / "config" / "config.yaml", *files]:
        if not Path(file).is_file():
            raise ConfigError(f"config file {file} does not exist; check the path given")
        config = merge_configs(config, check_yaml(file))
    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    message = describe_error(config, schema)
    if message is not None:
        raise ConfigError(f"{message}\n  (checked: {', '.join(str(f) for f in files) or 'the base config'})")
    return config


def main(argv: list[str] | None = None) -> int:
    """``python -m brainldm.config_check FILE...``: check config files before a run; 0 if valid."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m brainldm.config_check",
        description="Check config files (YAML syntax and schema) as the workflow merges them "
        "over config/config.yaml, before snakemake parses them.",
    )
    parser.add_argument("files", nargs="*", help="config files, in the order given to --configfile")
    args = parser.parse_args(argv)
    try:
        check_files(args.files)
    except ConfigError as err:
        print(err)
        return 1
    print(f"config OK: {', '.join(args.files) or 'config/config.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
