"""rewind: rewind."""
