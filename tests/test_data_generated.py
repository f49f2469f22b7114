"""Tests of the generated English -> German number-phrase corpus."""

import collections

import pytest

from recipes.data.generated import (
    english_number,
    german_number,
    number_phrase_corpus,
    number_sentence,
)

KNOWN_NUMBERS = [
    (0, "zero", "null"),
    (1, "one", "eins"),
    (7, "seven", "sieben"),
    (12, "twelve", "zwölf"),
    (13, "thirteen", "dreizehn"),
    (16, "sixteen", "sechzehn"),
    (20, "twenty", "zwanzig"),
    (21, "twenty one", "ein und zwanzig"),
    (30, "thirty", "dreißig"),
    (55, "fifty five", "fünf und fünfzig"),
    (97, "ninety seven", "sieben und neunzig"),
    (100, "one hundred", "ein hundert"),
    (101, "one hundred one", "ein hundert eins"),
    (121, "one hundred twenty one", "ein hundert ein und zwanzig"),
    (321, "three hundred twenty one", "drei hundert ein und zwanzig"),
    (999, "nine hundred ninety nine", "neun hundert neun und neunzig"),
    (1000, "one thousand", "ein tausend"),
    (1001, "one thousand one", "ein tausend eins"),
    (21000, "twenty one thousand", "ein und zwanzig tausend"),
    (101000, "one hundred one thousand", "ein hundert ein tausend"),
    (
        999999,
        "nine hundred ninety nine thousand nine hundred ninety nine",
        "neun hundert neun und neunzig tausend neun hundert neun und neunzig",
    ),
]


@pytest.fixture(scope="module")
def corpus():
    return number_phrase_corpus()


@pytest.mark.parametrize("number, english, german", KNOWN_NUMBERS)
def test_known_numbers(number, english, german):
    assert english_number(number) == english
    assert german_number(number) == german


@pytest.mark.parametrize("function", [english_number, german_number])
@pytest.mark.parametrize("number, error", [(-1, ValueError), (10**6, ValueError), (2.0, TypeError)])
def test_numbers_out_of_range_are_rejected(function, number, error):
    with pytest.raises(error):
        function(number)


@pytest.mark.parametrize("function", [english_number, german_number])
def test_different_numbers_read_differently(function):
    numbers = list(range(0, 2000)) + list(range(2000, 10**6, 37))
    assert len({function(n) for n in numbers}) == len(numbers)


def test_german_says_units_before_tens():
    for number in range(21, 100):
        if number % 10 == 0:
            continue
        tens, unit = english_number(number).split()
        unit_word = "ein" if number % 10 == 1 else german_number(number % 10)
        assert german_number(number).split() == [
            unit_word,
            "und",
            german_number(number - number % 10),
        ]
        assert english_number(number).split() == [english_number(number - number % 10), unit]


@pytest.mark.parametrize(
    "numbers, english, german",
    [
        ([97], "ninety seven", "sieben und neunzig"),
        ([12, 97], "twelve and ninety seven", "zwölf und sieben und neunzig"),
        (
            [12, 97, 300],
            "twelve , ninety seven and three hundred",
            "zwölf , sieben und neunzig und drei hundert",
        ),
    ],
)
def test_sentences_list_numbers(numbers, english, german):
    assert number_sentence(numbers) == (english, german)


def test_same_seed_gives_same_corpus():
    first = number_phrase_corpus(2000, 100, 100, seed=3)
    assert first == number_phrase_corpus(2000, 100, 100, seed=3)
    assert first["train"] != number_phrase_corpus(2000, 100, 100, seed=4)["train"]


def test_splits_have_their_sizes_and_share_no_sentence(corpus):
    assert {split: len(pairs) for split, pairs in corpus.items()} == {
        "train": 20000,
        "val": 1000,
        "test": 1000,
    }
    sources = [source for pairs in corpus.values() for source, _ in pairs]
    assert len(set(sources)) == len(sources)


def test_source_lengths_are_spread_over_1_to_45(corpus):
    train_lengths = collections.Counter(len(s.split()) for s, _ in corpus["train"])
    assert min(train_lengths) == 1 and max(train_lengths) == 45
    # Roughly uniform: every length from 3 on holds 1-3% of the sentences.
    for length in range(3, 46):
        assert 0.01 < train_lengths[length] / 20000 < 0.03, length
    # Every 5-token bucket of the test split has sentences to measure.
    test_lengths = [len(s.split()) for s, _ in corpus["test"]]
    for low in range(1, 46, 5):
        assert sum(low <= n < low + 5 for n in test_lengths) >= 40, low


def test_max_tokens_caps_the_source_length():
    pairs = number_phrase_corpus(500, 0, 0, max_tokens=6)["train"]
    assert max(len(s.split()) for s, _ in pairs) == 6


def test_english_is_ascii_and_german_is_the_translation(corpus):
    pairs = corpus["train"]
    assert all(source.isascii() for source, _ in pairs)
    assert any(not target.isascii() for _, target in pairs)  # ü, ö, ß
    for source, target in pairs[:2000]:
        words = source.split()
        # "and" appears in English only between the last two numbers.
        assert words.count("and") <= 1
        assert words.count(",") == target.split().count(",")
        assert len(target.split()) >= len(words)


def test_impossible_request_is_an_error():
    with pytest.raises(ValueError, match="distinct"):
        number_phrase_corpus(100, 0, 0, max_tokens=1)  # only 30 one-word numbers exist
