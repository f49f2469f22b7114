"""Parallel text corpora for translation: the readers and the `Corpus` they return.

Readers return a `Corpus`: train/val/test lists of (source, target) string pairs plus a
count of every record that was skipped and why, with a few `file:line` locations per
reason. Nothing is dropped silently. `load_corpus(data)` picks the reader: `None` is the
generated number-phrase corpus, `"tfds:NAME"` a TensorFlow Datasets translation set, a
file a TSV of pairs (the Anki/Tatoeba layout), a directory line-aligned
`{split}.{lang}` files (Multi30k).
"""

import dataclasses
import gzip
import os
import re

import numpy as np

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
