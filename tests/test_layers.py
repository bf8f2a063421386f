"""The layering contracts of pyproject.toml hold, and an import against the direction breaks them.

Each case runs import-linter on a copy of the packages, so the deliberate breakage never touches the
checkout; docs/architecture.md describes the layers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rewind", "schemas", "producers", "projector", "snapshotter", "replayer")
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The packages' Python sources and pyproject.toml, copied."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.so", "__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(directory: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(directory))
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"], cwd=directory, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_packages_keep_both_contracts(copy: Path) -> None:
    result = _lint(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_a_lower_layer_importing_the_application_fails_and_names_the_import(copy: Path) -> None:
    store = copy / "projector" / "store.py"
    store.write_text(store.read_text() + "\nimport rewind.lag_status  # noqa: E402\n")
    result = _lint(copy)
    assert result.returncode != 0
    assert "projector is not allowed to import rewind.lag_status" in result.stdout
    assert "projector.store -> rewind.lag_status" in result.stdout


def test_the_ground_importing_a_layer_above_fails(copy: Path) -> None:
    errors = copy / "rewind" / "ground" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport schemas.codec  # noqa: E402\n")
    result = _lint(copy)
    assert result.returncode != 0
    assert "rewind.ground.errors -> schemas.codec" in result.stdout


def test_a_new_module_of_rewind_must_be_placed_in_a_layer(copy: Path) -> None:
    (copy / "rewind" / "unplaced.py").write_text('"""Not listed in any layer."""\n')
    result = _lint(copy)
    assert result.returncode != 0
    assert "rewind.unplaced" in result.stdout
