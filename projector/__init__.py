"""rewind: projector."""

from rewind.ground.native_build import use_pure_python_if_asked

use_pure_python_if_asked()
