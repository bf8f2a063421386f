"""The native (mypyc) build: it is what runs, it computes exactly what the source says, and a stale
build is refused (see rewind/ground/native_build.py and docs/native.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rewind.ground import native_build as native
from rewind.ground.errors import RewindError
from schemas.codec import default_codec

ROOT = Path(__file__).resolve().parent.parent

# Simulated events with anomalies, through the policy step (bytes -> decode -> fold -> anomaly
# recorded) per partition; prints the digest of every partition's state and which implementation ran.
_FOLD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import projector.fold, projector.policy
    from producers.simulator import SimulationParams, simulate
    from rewind.ground import native_build as native
    from projector.digest import state_digest
    from projector.policy import ConfigStep, EventsStep
    from projector.state import MemoryConfigState, MemoryState
    from schemas.codec import default_codec

    codec = default_codec()
    steps = {}
    config = ConfigStep(MemoryConfigState())
    params = SimulationParams(events=20000, accounts=7, symbols=9, seed=5, anomaly_rate=0.05)
    for event in simulate(params):
        if event["event_type"] == "ConfigChanged":
            step = config
        else:
            partition = sum(event["account_id"].encode()) % 3
            step = steps.setdefault(partition, EventsStep(MemoryState(), partition))
        step.record(codec.encode(event), step.offset + 1)
    digests = {str(p): state_digest(s.state.records()) for p, s in sorted(steps.items())}
    digests["config"] = state_digest(config.state.records())
    print(json.dumps({
        "digests": digests,
        "native_fold": native.is_native(projector.fold) and native.is_native(projector.policy),
        "native_codecs": codec.native_codecs,
    }))
    """
)


def _fold_in_subprocess(pure: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_PYTHON_ENV}
    if pure:
        env[native.PURE_PYTHON_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-c", _FOLD_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


native_build = pytest.mark.skipif(
    os.environ.get("REWIND_NATIVE") == "0" or bool(os.environ.get(native.PURE_PYTHON_ENV)),
    reason="pure-Python build (REWIND_NATIVE=0 or REWIND_PURE_PYTHON)",
)


@native_build
def test_the_hot_path_runs_compiled() -> None:
    """`make setup` compiles the hot path; if it silently did not, every benchmark would mislead."""
    for name in native.NATIVE_MODULES:
        module = sys.modules.get(name) or __import__(name, fromlist=["_"])
        assert native.is_native(module), f"{name} runs interpreted: {module.__file__}"
    assert default_codec().native_codecs, "the codec uses its interpreted encoders and decoders"


@native_build
def test_compiled_and_interpreted_code_build_byte_identical_state() -> None:
    compiled = _fold_in_subprocess(pure=False)
    interpreted = _fold_in_subprocess(pure=True)
    assert compiled["native_fold"] and compiled["native_codecs"]
    assert not interpreted["native_fold"] and not interpreted["native_codecs"]
    assert compiled["digests"] == interpreted["digests"]
    assert len(compiled["digests"]) == 4  # type: ignore[arg-type]


def test_pure_python_switch_imports_the_sources() -> None:
    result = _fold_in_subprocess(pure=True)
    assert result["native_fold"] is False and result["native_codecs"] is False


def test_a_compiled_module_older_than_its_source_is_refused(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    source = package / "mod.py"
    source.write_text("X = 1\n")
    compiled = package / f"mod{native.EXTENSION_SUFFIX}"
    compiled.write_bytes(b"")
    os.utime(compiled, (1_000_000, 1_000_000))
    assert native.stale_native_modules(["pkg.mod"], root=tmp_path) == ["pkg.mod"]
    os.utime(compiled, (source.stat().st_mtime + 1, source.stat().st_mtime + 1))
    assert native.stale_native_modules(["pkg.mod"], root=tmp_path) == []


def test_the_check_names_the_modules_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.PURE_PYTHON_ENV, raising=False)
    monkeypatch.setattr(native, "stale_native_modules", lambda: ["projector.fold"])
    with pytest.raises(RewindError) as caught:
        native.check_native_build()
    assert "projector.fold" in str(caught.value) and "make build" in str(caught.value)


@native_build
def test_the_compiled_modules_import_from_any_directory(tmp_path: Path) -> None:
    """The installed `rewind` runs anywhere: the compiled runtime must not depend on the working
    directory (it once lived at the project root, which only the project's own directory sees)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", native.PURE_PYTHON_ENV)}
    script = "import projector.fold as f; from rewind.ground.native_build import is_native as n; print(n(f))"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
