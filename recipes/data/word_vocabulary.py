"""Words of captions and their ids: `tokenize_caption` and `WordVocabulary`.

The vocabulary's ids 0-3 are the special tokens of `multiattn.special_tokens` (padding,
start, end, unknown), which `multiattn.Seq2Seq` expects.
"""

import collections
import os
import re
from pathlib import Path

import numpy as np

from multiattn.special_tokens import END_ID, PAD_ID, SPECIAL_TOKENS, START_ID, UNKNOWN_ID
from recipes.data import DataError

# Runs of letters and digits (any script); "_" is a word character but not a letter.
_WORD = re.compile(r"[^\W_]+")


def tokenize_caption(text):
    """Lowercase words of a caption: runs of letters and digits, punctuation dropped.

    An apostrophe splits a word ("don't" gives "don", "t"), so Flickr8k's pre-tokenized
    "man 's" and a plain "man's" give the same words.

    >>> tokenize_caption("A dog's ball, 2 cats & a Café.")
    ['a', 'dog', 's', 'ball', '2', 'cats', 'a', 'café']
    """
    return _WORD.findall(text.lower())


class WordVocabulary:
    """Words and their ids; ids 0-3 are `[PAD]`, `[START]`, `[END]` and `[UNK]`.

    Build it from training captions with `build`; save it with `save` next to a model
    and load it back with `load` (a plain text file, one word per line, line `i` is id
    `i`).

    Example:

    >>> vocabulary = WordVocabulary.build([["a", "dog"], ["a", "cat"]], min_count=2)
    >>> len(vocabulary), vocabulary.encode(["a", "dog"])
    (5, [4, 3])
    >>> vocabulary.decode([1, 4, 3, 2, 0, 0])
    ['a', '[UNK]']
    """

    def __init__(self, words):
        words = list(words)
        if tuple(words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"A vocabulary starts with {SPECIAL_TOKENS}, got {words[:4]}")
        for word in words:
            # The file format is one word per line.
            if not word or word != word.strip() or any(char.isspace() for char in word):
                raise ValueError(f"Words must be non-empty without whitespace, got {word!r}")
        if len(set(words)) != len(words):
            raise ValueError("Words of a vocabulary must be unique")
        self.words = words
        self.ids = {word: index for index, word in enumerate(words)}

    @classmethod
    def build(cls, token_lists, min_count=1, max_size=None):
        """A vocabulary of the words seen at least `min_count` times.

        Words are ordered by decreasing count, then alphabetically, so the same
        captions always give the same ids. `max_size` caps the size, the four special
        tokens included; rarer words are dropped (they encode to `[UNK]`).
        """
        counts = collections.Counter(token for tokens in token_lists for token in tokens)
        kept = [
            word
            for word, count in counts.items()
            if count >= min_count and word not in SPECIAL_TOKENS
        ]
        kept.sort(key=lambda word: (-counts[word], word))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIAL_TOKENS))]
        return cls([*SPECIAL_TOKENS, *kept])

    def __len__(self):
        return len(self.words)

    def encode(self, tokens):
        """Ids of `tokens`; unknown words give `UNKNOWN_ID`. No start or end is added."""
        return [self.ids.get(token, UNKNOWN_ID) for token in tokens]

    def decode_tensor(self, ids):
        """The captions of int ids `(batch, length)` in TensorFlow ops, strings `(batch,)`:
        the words of `decode` joined by single spaces.

        The recipe's captions come from this function, and so do the exported
        SavedModel's (`recipes.export`).
        """
        import tensorflow as tf

        from recipes.data.subword_vocabulary import kept_tokens  # the same special ids

        words = tf.gather(tf.constant(self.words), ids)
        kept = kept_tokens(ids)
        after_kept = tf.cumsum(tf.cast(kept, "int32"), axis=1, exclusive=True) > 0
        separators = tf.where(after_kept, " ", "")
        return tf.strings.reduce_join(tf.where(kept, separators + words, ""), axis=1)

    def decode(self, ids):
        """Words of `ids` up to the first end token; padding and start are left out."""
        words = []
        for token_id in ids:
            token_id = int(token_id)
            if token_id == END_ID:
                break
            if token_id not in (PAD_ID, START_ID):
                words.append(self.words[token_id])
        return words

    def encode_targets(self, token_lists, max_words=None):
        """Decoder inputs and targets for `Seq2Seq.fit`.

        Args:
            token_lists: The captions, each a list of words.
            max_words: Longer captions are cut to this many words; None means the
                longest caption's length.

        Returns:
            `(target_in, target_out)`, int32 arrays `(len(token_lists), max_words + 1)`:
            `[START] + ids` and `ids + [END]`, padded with `PAD_ID`.
        """
        if max_words is None:
            max_words = max((len(tokens) for tokens in token_lists), default=0)
        target_in = np.full((len(token_lists), max_words + 1), PAD_ID, dtype=np.int32)
        target_out = np.full_like(target_in, PAD_ID)
        for row, tokens in enumerate(token_lists):
            ids = self.encode(tokens[:max_words])
            target_in[row, : len(ids) + 1] = [START_ID, *ids]
            target_out[row, : len(ids) + 1] = [*ids, END_ID]
        return target_in, target_out

    def save(self, path):
        Path(path).write_text("".join(f"{word}\n" for word in self.words), encoding="utf-8")

    @classmethod
    def load(cls, path):
        if not os.path.isfile(path):
            raise DataError(f"Vocabulary file not found: {path}")
        words = Path(path).read_text(encoding="utf-8").splitlines()
        try:
            return cls(words)
        except ValueError as error:
            raise DataError(f"{path} is not a vocabulary file: {error}") from error
