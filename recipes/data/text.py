"""Text corpora for translation: readers, a subword vocabulary and tf.data pipelines.

Readers return a `Corpus`: train/val/test lists of (source, target) string pairs plus a
count of every record that was skipped and why, with a few `file:line` locations per
reason. Nothing is dropped silently.

- `load_corpus(data)` picks the reader: `None` is the generated number-phrase corpus,
  `"tfds:NAME"` a TensorFlow Datasets translation set, a file a TSV of pairs (the
  Anki/Tatoeba layout), a directory line-aligned `{split}.{lang}` files (Multi30k).
- `SubwordVocabulary` is a WordPiece vocabulary with ids 0-3 = `[PAD]`, `[START]`,
  `[END]`, `[UNK]`, matching the `Seq2Seq` convention (0 padding, 1 start, 2 end).
- `make_dataset` turns id lists into `((source, target_in), target_out)` batches for
  `Seq2Seq.fit`, bucketed by source length.
"""

import collections
import dataclasses
import gzip
import io
import json
import os
import re

import numpy as np
import tensorflow as tf

from multiattn.special_tokens import END_ID, PAD_ID, SPECIAL_TOKENS, START_ID, UNKNOWN_ID
from recipes.data import SPLITS, DataError, generated
from recipes.data.skips import SkipCounter

# -- corpus --------------------------------------------------------------------------------
LOCATIONS_PER_REASON = 3  # `file:line` examples kept for each skip reason


@dataclasses.dataclass
class Corpus(SkipCounter):
    """Sentence pairs by split, and the records that were skipped on the way.

    Attributes:
        train: (source, target) string pairs; never empty for a corpus from a reader.
        val: Validation pairs (may be empty when the data has none).
        test: Test pairs (may be empty when the data has none).
        skipped: `reason -> count` of skipped records.
        skipped_examples: `reason -> [location, ...]`, the first few `file:line`
            locations of each reason.
        source_lang: Source language code, when known.
        target_lang: Target language code, when known.
    """

    train: list = dataclasses.field(default_factory=list)
    val: list = dataclasses.field(default_factory=list)
    test: list = dataclasses.field(default_factory=list)
    skipped: dict = dataclasses.field(default_factory=dict)
    skipped_examples: dict = dataclasses.field(default_factory=dict)
    source_lang: str | None = None
    target_lang: str | None = None
    locations_per_reason = LOCATIONS_PER_REASON  # a class attribute, not a field

    def reversed(self):
        """The same corpus translating the other way (target -> source)."""

        def flip(pairs):
            return [(target, source) for source, target in pairs]

        return dataclasses.replace(
            self,
            train=flip(self.train),
            val=flip(self.val),
            test=flip(self.test),
            source_lang=self.target_lang,
            target_lang=self.source_lang,
        )


def filter_long(pairs, max_tokens):
    """Drops pairs with more than `max_tokens` whitespace tokens on either side.

    Returns:
        `(kept, dropped_count)`: the kept pairs in their order, and how many were dropped.
    """
    kept = [
        (source, target)
        for source, target in pairs
        if len(source.split()) <= max_tokens and len(target.split()) <= max_tokens
    ]
    return kept, len(pairs) - len(kept)


# -- reading lines -------------------------------------------------------------------------
def _read_lines(path):
    """The lines of a text or `.gz` file as bytes, without line endings.

    Lines are split on b"\\n" only (not on the Unicode line separators that
    `str.splitlines` also breaks at), so line numbers agree with `wc -l` and editors.
    """
    try:
        if str(path).endswith(".gz"):
            with gzip.open(path, "rb") as file:
                content = file.read()
        else:
            with open(path, "rb") as file:
                content = file.read()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read: {error}") from error
    lines = content.split(b"\n")
    if lines[-1] == b"":  # the newline that ends the last line starts no new line
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _decode(line, first):
    """A line as str, or None when it is not valid UTF-8 (one bad line spoils no others)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text.removeprefix("\ufeff") if first else text


# -- parallel directory --------------------------------------------------------------------
# Names a split may have on disk, and the file names tried for each (language appended).
SPLIT_FILE_NAMES = {"train": ("train",), "val": ("val", "valid", "dev"), "test": ("test",)}
FILE_PATTERNS = ("{split}.{lang}", "{split}.{lang}.gz", "{split}.lc.norm.tok.{lang}")
FILE_PATTERNS += ("{split}.lc.norm.tok.{lang}.gz",)


def _find_split_file(directory, split, lang):
    """The one file of `split` in `lang`, or None; two candidates are an error."""
    names = [
        pattern.format(split=name, lang=lang)
        for name in SPLIT_FILE_NAMES[split]
        for pattern in FILE_PATTERNS
    ]
    found = [name for name in names if os.path.isfile(os.path.join(directory, name))]
    if len(found) > 1:
        raise DataError(f"{directory}: {split} ({lang}) is ambiguous: found {', '.join(found)}")
    return os.path.join(directory, found[0]) if found else None


def read_parallel_directory(directory, source_lang, target_lang):
    """Reads line-aligned files `DIR/{split}.{lang}` for the splits train, val and test.

    Each split file may also be gzipped (`train.en.gz`) or use the Multi30k tokenized
    name (`train.lc.norm.tok.en(.gz)`); val may be called `valid` or `dev`. A split
    missing in both languages is absent (an empty list); train must be there.

    Skipped (and counted): a pair where either line is blank ("empty line"), a pair
    where either line is not valid UTF-8 ("undecodable bytes").

    Args:
        directory: The directory.
        source_lang: Source language code, the file suffix (e.g. "en").
        target_lang: Target language code (e.g. "de").

    Returns:
        A `Corpus`.

    Raises:
        DataError: A split exists in one language only, two files of a split have
            different line counts, there is no train split, or it has no usable pair.
    """
    if not source_lang or not target_lang or source_lang == target_lang:
        raise DataError(
            f"{directory}: a directory of parallel files needs two different languages, "
            f"got source {source_lang!r} and target {target_lang!r}"
        )
    corpus = Corpus(source_lang=source_lang, target_lang=target_lang)
    for split in SPLITS:
        paths = {
            lang: _find_split_file(directory, split, lang) for lang in (source_lang, target_lang)
        }
        if not any(paths.values()):
            if split == "train":
                raise DataError(
                    f"{directory}: no train split: expected train.{source_lang} and "
                    f"train.{target_lang} (or .gz, or train.lc.norm.tok.LANG)"
                )
            continue
        for lang, other_lang in ((source_lang, target_lang), (target_lang, source_lang)):
            if paths[lang] is None:
                raise DataError(
                    f"{os.path.join(directory, f'{split}.{lang}')} is missing (nor .gz, nor "
                    f"{split}.lc.norm.tok.{lang}), but {paths[other_lang]} exists"
                )
        pairs = _read_aligned(paths[source_lang], paths[target_lang], corpus)
        setattr(corpus, split, pairs)
        # Checked before reading val and test, so the summary is train's alone.
        if split == "train" and not pairs:
            names = " and ".join(os.path.basename(paths[lang]) for lang in paths)
            if not corpus.skipped:  # equal line counts and nothing skipped: no lines
                raise DataError(f"{directory}: no usable train pairs: {names} are empty")
            raise DataError(f"{directory}: no usable train pairs ({corpus.skipped_summary()})")
    return corpus


def _read_aligned(source_path, target_path, corpus):
    """The usable pairs of two line-aligned files; skipped lines are counted in `corpus`."""
    source_lines, target_lines = _read_lines(source_path), _read_lines(target_path)
    if len(source_lines) != len(target_lines):
        raise DataError(
            f"line counts differ: {source_path} has {len(source_lines)} lines, "
            f"{target_path} has {len(target_lines)}"
        )
    names = os.path.basename(source_path), os.path.basename(target_path)
    pairs = []
    for index, raw_lines in enumerate(zip(source_lines, target_lines, strict=True)):
        texts = [_decode(line, first=index == 0) for line in raw_lines]
        undecodable = [name for name, text in zip(names, texts, strict=True) if text is None]
        if undecodable:
            corpus.skip("undecodable bytes", f"{undecodable[0]}:{index + 1}")
            continue
        texts = [text.strip() for text in texts]
        empty = [name for name, text in zip(names, texts, strict=True) if not text]
        if empty:
            corpus.skip("empty line", f"{empty[0]}:{index + 1}")
            continue
        pairs.append(tuple(texts))
    return pairs


# -- TSV -----------------------------------------------------------------------------------
# The third column of later Anki releases: "CC-BY 2.0 (France) Attribution: tatoeba.org ..."
ATTRIBUTION = re.compile(r"^\s*CC-BY|attribution:", re.IGNORECASE)


def read_tsv(path, seed=0, val_fraction=0.05, test_fraction=0.05, reverse=False, columns=None):
    """Reads `source<TAB>target` lines (the Anki/Tatoeba layout) and splits them by line.

    Column rule (with `columns=None`): a line has exactly 2 fields, or 3 where the third
    is an Anki attribution ("CC-BY 2.0 (France) Attribution: tatoeba.org ..."); the
    first two are the pair. Any other line is skipped as "wrong number of columns".
    With `columns=(i, j)` fields i and j are the pair and extra fields are ignored.

    Skipped (and counted): blank lines ("empty line"), lines with a blank field of the
    pair ("empty field"), lines with the wrong number of columns, lines that are not
    valid UTF-8 ("undecodable bytes").

    The kept pairs are split at random (seeded, so the same file and seed give the
    same split); each split keeps the file order.

    Args:
        path: The file, plain or `.gz`.
        seed: Seed of the split.
        val_fraction: Share of the pairs for validation.
        test_fraction: Share of the pairs for test.
        reverse: Translate the second column into the first.
        columns: `(source column, target column)` before `reverse`, or None for the
            rule above.

    Returns:
        A `Corpus` (languages unknown: None).
    """
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(
            f"need 0 <= fractions and val + test < 1, got {val_fraction} and {test_fraction}"
        )
    if columns is not None and (len(columns) != 2 or columns[0] == columns[1] or min(columns) < 0):
        raise ValueError(f"columns must be two different column numbers, got {columns!r}")
    corpus = Corpus()
    name = os.path.basename(path)
    lines = _read_lines(path)
    if not lines:
        raise DataError(f"{path}: no usable pairs: the file is empty")
    pairs = []
    for index, line in enumerate(lines):
        location = f"{name}:{index + 1}"
        text = _decode(line, first=index == 0)
        if text is None:
            corpus.skip("undecodable bytes", location)
            continue
        if not text.strip():
            corpus.skip("empty line", location)
            continue
        pair = _tsv_pair(text.split("\t"), columns)
        if pair is None:
            corpus.skip("wrong number of columns", location)
        elif not (pair[0] and pair[1]):
            corpus.skip("empty field", location)
        else:
            pairs.append(pair[::-1] if reverse else pair)
    if not pairs:
        raise DataError(f"{path}: no usable pairs ({corpus.skipped_summary()})")
    order = np.random.default_rng(seed).permutation(len(pairs))
    num_test = round(len(pairs) * test_fraction)
    num_val = round(len(pairs) * val_fraction)
    chosen = {
        "test": order[:num_test],
        "val": order[num_test : num_test + num_val],
        "train": order[num_test + num_val :],
    }
    for split, indices in chosen.items():
        setattr(corpus, split, [pairs[i] for i in sorted(indices)])
    if not corpus.train:
        raise DataError(f"{path}: too few pairs ({len(pairs)}) to leave any for training")
    return corpus


def _tsv_pair(fields, columns):
    """The (first, second) stripped fields by the column rule, or None if it does not fit."""
    if columns is None:
        if len(fields) == 2 or (len(fields) == 3 and ATTRIBUTION.search(fields[2])):
            return fields[0].strip(), fields[1].strip()
        return None
    if len(fields) <= max(columns):
        return None
    return fields[columns[0]].strip(), fields[columns[1]].strip()


# -- TensorFlow Datasets -------------------------------------------------------------------
TFDS_SPLITS = {"train": "train", "validation": "val", "test": "test"}


def load_tfds(name, data_dir=None, source_key=None, target_key=None):
    """Loads a TensorFlow Datasets translation set, e.g. "ted_hrlr_translate/pt_to_en".

    Downloads and prepares it on first use (this needs the internet), then reads the
    splits train, validation and test (those the dataset has) as str pairs.

    Args:
        name: TFDS name with config and optional version.
        data_dir: TFDS data directory (the TFDS default if None).
        source_key: Feature holding the source text; None uses the dataset's supervised
            keys (`as_supervised=True`), as translation datasets define them.
        target_key: Feature holding the target text (given with `source_key`).

    Returns:
        A `Corpus`; skipped records are located as `NAME/SPLIT:INDEX` (0-based).
    """
    import tensorflow_datasets as tfds  # imported here: slow, and only this reader needs it

    if (source_key is None) != (target_key is None):
        raise ValueError("give both source_key and target_key, or neither")
    builder = tfds.builder(name, data_dir=data_dir)
    if source_key is None:
        keys = builder.info.supervised_keys
        if not keys:
            raise DataError(
                f"tfds:{name} has no supervised keys: name the source and target features "
                f"(languages) among {sorted(builder.info.features.keys())}"
            )
        source_key, target_key = keys
        supervised = True
    else:
        missing = {source_key, target_key} - set(builder.info.features.keys())
        if missing:
            raise DataError(
                f"tfds:{name} has no feature {sorted(missing)}; it has "
                f"{sorted(builder.info.features.keys())}"
            )
        supervised = False
    builder.download_and_prepare()
    # Known after preparation; empty when unknown (as under tfds.testing.mock_data).
    available = set(builder.info.splits.keys())
    corpus = Corpus(source_lang=str(source_key), target_lang=str(target_key))
    for tfds_split, split in TFDS_SPLITS.items():
        if available and tfds_split not in available:
            continue
        dataset = builder.as_dataset(split=tfds_split, as_supervised=supervised)
        pairs = []
        for index, example in enumerate(dataset.as_numpy_iterator()):
            raw = example if supervised else (example[source_key], example[target_key])
            location = f"{name}/{tfds_split}:{index}"
            texts = [_decode(value, first=False) for value in raw]
            if None in texts:
                corpus.skip("undecodable bytes", location)
            elif not (texts[0].strip() and texts[1].strip()):
                corpus.skip("empty line", location)
            else:
                pairs.append((texts[0].strip(), texts[1].strip()))
        setattr(corpus, split, pairs)
    if not corpus.train:
        raise DataError(f"tfds:{name}: no usable train pairs ({corpus.skipped_summary()})")
    return corpus


# -- dispatch ------------------------------------------------------------------------------
TSV_SUFFIXES = (".tsv", ".txt", ".gz")
ENGLISH = ("en", "eng", "english")


def load_corpus(data=None, source_lang=None, target_lang=None, seed=0, **generated_options):
    """Loads the corpus named by a `--data` value.

    - None: the generated English -> German number phrases (`generated.py`);
      `generated_options` (num_train, num_val, num_test, max_tokens) are passed on.
      `source_lang="de", target_lang="en"` gives German -> English.
    - "tfds:NAME": `load_tfds(NAME)`; the languages, if given, name the source and
      target features (otherwise the dataset's supervised keys are used).
    - A directory: `read_parallel_directory` (the languages are required).
    - A `.tsv`, `.txt` or `.gz` file: `read_tsv`. Anki files have English in the first
      column, so the pair is reversed when `target_lang` is English and `source_lang`
      is not; otherwise the first column is the source.

    Raises:
        DataError: The path does not exist, or the data cannot be read as asked.
    """
    if generated_options and data is not None:
        raise TypeError(f"{sorted(generated_options)} only apply to the generated corpus")
    if data is None:
        splits = generated.number_phrase_corpus(seed=seed, **generated_options)
        corpus = Corpus(**splits, source_lang="en", target_lang="de")
        if (source_lang, target_lang) in ((None, None), ("en", "de")):
            return corpus
        if (source_lang, target_lang) == ("de", "en"):
            return corpus.reversed()
        raise DataError(
            f"the generated corpus is English-German, not {source_lang} -> {target_lang}"
        )
    data = str(data)
    if data.startswith("tfds:"):
        return load_tfds(data[len("tfds:") :], source_key=source_lang, target_key=target_lang)
    if os.path.isdir(data):
        return read_parallel_directory(data, source_lang, target_lang)
    if os.path.isfile(data):
        if not data.endswith(TSV_SUFFIXES):
            raise DataError(f"--data: {data} is neither a directory nor a .tsv, .txt or .gz file")
        reverse = _is_english(target_lang) and not _is_english(source_lang)
        corpus = read_tsv(data, seed=seed, reverse=reverse)
        corpus.source_lang, corpus.target_lang = source_lang, target_lang
        return corpus
    raise DataError(f"--data: no such file or directory: {data}")


def _is_english(lang):
    return lang is not None and lang.lower() in ENGLISH


# -- vocabulary ----------------------------------------------------------------------------
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
        if isinstance(texts, str):
            raise TypeError("expected a list of strings, got one string")
        texts, ids = list(texts), []
        for start in range(0, len(texts), ENCODE_CHUNK):
            chunk = tf.constant(texts[start : start + ENCODE_CHUNK], tf.string)
            ids.extend(_to_lists(self.encode_tensor(chunk)))
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
    if isinstance(texts, str):
        raise TypeError("expected a list of strings, got one string")
    texts, normalized = list(texts), []
    for start in range(0, len(texts), ENCODE_CHUNK):
        chunk = tf.constant(texts[start : start + ENCODE_CHUNK], tf.string)
        normalized.extend(
            text.decode("utf-8") for text in normalize_tensor(chunk, lowercase).numpy()
        )
    return normalized


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


# -- tf.data -------------------------------------------------------------------------------
def pad_batch(id_lists, length=None):
    """Pads id lists with 0 into an int32 array `(len(id_lists), length)`.

    `length` defaults to the longest list; a longer list is an error, not cut.
    """
    longest = max((len(ids) for ids in id_lists), default=0)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"a sequence has {longest} ids, more than length={length}")
    batch = np.zeros((len(id_lists), length), dtype="int32")
    for row, ids in enumerate(id_lists):
        batch[row, : len(ids)] = ids
    return batch


def length_bucket_boundaries(lengths, num_buckets=8):
    """Bucket boundaries at quantiles of `lengths`, so buckets hold similar counts.

    Bucket i holds lengths in `[boundaries[i-1], boundaries[i])`; the last is open.
    """
    lengths = np.asarray(lengths)
    if lengths.size == 0:
        return []
    quantiles = np.quantile(lengths, np.arange(1, num_buckets) / num_buckets, method="higher")
    # +1: a quantile length belongs to the bucket below its boundary.
    boundaries = sorted({int(q) + 1 for q in quantiles})
    return [b for b in boundaries if b <= lengths.max()]


def _ragged(id_lists):
    """A RaggedTensor of int32 rows, built from flat numpy arrays (fast for many rows)."""
    lengths = np.fromiter((len(ids) for ids in id_lists), dtype="int64", count=len(id_lists))
    flat = np.fromiter((i for ids in id_lists for i in ids), dtype="int32", count=lengths.sum())
    return tf.RaggedTensor.from_row_lengths(flat, lengths)


def make_dataset(source_ids, target_ids, batch_size, shuffle=False, seed=0, bucket_boundaries=None):
    """Batches id lists into `((source, target_in), target_out)` for `Seq2Seq.fit`.

    `target_in` is `[1] + target`, `target_out` is `target + [2]`; each batch is padded
    with 0 to its own longest sequence, int32. Batches are bucketed by source length
    so each holds sentences of similar length (less padding).

    Args:
        source_ids: Lists of source ids (no start/end).
        target_ids: Lists of target ids (no start/end), aligned with `source_ids`.
        batch_size: Sentences per batch (the last batch of a bucket may be smaller).
        shuffle: Shuffle the sentences (seeded; reshuffled every epoch).
        seed: Shuffle seed: the same seed gives the same order.
        bucket_boundaries: Source-length boundaries; None derives them from the data
            (`length_bucket_boundaries`); an empty list turns bucketing off.

    Returns:
        A prefetching `tf.data.Dataset`.
    """
    if len(source_ids) != len(target_ids):
        raise ValueError(f"{len(source_ids)} sources but {len(target_ids)} targets")
    if not source_ids:
        raise ValueError("no sentences to batch")
    if bucket_boundaries is None:
        bucket_boundaries = length_bucket_boundaries([len(ids) for ids in source_ids])
    dataset = tf.data.Dataset.from_tensor_slices((_ragged(source_ids), _ragged(target_ids)))
    if shuffle:
        dataset = dataset.shuffle(len(source_ids), seed=seed, reshuffle_each_iteration=True)

    def add_start_and_end(source, target):
        target_in = tf.concat([[START_ID], target], axis=0)
        target_out = tf.concat([target, [END_ID]], axis=0)
        return (source, target_in), target_out

    dataset = dataset.map(add_start_and_end, num_parallel_calls=tf.data.AUTOTUNE)
    if bucket_boundaries:
        dataset = dataset.bucket_by_sequence_length(
            element_length_func=lambda inputs, _: tf.shape(inputs[0])[0],
            bucket_boundaries=list(bucket_boundaries),
            bucket_batch_sizes=[batch_size] * (len(bucket_boundaries) + 1),
        )
        # Bucketing hides the batch count; without it Keras warns that the input "ran
        # out of data" after the first epoch and shows no progress total.
        buckets = np.searchsorted(bucket_boundaries, [len(ids) for ids in source_ids], "right")
        num_batches = sum(-(-count // batch_size) for count in np.bincount(buckets))
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_batches))
    else:
        dataset = dataset.padded_batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)
