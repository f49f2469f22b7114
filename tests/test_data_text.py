"""Tests of the text readers, the subword vocabulary and the tf.data pipeline.

Every file format and every error case is written to `tmp_path` by the test itself.

TensorFlow Datasets runs under `tfds.testing.mock_data`, so nothing is downloaded.
tensorflow-datasets ships no metadata for ted_hrlr_translate (`testing/metadata` has no
`dataset_info.json` for it), so the mock falls back to `MockPolicy.USE_CODE`: features
and supervised keys come from the builder's code, split names are unknown (any is
accepted) and examples are random strings. `as_dataset_fn` swaps in known rows.
"""

import gzip
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from multiattn.special_tokens import SPECIAL_TOKENS
from recipes.data import DataError
from recipes.data.batching import length_bucket_boundaries, make_dataset, pad_batch
from recipes.data.parallel_corpora import (
    Corpus,
    filter_long,
    load_corpus,
    load_tfds,
    read_parallel_directory,
    read_tsv,
)
from recipes.data.subword_vocabulary import SubwordVocabulary, normalize_tensor

ENGLISH = ["Two dogs run.", "A girl, smiling!", "Grüß Gott is German."]
GERMAN = ["Zwei Hunde rennen.", "Ein Mädchen, lächelnd!", "Grüß Gott ist Deutsch."]
PAIRS = list(zip(ENGLISH, GERMAN, strict=True))
MULTI30K = "/work/shared/data/multi30k/tok"


def write(path, lines):
    """Writes lines (str, or bytes for raw content) with "\\n" endings, gzipped if .gz."""
    content = b"".join(
        (line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n" for line in lines
    )
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as file:
        file.write(content)
    return path


# -- Corpus and filter_long ----------------------------------------------------------------
def test_skipped_summary_counts_and_locates():
    corpus = Corpus()
    for line in (17, 20, 25, 30):
        corpus.skip("empty line", f"train.de:{line}")
    corpus.skip("undecodable bytes", "val.en:3")
    assert corpus.skipped == {"empty line": 4, "undecodable bytes": 1}
    assert corpus.skipped_summary() == (
        "skipped 5 records: 4 empty line (train.de:17, train.de:20, train.de:25, ...), "
        "1 undecodable bytes (val.en:3)"
    )
    assert Corpus().skipped_summary() == "skipped 0 records"


def test_filter_long_counts_what_it_drops():
    pairs = [("a b", "c"), ("a b c", "d"), ("a", "b c d"), ("a", "b")]
    assert filter_long(pairs, 2) == ([("a b", "c"), ("a", "b")], 2)


# -- parallel directories ------------------------------------------------------------------
@pytest.mark.parametrize(
    "pattern", ["{split}.{lang}", "{split}.{lang}.gz", "{split}.lc.norm.tok.{lang}.gz"]
)
def test_parallel_directory_reads_each_layout(tmp_path, pattern):
    for split, pairs in (("train", PAIRS), ("val", PAIRS[:2])):
        for lang, side in (("en", 0), ("de", 1)):
            write(tmp_path / pattern.format(split=split, lang=lang), [p[side] for p in pairs])
    corpus = read_parallel_directory(str(tmp_path), "en", "de")
    assert corpus.train == PAIRS
    assert corpus.val == PAIRS[:2]
    assert corpus.test == []  # absent on both sides: just absent
    assert corpus.skipped == {}
    assert (corpus.source_lang, corpus.target_lang) == ("en", "de")
    assert read_parallel_directory(str(tmp_path), "de", "en").train == [
        (de, en) for en, de in PAIRS
    ]


def test_parallel_directory_skips_and_counts_bad_lines(tmp_path):
    write(tmp_path / "train.en", ["one", "", "three", "four", "five", "   ", "seven"])
    write(
        tmp_path / "train.de",
        ["eins", "zwei", b"dr\xffei", "", "f\xfcnf".encode("latin-1"), "sechs", "sieben"],
    )
    corpus = read_parallel_directory(str(tmp_path), "en", "de")
    assert corpus.train == [("one", "eins"), ("seven", "sieben")]
    assert corpus.skipped == {"empty line": 3, "undecodable bytes": 2}
    assert corpus.skipped_examples == {
        "empty line": ["train.en:2", "train.de:4", "train.en:6"],
        "undecodable bytes": ["train.de:3", "train.de:5"],
    }


def test_parallel_directory_strips_a_byte_order_mark_on_the_first_line(tmp_path):
    write(tmp_path / "train.en", ["\ufeffone", "two"])
    write(tmp_path / "train.de", ["eins", "zwei"])
    assert read_parallel_directory(str(tmp_path), "en", "de").train[0] == ("one", "eins")


@pytest.mark.parametrize(
    "files, message",
    [
        ({"train.en": ["a"], "train.de": ["b"], "val.en": ["c"]}, r"val\.de is missing"),
        ({"train.en": ["a", "b", "c"], "train.de": ["x", "y"]}, r"train\.en has 3 lines.*has 2"),
        ({"val.en": ["a"], "val.de": ["b"]}, "no train split"),
        ({"train.en": [], "train.de": []}, "no usable train pairs"),
        ({"train.en": ["", " "], "train.de": ["", ""]}, "no usable train pairs.*2 empty line"),
        ({"train.en": ["a"], "train.en.gz": ["a"], "train.de": ["b"]}, "ambiguous"),
    ],
    ids=["one-side-missing", "line-counts", "no-train", "empty-files", "blank-only", "two-files"],
)
def test_parallel_directory_errors(tmp_path, files, message):
    for name, lines in files.items():
        write(tmp_path / name, lines)
    with pytest.raises(DataError, match=message):
        read_parallel_directory(str(tmp_path), "en", "de")


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


@pytest.mark.skipif(not os.path.isdir(MULTI30K), reason="Multi30k is not on this machine")
def test_reads_multi30k():
    corpus = load_corpus(MULTI30K, "en", "de")
    assert (len(corpus.train), len(corpus.val), len(corpus.test)) == (29000, 1014, 0)
    assert corpus.train[0][1].startswith("zwei junge weiße männer")


# -- TSV -----------------------------------------------------------------------------------
TSV_LINES = [f"Sentence {n}.\tPhrase {n} !" for n in range(40)]
TSV_PAIRS = [(f"Sentence {n}.", f"Phrase {n} !") for n in range(40)]
ATTRIBUTION = "\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272 (CM) & #1158250 (Wittydev)"


@pytest.mark.parametrize(
    "name, suffix", [("pairs.tsv", ""), ("pairs.txt.gz", ""), ("fra.txt", ATTRIBUTION)]
)
def test_tsv_reads_two_and_three_columns(tmp_path, name, suffix):
    path = write(tmp_path / name, [line + suffix for line in TSV_LINES])
    corpus = read_tsv(str(path), val_fraction=0.1, test_fraction=0.2)
    assert corpus.skipped == {}
    assert (len(corpus.train), len(corpus.val), len(corpus.test)) == (28, 4, 8)
    # Every pair in exactly one split, each split in file order.
    everything = corpus.train + corpus.val + corpus.test
    assert sorted(everything) == sorted(TSV_PAIRS)
    for pairs in (corpus.train, corpus.val, corpus.test):
        assert pairs == sorted(pairs, key=TSV_PAIRS.index)


def test_tsv_skips_and_counts_bad_lines(tmp_path):
    lines = [
        "Hi.\tSalut.",
        "only one column",
        "Hi.\tSalut.\tnot an attribution",
        "a\tb\tc\td",
        "Hello.\t  ",
        "",
        "   ",
        b"Caf\xe9\tCaf\xe9",
        "Run!\tCours\u202f!",
    ]
    corpus = read_tsv(str(write(tmp_path / "pairs.tsv", lines)), val_fraction=0, test_fraction=0)
    assert corpus.train == [("Hi.", "Salut."), ("Run!", "Cours\u202f!")]
    assert corpus.skipped == {
        "wrong number of columns": 3,
        "empty field": 1,
        "empty line": 2,
        "undecodable bytes": 1,
    }
    assert corpus.skipped_examples["wrong number of columns"] == [
        "pairs.tsv:2",
        "pairs.tsv:3",
        "pairs.tsv:4",
    ]
    assert corpus.skipped_examples["undecodable bytes"] == ["pairs.tsv:8"]


@pytest.mark.parametrize(
    "columns, expected", [((0, 1), ("a", "b")), ((2, 0), ("c", "a")), ((1, 3), None)]
)
def test_tsv_columns_option_picks_fields(tmp_path, columns, expected):
    path = write(tmp_path / "pairs.tsv", ["a\tb\tc", "x\ty"])
    if expected is None:
        with pytest.raises(DataError, match="2 wrong number of columns"):
            read_tsv(str(path), val_fraction=0, test_fraction=0, columns=columns)
        return
    corpus = read_tsv(str(path), val_fraction=0, test_fraction=0, columns=columns)
    assert corpus.train[0] == expected
    # "x\ty" has no third column.
    assert len(corpus.train) == (2 if max(columns) < 2 else 1)


@pytest.mark.parametrize("columns", [(1, 1), (0,), (-1, 0)])
def test_tsv_rejects_bad_columns(tmp_path, columns):
    with pytest.raises(ValueError, match="two different column numbers"):
        read_tsv(str(write(tmp_path / "pairs.tsv", TSV_LINES)), columns=columns)


def test_tsv_split_depends_only_on_the_seed(tmp_path):
    path = str(write(tmp_path / "pairs.tsv", TSV_LINES))
    first = read_tsv(path, seed=1)
    assert first == read_tsv(path, seed=1)
    assert first.train != read_tsv(path, seed=2).train


def test_tsv_reverse_swaps_columns(tmp_path):
    path = str(write(tmp_path / "pairs.tsv", TSV_LINES))
    forward, backward = read_tsv(path), read_tsv(path, reverse=True)
    assert backward.train == [(target, source) for source, target in forward.train]


@pytest.mark.parametrize(
    "lines, message",
    [([], "no usable pairs"), (["", "  ", "a\t"], "no usable pairs.*1 empty field.*2 empty line")],
    ids=["empty-file", "blank-lines"],
)
def test_tsv_without_pairs_is_an_error(tmp_path, lines, message):
    with pytest.raises(DataError, match=message):
        read_tsv(str(write(tmp_path / "pairs.tsv", lines)))


# -- load_corpus ---------------------------------------------------------------------------
def test_load_corpus_without_data_generates_number_phrases():
    corpus = load_corpus(num_train=50, num_val=5, num_test=5)
    assert (len(corpus.train), len(corpus.val), len(corpus.test)) == (50, 5, 5)
    assert (corpus.source_lang, corpus.target_lang) == ("en", "de")
    reverse = load_corpus(None, "de", "en", num_train=50, num_val=5, num_test=5)
    assert reverse.train == [(de, en) for en, de in corpus.train]
    with pytest.raises(DataError, match="English-German"):
        load_corpus(None, "en", "fr")


@pytest.mark.parametrize(
    "source_lang, target_lang, reversed_", [(None, None, False), ("fr", "en", True)]
)
def test_load_corpus_reads_a_tsv_file(tmp_path, source_lang, target_lang, reversed_):
    path = str(write(tmp_path / "fra.txt", TSV_LINES))
    corpus = load_corpus(path, source_lang, target_lang)
    expected = read_tsv(path, reverse=reversed_)
    assert corpus.train == expected.train and corpus.test == expected.test
    assert corpus.val == expected.val
    assert (corpus.source_lang, corpus.target_lang) == (source_lang, target_lang)


def test_load_corpus_reads_a_directory(tmp_path):
    write(tmp_path / "train.en", ENGLISH)
    write(tmp_path / "train.de", GERMAN)
    assert load_corpus(str(tmp_path), "en", "de").train == PAIRS
    with pytest.raises(DataError, match="two different languages"):
        load_corpus(str(tmp_path))


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.tsv", "--data: no such file or directory: .*missing.tsv$"),
        ("pairs.csv", "neither a directory nor a .tsv"),
    ],
)
def test_load_corpus_path_errors(tmp_path, name, message):
    write(tmp_path / "pairs.csv", TSV_LINES)
    with pytest.raises(DataError, match=message):
        load_corpus(str(tmp_path / name))


def test_generator_options_need_the_generated_corpus(tmp_path):
    with pytest.raises(TypeError, match="num_train"):
        load_corpus(str(tmp_path), "en", "de", num_train=10)


# -- TensorFlow Datasets (mocked: nothing is downloaded) -----------------------------------
TED = "ted_hrlr_translate/pt_to_en"


def test_load_tfds_reads_every_split_as_str_pairs():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=3):
        corpus = load_tfds(TED)
    assert (len(corpus.train), len(corpus.val), len(corpus.test)) == (3, 3, 3)
    assert all(isinstance(text, str) for pair in corpus.train for text in pair)
    assert (corpus.source_lang, corpus.target_lang) == ("pt", "en")


def fake_ted(self, split, **kwargs):
    """Stands in for the builder's reader: known Portuguese-English rows per split."""
    rows = {
        "train": [
            ("olá mundo", "hello world"),
            ("", "empty"),
            (b"\xffbad", "bytes"),
            ("sim", "yes"),
        ],
        "validation": [("não", "no")],
        "test": [("obrigado", "thanks"), ("tchau", " ")],
    }[str(split)]
    as_bytes = [
        [text if isinstance(text, bytes) else text.encode() for text in row] for row in rows
    ]
    return tf.data.Dataset.from_tensor_slices(
        {"pt": [row[0] for row in as_bytes], "en": [row[1] for row in as_bytes]}
    )


@pytest.mark.parametrize(
    "source_lang, target_lang, flip", [(None, None, False), ("pt", "en", False), ("en", "pt", True)]
)
def test_load_corpus_tfds_decodes_and_counts_skips(source_lang, target_lang, flip):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(as_dataset_fn=fake_ted):
        corpus = load_corpus(f"tfds:{TED}", source_lang, target_lang)
    expected = Corpus(
        train=[("olá mundo", "hello world"), ("sim", "yes")],
        val=[("não", "no")],
        test=[("obrigado", "thanks")],
        source_lang="pt",
        target_lang="en",
    )
    expected = expected.reversed() if flip else expected
    assert (corpus.train, corpus.val, corpus.test) == (expected.train, expected.val, expected.test)
    assert (corpus.source_lang, corpus.target_lang) == (expected.source_lang, expected.target_lang)
    assert corpus.skipped == {"empty line": 2, "undecodable bytes": 1}
    assert corpus.skipped_examples["undecodable bytes"] == [f"{TED}/train:2"]


def test_load_tfds_rejects_unknown_features():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=1), pytest.raises(DataError, match="no feature"):
        load_tfds(TED, source_key="fr", target_key="en")


# -- vocabulary ----------------------------------------------------------------------------
TEXTS = [
    "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
    "Ein  kleines Mädchen klettert in ein Spielhaus aus Holz.",
    "Two young, White males are outside near many bushes!",
    "A little girl climbing into a wooden playhouse (outside).",
    'Straße, Größe; "quoted" text: 42 euros',
] * 4


@pytest.fixture(scope="module")
def vocabulary():
    return SubwordVocabulary.build(TEXTS, 200)


def test_reserved_tokens_have_the_seq2seq_ids(vocabulary):
    assert vocabulary.tokens([0, 1, 2, 3]) == ["[PAD]", "[START]", "[END]", "[UNK]"]
    assert list(SPECIAL_TOKENS) == vocabulary.token_list[:4]
    assert (vocabulary.pad_id, vocabulary.start_id, vocabulary.end_id) == (0, 1, 2)
    assert vocabulary.unknown_id == 3
    flat = [i for ids in vocabulary.encode(TEXTS) for i in ids]
    assert min(flat) > 3  # text never encodes to a reserved id


@pytest.mark.parametrize("lowercase", [False, True])
@pytest.mark.parametrize("trainer", ["sentencepiece", "keras_hub"])
def test_decode_inverts_encode(lowercase, trainer):
    vocabulary = SubwordVocabulary.build(TEXTS, 150, lowercase=lowercase, trainer=trainer)
    assert 4 < len(vocabulary) <= 150
    ids = vocabulary.encode(TEXTS)
    assert vocabulary.decode(ids) == vocabulary.normalize(TEXTS)
    expected = [" ".join(text.split()) for text in TEXTS]
    assert vocabulary.normalize(TEXTS) == ([t.lower() for t in expected] if lowercase else expected)
    # Spelled out, not derived with str.lower: lowercasing keeps ß (no casefold to "ss").
    assert vocabulary.decode(ids)[4] == (
        'straße, größe; "quoted" text: 42 euros'
        if lowercase
        else 'Straße, Größe; "quoted" text: 42 euros'
    )


@pytest.mark.parametrize("lowercase", [False, True])
def test_normalize_tensor_composes_joins_whitespace_and_lowercases(lowercase):
    texts = [
        "Cafe\u0301 \u212bngstro\u0308m",  # decomposed é, the Angstrom sign: NFC composes
        " a\u3000\u00a0b\x1c\u2028c\t\n ",  # whitespace Python's str.split splits on
        "STRAẞE İ",
        "A\x00B",  # TensorFlow's lowercasing alone would end the string at the NUL
        "",
    ]
    expected = ["Café Ångström", "a b c", "STRAẞE İ", "A\x00B", ""]
    if lowercase:  # "ẞ" lowercases to "ß", which stays (no casefolding to "ss")
        expected = ["café ångström", "a b c", "straße i\u0307", "a\x00b", ""]
    normalized = tf.function(lambda texts: normalize_tensor(texts, lowercase))(texts)
    assert [text.decode() for text in normalized.numpy()] == expected
    assert SubwordVocabulary(SPECIAL_TOKENS, lowercase).normalize(texts) == expected
    # Bytes that are not UTF-8 (only a served model sees them) become U+FFFD.
    replaced = normalize_tensor(tf.constant([b"a\xff b"]), lowercase).numpy()
    assert replaced[0].decode() == "a\ufffd b"


def test_tensor_functions_match_encode_and_decode(vocabulary):
    texts = ["junge Männer sind", "", "Büsche 日本", "  im  Freien "]
    ids = vocabulary.encode(texts)
    graph_ids = tf.function(vocabulary.encode_tensor)(tf.constant(texts))
    assert graph_ids.to_list() == ids
    padded = pad_batch([[1, *row, 2, 7] for row in ids])  # start, end, a token after the end
    texts = tf.function(vocabulary.decode_tensor)(tf.constant(padded)).numpy()
    assert [text.decode() for text in texts] == vocabulary.decode(ids)
    assert vocabulary.decode(ids) == ["junge Männer sind", "", "Büsche [UNK]", "im Freien"]


def test_encode_returns_python_ints_and_merges_frequent_pieces(vocabulary):
    ids = vocabulary.encode(["Männer sind", ""])
    assert ids[1] == []
    assert vocabulary.decode(ids) == ["Männer sind", ""]
    assert all(type(i) is int for i in ids[0])
    # A word seen four times is learned whole, not spelled out.
    assert 0 < len(ids[0]) < len("Männersind")


def test_unknown_characters_give_the_unknown_id(vocabulary):
    ids = vocabulary.encode(["Männer sind 日本 im"])[0]
    assert vocabulary.unknown_id in ids
    assert vocabulary.decode([ids]) == ["Männer sind [UNK] im"]


def test_decode_stops_at_end_and_drops_padding_and_start(vocabulary):
    ids = vocabulary.encode(["junge Männer", "im Freien"])
    padded = [[1] + ids[0] + [2] + ids[1] + [0, 0], [0] + ids[1] + [0]]
    assert vocabulary.decode(padded) == ["junge Männer", "im Freien"]
    assert vocabulary.decode(np.array([[2, 5, 6]])) == [""]


def test_tokens_name_every_id(vocabulary):
    ids = vocabulary.encode(["Büsche."])[0]
    tokens = vocabulary.tokens(ids + [2, 0])
    assert len(ids) >= 2, tokens  # so that the continuation check below has a piece to see
    assert "".join(t.removeprefix("##") for t in tokens[:-2]) == "Büsche."
    assert all(t.startswith("##") for t in tokens[1:-2]) and tokens[-2:] == ["[END]", "[PAD]"]


@pytest.mark.parametrize("lowercase", [False, True])
def test_save_and_load_give_the_same_ids(tmp_path, lowercase):
    vocabulary = SubwordVocabulary.build(TEXTS, 120, lowercase=lowercase)
    path = str(tmp_path / "vocabulary.txt")
    vocabulary.save(path)
    with open(path, encoding="utf-8") as file:
        assert file.read().splitlines() == vocabulary.token_list
    loaded = SubwordVocabulary.load(path)
    assert loaded.lowercase == lowercase
    assert loaded.token_list == vocabulary.token_list
    assert loaded.encode(TEXTS) == vocabulary.encode(TEXTS)
    assert SubwordVocabulary.load(path, lowercase=not lowercase).lowercase == (not lowercase)


def test_build_is_deterministic_and_respects_the_size():
    first = SubwordVocabulary.build(TEXTS, 150)
    assert first.token_list == SubwordVocabulary.build(TEXTS, 150).token_list
    assert len(SPECIAL_TOKENS) + 2 * 51 < len(first) <= 150  # 51 characters in TEXTS
    with pytest.raises(ValueError, match="too small"):
        SubwordVocabulary.build(TEXTS, 20)


@pytest.mark.skipif(not os.path.isdir(MULTI30K), reason="Multi30k is not on this machine")
def test_building_and_encoding_29k_sentences_takes_seconds():
    german = [target for _, target in load_corpus(MULTI30K, "en", "de").train]
    started = time.perf_counter()
    vocabulary = SubwordVocabulary.build(german, 8000)
    ids = vocabulary.encode(german)
    assert time.perf_counter() - started < 30
    assert len(vocabulary) == 8000
    assert vocabulary.decode(ids[:500]) == vocabulary.normalize(german[:500])


# -- tf.data -------------------------------------------------------------------------------
def random_ids(rng, count, low=1, high=30):
    return [rng.integers(4, 50, size=rng.integers(low, high)).tolist() for _ in range(count)]


def batches(dataset):
    return [(s.numpy(), t_in.numpy(), t_out.numpy()) for (s, t_in), t_out in dataset]


def test_pad_batch():
    assert pad_batch([[5, 6], [7]]).tolist() == [[5, 6], [7, 0]]
    assert pad_batch([[5, 6], [7]], length=4).dtype == np.int32
    assert pad_batch([[5]], length=3).tolist() == [[5, 0, 0]]
    with pytest.raises(ValueError, match="more than length"):
        pad_batch([[5, 6, 7]], length=2)


def test_dataset_adds_start_and_end_and_pads(rng):
    sources, targets = random_ids(rng, 50), random_ids(rng, 50)
    seen = []
    for source, target_in, target_out in batches(make_dataset(sources, targets, 8)):
        assert source.dtype == target_in.dtype == target_out.dtype == np.int32
        assert source.shape[0] == target_in.shape[0] <= 8
        assert target_in.shape == target_out.shape
        assert (target_in[:, 0] == 1).all()
        for row in range(len(source)):
            length = int((target_out[row] != 0).sum())
            assert target_out[row, length - 1] == 2
            assert (target_in[row, 1:length] == target_out[row, : length - 1]).all()
            assert (target_out[row, length:] == 0).all()
            source_row = source[row][source[row] != 0].tolist()
            seen.append((source_row, target_out[row, : length - 1].tolist()))
    # Every pair comes out exactly once, intact.
    expected = [(s, t) for s, t in zip(sources, targets, strict=True)]
    assert sorted(map(str, seen)) == sorted(map(str, expected))


@pytest.mark.parametrize("boundaries", [None, [5, 10, 20]])
def test_bucketing_groups_similar_source_lengths(rng, boundaries):
    sources = random_ids(rng, 300, high=40)
    dataset = make_dataset(sources, sources, 16, shuffle=True, bucket_boundaries=boundaries)
    boundaries = boundaries or length_bucket_boundaries([len(s) for s in sources])
    assert len(boundaries) >= 3
    count = num_batches = 0
    for source, _, _ in batches(dataset):
        lengths = (source != 0).sum(axis=1)
        buckets = np.searchsorted(boundaries, lengths, side="right")
        assert len(set(buckets)) == 1, (lengths, boundaries)
        assert source.shape[1] == lengths.max()  # padded to the batch, not the corpus
        count += len(source)
        num_batches += 1
    assert count == 300
    # Known, so that Keras shows progress and does not warn it "ran out of data".
    assert dataset.cardinality().numpy() == num_batches


@pytest.mark.parametrize("shuffle", [False, True])
def test_same_seed_gives_same_order(rng, shuffle):
    sources, targets = random_ids(rng, 100), random_ids(rng, 100)

    def order(seed):
        dataset = make_dataset(sources, targets, 10, shuffle=shuffle, seed=seed)
        return [source.tolist() for source, _, _ in batches(dataset)]

    assert order(1) == order(1)
    assert (order(1) != order(2)) == shuffle


def test_without_bucketing_batches_keep_the_input_order(rng):
    sources = random_ids(rng, 20)
    (first, _, _), *_ = batches(make_dataset(sources, sources, 20, bucket_boundaries=[]))
    assert first.tolist() == pad_batch(sources).tolist()


def test_dataset_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="2 sources but 1 targets"):
        make_dataset([[4], [5]], [[6]], 2)
