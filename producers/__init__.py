"""rewind: producers."""

from projector.native import use_pure_python_if_asked

use_pure_python_if_asked()
