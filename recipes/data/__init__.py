"""Data for the recipes: generated scenes, real captioned images and text corpora.

The names every reader shares live here: `SPLITS`, the three splits a corpus has, and
`DataError`, which every reader raises for data it cannot read as asked.
"""

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """The data cannot be read as asked: a missing or malformed file, or no usable records."""
