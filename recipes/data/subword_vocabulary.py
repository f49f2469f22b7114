"""`SubwordVocabulary`: a WordPiece vocabulary of translation texts, and its helpers.

Its ids 0-3 are the special tokens of `multiattn.special_tokens` (`[PAD]`, `[START]`,
`[END]`, `[UNK]`), matching the `Seq2Seq` convention (0 padding, 1 start, 2 end). The
module also holds the text normalization (`normalize_tensor`: NFC, whitespace,
lowercasing) that training and the exported SavedModel share, and the WordPiece helpers
that build, apply and decode the vocabulary.
"""

import collections
import io
import json
import os

import tensorflow as tf

from multiattn.special_tokens import END_ID, PAD_ID, SPECIAL_TOKENS, START_ID, UNKNOWN_ID
from recipes.data.batching import pad_batch

SUFFIX = "##"  # WordPiece's mark of a piece that continues the previous one
ENCODE_CHUNK = 8192  # strings tokenized per call


class SubwordVocabulary:
    """A WordPiece vocabulary; ids 0-3 are `[PAD]`, `[START]`, `[END]`, `[UNK]`.

    Text is normalised first (`normalize_tensor`): Unicode NFC, lowercased if
    `lowercase`, and split on whitespace (any Unicode whitespace, runs count as one). Each
    whitespace-separated word is cut into pieces by keras-hub's `WordPieceTokenizer`
    (greedy longest match); pieces after the first carry the `##` mark. Punctuation
    stays part of its word: "Haus." becomes "Haus", "##." and is glued back on decode.

    Round trip: `decode(encode(texts)) == normalize(texts)` whenever every character of
    the text occurs in the vocabulary (all characters of the training texts do) and no
    word is longer than 100 bytes. A word with an unknown character, or a longer one,
    becomes `[UNK]` as a whole, and decodes as "[UNK]".

    Vocabulary file (`save`): one token per line, in id order, UTF-8; the lowercase flag
    goes to `PATH.json` next to it.
    """

    def __init__(self, tokens, lowercase=False):
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"the first tokens must be {SPECIAL_TOKENS}, got {tokens[:4]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("the vocabulary has duplicate tokens")
        self.token_list = tokens
        self.lowercase = bool(lowercase)
        self.tokenizer = _word_piece_tokenizer(tokens)

    pad_id, start_id, end_id, unknown_id = PAD_ID, START_ID, END_ID, UNKNOWN_ID

    def __len__(self):
        return len(self.token_list)

    @classmethod
    def build(cls, texts, vocabulary_size, lowercase=False, trainer="sentencepiece"):
        """Learns a vocabulary of at most `vocabulary_size` tokens from `texts`.

        Every character of the texts gets a token, both word-initial and as a `##`
        piece, so the training texts never need `[UNK]`; the rest are the most useful
        longer pieces.

        Args:
            texts: Strings (e.g. the training side of a corpus).
            vocabulary_size: Most tokens, the four reserved ones included; must leave
                room for the characters (2 tokens each).
            lowercase: Lowercase text before learning and encoding.
            trainer: "sentencepiece" (default): SentencePiece BPE (a keras-hub
                dependency, C++) proposes twice as many pieces as fit, and the ones
                WordPiece uses most on `texts` are kept; about a second for 29k
                sentences. "keras_hub": `keras_hub.tokenizers.compute_word_piece_vocabulary`
                (TensorFlow Text's pure-Python WordPiece learner): about 100 s for
                Multi30k German, and its fixed frequency floor of 10 caps the size
                (about 3,700 tokens there).

        Returns:
            A `SubwordVocabulary`.
        """
        normalized = _normalize(texts, lowercase)
        characters = sorted({char for text in normalized for char in text if char != " "})
        base = list(SPECIAL_TOKENS) + characters + [SUFFIX + char for char in characters]
        if vocabulary_size < len(base):
            raise ValueError(
                f"vocabulary_size {vocabulary_size} is too small: the reserved tokens and "
                f"the {len(characters)} characters of the texts need {len(base)}"
            )
        room = vocabulary_size - len(base)
        if trainer == "sentencepiece":
            # SentencePiece merges "B" + "ü" before "▁" + "Bü", so some of its pieces
            # ("##Bü") are never used by WordPiece: propose more, keep the used ones.
            pieces = _sentencepiece_pieces(normalized, 2 * vocabulary_size, len(characters))
            pieces = _most_used(base, _new_pieces(base, pieces), normalized, room)
        elif trainer == "keras_hub":
            pieces = _new_pieces(base, _keras_hub_pieces(normalized, vocabulary_size))[:room]
        else:
            raise ValueError(f"trainer must be 'sentencepiece' or 'keras_hub', got {trainer!r}")
        return cls(base + pieces, lowercase=lowercase)

    def save(self, path):
        """Writes the tokens to `path` (one per line) and the settings to `path.json`."""
        with open(path, "w", encoding="utf-8") as file:
            file.write("".join(token + "\n" for token in self.token_list))
        with open(path + ".json", "w", encoding="utf-8") as file:
            json.dump({"lowercase": self.lowercase, "suffix_indicator": SUFFIX}, file)

    @classmethod
    def load(cls, path, lowercase=None):
        """Reads a vocabulary written by `save`.

        Args:
            path: The token file.
            lowercase: Overrides the flag stored in `path.json`; if None, the stored
                flag is used (False when there is no `path.json`).
        """
        with open(path, encoding="utf-8") as file:
            tokens = file.read().split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        if lowercase is None:
            settings_path = path + ".json"
            lowercase = False
            if os.path.isfile(settings_path):
                with open(settings_path, encoding="utf-8") as file:
                    lowercase = json.load(file)["lowercase"]
        return cls(tokens, lowercase=lowercase)

    def normalize(self, texts):
        """The texts as this vocabulary sees them (`normalize_tensor`); `decode(encode(x))`
        gives these back."""
        return _normalize(texts, self.lowercase)

    def encode(self, texts):
        """Ids of each text (lists of Python ints, no start or end token): `encode_tensor`."""
        ids = [
            row for chunk in _string_chunks(texts) for row in _to_lists(self.encode_tensor(chunk))
        ]
        return [[int(i) for i in row] for row in ids]

    def encode_tensor(self, texts):
        """The ids of a 1-D string tensor, ragged int32 `(batch, None)`, in TensorFlow ops.

        `normalize_tensor`, a split at the spaces it leaves, then keras-hub's WordPiece.
        `encode` runs this function, and so does the exported SavedModel (`recipes.export`).
        """
        # Normalised to single spaces, so TF's ASCII whitespace split is exact.
        words = tf.strings.split(normalize_tensor(texts, self.lowercase))
        return self.tokenizer(words)

    def decode(self, id_lists):
        """Texts of id sequences: stops at the first end token, drops padding and start,
        joins `##` pieces to the piece before them and words with one space
        (`decode_tensor`)."""
        id_lists = [list(ids) for ids in id_lists]
        if not id_lists:
            return []
        texts = self.decode_tensor(tf.constant(pad_batch(id_lists)))  # padding is dropped
        return [text.decode("utf-8") for text in texts.numpy()]

    def decode_tensor(self, ids):
        """`decode` in TensorFlow ops: int ids `(batch, length)` -> strings `(batch,)`.

        `decode` runs this function, and so does the exported SavedModel.
        """
        pieces = tf.gather(tf.constant(self.token_list), ids)
        kept = kept_tokens(ids)
        after_kept = tf.cumsum(tf.cast(kept, "int32"), axis=1, exclusive=True) > 0
        is_suffix = tf.strings.substr(pieces, 0, len(SUFFIX)) == SUFFIX
        texts = tf.strings.regex_replace(pieces, "^" + SUFFIX, "")
        separators = tf.where(after_kept & ~is_suffix, " ", "")
        return tf.strings.reduce_join(tf.where(kept, separators + texts, ""), axis=1)

    def tokens(self, ids):
        """The token string of every id, padding included (to line up with attention)."""
        return [self.token_list[int(token_id)] for token_id in ids]


def _normalize(texts, lowercase):
    return [
        text.decode("utf-8")
        for chunk in _string_chunks(texts)
        for text in normalize_tensor(chunk, lowercase).numpy()
    ]


def _string_chunks(texts):
    """String tensors of at most `ENCODE_CHUNK` of `texts` (a list, not one string)."""
    if isinstance(texts, str):
        raise TypeError("expected a list of strings, got one string")
    texts = list(texts)
    for start in range(0, len(texts), ENCODE_CHUNK):
        yield tf.constant(texts[start : start + ENCODE_CHUNK], tf.string)


# The characters Python's `str.split` splits on (all below U+3001): the whitespace of text.
WHITESPACE = "".join(chr(code) for code in range(0x3001) if chr(code).isspace())
_WHITESPACE_RUN = "[" + "".join(f"\\x{{{ord(character):x}}}" for character in WHITESPACE) + "]+"


def normalize_tensor(texts, lowercase):
    """The one normalisation of text, in TensorFlow ops: a 1-D string tensor -> the texts
    as a vocabulary sees them.

    Invalid UTF-8 becomes U+FFFD; then Unicode NFC (TensorFlow Text's, ICU), every run of
    `WHITESPACE` one space, no space at the ends, and lowercasing (ICU's, which keeps "ß":
    no casefolding) if `lowercase`. Building a vocabulary, `encode`, `normalize` and the
    exported SavedModel all run this function.
    """
    import tensorflow_text  # imported here: only vocabularies need it

    texts = tf.ensure_shape(tf.convert_to_tensor(texts, tf.string), [None])
    texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace")
    texts = tensorflow_text.normalize_utf8(texts, "NFC")
    texts = tf.strings.strip(tf.strings.regex_replace(texts, _WHITESPACE_RUN, " "))
    return _lower(texts) if lowercase else texts


def _lower(texts):
    # `tf.strings.lower` ends a string at its first NUL: lowercase the parts between.
    # (A NUL separator of `reduce_join` is lost on ragged input: the NULs are values here.)
    parts = tf.strings.split(texts, "\x00")
    positions = tf.range(tf.size(parts.flat_values, out_type=tf.int64))
    last = positions + 1 == tf.gather(parts.row_limits(), parts.value_rowids())
    lowered = tf.strings.lower(parts.flat_values, encoding="utf-8") + tf.where(last, "", "\x00")
    return tf.strings.reduce_join(parts.with_flat_values(lowered), axis=1)


def kept_tokens(ids):
    """True on the ids `(batch, length)` before the first end token that are not padding
    or start: the ones a vocabulary's decoding shows."""
    before_end = tf.cumsum(tf.cast(ids == END_ID, "int32"), axis=1) == 0
    return before_end & (ids != PAD_ID) & (ids != START_ID)


def _word_piece_tokenizer(tokens):
    """keras-hub's WordPiece over words that `encode` has already split and normalised."""
    import keras_hub  # imported here: only vocabularies need it

    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=tokens,
        lowercase=False,  # done in `normalize_tensor`, which keeps "ß" (casefold: "ss")
        strip_accents=False,
        split=False,  # words come split on whitespace, see `encode`
        suffix_indicator=SUFFIX,
        oov_token=SPECIAL_TOKENS[UNKNOWN_ID],
        dtype="int32",
    )


def _new_pieces(base, pieces):
    """`pieces` in order without duplicates, the empty or bare "##" piece, or base tokens."""
    known, new = set(base), []
    for piece in pieces:
        if piece and piece != SUFFIX and piece not in known:
            known.add(piece)
            new.append(piece)
    return new


def _most_used(base, candidates, texts, count):
    """The `count` candidates WordPiece uses most on `texts`, in their given order."""
    word_counts = collections.Counter(word for text in texts for word in text.split())
    words = list(word_counts)
    tokenizer = _word_piece_tokenizer(base + candidates)
    usage = collections.Counter()
    for start in range(0, len(words), ENCODE_CHUNK):
        chunk = words[start : start + ENCODE_CHUNK]
        # One word per row: [n, 1] -> pieces of each word.
        ids = tokenizer(tf.reshape(tf.constant(chunk), [-1, 1]))
        for word, row in zip(chunk, _to_lists(ids), strict=True):
            for token_id in row:
                usage[token_id] += word_counts[word]
    used = [index for index in range(len(base), len(base) + len(candidates)) if usage[index]]
    kept = sorted(sorted(used, key=lambda index: -usage[index])[:count])
    return [candidates[index - len(base)] for index in kept]


def _to_lists(ids):
    """Tokenizer output as lists: keras-hub returns lists for eager input, else tensors."""
    return ids.to_list() if hasattr(ids, "to_list") else ids


def _sentencepiece_pieces(texts, vocabulary_size, num_characters):
    """WordPiece tokens from a SentencePiece BPE model: "▁word" -> "word", "ing" -> "##ing"."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        # Room for the characters SentencePiece needs, else it refuses to train.
        vocab_size=max(vocabulary_size, num_characters + 8),
        model_type="bpe",
        character_coverage=1.0,  # keep rare characters: they are in `base` anyway
        normalization_rule_name="identity",  # the texts are normalised already
        hard_vocab_limit=False,  # small corpora may have fewer pieces than asked
        num_threads=1,  # deterministic
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        minloglevel=2,
    )
    processor = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = []
    for index in range(processor.get_piece_size()):
        if processor.is_unknown(index) or processor.is_control(index):
            continue
        piece = processor.id_to_piece(index)
        pieces.append(piece[1:] if piece.startswith("\u2581") else SUFFIX + piece)
    return pieces


def _keras_hub_pieces(texts, vocabulary_size):
    import keras_hub

    words = tf.data.Dataset.from_tensor_slices(texts).batch(ENCODE_CHUNK).map(tf.strings.split)
    return keras_hub.tokenizers.compute_word_piece_vocabulary(
        words,
        vocabulary_size,
        split=False,
        suffix_indicator=SUFFIX,
        reserved_tokens=list(SPECIAL_TOKENS),
    )
