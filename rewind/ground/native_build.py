"""Which modules the build compiles to native code with mypyc, and the checks around that.

The hot path (decode -> fold -> row encoding) is plain, fully typed Python; ``setup.py`` compiles the
modules below with mypyc so the same source runs several times faster. The compiled and interpreted
forms compute the same state byte for byte (``tests/test_native.py``). Two things can go wrong, and
both are caught here rather than left to chance:

- **A stale build.** An extension module sits beside its ``.py`` and wins the import; if the source
  was edited after the build, the old code would run. :func:`stale_native_modules` finds such
  modules; the CLI and the test session refuse to start with them (``make build`` rebuilds).
- **Debugging.** ``REWIND_PURE_PYTHON=1`` imports the ``.py`` sources instead (and the codec's
  interpreted decoders), e.g. to step through the fold in a debugger.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from rewind.ground.errors import RewindError

NATIVE_MODULES: tuple[str, ...] = (
    "schemas.fixed",
    "projector.model",
    "projector.state",
    "projector.fold",
    "projector.policy",
    "projector.event_window",
    "projector.encoding",
    "projector.lmdb_state",
    "projector.digest",
    "projector.runner",
    "producers.acceptance",
    "producers.event_producer",
)
"""Compiled by ``setup.py`` (with the generated ``schemas.native_codecs``, which checks itself)."""

C_EXTENSIONS: tuple[str, ...] = (
    "schemas._record_encoder",
    "projector._digest_frames",
    "projector._event_window",
)
"""Written in C (``.c`` beside the module path), built by ``setup.py`` with the mypyc modules."""

PURE_PYTHON_ENV = "REWIND_PURE_PYTHON"


def pure_python_asked() -> bool:
    """``REWIND_PURE_PYTHON`` is set: run the ``.py`` sources and no hand-written C."""
    return bool(os.environ.get(PURE_PYTHON_ENV))


_ROOT = Path(__file__).resolve().parents[2]
EXTENSION_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
"""What the build names a compiled module (``fold.cpython-311-x86_64-linux-gnu.so``)."""


def _source(name: str) -> str:
    """The source file of module ``name``, relative to the project root."""
    return name.replace(".", "/") + (".c" if name in C_EXTENSIONS else ".py")


def native_sources() -> list[str]:
    """The source files of :data:`NATIVE_MODULES`, relative to the project root."""
    return [_source(name) for name in NATIVE_MODULES]


def is_native(module: ModuleType) -> bool:
    """True if ``module`` was loaded from a compiled extension rather than its ``.py``."""
    origin = getattr(module, "__file__", None) or ""
    return any(origin.endswith(suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def stale_native_modules(
    names: Sequence[str] = NATIVE_MODULES + C_EXTENSIONS, root: Path = _ROOT
) -> list[str]:
    """The modules whose compiled extension is older than their source (empty if none, or pure)."""
    stale = []
    for name in names:
        source = root / _source(name)
        compiled = source.with_name(source.stem + EXTENSION_SUFFIX)
        if compiled.exists() and compiled.stat().st_mtime < source.stat().st_mtime:
            stale.append(name)
    return stale


def check_native_build() -> None:
    """Refuse to run compiled modules older than their source: they would run the old code.

    Only in a source checkout (where ``setup.py`` is): an installed package is built as one unit, and
    the order in which an installer writes its files says nothing about staleness.
    """
    if pure_python_asked() or not (_ROOT / "setup.py").exists():
        return
    stale = stale_native_modules()
    if stale:
        raise RewindError(
            f"compiled modules are older than their source: {', '.join(stale)}",
            f"rebuild them with `make build`, or set {PURE_PYTHON_ENV}=1 to run the .py sources",
        )


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds :data:`NATIVE_MODULES` as their ``.py`` files, so the compiled extensions are bypassed."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in NATIVE_MODULES:
            return None
        source = _ROOT / _source(fullname)
        loader = importlib.machinery.SourceFileLoader(fullname, str(source))
        return importlib.util.spec_from_file_location(fullname, source, loader=loader)


def use_pure_python_if_asked() -> None:
    """Under ``REWIND_PURE_PYTHON``, import the ``.py`` sources of the native modules (call first)."""
    if pure_python_asked() and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())
