"""Short config error messages: the offending key, its value and the schema rule; YAML errors with file and line."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import yaml


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the file or key and the fix."""


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
