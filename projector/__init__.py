"""rewind: projector."""
