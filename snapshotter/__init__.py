"""rewind: snapshotter."""
