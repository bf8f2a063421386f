"""rewind: replayer."""
