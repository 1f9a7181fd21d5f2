"""Render the config schema as the Markdown table in config/README.md.

Run ``python -m brainldm.config_docs`` after changing workflow/schemas/config.schema.yaml;
tests/test_config_docs.py checks that the committed file is current and that every key
has a description and a default.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
README = REPO / "config" / "README.md"

HEADER = """# Configuration

Snakemake validates the config against `workflow/schemas/config.schema.yaml`
and fills in every default, so a config file only needs the keys it changes.
`config.yaml` runs the real NSD with Stable Diffusion v1.4; `demo.yaml` runs the
embedded synthetic mini-NSD with tiny models. This page is generated from the
schema (`python -m brainldm.config_docs`).

| key | type | default | meaning |
|---|---|---|---|
"""


def iter_keys(schema: dict, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """Every key of the schema as (dotted name, its sub-schema), depth first."""
    for name, sub in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        yield key, sub
        if sub.get("type") == "object":
            yield from iter_keys(sub, key + ".")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render(schema: dict) -> str:
    """The Markdown page for a schema."""
    rows = []
    for key, sub in iter_keys(schema):
        kind = sub.get("type", "")
        if "enum" in sub:
            kind = " \\| ".join(json.dumps(v) for v in sub["enum"])
        default = json.dumps(sub["default"]) if "default" in sub else ""
        rows.append(f"| `{key}` | {_cell(kind)} | `{_cell(default)}` | {_cell(sub.get('description', ''))} |")
    return HEADER + "\n".join(rows) + "\n"


def main() -> int:
    schema = yaml.safe_load(SCHEMA.read_text())
    README.write_text(render(schema))
    print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
