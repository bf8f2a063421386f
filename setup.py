"""Build of rewind: the packages (configured in pyproject.toml) plus their native modules.

The hot-path modules listed in :data:`rewind.ground.native_build.NATIVE_MODULES` and the Avro
decoders generated
from ``schemas/`` (written here to ``schemas/native_codecs.py``) are compiled with mypyc, and the C
extensions of :data:`rewind.ground.native_build.C_EXTENSIONS` with the C compiler; see
docs/native.md.
``REWIND_NATIVE=0`` builds pure Python only (slower, same results).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
NATIVE_CODECS = "schemas/native_codecs.py"


def native_extensions() -> list[Any]:
    if os.environ.get("REWIND_NATIVE", "1") == "0":
        return []
    sys.path.insert(0, str(ROOT))
    from mypyc.build import mypycify

    from rewind.ground.native_build import C_EXTENSIONS, native_sources
    from schemas.catalog import default_catalog
    from schemas.codec import Codec

    text = Codec(default_catalog()).native_module_text
    target = ROOT / NATIVE_CODECS
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    # The runtime library shared by the compiled modules lives inside a package, so it imports from
    # anywhere (an editable install maps packages, not the project root).
    compiled = mypycify(
        [*native_sources(), NATIVE_CODECS], opt_level="3", group_name="projector.native_runtime"
    )
    written_in_c = [
        Extension(name, [name.replace(".", "/") + ".c"], extra_compile_args=["-O2", "-Wall", "-Wextra"])
        for name in C_EXTENSIONS
    ]
    return [*compiled, *written_in_c]


class BuildExtensions(build_ext):
    """build_ext that marks every extension as built now: mypyc leaves an extension untouched when
    its C code did not change (an edited comment), and it would then look older than its source."""

    def run(self) -> None:
        super().run()
        for extension in self.extensions:
            built = Path(self.get_ext_fullpath(extension.name))
            if built.exists():
                os.utime(built)


setup(ext_modules=native_extensions(), cmdclass={"build_ext": BuildExtensions})
