"""A generated English -> German corpus of number phrases that needs attention.

German says the units before the tens ("ninety seven" -> "sieben und neunzig"), so a
model has to look back at the right source word instead of copying left to right. A
sentence is one or more numbers from 0 to 999,999 joined like a list:

    twelve , ninety seven and three hundred  ->  zwölf , sieben und neunzig und drei hundert

Tokens are lowercase words separated by single spaces. English is ASCII; German uses
ü, ö and ß (zwölf, fünf, dreißig), which exercises UTF-8 end to end.

The German spelling scheme (one token per number word, as in the English side):

- 0-19 and the tens are single words: null, eins, zwei ... neunzehn, zwanzig ... neunzig.
- Tens with units put the units first, joined by "und": 97 -> "sieben und neunzig",
  21 -> "ein und zwanzig" (the unit one is "ein" before "und").
- "hundert" and "tausend" are separate tokens and always have a multiplier, like
  "one hundred": 100 -> "ein hundert", 1000 -> "ein tausend", 21000 -> "ein und zwanzig
  tausend", 101000 -> "ein hundert ein tausend".
- One is "eins" only when it ends the number: 1 -> "eins", 101 -> "ein hundert eins",
  1001 -> "ein tausend eins"; everywhere else it is "ein".

English writes compounds as separate tokens with no "and" inside a number
("three hundred twenty one"), so in the English source "and" only ever joins numbers.

Source lengths are drawn uniformly from 1 to `max_tokens` (45 by default) tokens, so
every length bucket has test sentences; German is up to about 1.5 times longer.
"""

import random

ENGLISH_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
ENGLISH_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
GERMAN_ONES = (
    "null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn vierzehn "
    "fünfzehn sechzehn siebzehn achtzehn neunzehn"
).split()
GERMAN_TENS = "_ _ zwanzig dreißig vierzig fünfzig sechzig siebzig achtzig neunzig".split()

MAX_NUMBER = 999_999
MAX_NUMBER_TOKENS = 9  # "seven hundred seventy seven thousand seven hundred seventy seven"
DEFAULT_MAX_TOKENS = 45
# Numbers 1-99 that are one English word: 1-19 and the round tens.
ONE_WORD_BELOW_HUNDRED = tuple(range(1, 20)) + tuple(range(20, 100, 10))
TWO_WORDS_BELOW_HUNDRED = tuple(n for n in range(21, 100) if n % 10)


def _check_number(number):
    if isinstance(number, bool) or not isinstance(number, int):
        raise TypeError(f"expected an int, got {number!r}")
    if not 0 <= number <= MAX_NUMBER:
        raise ValueError(f"number must be in 0..{MAX_NUMBER}, got {number}")


def _english_group(group):
    """Words of 1..999, e.g. 321 -> ["three", "hundred", "twenty", "one"]."""
    hundreds, rest = divmod(group, 100)
    words = [ENGLISH_ONES[hundreds], "hundred"] if hundreds else []
    if rest >= 20:
        words.append(ENGLISH_TENS[rest // 10])
        if rest % 10:
            words.append(ENGLISH_ONES[rest % 10])
    elif rest:
        words.append(ENGLISH_ONES[rest])
    return words


def _german_group(group, ends_number):
    """Words of 1..999; a final unit one is "eins" only if it ends the whole number."""
    hundreds, rest = divmod(group, 100)
    words = [_german_multiplier(hundreds), "hundert"] if hundreds else []
    if rest == 1:
        words.append("eins" if ends_number else "ein")
    elif rest >= 20 and rest % 10:
        words += [_german_multiplier(rest % 10), "und", GERMAN_TENS[rest // 10]]
    elif rest >= 20:
        words.append(GERMAN_TENS[rest // 10])
    elif rest:
        words.append(GERMAN_ONES[rest])
    return words


def _german_multiplier(unit):
    return "ein" if unit == 1 else GERMAN_ONES[unit]


def english_number(number):
    """English words of `number` (0..999999), space separated: 97 -> "ninety seven"."""
    _check_number(number)
    if number == 0:
        return "zero"
    thousands, rest = divmod(number, 1000)
    words = _english_group(thousands) + ["thousand"] if thousands else []
    if rest:
        words += _english_group(rest)
    return " ".join(words)


def german_number(number):
    """German words of `number` (0..999999), space separated: 97 -> "sieben und neunzig"."""
    _check_number(number)
    if number == 0:
        return "null"
    thousands, rest = divmod(number, 1000)
    words = _german_group(thousands, ends_number=False) + ["tausend"] if thousands else []
    if rest:
        words += _german_group(rest, ends_number=True)
    return " ".join(words)


def _group_with_length(rng, length):
    """A random number in 1..999 whose English words are exactly `length` (1-4) tokens."""
    if length == 1:
        return rng.choice(ONE_WORD_BELOW_HUNDRED)
    if length == 2:
        # Either "ninety seven" or "three hundred".
        if rng.random() < 0.5:
            return rng.choice(TWO_WORDS_BELOW_HUNDRED)
        return 100 * rng.randint(1, 9)
    below_hundred = ONE_WORD_BELOW_HUNDRED if length == 3 else TWO_WORDS_BELOW_HUNDRED
    return 100 * rng.randint(1, 9) + rng.choice(below_hundred)


def _number_with_length(rng, length):
    """A random number whose English words are exactly `length` (1-9) tokens."""
    if length == 1 and rng.random() < 1 / 30:
        return 0
    # (thousands group tokens, low group tokens); the thousands add a "thousand" token.
    shapes = [(0, length)] if length <= 4 else []
    shapes += [(high, length - 1 - high) for high in range(1, 5) if 0 <= length - 1 - high <= 4]
    high, low = rng.choice(shapes)
    number = 1000 * _group_with_length(rng, high) if high else 0
    return number + (_group_with_length(rng, low) if low else 0)


def _sentence_numbers(rng, length):
    """Numbers whose English sentence (with separators) is exactly `length` tokens."""
    numbers, used = [], 0
    while used < length:
        # Each number after the first costs one separator token.
        room = length - used - (1 if numbers else 0)
        # Never leave exactly one token: a separator needs a number after it.
        choices = [n for n in range(1, min(MAX_NUMBER_TOKENS, room) + 1) if room - n != 1]
        number_length = rng.choice(choices)
        numbers.append(_number_with_length(rng, number_length))
        used += number_length + (1 if len(numbers) > 1 else 0)
    return numbers


def _join(words, conjunction):
    """["a", "b", "c"] -> "a , b and c" (with the given conjunction)."""
    if len(words) == 1:
        return words[0]
    return " , ".join(words[:-1]) + f" {conjunction} " + words[-1]


def number_sentence(numbers):
    """The (English, German) pair of a list of numbers, e.g. [12, 97] ->
    ("twelve and ninety seven", "zwölf und sieben und neunzig")."""
    return (
        _join([english_number(n) for n in numbers], "and"),
        _join([german_number(n) for n in numbers], "und"),
    )


def number_phrase_corpus(
    num_train=20000, num_val=1000, num_test=1000, seed=0, max_tokens=DEFAULT_MAX_TOKENS
):
    """Generates distinct English -> German number-phrase pairs, split three ways.

    Every English sentence occurs once in the whole corpus, so no sentence is shared
    between splits. Each new sentence goes to a split drawn in proportion to the room
    left in each, so all splits have the same length distribution (roughly uniform over
    1..`max_tokens` source tokens; the few distinct one- and two-token sentences are
    shared out in proportion too).

    Args:
        num_train: Training pairs.
        num_val: Validation pairs.
        num_test: Test pairs.
        seed: Seed of the generator; the same seed gives the same corpus.
        max_tokens: Longest English sentence, in tokens.

    Returns:
        A dict with keys "train", "val" and "test", each a list of (English, German)
        string pairs.
    """
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    if min(sizes.values()) < 0:
        raise ValueError(f"split sizes must not be negative, got {sizes}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    rng = random.Random(seed)
    splits = {name: [] for name in sizes}
    seen = set()
    total = sum(sizes.values())
    attempts = 0
    while len(seen) < total:
        attempts += 1
        if attempts > 50 * total + 1000:
            raise ValueError(
                f"could not generate {total} distinct sentences of at most {max_tokens} tokens"
            )
        source, target = number_sentence(_sentence_numbers(rng, rng.randint(1, max_tokens)))
        if source in seen:
            continue
        seen.add(source)
        room = {name: sizes[name] - len(splits[name]) for name in sizes}
        name = rng.choices(list(room), weights=list(room.values()))[0]
        splits[name].append((source, target))
    return splits
