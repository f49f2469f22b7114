"""Tests of greedy search, beam search and sampling with fake step functions.

The fake models are tables of next-token logits indexed by the previous token (a
bigram model with an empty state), optionally also by the running sum of the fed
tokens modulo 3 carried in the state (so a beam search that reorders the state wrongly
gets wrong probabilities). Their attention is a fixed function of the fed token. Each
result is compared with a numpy reference: step-by-step argmax for greedy search, and
the exhaustive enumeration of all sequences for beam search.
"""

import keras
import numpy as np
import pytest
from keras import ops

from multiattn import search as search_module
from multiattn.search import (
    BeamSearch,
    GreedySearch,
    RandomSampling,
    beam_search,
    greedy_search,
    sample,
)

START, END = 0, 1
SUMS = 3  # the stateful model indexes its table by the token sum modulo SUMS


class TableModel:
    """A fake model: per-sentence next-token logits looked up in a numpy table.

    Args:
        logits: `(batch, vocab, vocab)` logits indexed by the previous token, or
            `(batch, vocab, SUMS, vocab)` for a stateful model, also indexed by the sum
            of the tokens fed so far (start token included) modulo `SUMS`.
        attention: Optional `(vocab, source)` attention weights of a step, looked up
            by the fed token; `None` gives a model without attention.
        logits_dtype: Dtype of the returned logits.
    """

    def __init__(self, logits, attention=None, logits_dtype="float32"):
        self.logits = np.asarray(logits, dtype="float32")
        self.stateful = self.logits.ndim == 4
        self.vocab_size = self.logits.shape[-1]
        self.attention = attention
        self.logits_dtype = logits_dtype
        self._calls = 0

    @property
    def calls(self):
        """How many steps ran (each step of a loop, not each trace of its body)."""
        if keras.config.backend() == "jax":
            import jax

            jax.effects_barrier()  # every callback of the search has run
        return self._calls

    def _count_call(self):
        self._calls += 1

    def count_call(self):
        if keras.config.backend() == "jax":
            import jax

            # JAX traces a `while_loop` body once: count the runs, not the traces.
            jax.debug.callback(self._count_call)
        else:
            self._count_call()

    def inputs(self):
        """`(initial_state, constants)` of the model."""
        batch = self.logits.shape[0]
        state = (np.zeros((batch, 1), "int32"),) if self.stateful else ()
        return state, (self.logits,)

    def step(self, token_ids, state, constants):
        self.count_call()
        (table,) = constants
        rows = ops.arange(ops.shape(token_ids)[0], dtype="int32") * self.vocab_size + token_ids
        if self.stateful:
            (total,) = state
            total = (total + token_ids[:, None]) % SUMS  # (batch, 1)
            rows = rows * SUMS + total[:, 0]
            state = (total,)
        logits = ops.take(ops.reshape(table, (-1, self.vocab_size)), rows, axis=0)
        attention = None
        if self.attention is not None:
            attention = ops.take(ops.convert_to_tensor(self.attention), token_ids, axis=0)
        return ops.cast(logits, self.logits_dtype), state, attention

    # -- numpy reference ---------------------------------------------------------------
    def log_probs(self, sentence, generated, min_length=0):
        """float32 next-token log-probabilities after the `generated` tokens."""
        fed = [START, *generated]
        logits = self.logits[sentence, fed[-1]]
        if self.stateful:
            logits = logits[sum(fed) % SUMS]
        log_probs = logits - logits.max()
        log_probs = log_probs - np.log(np.sum(np.exp(log_probs)))
        if len(generated) < min_length:
            log_probs[END] = -np.inf
        return log_probs.astype("float32")

    def attention_path(self, generated, max_length):
        """`(max_length, source)` attention of the steps that generated `generated`."""
        path = np.zeros((max_length, self.attention.shape[1]), "float32")
        fed = [START, *generated[:-1]]
        path[: len(fed)] = self.attention[fed]
        return path


def random_model(seed, batch=3, vocab_size=5, stateful=False, end_bias=0.0, source=3):
    rng = np.random.default_rng(seed)
    shape = (batch, vocab_size, SUMS, vocab_size) if stateful else (batch, vocab_size, vocab_size)
    logits = 1.5 * rng.normal(size=shape)
    logits[..., END] += end_bias
    attention = rng.dirichlet(np.ones(source), size=vocab_size).astype("float32")
    return TableModel(logits, attention)


def probability_model(rows, attention=None):
    """A bigram model from `{previous token: {next token: probability}}` per sentence.

    Unlisted next tokens get probability 0 (logit -inf); unlisted previous tokens give
    the end token probability 1.
    """
    vocab_size = 1 + max(
        max(previous, *following) for sentence in rows for previous, following in sentence.items()
    )
    logits = np.full((len(rows), vocab_size, vocab_size), -np.inf, "float32")
    logits[:, :, END] = 0.0
    for sentence, table in enumerate(rows):
        for previous, following in table.items():
            logits[sentence, previous] = -np.inf
            for token, probability in following.items():
                logits[sentence, previous, token] = np.log(probability)
    return TableModel(logits, attention)


def run(search, model, **kwargs):
    """Runs `search` on `model` and returns the result as numpy arrays."""
    state, constants = model.inputs()
    result = search(model.step, state, constants, start_id=START, end_id=END, **kwargs)
    return {
        key: None if value is None else ops.convert_to_numpy(value) for key, value in result.items()
    }


def greedy_reference(model, max_length, min_length=0):
    """Step-by-step numpy greedy search: `(tokens, lengths, log_probs)`."""
    batch = model.logits.shape[0]
    tokens = np.zeros((batch, max_length), "int32")
    lengths = np.zeros(batch, "int32")
    totals = np.zeros(batch, "float32")
    for sentence in range(batch):
        generated = []
        while len(generated) < max_length and END not in generated:
            log_probs = model.log_probs(sentence, generated, min_length)
            token = int(np.argmax(log_probs))
            totals[sentence] += log_probs[token]
            generated.append(token)
        tokens[sentence, : len(generated)] = generated
        lengths[sentence] = len(generated)
    return tokens, lengths, totals


def path_log_prob(model, sentence, tokens):
    """float32 summed log-probability of the generated `tokens` of `sentence`."""
    total = np.float32(0.0)
    for step, token in enumerate(tokens):
        total = np.float32(total + model.log_probs(sentence, tokens[:step])[token])
    return total


def has_repeated_ngram(tokens, size):
    ngrams = [tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)]
    return len(set(ngrams)) < len(ngrams)


def exhaustive_search(
    model,
    sentence,
    max_length,
    min_length=0,
    length_penalty=0.0,
    coverage_penalty=0.0,
    no_repeat_ngram_size=0,
    source_mask=None,
):
    """Every possible output of `sentence`, best first: `[(tokens, score, log_prob)]`."""
    finals = []

    def extend(generated, total):
        log_probs = model.log_probs(sentence, generated, min_length)
        for token in range(model.vocab_size):
            if log_probs[token] == -np.inf:
                continue
            sequence = [*generated, token]
            if no_repeat_ngram_size and has_repeated_ngram(sequence, no_repeat_ngram_size):
                continue
            sequence_total = np.float32(total + log_probs[token])
            if token == END or len(sequence) == max_length:
                finals.append((sequence, sequence_total))
            else:
                extend(sequence, sequence_total)

    extend([], np.float32(0.0))
    hypotheses = []
    for sequence, total in finals:
        score = total / ((5.0 + len(sequence)) / 6.0) ** length_penalty
        if coverage_penalty:
            coverage = model.attention_path(sequence, max_length).sum(axis=0)
            log_coverage = np.log(np.clip(coverage, 1e-10, 1.0))
            if source_mask is not None:
                log_coverage = log_coverage[source_mask[sentence]]
            score += coverage_penalty * log_coverage.sum()
        hypotheses.append((sequence, score, total))
    return sorted(hypotheses, key=lambda hypothesis: -hypothesis[1])


# -- beam search against known answers ---------------------------------------------------
def test_beam_search_finds_the_sequence_greedy_search_misses():
    a, b, c = 2, 3, 4
    # Sentence 0: greedy takes `a` (0.5), whose best continuation is the end (0.3):
    # 0.5 * 0.3 = 0.15 < 0.4 * 0.9 = 0.36 for `b` then the end. Sentence 1 swaps a and b.
    model = probability_model(
        [
            {
                START: {a: 0.5, b: 0.4, c: 0.1},
                a: {END: 0.3, a: 0.2, b: 0.25, c: 0.25},
                b: {END: 0.9, c: 0.1},
            },
            {
                START: {b: 0.5, a: 0.4, c: 0.1},
                b: {END: 0.3, b: 0.2, a: 0.25, c: 0.25},
                a: {END: 0.9, c: 0.1},
            },
        ]
    )

    greedy = run(greedy_search, model, max_length=3)
    beam = run(beam_search, model, beam_size=2, max_length=3)

    np.testing.assert_array_equal(greedy["tokens"], [[a, END, 0], [b, END, 0]])
    np.testing.assert_array_equal(beam["tokens"][:, 0], [[b, END, 0], [a, END, 0]])
    np.testing.assert_allclose(greedy["scores"], np.log([0.5 * 0.3] * 2), rtol=1e-5)
    np.testing.assert_allclose(beam["scores"][:, 0], np.log([0.4 * 0.9] * 2), rtol=1e-5)


EXHAUSTIVE_CASES = {
    "plain": {},
    "min_length": {"min_length": 2},
    "length_penalty": {"length_penalty": 1.0},
    "coverage_penalty": {"coverage_penalty": 0.4},
    "no_repeat_unigram": {"no_repeat_ngram_size": 1},
    "no_repeat_bigram": {"no_repeat_ngram_size": 2},
    "all": {
        "min_length": 1,
        "length_penalty": 0.6,
        "coverage_penalty": 0.2,
        "no_repeat_ngram_size": 2,
    },
}


@pytest.mark.parametrize("stateful", [False, True], ids=["bigram", "stateful"])
@pytest.mark.parametrize("case", list(EXHAUSTIVE_CASES))
def test_beam_search_with_a_full_beam_equals_exhaustive_search(case, stateful):
    options = EXHAUSTIVE_CASES[case]
    max_length, num_return = 4, 5
    model = random_model(seed=len(case) + 10 * stateful, vocab_size=4, stateful=stateful)
    # The last source position of sentence 1 is padding: the coverage penalty skips it.
    source_mask = np.array([[True] * 3, [True, True, False], [True] * 3])

    # A beam as large as the number of sequences keeps every hypothesis: exact search.
    result = run(
        beam_search,
        model,
        beam_size=model.vocab_size**max_length,
        max_length=max_length,
        num_return=num_return,
        source_mask=source_mask,
        **options,
    )

    for sentence in range(3):
        hypotheses = exhaustive_search(
            model, sentence, max_length, source_mask=source_mask, **options
        )
        # The scores of the n best are the exhaustive ones. Tokens are checked per
        # hypothesis: a bigram model gives exact ties (`a b a a` and `a a b a`).
        best_scores = [score for _, score, _ in hypotheses[:num_return]]
        np.testing.assert_allclose(result["scores"][sentence], best_scores, rtol=1e-5)
        by_tokens = {}
        for sequence, score, log_prob in hypotheses:
            padded = tuple(sequence) + (0,) * (max_length - len(sequence))
            by_tokens[padded] = (sequence, score, log_prob)
        returned = [tuple(tokens) for tokens in result["tokens"][sentence].tolist()]
        assert len(set(returned)) == num_return
        for rank, tokens in enumerate(returned):
            sequence, score, log_prob = by_tokens[tokens]
            assert result["lengths"][sentence, rank] == len(sequence)
            np.testing.assert_allclose(result["scores"][sentence, rank], score, rtol=1e-5)
            np.testing.assert_allclose(result["log_probs"][sentence, rank], log_prob, rtol=1e-5)
            np.testing.assert_allclose(
                result["attention"][sentence, rank],
                model.attention_path(sequence, max_length),
                atol=1e-6,
            )


def finished_list_beam_reference(
    model, sentence, beam_size, max_length, num_return=1, min_length=0, length_penalty=0.0
):
    """A plain NumPy beam search with a finished list: `[(score, log_prob, tokens)]`.

    Each step ranks the `2 * beam_size` best extensions of the live hypotheses; an
    ending one among the first `beam_size` is finished and scored, the `beam_size`
    best others live on. It stops when the list holds `num_return` hypotheses and no
    live one can beat the worst, or after `max_length` steps (the live ones then
    compete as they are).
    """

    def score(total, length):
        return np.float32(total / np.float32(((5.0 + length) / 6.0) ** length_penalty))

    live, finished = [((), np.float32(0.0))], []
    for _ in range(max_length):
        candidates = []  # in the order of the flat index beam * vocab + token
        for tokens, total in live:
            log_probs = model.log_probs(sentence, list(tokens), min_length)
            for token in np.flatnonzero(log_probs > -np.inf):
                candidates.append((tokens + (int(token),), np.float32(total + log_probs[token])))
        ranked = sorted(candidates, key=lambda candidate: -candidate[1])[: 2 * beam_size]
        for rank, (tokens, total) in enumerate(ranked):
            if tokens[-1] == END and rank < beam_size:
                finished.append((score(total, len(tokens)), total, tokens))
        finished = sorted(finished, key=lambda entry: -entry[0])[:num_return]
        live = [(tokens, total) for tokens, total in ranked if tokens[-1] != END][:beam_size]
        if not live:
            break
        best_live = max(total for _, total in live)
        reachable = best_live / (((5.0 + max_length) / 6.0) ** max(length_penalty, 0.0))
        if len(finished) == num_return and reachable <= finished[-1][0]:
            break
    finished += [(score(total, len(tokens)), total, tokens) for tokens, total in live]
    return sorted(finished, key=lambda entry: -entry[0])[:num_return]


@pytest.mark.parametrize(
    "beam_size, num_return, length_penalty, min_length",
    [
        (1, 1, 0.6, 0),
        (2, 2, 0.0, 0),
        (2, 1, 1.5, 2),
        (3, 1, 0.6, 0),
        (3, 3, 1.5, 0),
        (4, 3, 0.0, 2),
        (4, 2, 0.6, 2),
    ],
)
def test_beam_search_equals_a_numpy_finished_list_beam_search(
    beam_size, num_return, length_penalty, min_length
):
    model = random_model(
        seed=beam_size + 7 * num_return, batch=4, vocab_size=6, stateful=True, end_bias=0.3
    )
    options = {"beam_size": beam_size, "num_return": num_return, "max_length": 6}
    result = run(
        beam_search, model, length_penalty=length_penalty, min_length=min_length, **options
    )

    for sentence in range(4):
        expected = finished_list_beam_reference(
            model, sentence, length_penalty=length_penalty, min_length=min_length, **options
        )
        for rank, (score, log_prob, tokens) in enumerate(expected):
            length = len(tokens)
            np.testing.assert_array_equal(
                result["tokens"][sentence, rank], [*tokens, *[0] * (6 - length)]
            )
            assert result["lengths"][sentence, rank] == length
            np.testing.assert_allclose(result["scores"][sentence, rank], score, rtol=1e-5)
            np.testing.assert_allclose(result["log_probs"][sentence, rank], log_prob, rtol=1e-5)
            np.testing.assert_allclose(
                result["attention"][sentence, rank],
                model.attention_path(list(tokens), 6),
                atol=1e-6,
            )


def test_a_hypothesis_that_ends_early_does_not_take_a_live_place():
    a, b, c, d, e = 2, 3, 4, 5, 6
    # `end` alone (0.4) beats `b c d e end` (0.25) by probability, but not with a
    # length penalty of 1: log(0.4) / 1 = -0.92 < log(0.25) / (10 / 6) = -0.83. A beam
    # of 2 whose finished `end` kept one of its places held only `a` after the first
    # step and lost `b`; with a finished list both `a` and `b` live on.
    model = probability_model(
        [
            {
                START: {END: 0.4, a: 0.35, b: 0.25},
                a: {END: 0.2, a: 0.8},
                b: {c: 1.0},
                c: {d: 1.0},
                d: {e: 1.0},
            }
        ]
    )
    result = run(beam_search, model, beam_size=2, max_length=6, length_penalty=1.0)

    np.testing.assert_array_equal(result["tokens"][0, 0], [b, c, d, e, END, 0])
    best_score = exhaustive_search(model, 0, 6, length_penalty=1.0)[0][1]
    np.testing.assert_allclose(result["scores"][0, 0], best_score, rtol=1e-6)
    np.testing.assert_allclose(result["scores"][0, 0], np.log(0.25) / (10 / 6), rtol=1e-6)


@pytest.mark.parametrize("search", ["greedy", "beam", "sample"])
def test_return_attention_false_keeps_the_result_without_attention(search):
    model = random_model(seed=4, batch=3, vocab_size=6, stateful=True, end_bias=0.5)
    make = {
        "greedy": lambda: GreedySearch(),
        "beam": lambda: BeamSearch(beam_size=3, num_return=2, coverage_penalty=0.3),
        "sample": lambda: RandomSampling(seed=3),
    }[search]
    with_attention = run(make(), model, max_length=6)
    without = run(make(), model, max_length=6, return_attention=False)

    assert with_attention["attention"] is not None and without["attention"] is None
    for key in ("tokens", "lengths", "scores", "log_probs"):
        np.testing.assert_array_equal(without[key], with_attention[key], err_msg=key)


@pytest.mark.parametrize("min_length", [0, 3])
@pytest.mark.parametrize("stateful", [False, True], ids=["bigram", "stateful"])
def test_greedy_search_equals_step_by_step_argmax(stateful, min_length):
    model = random_model(seed=3, batch=4, vocab_size=6, stateful=stateful, end_bias=1.0)
    result = run(greedy_search, model, max_length=7, min_length=min_length)

    tokens, lengths, log_probs = greedy_reference(model, 7, min_length)
    np.testing.assert_array_equal(result["tokens"], tokens)
    np.testing.assert_array_equal(result["lengths"], lengths)
    np.testing.assert_allclose(result["log_probs"], log_probs, rtol=1e-5)
    np.testing.assert_array_equal(result["scores"], result["log_probs"])
    assert len(set(lengths.tolist())) > 1  # the table makes sentences end at different steps


@pytest.mark.parametrize("min_length", [0, 3])
@pytest.mark.parametrize("stateful", [False, True], ids=["bigram", "stateful"])
def test_beam_size_one_equals_greedy_search(stateful, min_length):
    model = random_model(seed=5, batch=5, vocab_size=7, stateful=stateful, end_bias=0.5)
    greedy = run(greedy_search, model, max_length=8, min_length=min_length)
    beam = run(beam_search, model, beam_size=1, max_length=8, min_length=min_length)

    for key in ("tokens", "lengths", "attention"):
        np.testing.assert_array_equal(beam[key][:, 0], greedy[key], err_msg=key)
    # Greedy search normalises only the chosen token's logit: equal up to rounding.
    for key in ("scores", "log_probs"):
        np.testing.assert_allclose(beam[key][:, 0], greedy[key], rtol=1e-6, err_msg=key)
    assert len(set(greedy["lengths"].tolist())) > 1


# -- lengths and stopping ----------------------------------------------------------------
SEARCHES = {
    "greedy": greedy_search,
    "beam": lambda *args, **kwargs: beam_search(*args, beam_size=3, num_return=2, **kwargs),
    "sample": lambda *args, **kwargs: sample(*args, seed=1, **kwargs),
}


def best(result, key, search):
    """`result[key]` of the best hypothesis (beam search returns several)."""
    return result[key][:, 0] if search == "beam" else result[key]


@pytest.mark.parametrize("min_length", [0, 2, 5])
@pytest.mark.parametrize("search", list(SEARCHES))
def test_min_length_forbids_the_end_token_before_it(search, min_length):
    # The end token is by far the most likely everywhere.
    model = random_model(seed=7, batch=4, vocab_size=6, end_bias=6.0)
    result = run(SEARCHES[search], model, max_length=8, min_length=min_length)

    lengths = result["lengths"].reshape(-1)
    tokens = result["tokens"].reshape(len(lengths), -1)
    assert np.all(tokens[:, :min_length] != END)
    np.testing.assert_array_equal(tokens[np.arange(len(lengths)), lengths - 1], END)
    if search != "sample":
        np.testing.assert_array_equal(best(result, "lengths", search), min_length + 1)


@pytest.mark.parametrize("max_length", [1, 5])
@pytest.mark.parametrize("search", list(SEARCHES))
def test_max_length_bounds_hypotheses_that_never_end(search, max_length):
    model = random_model(seed=8, batch=2, vocab_size=6)
    model.logits[..., END] = -np.inf  # never ends
    result = run(SEARCHES[search], model, max_length=max_length)

    assert result["tokens"].shape[-1] == max_length
    np.testing.assert_array_equal(result["lengths"], max_length)
    assert np.all(result["tokens"] != END)
    assert model.calls == max_length


@pytest.mark.parametrize("search", list(SEARCHES))
def test_search_stops_when_every_hypothesis_has_ended(search):
    # Deterministic chains: sentence 0 ends after 2 tokens, sentence 1 after 4.
    model = probability_model(
        [
            {START: {2: 1.0}, 2: {END: 1.0}},
            {START: {2: 1.0}, 2: {3: 1.0}, 3: {4: 1.0}, 4: {END: 1.0}},
        ]
    )
    result = run(SEARCHES[search], model, max_length=20)

    np.testing.assert_array_equal(best(result, "lengths", search), [2, 4])
    np.testing.assert_array_equal(
        best(result, "tokens", search)[:, :5], [[2, END, 0, 0, 0], [2, 3, 4, END, 0]]
    )
    assert model.calls == 4  # one call per step of the longest sentence, not 20


# -- penalties and bans ------------------------------------------------------------------
@pytest.mark.parametrize("length_penalty, expected", [(0.0, [END, 0, 0]), (1.0, [2, 3, END])])
def test_length_penalty_favours_longer_hypotheses(length_penalty, expected):
    # `end` alone (0.4) is more probable than `2 3 end` (0.35 * 0.95 * 0.95 = 0.316),
    # but with alpha = 1: log(0.4) / 1 = -0.92 < log(0.316) / (8 / 6) = -0.86.
    model = probability_model(
        [{START: {END: 0.4, 2: 0.35, 3: 0.25}, 2: {3: 0.95, END: 0.05}, 3: {END: 0.95, 2: 0.05}}]
    )
    result = run(beam_search, model, beam_size=3, max_length=3, length_penalty=length_penalty)

    np.testing.assert_array_equal(result["tokens"][0, 0], expected)
    length = result["lengths"][0, 0]
    assert length == np.count_nonzero(expected)
    np.testing.assert_allclose(
        result["scores"][0, 0],
        result["log_probs"][0, 0] / ((5 + length) / 6) ** length_penalty,
        rtol=1e-6,
    )


ATTENTION_BY_TOKEN = np.array(
    [
        [1.0, 0.0, 0.0],  # fed the start token
        [1 / 3, 1 / 3, 1 / 3],  # fed the end token (finished hypotheses only)
        [1.0, 0.0, 0.0],  # fed 2: the first source position again
        [0.0, 0.5, 0.5],  # fed 3: the rest of the source
        [1 / 3, 1 / 3, 1 / 3],  # fed 4
    ],
    "float32",
)


@pytest.mark.parametrize(
    "coverage_penalty, source_mask, expected",
    [
        (0.0, None, 2),  # the most probable: 0.5 against 0.45
        (0.1, None, 3),  # `3 end` attends to every source position, `2 end` to one
        (0.1, [[True, False, False]], 2),  # masked positions do not count
    ],
)
def test_coverage_penalty_prefers_hypotheses_covering_the_source(
    coverage_penalty, source_mask, expected
):
    model = probability_model([{START: {2: 0.5, 3: 0.45, 4: 0.05}}], ATTENTION_BY_TOKEN)
    mask = None if source_mask is None else np.array(source_mask)
    result = run(
        beam_search,
        model,
        beam_size=3,
        max_length=3,
        coverage_penalty=coverage_penalty,
        source_mask=mask,
    )

    np.testing.assert_array_equal(result["tokens"][0, 0], [expected, END, 0])
    coverage = np.minimum(ATTENTION_BY_TOKEN[[START, expected]].sum(axis=0), 1.0)
    log_coverage = np.log(np.maximum(coverage, 1e-10))
    if mask is not None:
        log_coverage = log_coverage[mask[0]]
    np.testing.assert_allclose(
        result["scores"][0, 0],
        result["log_probs"][0, 0] + coverage_penalty * log_coverage.sum(),
        rtol=1e-5,
    )


@pytest.mark.parametrize("ngram_size", [1, 2, 3])
def test_no_repeat_ngram_size_blocks_repeated_ngrams(ngram_size):
    # The model loves the cycle 2 -> 3 -> 4 -> 2 and rarely ends.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 8, 8)).astype("float32")
    logits[:, [START, 2, 3, 4], [2, 3, 4, 2]] += 5.0
    logits[..., END] -= 3.0
    model = TableModel(logits)
    options = {"beam_size": 4, "num_return": 3, "max_length": 7}

    free = run(beam_search, model, **options)
    blocked = run(beam_search, model, no_repeat_ngram_size=ngram_size, **options)

    for sentence in range(2):
        assert has_repeated_ngram(free["tokens"][sentence, 0].tolist(), ngram_size)
        for tokens, length in zip(
            blocked["tokens"][sentence], blocked["lengths"][sentence], strict=True
        ):
            assert not has_repeated_ngram(tokens[:length].tolist(), ngram_size)
    assert np.all(blocked["scores"] > -np.inf)


# -- outputs -----------------------------------------------------------------------------
@pytest.mark.parametrize("search", list(SEARCHES))
def test_attention_history_belongs_to_the_returned_hypothesis(search):
    model = random_model(seed=11, batch=3, vocab_size=6, stateful=True, end_bias=0.5)
    result = run(SEARCHES[search], model, max_length=6)

    lengths = result["lengths"].reshape(-1)
    tokens = result["tokens"].reshape(len(lengths), -1)
    attention = result["attention"].reshape(len(lengths), 6, -1)
    for row, length in enumerate(lengths):
        np.testing.assert_allclose(
            attention[row], model.attention_path(tokens[row, :length].tolist(), 6), atol=1e-6
        )
        np.testing.assert_array_equal(tokens[row, length:], 0)
    assert len(set(lengths.tolist())) > 1


@pytest.mark.parametrize("search", list(SEARCHES))
def test_bfloat16_logits_give_float32_scores(search):
    model = random_model(seed=12, batch=2, vocab_size=6, end_bias=1.0)
    # Logits representable in bfloat16, so the float32 reference sees the same values.
    model.logits = ops.convert_to_numpy(ops.cast(ops.cast(model.logits, "bfloat16"), "float32"))
    model.logits_dtype = "bfloat16"
    state, constants = model.inputs()
    result = SEARCHES[search](
        model.step, state, constants, start_id=START, end_id=END, max_length=5
    )

    expected = {
        "tokens": "int32",
        "lengths": "int32",
        "scores": "float32",
        "log_probs": "float32",
        "attention": "float32",
    }
    for key, dtype in expected.items():
        assert keras.backend.standardize_dtype(result[key].dtype) == dtype, key
    # The log-softmax is computed in float32: bfloat16 would be off by about 1e-2.
    lengths = ops.convert_to_numpy(result["lengths"])
    tokens = ops.convert_to_numpy(result["tokens"]).reshape(lengths.size, -1)
    log_probs = ops.convert_to_numpy(result["log_probs"]).reshape(-1)
    sentences = np.repeat(np.arange(2), lengths.size // 2)
    for row, length in enumerate(lengths.reshape(-1)):
        expected_log_prob = path_log_prob(model, sentences[row], tokens[row, :length].tolist())
        np.testing.assert_allclose(log_probs[row], expected_log_prob, rtol=1e-5)


@pytest.mark.parametrize("search", list(SEARCHES))
def test_a_model_without_attention_returns_none(search):
    model = random_model(seed=13, batch=2, vocab_size=5, end_bias=1.0)
    model.attention = None
    result = run(SEARCHES[search], model, max_length=4)
    assert result["attention"] is None
    assert result["tokens"].shape[-1] == 4


def test_coverage_penalty_without_attention_is_an_error():
    model = random_model(seed=13, batch=2, vocab_size=5)
    model.attention = None
    with pytest.raises(ValueError, match="coverage_penalty"):
        run(beam_search, model, max_length=4, coverage_penalty=0.2)


@pytest.mark.parametrize(
    "search, options",
    [
        (beam_search, {"beam_size": 4, "num_return": 5}),
        (beam_search, {"num_return": 0}),
        (beam_search, {"beam_size": 0, "num_return": 0}),
        (beam_search, {"no_repeat_ngram_size": -1}),
        (greedy_search, {"max_length": 0}),
        (greedy_search, {"min_length": -1}),
        (sample, {"temperature": 0.0}),
        (sample, {"top_k": -1}),
    ],
)
def test_invalid_arguments_are_errors(search, options):
    model = random_model(seed=14, batch=1, vocab_size=5)
    with pytest.raises(ValueError):
        run(search, model, **{"max_length": 4, **options})


def test_batch_size_must_be_inferable():
    with pytest.raises(ValueError, match="batch size"):
        greedy_search(lambda *args: None, (), (), start_id=START, end_id=END, max_length=3)


# -- sampling ----------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sampling_with_top_k_one_equals_greedy_search(temperature):
    model = random_model(seed=15, batch=4, vocab_size=6, stateful=True, end_bias=0.5)
    greedy = run(greedy_search, model, max_length=7)
    sampled = run(sample, model, max_length=7, top_k=1, temperature=temperature, seed=3)

    for key in ("tokens", "lengths", "attention"):
        np.testing.assert_array_equal(sampled[key], greedy[key], err_msg=key)
    for key in ("scores", "log_probs"):  # normalised in two ways: equal up to rounding
        np.testing.assert_allclose(sampled[key], greedy[key], rtol=1e-6, err_msg=key)


def top_k_violations(model, result, top_k):
    """Number of sampled tokens outside the `top_k` most probable of their step."""
    violations = 0
    for sentence, (tokens, length) in enumerate(
        zip(result["tokens"], result["lengths"], strict=True)
    ):
        for step in range(length):
            log_probs = model.log_probs(sentence, tokens[:step].tolist())
            rank = np.sum(log_probs > log_probs[tokens[step]])
            violations += rank >= top_k
    return violations


def test_sampling_is_reproducible_with_a_seed_and_respects_top_k():
    model = random_model(seed=16, batch=6, vocab_size=10, end_bias=-1.0)
    options = {"max_length": 8, "temperature": 1.5}
    first = run(sample, model, seed=3, top_k=3, **options)
    again = run(sample, model, seed=3, top_k=3, **options)
    other = run(sample, model, seed=4, top_k=3, **options)
    uncut = run(sample, model, seed=3, **options)

    np.testing.assert_array_equal(first["tokens"], again["tokens"])
    assert not np.array_equal(first["tokens"], other["tokens"])
    assert top_k_violations(model, first, 3) == 0
    assert top_k_violations(model, other, 3) == 0
    assert top_k_violations(model, uncut, 3) > 0  # the check can fail
    for sentence in range(6):
        generated = first["tokens"][sentence, : first["lengths"][sentence]].tolist()
        expected = path_log_prob(model, sentence, generated)
        np.testing.assert_allclose(first["log_probs"][sentence], expected, rtol=1e-5)


@pytest.mark.parametrize("temperature, top_k", [(0.5, 0), (2.0, 0), (2.0, 2)])
def test_sampling_follows_the_tempered_top_k_distribution(temperature, top_k):
    # 4000 copies of one sentence sample their first token.
    logits = np.log(np.array([0.05, 0.1, 0.25, 0.6], "float32"))
    model = TableModel(np.tile(logits, (4000, 4, 1)))
    result = run(sample, model, max_length=1, temperature=temperature, top_k=top_k, seed=0)

    expected = np.exp(logits / temperature)
    if top_k:
        expected[np.argsort(logits)[:-top_k]] = 0.0
    expected /= expected.sum()
    frequencies = np.bincount(result["tokens"][:, 0], minlength=4) / 4000
    # The standard deviation of a frequency is at most sqrt(0.25 / 4000) = 0.008.
    np.testing.assert_allclose(frequencies, expected, atol=0.03)


# -- search objects ----------------------------------------------------------------------
def run_object(search, model, **kwargs):
    """Runs the search object `search` on `model`; numpy results as `run`'s."""
    return run(lambda *args, **options: search(*args, **options), model, **kwargs)


SEARCH_OBJECTS = {
    "greedy": (GreedySearch(min_length=2), greedy_search, {"min_length": 2}),
    "beam": (
        BeamSearch(
            beam_size=3,
            length_penalty=0.6,
            coverage_penalty=0.2,
            num_return=2,
            no_repeat_ngram_size=2,
            min_length=1,
        ),
        beam_search,
        {
            "beam_size": 3,
            "length_penalty": 0.6,
            "coverage_penalty": 0.2,
            "num_return": 2,
            "no_repeat_ngram_size": 2,
            "min_length": 1,
        },
    ),
    "sample": (
        RandomSampling(temperature=1.5, top_k=3, seed=3, min_length=1),
        sample,
        {"temperature": 1.5, "top_k": 3, "seed": 3, "min_length": 1},
    ),
}


@pytest.mark.parametrize("name", list(SEARCH_OBJECTS))
def test_search_objects_run_their_function(name):
    search, function, options = SEARCH_OBJECTS[name]
    model = random_model(seed=18, batch=3, vocab_size=6, stateful=True, end_bias=0.5)
    source_mask = np.array([[True] * 3, [True, True, False], [True] * 3])
    # A fresh object: the shared one's seed moves on with every call.
    search = type(search).from_config(search.get_config())
    got = run_object(search, model, max_length=6, source_mask=source_mask)
    if function is sample:  # takes no source mask
        want = run(function, model, max_length=6, **options)
    else:
        want = run(function, model, max_length=6, source_mask=source_mask, **options)
    assert got.keys() == want.keys()
    for key in got:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_search_object_defaults_and_config():
    assert BeamSearch().get_config() == {
        "beam_size": 4,
        "length_penalty": 0.0,
        "coverage_penalty": 0.0,
        "num_return": 1,
        "no_repeat_ngram_size": 0,
        "min_length": 0,
    }
    assert RandomSampling().get_config() == {
        "temperature": 1.0,
        "top_k": None,
        "seed": None,
        "min_length": 0,
    }
    assert GreedySearch().get_config() == {"min_length": 0}
    for search, _, _ in SEARCH_OBJECTS.values():
        config = search.get_config()
        assert type(search).from_config(config).get_config() == config
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(search)
        )
        assert type(restored) is type(search) and restored.get_config() == config
    assert repr(BeamSearch(beam_size=5)).startswith("BeamSearch(beam_size=5, length_penalty=0.0")


def test_search_names():
    assert isinstance(search_module.get("greedy"), GreedySearch)
    assert search_module.get("beam").get_config() == BeamSearch().get_config()
    assert isinstance(search_module.get("sample"), RandomSampling)
    beam = BeamSearch(beam_size=2)
    assert search_module.get(beam) is beam
    for wrong in ("telepathy", None, 3):
        with pytest.raises(ValueError, match="search"):
            search_module.get(wrong)


def test_cache_keys_follow_the_settings():
    assert BeamSearch(beam_size=3).cache_key() == BeamSearch(beam_size=3).cache_key()
    assert BeamSearch(beam_size=3).cache_key() != BeamSearch(beam_size=2).cache_key()
    assert GreedySearch().cache_key() != GreedySearch(min_length=1).cache_key()
    # A sampler's seed is a variable of its own: equal settings do not share a key.
    sampling = RandomSampling(seed=1)
    assert sampling.cache_key() == sampling.cache_key()
    assert sampling.cache_key() != RandomSampling(seed=1).cache_key()
    assert GreedySearch().variables == [] and len(sampling.variables) == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: BeamSearch(beam_size=0),
        lambda: BeamSearch(beam_size=2, num_return=3),
        lambda: BeamSearch(num_return=0),
        lambda: BeamSearch(no_repeat_ngram_size=-1),
        lambda: GreedySearch(min_length=-1),
        lambda: RandomSampling(temperature=0.0),
        lambda: RandomSampling(top_k=-1),
    ],
)
def test_invalid_search_objects_are_errors(make):
    with pytest.raises(ValueError):
        make()


def test_random_sampling_owns_its_seed():
    """The same seed gives the same samples; another seed, or the next call, others."""
    model = random_model(seed=16, batch=6, vocab_size=10, end_bias=-1.0)
    options = {"max_length": 8}
    first = run_object(RandomSampling(temperature=1.5, seed=3), model, **options)
    again = run_object(RandomSampling(temperature=1.5, seed=3), model, **options)
    other = run_object(RandomSampling(temperature=1.5, seed=4), model, **options)
    for key in ("tokens", "lengths", "log_probs"):
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    assert not np.array_equal(first["tokens"], other["tokens"])

    sampling = RandomSampling(temperature=1.5, seed=3)
    state = ops.convert_to_numpy(sampling.seed_generator.state)
    calls = [run_object(sampling, model, **options)["tokens"] for _ in range(2)]
    np.testing.assert_array_equal(calls[0], first["tokens"])
    assert not np.array_equal(calls[0], calls[1])
    # Every step drew a seed: the state moved on by the number of steps run.
    moved = ops.convert_to_numpy(sampling.seed_generator.state) - state
    assert moved[0] == 0 and moved[1] >= 2


# -- graph mode --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(
    keras.config.backend() != "tensorflow", reason="tf.function traces TensorFlow tensors only"
)
def test_searches_run_inside_tf_function():
    import tensorflow as tf

    model = random_model(seed=17, batch=3, vocab_size=6, stateful=True, end_bias=0.3)
    (total,), (table,) = model.inputs()
    options = {"start_id": START, "end_id": END, "max_length": 6}
    beam_options = {
        "beam_size": 3,
        "num_return": 2,
        "length_penalty": 0.6,
        "coverage_penalty": 0.2,
        "no_repeat_ngram_size": 2,
    }

    def searches(table, total, seed_generator):
        state, constants = (total,), (table,)
        return {
            "greedy": greedy_search(model.step, state, constants, **options),
            "beam": beam_search(model.step, state, constants, **options, **beam_options),
            "sample": sample(model.step, state, constants, **options, seed=seed_generator),
        }

    # An unknown batch size checks that the loop does not rely on static shapes.
    signature = [
        tf.TensorSpec((None, *table.shape[1:]), tf.float32),
        tf.TensorSpec((None, 1), tf.int32),
    ]
    graph_generator = keras.random.SeedGenerator(5)
    compiled = tf.function(
        lambda table, total: searches(table, total, graph_generator),
        input_signature=signature,
        jit_compile=False,
    )
    graph = compiled(table, total)
    eager = searches(table, total, keras.random.SeedGenerator(5))

    assert model.calls > 0
    for search in ("greedy", "beam", "sample"):
        for key in ("tokens", "lengths", "scores", "attention"):
            np.testing.assert_allclose(
                ops.convert_to_numpy(graph[search][key]),
                ops.convert_to_numpy(eager[search][key]),
                rtol=1e-6,
                err_msg=f"{search} {key}",
            )


@pytest.mark.parametrize("beam_size, vocab_size", [(3, 7), (4, 2), (1, 5)])
def test_best_candidates_match_flat_numpy_ranking_with_ties(beam_size, vocab_size, rng):
    from multiattn.search import _best_candidates

    batch = 5
    # Few distinct values: many ties; -inf as for finished hypotheses.
    scores = rng.integers(-3, 1, (batch * beam_size, vocab_size)).astype("float32")
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    got_scores, got_hypotheses, got_tokens = (
        ops.convert_to_numpy(x) for x in _best_candidates(scores, beam_size, vocab_size)
    )
    flat = scores.reshape(batch, beam_size * vocab_size)
    for sentence in range(batch):
        # Best first; among equal scores the lower flat index first (top_k's order).
        order = sorted(range(flat.shape[1]), key=lambda i: (-flat[sentence, i], i))[:beam_size]
        np.testing.assert_array_equal(got_scores[sentence], flat[sentence, order])
        np.testing.assert_array_equal(got_hypotheses[sentence], np.array(order) // vocab_size)
        np.testing.assert_array_equal(got_tokens[sentence], np.array(order) % vocab_size)
