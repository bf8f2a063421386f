"""rewind: producers."""
