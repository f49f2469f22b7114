"""Flags of the smallest recipe runs that still go through every stage.

A test that needs other sizes appends its own flags: a later flag overrides an earlier one.
"""

TRANSLATE = [
    *("--units", "16", "--embedding-dim", "8", "--epochs", "1", "--batch-size", "32"),
    *("--vocabulary-size", "200", "--beam-size", "2"),
]
CAPTION = [
    *("--units", "16", "--embedding-dim", "8", "--epochs", "1", "--batch-size", "16"),
    *("--image-size", "32", "--beam-size", "2"),
]
SCENES = ["--num-train", "64", "--num-val", "16", "--num-test", "8"]
