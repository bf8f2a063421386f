"""Bytes written by every schema version ever released still decode with the current catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.catalog import default_catalog
from schemas.codec import HEADER_SIZE, decode

GOLDEN = Path(__file__).resolve().parent / "golden"
CATALOG = default_catalog()


def _expected(type_name: str, written: dict[str, Any]) -> dict[str, Any]:
    """What resolution into the current schema must give: written values, reader defaults for the rest."""
    current = CATALOG.current(type_name)
    return {
        field["name"]: written[field["name"]] if field["name"] in written else field["default"]
        for field in current.schema["fields"]
    }


def test_every_schema_version_has_a_golden_file() -> None:
    for version in CATALOG:
        folder = GOLDEN / version.snake_name
        assert (folder / f"v{version.version}.bin").is_file(), (
            f"no golden file for {version.label}: run .venv/bin/python tests/golden/make_golden.py"
        )


@pytest.mark.parametrize("binary", sorted(GOLDEN.glob("*/v*.bin")), ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_golden_file_decodes_with_the_current_catalog(binary: Path) -> None:
    value = binary.read_bytes()
    written = json.loads(binary.with_suffix(".json").read_text())
    writer = CATALOG.by_fingerprint(value[2:HEADER_SIZE])
    assert writer is not None, f"{binary}: its writer schema is no longer in schemas/"
    assert (writer.snake_name, f"v{writer.version}") == (binary.parent.name, binary.stem)
    assert decode(value) == _expected(written["event_type"], written)
