"""The special tokens every vocabulary starts with, and their ids.

`Seq2Seq` and the searches read padding as id 0 and, by default, start and end as ids
1 and 2; the recipes' vocabularies put these tokens first so that their ids agree.
"""

PAD, START, END, UNKNOWN = "[PAD]", "[START]", "[END]", "[UNK]"
SPECIAL_TOKENS = (PAD, START, END, UNKNOWN)
PAD_ID, START_ID, END_ID, UNKNOWN_ID = range(len(SPECIAL_TOKENS))
