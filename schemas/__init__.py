"""rewind: schemas."""
