"""Greedy search, beam search and sampling over a step function.

The searches know nothing about the model. They drive a step function

    logits, new_state, attention = step_fn(token_ids, state, constants)

where

- `token_ids` is an int32 tensor `(batch,)`: the previous token of each hypothesis
  (`start_id` at the first step).
- `state` is a flat tuple of tensors, each with leading dimension `batch` (it may be
  empty). Beam search reorders it with one `ops.take` per tensor.
- `constants` is a tuple of tensors with leading dimension `batch` that never change
  (encoder memory, its mask, ...). Beam search repeats them `beam_size` times once,
  sentence-major (`ops.repeat(x, beam_size, axis=0)`: the beams of sentence 0 come
  first), and never reorders them: all beams of one sentence share them.
- `logits` is a float tensor `(batch, vocab)`, `new_state` has the structure of
  `state`, and `attention` is a float tensor `(batch, source_length)` holding the
  attention weights of the step, or `None` for a model without attention.

The batch size is read from the first tensor of `initial_state`, else of `constants`,
else from `source_mask`, so at least one of them must be given.

The search objects `GreedySearch`, `BeamSearch` and `RandomSampling` hold the settings
of these functions (and sampling's seed), as keras-hub's samplers do; `Seq2Seq.generate`
takes them, and calling one runs its function over a step function.

Every search runs as one `keras.ops.while_loop` over fixed-size buffers, so it works
eagerly and inside a `tf.function` (or a JAX `jit`). Inside a traced function
`max_length` may be a scalar int tensor (except with `no_repeat_ngram_size`, which
needs a Python int). The loop stops as soon as every
hypothesis has produced `end_id` (for beam search: as soon as no live hypothesis can beat
the finished ones), or after `max_length` tokens. Token id 0 is the
padding id of the outputs: generated tokens are written without the start token,
including the end token when one was produced, followed by 0s.

Every search returns a dict with:

- `"tokens"`: int32 `(batch, [num_return,] max_length)`.
- `"lengths"`: int32 `(batch, [num_return])`, the number of tokens up to and
  including the end token (`max_length` if no end token was produced).
- `"log_probs"`: float32 `(batch, [num_return])`, the summed log-probabilities of the
  tokens under the model.
- `"scores"`: float32 `(batch, [num_return])`, the score the result was ranked by
  (equal to `"log_probs"` except for a beam search with penalties).
- `"attention"`: float32 `(batch, [num_return,] max_length, source_length)`, the
  attention weights of each returned hypothesis at each of its steps (0 after its
  end), or `None` if the step function returns no attention or the search was called
  with `return_attention=False`.
"""

import keras
from keras import ops

from multiattn.special_tokens import PAD_ID

_NEG_INF = float("-inf")
# log(0) would make the coverage penalty -inf for any source position that no step
# attended to; flooring the coverage keeps such hypotheses comparable.
_COVERAGE_FLOOR = 1e-10


def greedy_search(
    step_fn,
    initial_state,
    constants=(),
    *,
    start_id,
    end_id,
    max_length,
    min_length=0,
    source_mask=None,
    return_attention=True,
):
    """Decodes by taking the most probable token at every step.

    Args:
        step_fn: `logits, new_state, attention = step_fn(token_ids, state, constants)`,
            see the module docstring.
        initial_state: Tuple of tensors with leading dimension `batch` (may be `()`).
        constants: Tuple of tensors with leading dimension `batch` passed unchanged
            to every step.
        start_id: Token fed at the first step; it is not part of the output.
        end_id: Token that ends a hypothesis.
        max_length: Maximum number of generated tokens (end token included).
        min_length: `end_id` is forbidden until `min_length` tokens were generated,
            so a finished hypothesis has at least `min_length + 1` tokens.
        source_mask: Accepted so that greedy and beam search take the same arguments;
            greedy search applies no coverage penalty, so it only serves to infer the
            batch size when `initial_state` and `constants` are empty.
        return_attention: Whether to keep and return the attention history.

    Returns:
        A dict with `"tokens"` int32 `(batch, max_length)` (0-padded after the end
        token), `"lengths"` int32 `(batch,)`, `"log_probs"` and `"scores"` float32
        `(batch,)` (both the summed log-probability), and `"attention"` float32
        `(batch, max_length, source_length)`, or `None` without attention or with
        `return_attention=False`.

    Examples:
        >>> tables = ops.convert_to_tensor([[
        ...     [0.1, 0.1, 0.1, 0.1, 0.6],  # after 0 (also the start token)
        ...     [1.0, 1.0, 1.0, 1.0, 1.0],  # after 1 (never fed)
        ...     [0.2, 0.2, 0.2, 0.2, 0.2],  # after 2 (end)
        ...     [0.1, 0.1, 0.7, 0.1, 0.0],  # after 3
        ...     [0.1, 0.1, 0.1, 0.7, 0.0],  # after 4
        ... ]])  # one sentence, vocabulary of 5, next-token probabilities
        >>> def step_fn(token_ids, state, constants):
        ...     (tables,) = constants  # (batch, vocab, vocab)
        ...     previous = ops.one_hot(token_ids, ops.shape(tables)[-1])  # (batch, vocab)
        ...     logits = ops.log(ops.einsum("bv,bvw->bw", previous, tables))
        ...     return logits, state, None  # no state, no attention
        >>> result = greedy_search(step_fn, (), (tables,), start_id=0, end_id=2, max_length=5)
        >>> ops.convert_to_numpy(result["tokens"]).tolist(), int(result["lengths"][0])
        ([[4, 3, 2, 0, 0]], 3)
    """

    result, _ = _decode_single_path(
        step_fn,
        initial_state,
        constants,
        source_mask,
        choose=None,
        start_id=start_id,
        end_id=end_id,
        max_length=max_length,
        min_length=min_length,
        return_attention=return_attention,
    )
    return result


def sample(
    step_fn,
    initial_state,
    constants=(),
    *,
    start_id,
    end_id,
    max_length,
    temperature=1.0,
    top_k=None,
    seed=None,
    min_length=0,
    return_attention=True,
):
    """Decodes by sampling each token from the model's (tempered, top-k) distribution.

    Args:
        step_fn: `logits, new_state, attention = step_fn(token_ids, state, constants)`,
            see the module docstring.
        initial_state: Tuple of tensors with leading dimension `batch` (may be `()`).
        constants: Tuple of tensors with leading dimension `batch` passed unchanged
            to every step.
        start_id: Token fed at the first step; it is not part of the output.
        end_id: Token that ends a hypothesis.
        max_length: Maximum number of generated tokens (end token included).
        temperature: Positive float; the log-probabilities are divided by it before
            sampling (below 1 sharpens, above 1 flattens the distribution).
        top_k: If positive, sample only among the `top_k` most probable tokens of
            each step (tokens tied with the k-th are kept too); `None` (the default,
            as for `RandomSampling`) or 0 means no cut.
        seed: An integer, `None`, or a `keras.random.SeedGenerator`. With the same
            integer, eager calls return the same samples. Inside a `tf.function`, pass
            a `SeedGenerator` created outside it (a new generator is a variable, and
            `tf.function` cannot create variables on every call). Under `jax.jit`,
            map the generator's state in a `keras.StatelessScope` and read its new
            value back, as `Seq2Seq.generate` does.
        min_length: `end_id` is forbidden until `min_length` tokens were generated.
        return_attention: Whether to keep and return the attention history.

    Returns:
        Same dict as `greedy_search`; `"log_probs"` and `"scores"` are the summed
        log-probabilities of the sampled tokens under the model itself (before the
        temperature and the top-k cut).

    Examples:
        >>> tables = ops.ones((2, 6, 6)) / 6  # two sentences, uniform next-token probabilities
        >>> def step_fn(token_ids, state, constants):
        ...     (tables,) = constants  # (batch, vocab, vocab)
        ...     previous = ops.one_hot(token_ids, ops.shape(tables)[-1])  # (batch, vocab)
        ...     logits = ops.log(ops.einsum("bv,bvw->bw", previous, tables))
        ...     return logits, state, None  # no state, no attention
        >>> result = sample(step_fn, (), (tables,), start_id=0, end_id=1, max_length=4, seed=7)
        >>> tuple(result["tokens"].shape)
        (2, 4)
    """
    if not temperature > 0:
        raise ValueError(f"`temperature` must be positive, got temperature={temperature}")
    top_k = top_k or 0
    if top_k < 0:
        raise ValueError(f"`top_k` must be None (no cut) or positive, got top_k={top_k}")
    if isinstance(seed, keras.random.SeedGenerator):
        seed_generator = seed
    else:
        seed_generator = keras.random.SeedGenerator(seed)
    # JAX traces the loop body once: a seed generator updated inside it would leak a
    # tracer and give every step the same seed. There the generator's state travels in
    # the loop's carry, advanced as `SeedGenerator.next` does, and is written back after
    # the loop (under `jax.jit`, into the enclosing `keras.StatelessScope`).
    carry_seed = keras.config.backend() == "jax"

    def choose(log_probs, seed_state):
        logits = log_probs / temperature
        if top_k > 0:
            k = min(top_k, log_probs.shape[-1] or top_k)
            kth_best = ops.top_k(logits, k)[0][:, -1:]  # (batch, 1)
            logits = ops.where(logits < kth_best, _NEG_INF, logits)
        step_seed = seed_generator
        if carry_seed:
            step_seed = seed_state
            seed_state = seed_state + ops.convert_to_tensor([0, 1], dtype=seed_state.dtype)
        tokens = keras.random.categorical(logits, 1, dtype="int32", seed=step_seed)
        return tokens[:, 0], seed_state

    result, seed_state = _decode_single_path(
        step_fn,
        initial_state,
        constants,
        None,
        choose=choose,
        start_id=start_id,
        end_id=end_id,
        max_length=max_length,
        min_length=min_length,
        return_attention=return_attention,
        seed_state=seed_generator.state.value if carry_seed else None,
    )
    if carry_seed:
        seed_generator.state.assign(seed_state)
    return result


def beam_search(
    step_fn,
    initial_state,
    constants=(),
    *,
    start_id,
    end_id,
    beam_size=4,
    max_length,
    min_length=0,
    length_penalty=0.0,
    coverage_penalty=0.0,
    num_return=1,
    no_repeat_ngram_size=0,
    source_mask=None,
    return_attention=True,
):
    """Decodes with a beam search, returning the `num_return` best hypotheses.

    The search keeps `beam_size` live hypotheses per sentence, folded into the batch
    dimension (row `sentence * beam_size + beam`) when calling `step_fn`, and a list
    of the `num_return` best finished ones, as OpenNMT-py, fairseq and Hugging Face
    do. At each step every live hypothesis is extended by every token and the
    `2 * beam_size` best candidates of each sentence by summed log-probability are
    ranked:

    - a candidate ending with `end_id` among the first `beam_size` of them finishes:
      it is scored with the penalties below at once and enters the finished list if
      it beats the list's worst;
    - the `beam_size` best of the others are the next step's live hypotheses, so the
      beam never shrinks as hypotheses finish.

    A sentence is done when its finished list is full and no live hypothesis can
    still beat the worst of it: with `length_penalty > 0` a live hypothesis' best
    reachable score is its log-probability divided by the penalty of `max_length`
    (log-probabilities only fall, and the coverage penalty is never positive). The
    search stops when every sentence is done, or after `max_length` steps; then the
    live hypotheses compete for the list as they are (without an end token).

    A hypothesis' score is the GNMT one (Wu et al. 2016): `log_prob / lp + cp` with

    - `lp = ((5 + length) / 6) ** length_penalty`, the length counting the end token;
    - `cp = coverage_penalty * sum_j log(min(sum_i attention_ij, 1))`, summed over
      the source positions `j` where `source_mask` is true (all if it is `None`),
      `i` over the hypothesis' steps; the coverage is floored at 1e-10 so an
      unattended position costs a large finite penalty rather than `-inf`.

    With `beam_size=1` and no penalties the result is exactly `greedy_search`'s (an
    ending candidate finishes only when it is the best one).

    Args:
        step_fn: `logits, new_state, attention = step_fn(token_ids, state, constants)`,
            see the module docstring.
        initial_state: Tuple of tensors with leading dimension `batch` (may be `()`).
            Repeated `beam_size` times sentence-major, then reordered with the beams.
        constants: Tuple of tensors with leading dimension `batch`, repeated
            `beam_size` times sentence-major once and never reordered.
        start_id: Token fed at the first step; it is not part of the output.
        end_id: Token that ends a hypothesis.
        beam_size: Number of live hypotheses kept per sentence.
        max_length: Maximum number of generated tokens (end token included).
        min_length: `end_id` is forbidden until `min_length` tokens were generated,
            so a finished hypothesis has at least `min_length + 1` tokens.
        length_penalty: GNMT `alpha`; positive values favour longer hypotheses.
        coverage_penalty: GNMT `beta`; positive values favour hypotheses whose
            attention covers the source. Needs a step function that returns attention.
        num_return: Number of hypotheses returned per sentence, best first
            (`1 <= num_return <= beam_size`).
        no_repeat_ngram_size: If `n > 0`, a token is forbidden when it would complete
            an n-gram that already occurs in the hypothesis' generated tokens (the start
            token is not part of them).
        source_mask: Optional boolean `(batch, source_length)`, true on real source
            positions; used by the coverage penalty only.
        return_attention: Whether to keep and return each hypothesis' attention
            history; `False` saves its memory traffic (the coverage penalty keeps a
            running sum instead).

    Returns:
        A dict with `"tokens"` int32 `(batch, num_return, max_length)` (0-padded after
        the end token), `"lengths"` int32 `(batch, num_return)`, `"scores"` float32
        `(batch, num_return)` (the final ranking score, penalties included),
        `"log_probs"` float32 `(batch, num_return)` (the raw summed log-probability)
        and `"attention"` float32 `(batch, num_return, max_length, source_length)`, or
        `None` without attention or with `return_attention=False`.

    Examples:
        >>> tables = ops.convert_to_tensor([[
        ...     [0.1, 0.1, 0.0, 0.45, 0.35],  # after 0 (also the start token)
        ...     [1.0, 1.0, 1.0, 1.0, 1.0],  # after 1 (end; never fed)
        ...     [1.0, 1.0, 1.0, 1.0, 1.0],  # after 2 (never fed)
        ...     [0.2, 0.3, 0.0, 0.25, 0.25],  # after 3: greedy's first choice, then a dead end
        ...     [0.05, 0.9, 0.0, 0.0, 0.05],  # after 4
        ... ]])  # one sentence, vocabulary of 5, next-token probabilities
        >>> def step_fn(token_ids, state, constants):
        ...     (tables,) = constants  # (batch, vocab, vocab)
        ...     previous = ops.one_hot(token_ids, ops.shape(tables)[-1])  # (batch, vocab)
        ...     logits = ops.log(ops.einsum("bv,bvw->bw", previous, tables))
        ...     return logits, state, None  # no state, no attention
        >>> result = beam_search(
        ...     step_fn, (), (tables,), start_id=0, end_id=1, beam_size=2, max_length=4
        ... )
        >>> ops.convert_to_numpy(result["tokens"]).tolist()
        [[[4, 1, 0, 0]]]

    Reference:
        Wu et al., "Google's Neural Machine Translation System: Bridging the Gap
        between Human and Machine Translation", 2016 (arXiv:1609.08144), section 7.
    """
    if beam_size < 1:
        raise ValueError(f"`beam_size` must be at least 1, got beam_size={beam_size}")
    if not 1 <= num_return <= beam_size:
        raise ValueError(
            f"`num_return` must be in [1, beam_size={beam_size}], got num_return={num_return}"
        )
    if no_repeat_ngram_size < 0:
        raise ValueError(f"`no_repeat_ngram_size` must be non-negative, got {no_repeat_ngram_size}")
    _check_lengths(max_length, min_length)
    initial_state, constants = _as_tuple(initial_state), _as_tuple(constants)
    batch_size = _batch_size(initial_state, constants, source_mask)
    rows = batch_size * beam_size
    state = tuple(ops.repeat(tensor, beam_size, axis=0) for tensor in initial_state)
    constants = tuple(ops.repeat(tensor, beam_size, axis=0) for tensor in constants)

    def penalized(log_probs, lengths, coverage):
        """Scores of `(batch, n)` hypotheses; `coverage` is `(batch, n, source)` or None."""
        scores = log_probs
        if length_penalty:
            scores = scores / _length_penalty(lengths, length_penalty)
        if coverage_penalty:
            scores = scores + _coverage_penalty(coverage, source_mask, coverage_penalty)
        return scores

    def hypotheses(carry, source_rows, step, last_tokens, log_probs, coverage):
        """The finished-list entries `(batch, n, ...)` of live rows `source_rows`
        `(batch, n)` extended by `last_tokens` (or not, for `None`)."""
        flat_rows = ops.reshape(source_rows, (-1,))
        tokens = ops.take(carry["tokens"], flat_rows, axis=0)
        lengths = ops.full(ops.shape(source_rows), step, dtype="int32")
        if last_tokens is not None:
            tokens = _write(tokens, step, ops.reshape(last_tokens, (-1,)))
            lengths = lengths + 1
        if coverage is not None:
            coverage = _unfold(ops.take(coverage, flat_rows, axis=0), source_rows)
        entry = {
            "scores": penalized(log_probs, lengths, coverage),
            "log_probs": log_probs,
            "lengths": lengths,
            "tokens": _unfold(tokens, source_rows),
        }
        if "attention" in carry:
            entry["attention"] = _unfold(
                ops.take(carry["attention"], flat_rows, axis=0), source_rows
            )
        return entry

    def advance(carry, logits, new_state, attention):
        step = carry["step"]
        log_probs = _step_log_probs(logits, step, end_id=end_id, min_length=min_length)
        vocab_size = log_probs.shape[-1] or ops.shape(log_probs)[-1]
        if no_repeat_ngram_size > 0:
            banned = _repeated_ngram_bans(carry["tokens"], step, no_repeat_ngram_size, vocab_size)
            if banned is not None:
                log_probs = ops.where(banned, _NEG_INF, log_probs)
        scores = ops.expand_dims(carry["log_probs"], -1) + log_probs  # (rows, vocab)
        count = 2 * beam_size
        if isinstance(vocab_size, int):
            count = min(count, beam_size * vocab_size)
        # (batch, count) each, best first: the score, the beam extended and the token.
        candidate_scores, beams, tokens = _best_candidates(scores, beam_size, vocab_size, count)
        sentence_rows = ops.arange(ops.shape(beams)[0], dtype="int32")[:, None] * beam_size
        source_rows = sentence_rows + beams  # (batch, count), rows in the folded batch
        ends = tokens == end_id
        new_carry = dict(carry)
        if "attention" in carry:  # the histories include this step's attention
            new_carry["attention"] = _write(
                carry["attention"], step, ops.cast(attention, "float32")
            )
        coverage = None
        if coverage_penalty:
            coverage = carry["coverage"] + ops.cast(attention, "float32")  # (rows, source)

        # Finishing: ending candidates among the `beam_size` best.
        finishing = hypotheses(
            new_carry,
            source_rows[:, :beam_size],
            step,
            tokens[:, :beam_size],
            candidate_scores[:, :beam_size],
            coverage,
        )
        finishing["scores"] = ops.where(ends[:, :beam_size], finishing["scores"], _NEG_INF)
        finished = _keep_best(_finished_list(carry), finishing, num_return)

        # The next live hypotheses: the best candidates that do not end.
        live_scores, order = _top_k(ops.where(ends, _NEG_INF, candidate_scores), beam_size)
        live_rows = ops.reshape(ops.take_along_axis(source_rows, order, axis=1), (-1,))
        live_tokens = ops.reshape(ops.take_along_axis(tokens, order, axis=1), (-1,))
        live_scores = ops.reshape(live_scores, (-1,))  # (rows,)
        new_carry.update(
            {
                "step": step + 1,
                "token_ids": live_tokens,
                "state": tuple(ops.take(tensor, live_rows, axis=0) for tensor in new_state),
                "log_probs": live_scores,
                "tokens": _write(ops.take(carry["tokens"], live_rows, axis=0), step, live_tokens),
            }
        )
        if "attention" in carry:
            new_carry["attention"] = ops.take(new_carry["attention"], live_rows, axis=0)
        if coverage_penalty:
            new_carry["coverage"] = ops.take(coverage, live_rows, axis=0)
        new_carry.update({f"finished_{key}": value for key, value in finished.items()})

        # Done: the list is full and no live hypothesis can beat its worst.
        best_live = ops.max(ops.reshape(live_scores, (-1, beam_size)), axis=1)  # (batch,)
        if length_penalty > 0:
            best_live = best_live / _length_penalty(max_length, length_penalty)
        elif length_penalty < 0:
            best_live = best_live / _length_penalty(step + 2, length_penalty)
        worst_kept = finished["scores"][:, -1]  # (batch,)
        new_carry["done"] = ops.logical_or(
            best_live == _NEG_INF,
            ops.logical_and(worst_kept > _NEG_INF, best_live <= worst_kept),
        )
        return new_carry

    def start_buffers(carry, attention):
        if attention is None:
            if coverage_penalty:
                raise ValueError(
                    "`coverage_penalty` needs a `step_fn` that returns attention weights."
                )
            return carry
        source_length = ops.shape(attention)[-1]
        if return_attention:
            carry["attention"] = ops.zeros((rows, max_length, source_length), dtype="float32")
            carry["finished_attention"] = ops.zeros(
                (batch_size, num_return, max_length, source_length), dtype="float32"
            )
        if coverage_penalty:
            carry["coverage"] = ops.zeros((rows, source_length), dtype="float32")
        return carry

    # Only beam 0 of each sentence is live at first: the beams start identical, and
    # live copies would fill the beam with duplicates.
    first_beam = ops.arange(rows, dtype="int32") % beam_size == 0
    carry = {
        "step": ops.convert_to_tensor(0, "int32"),
        "token_ids": ops.full((rows,), start_id, dtype="int32"),
        "state": state,
        "log_probs": ops.cast(ops.where(first_beam, 0.0, _NEG_INF), "float32"),
        "tokens": ops.zeros((rows, max_length), dtype="int32"),
        "done": ops.zeros((batch_size,), dtype="bool"),
        "finished_scores": ops.full((batch_size, num_return), _NEG_INF, dtype="float32"),
        "finished_log_probs": ops.full((batch_size, num_return), _NEG_INF, dtype="float32"),
        "finished_lengths": ops.zeros((batch_size, num_return), dtype="int32"),
        "finished_tokens": ops.zeros((batch_size, num_return, max_length), dtype="int32"),
    }

    def all_done(carry):
        return ops.all(carry["done"])

    carry = _run_loop(step_fn, constants, carry, advance, max_length, start_buffers, all_done)

    # Hypotheses still live after the last step compete as they are (a done
    # sentence's cannot win: its list is full of better ones).
    beam_rows = ops.reshape(ops.arange(rows, dtype="int32"), (-1, beam_size))  # (batch, beam)
    live = hypotheses(
        carry,
        beam_rows,
        carry["step"],
        None,
        ops.reshape(carry["log_probs"], (-1, beam_size)),
        carry.get("coverage"),
    )
    result = _keep_best(_finished_list(carry), live, num_return)
    result.setdefault("attention", None)
    return result


# -- search objects ---------------------------------------------------------------
class Search:
    """Base class of the search objects that `Seq2Seq.generate` takes.

    A search object holds the settings of one way of decoding (and, for sampling, its
    random seed), in the spirit of keras-hub's samplers; calling it runs the search
    function over a step function. Subclasses implement `__call__` and `get_config`,
    and list the variables they change (seed states) in `variables`, so a compiled
    generate function can pass them in and write them back.

    Args:
        min_length: `end_id` is forbidden until `min_length` tokens were generated.

    Call arguments:
        step_fn: `logits, new_state, attention = step_fn(token_ids, state, constants)`,
            see the module docstring.
        initial_state: Tuple of tensors with leading dimension `batch` (may be `()`).
        constants: Tuple of tensors with leading dimension `batch` passed unchanged
            to every step.
        start_id: Token fed at the first step; it is not part of the output.
        end_id: Token that ends a hypothesis.
        max_length: Maximum number of generated tokens (end token included); a
            Python int, or a scalar int tensor inside a traced function.
        source_mask: Optional boolean `(batch, source_length)`, true on real source
            positions.
        return_attention: Whether to keep and return the attention history (`False`
            saves its memory traffic; the result's `"attention"` is then `None`).

    Returns:
        The dict of the search function (see the module docstring).
    """

    def __init__(self, min_length=0):
        if min_length < 0:
            raise ValueError(f"`min_length` must be non-negative, got min_length={min_length}")
        self.min_length = int(min_length)

    @property
    def variables(self):
        """The variables a call changes (random seed states); empty if it changes none."""
        return []

    def __call__(
        self,
        step_fn,
        initial_state,
        constants=(),
        *,
        start_id,
        end_id,
        max_length,
        source_mask=None,
        return_attention=True,
    ):
        raise NotImplementedError

    def get_config(self):
        return {"min_length": self.min_length}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def cache_key(self):
        """A hashable key: equal for searches a compiled generate function can share.

        The settings, and for a search with variables the object itself (a compiled
        TensorFlow function holds on to the variables it read).
        """
        key = (type(self).__name__, tuple(sorted(self.get_config().items())))
        return (*key, id(self)) if self.variables else key

    def __repr__(self):
        settings = ", ".join(f"{name}={value!r}" for name, value in self.get_config().items())
        return f"{type(self).__name__}({settings})"


@keras.saving.register_keras_serializable(package="multiattn")
class GreedySearch(Search):
    """Greedy search: the most probable token at every step (`greedy_search`).

    Args:
        min_length: `end_id` is forbidden until `min_length` tokens were generated.

    Call arguments:
        As `Search`.

    Returns:
        The dict of `greedy_search`: `"tokens"` int32 `(batch, max_length)`,
        `"lengths"` int32 `(batch,)`, `"log_probs"` and `"scores"` float32 `(batch,)`,
        `"attention"` float32 `(batch, max_length, source_length)` or `None`.

    Examples:
        >>> tables = ops.convert_to_tensor([[
        ...     [0.1, 0.1, 0.1, 0.1, 0.6],  # after 0 (also the start token)
        ...     [1.0, 1.0, 1.0, 1.0, 1.0],  # after 1 (never fed)
        ...     [0.2, 0.2, 0.2, 0.2, 0.2],  # after 2 (end)
        ...     [0.1, 0.1, 0.7, 0.1, 0.0],  # after 3
        ...     [0.1, 0.1, 0.1, 0.7, 0.0],  # after 4
        ... ]])  # one sentence, vocabulary of 5, next-token probabilities
        >>> def step_fn(token_ids, state, constants):
        ...     (tables,) = constants  # (batch, vocab, vocab)
        ...     previous = ops.one_hot(token_ids, ops.shape(tables)[-1])  # (batch, vocab)
        ...     logits = ops.log(ops.einsum("bv,bvw->bw", previous, tables))
        ...     return logits, state, None  # no state, no attention
        >>> search = GreedySearch()
        >>> result = search(step_fn, (), (tables,), start_id=0, end_id=2, max_length=5)
        >>> ops.convert_to_numpy(result["tokens"]).tolist()
        [[4, 3, 2, 0, 0]]
    """

    def __call__(
        self,
        step_fn,
        initial_state,
        constants=(),
        *,
        start_id,
        end_id,
        max_length,
        source_mask=None,
        return_attention=True,
    ):
        return greedy_search(
            step_fn,
            initial_state,
            constants,
            start_id=start_id,
            end_id=end_id,
            max_length=max_length,
            min_length=self.min_length,
            source_mask=source_mask,
            return_attention=return_attention,
        )


@keras.saving.register_keras_serializable(package="multiattn")
class BeamSearch(Search):
    """Beam search with GNMT length and coverage penalties (`beam_search`).

    Args:
        beam_size: Number of hypotheses kept per sentence.
        length_penalty: GNMT `alpha`; positive values favour longer hypotheses (0, the
            default, as for `beam_search`: no penalty; GNMT used 0.6 to 1.0).
        coverage_penalty: GNMT `beta`; positive values favour hypotheses whose
            attention covers the source (needs a decoder with attention).
        num_return: Number of hypotheses returned per sentence, best first
            (`1 <= num_return <= beam_size`).
        no_repeat_ngram_size: If `n > 0`, a token is forbidden when it would repeat
            an n-gram of the hypothesis.
        min_length: `end_id` is forbidden until `min_length` tokens were generated.

    Call arguments:
        As `Search`; `source_mask` is used by the coverage penalty.

    Returns:
        The dict of `beam_search`: `"tokens"` int32 `(batch, num_return, max_length)`,
        `"lengths"` int32 `(batch, num_return)`, `"scores"` (penalties included) and
        `"log_probs"` float32 `(batch, num_return)`, `"attention"` float32
        `(batch, num_return, max_length, source_length)` or `None`.

    Examples:
        >>> tables = ops.convert_to_tensor([[
        ...     [0.1, 0.1, 0.0, 0.45, 0.35],  # after 0 (also the start token)
        ...     [1.0, 1.0, 1.0, 1.0, 1.0],  # after 1 (end; fed only to finished beams)
        ...     [1.0, 1.0, 1.0, 1.0, 1.0],  # after 2 (never fed)
        ...     [0.2, 0.3, 0.0, 0.25, 0.25],  # after 3: greedy's first choice, then a dead end
        ...     [0.05, 0.9, 0.0, 0.0, 0.05],  # after 4
        ... ]])  # one sentence, vocabulary of 5, next-token probabilities
        >>> def step_fn(token_ids, state, constants):
        ...     (tables,) = constants  # (batch, vocab, vocab)
        ...     previous = ops.one_hot(token_ids, ops.shape(tables)[-1])  # (batch, vocab)
        ...     logits = ops.log(ops.einsum("bv,bvw->bw", previous, tables))
        ...     return logits, state, None  # no state, no attention
        >>> search = BeamSearch(beam_size=2, length_penalty=0.0, num_return=2)
        >>> result = search(step_fn, (), (tables,), start_id=0, end_id=1, max_length=4)
        >>> ops.convert_to_numpy(result["tokens"]).tolist()
        [[[4, 1, 0, 0], [3, 1, 0, 0]]]
    """

    def __init__(
        self,
        beam_size=4,
        length_penalty=0.0,
        coverage_penalty=0.0,
        num_return=1,
        no_repeat_ngram_size=0,
        min_length=0,
    ):
        super().__init__(min_length=min_length)
        if beam_size < 1:
            raise ValueError(f"`beam_size` must be at least 1, got beam_size={beam_size}")
        if not 1 <= num_return <= beam_size:
            raise ValueError(
                f"`num_return` must be in [1, beam_size={beam_size}], got num_return={num_return}"
            )
        if no_repeat_ngram_size < 0:
            raise ValueError(
                f"`no_repeat_ngram_size` must be non-negative, got {no_repeat_ngram_size}"
            )
        self.beam_size = int(beam_size)
        self.length_penalty = float(length_penalty)
        self.coverage_penalty = float(coverage_penalty)
        self.num_return = int(num_return)
        self.no_repeat_ngram_size = int(no_repeat_ngram_size)

    def __call__(
        self,
        step_fn,
        initial_state,
        constants=(),
        *,
        start_id,
        end_id,
        max_length,
        source_mask=None,
        return_attention=True,
    ):
        return beam_search(
            step_fn,
            initial_state,
            constants,
            start_id=start_id,
            end_id=end_id,
            beam_size=self.beam_size,
            max_length=max_length,
            min_length=self.min_length,
            length_penalty=self.length_penalty,
            coverage_penalty=self.coverage_penalty,
            num_return=self.num_return,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            source_mask=source_mask,
            return_attention=return_attention,
        )

    def get_config(self):
        return {
            "beam_size": self.beam_size,
            "length_penalty": self.length_penalty,
            "coverage_penalty": self.coverage_penalty,
            "num_return": self.num_return,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "min_length": self.min_length,
        }


@keras.saving.register_keras_serializable(package="multiattn")
class RandomSampling(Search):
    """Sampling from the model's tempered, top-k cut distribution (`sample`).

    The object owns its seed: a `keras.random.SeedGenerator` created here, advanced
    by every call. Two calls of one object give different samples; two objects made
    with the same integer `seed` give the same samples, call for call. Under `jax.jit`
    the generator's state is an input of the compiled function and its new value is
    written back, as keras-hub does with its samplers' seeds.

    Args:
        temperature: Positive float; the log-probabilities are divided by it before
            sampling (below 1 sharpens, above 1 flattens the distribution).
        top_k: Sample only among the `top_k` most probable tokens of each step
            (tokens tied with the k-th are kept too); `None` (or 0) means no cut.
        seed: An integer for reproducible samples, or `None` for a random seed.
        min_length: `end_id` is forbidden until `min_length` tokens were generated.

    Call arguments:
        As `Search` (`source_mask` is not used).

    Returns:
        The dict of `sample`: shapes as for `GreedySearch`; `"log_probs"` and
        `"scores"` are the summed log-probabilities of the sampled tokens under the
        model itself (before the temperature and the top-k cut).

    Examples:
        >>> tables = ops.ones((2, 6, 6)) / 6  # two sentences, uniform next-token probabilities
        >>> def step_fn(token_ids, state, constants):
        ...     (tables,) = constants  # (batch, vocab, vocab)
        ...     previous = ops.one_hot(token_ids, ops.shape(tables)[-1])  # (batch, vocab)
        ...     logits = ops.log(ops.einsum("bv,bvw->bw", previous, tables))
        ...     return logits, state, None  # no state, no attention
        >>> options = {"start_id": 0, "end_id": 1, "max_length": 4}
        >>> first = RandomSampling(top_k=3, seed=7)(step_fn, (), (tables,), **options)
        >>> again = RandomSampling(top_k=3, seed=7)(step_fn, (), (tables,), **options)
        >>> bool(ops.all(first["tokens"] == again["tokens"]))
        True
    """

    def __init__(self, temperature=1.0, top_k=None, seed=None, min_length=0):
        super().__init__(min_length=min_length)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be positive, got temperature={temperature}")
        if top_k is not None and top_k < 0:
            raise ValueError(f"`top_k` must be None (no cut) or positive, got top_k={top_k}")
        self.temperature = float(temperature)
        self.top_k = None if not top_k else int(top_k)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def variables(self):
        return [self.seed_generator.state]

    def __call__(
        self,
        step_fn,
        initial_state,
        constants=(),
        *,
        start_id,
        end_id,
        max_length,
        source_mask=None,
        return_attention=True,
    ):
        return sample(
            step_fn,
            initial_state,
            constants,
            start_id=start_id,
            end_id=end_id,
            max_length=max_length,
            temperature=self.temperature,
            top_k=self.top_k,
            seed=self.seed_generator,
            min_length=self.min_length,
            return_attention=return_attention,
        )

    def get_config(self):
        return {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "seed": self.seed,
            "min_length": self.min_length,
        }


SEARCHES = {"greedy": GreedySearch, "beam": BeamSearch, "sample": RandomSampling}


def get(identifier):
    """A search object from a name (a new one with default settings) or an object.

    Args:
        identifier: `"greedy"`, `"beam"`, `"sample"`, or a `Search` object (returned
            as it is).

    Returns:
        A `Search`.

    Examples:
        >>> get("beam").beam_size, get(BeamSearch(beam_size=5)).beam_size
        (4, 5)
    """
    if isinstance(identifier, Search):
        return identifier
    if isinstance(identifier, str) and identifier in SEARCHES:
        return SEARCHES[identifier]()
    raise ValueError(
        f"`search` must be one of {tuple(SEARCHES)} or a `multiattn.search.Search` "
        f"object, got {identifier!r}"
    )


# -- shared -------------------------------------------------------------------------
def _decode_single_path(
    step_fn,
    initial_state,
    constants,
    source_mask,
    *,
    choose,
    start_id,
    end_id,
    max_length,
    min_length,
    return_attention=True,
    seed_state=None,
):
    """The loop of greedy search and sampling: one hypothesis per sentence.

    `tokens, seed_state = choose(log_probs, seed_state)` picks each step's tokens;
    `seed_state` (a tensor, or `None`) is carried through the loop; `choose=None` is
    greedy search, the argmax of the logits, which needs no full log-softmax (only the
    chosen token's log-probability). Returns the result dict and the last `seed_state`.
    """
    _check_lengths(max_length, min_length)
    initial_state, constants = _as_tuple(initial_state), _as_tuple(constants)
    batch_size = _batch_size(initial_state, constants, source_mask)

    def advance(carry, logits, new_state, attention):
        step, finished = carry["step"], carry["finished"]
        seed_state = carry.get("seed_state")
        if choose is None:
            logits = ops.cast(logits, "float32")
            allowed = _ban_early_end(logits, step, end_id, min_length)
            tokens = ops.cast(ops.argmax(allowed, axis=-1), "int32")  # (batch,)
            token_logits = ops.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0]
            # The probability under the model's whole distribution, the end token's too.
            token_log_probs = token_logits - ops.logsumexp(logits, axis=-1)
            # A finished row is fed the end token again, at no cost.
            tokens = ops.where(finished, end_id, tokens)
            token_log_probs = ops.where(finished, 0.0, token_log_probs)
        else:
            log_probs = _step_log_probs(logits, step, end_id=end_id, min_length=min_length)
            log_probs = _continue_finished(log_probs, finished, end_id)
            tokens, seed_state = choose(log_probs, seed_state)  # (batch,)
            token_log_probs = ops.take_along_axis(log_probs, tokens[:, None], axis=-1)[:, 0]
        new_carry = {
            "step": step + 1,
            "token_ids": tokens,
            "state": tuple(new_state),
            "log_probs": carry["log_probs"] + token_log_probs,
            "finished": ops.logical_or(finished, tokens == end_id),
            "lengths": carry["lengths"] + ops.cast(ops.logical_not(finished), "int32"),
            "tokens": _write(carry["tokens"], step, ops.where(finished, PAD_ID, tokens)),
        }
        if "attention" in carry:
            attention = ops.where(finished[:, None], 0.0, ops.cast(attention, "float32"))
            new_carry["attention"] = _write(carry["attention"], step, attention)
        if seed_state is not None:
            new_carry["seed_state"] = seed_state
        return new_carry

    carry = {
        "step": ops.convert_to_tensor(0, "int32"),
        "token_ids": ops.full((batch_size,), start_id, dtype="int32"),
        "state": initial_state,
        "log_probs": ops.zeros((batch_size,), dtype="float32"),
        "finished": ops.zeros((batch_size,), dtype="bool"),
        "lengths": ops.zeros((batch_size,), dtype="int32"),
        "tokens": ops.zeros((batch_size, max_length), dtype="int32"),
    }
    if seed_state is not None:
        carry["seed_state"] = seed_state

    def start_buffers(carry, attention):
        if attention is not None and return_attention:
            shape = (batch_size, max_length, ops.shape(attention)[-1])
            carry["attention"] = ops.zeros(shape, dtype="float32")
        return carry

    def all_done(carry):
        return ops.all(carry["finished"])

    carry = _run_loop(step_fn, constants, carry, advance, max_length, start_buffers, all_done)
    result = {
        "tokens": carry["tokens"],
        "lengths": carry["lengths"],
        "scores": carry["log_probs"],
        "log_probs": carry["log_probs"],
        "attention": carry.get("attention"),
    }
    return result, carry.get("seed_state")


def _run_loop(step_fn, constants, carry, advance, max_length, start_buffers, all_done):
    """Runs the first step, then the `while_loop` of the others; returns the carry.

    The first step runs outside the loop to learn whether the model returns attention
    and its source length: `start_buffers(carry, attention)` adds the buffers they
    size. The loop runs while `all_done(carry)` is false, at most `max_length` steps.
    """

    def call(carry):
        logits, new_state, attention = step_fn(carry["token_ids"], carry["state"], constants)
        new_state = _as_tuple(new_state)
        if len(new_state) != len(carry["state"]):
            raise ValueError(
                f"`step_fn` returned a state of {len(new_state)} tensors for a state of "
                f"{len(carry['state'])}; the state must keep its structure."
            )
        return logits, new_state, attention

    logits, new_state, attention = call(carry)
    carry = advance(start_buffers(carry, attention), logits, new_state, attention)

    def condition(carry):
        return ops.logical_and(carry["step"] < max_length, ops.logical_not(all_done(carry)))

    def body(carry):
        return (advance(carry, *call(carry)),)

    (carry,) = ops.while_loop(condition, body, (carry,), maximum_iterations=max_length)
    return carry


def _top_k(values, k):
    """`ops.top_k` with ties in index order on every backend (`torch.topk` has no order)."""
    if keras.config.backend() != "torch":
        return ops.top_k(values, k)  # TensorFlow's and JAX's keep the lower index first
    order = ops.argsort(-values, axis=-1)[..., :k]  # a stable sort on PyTorch
    return ops.take_along_axis(values, order, axis=-1), order


def _best_candidates(scores, beam_size, vocab_size, count=None):
    """The `count` (default `beam_size`) best extensions of each sentence's hypotheses.

    Args:
        scores: `(batch * beam_size, vocab)`, each hypothesis' score extended by
            every token.

    Returns:
        `(scores, hypotheses, tokens)`, each `(batch, count)`, best first: the score
        of each kept candidate, the beam it extends, and its token. Ties keep the
        order of the flat index `hypothesis * vocab + token`.
    """
    count = count or beam_size
    if not isinstance(vocab_size, int) or vocab_size < count:
        flat = ops.reshape(scores, (-1, beam_size * vocab_size))  # (batch, beam * vocab)
        best_scores, best = _top_k(flat, count)
        best = ops.cast(best, "int32")
        return best_scores, best // vocab_size, best % vocab_size
    # A sentence's best candidates are among the best `count` of their own hypothesis,
    # so a top-k per row first leaves beam * count candidates for the second instead
    # of beam * vocab: far less work for the same result.
    row_scores, row_tokens = _top_k(scores, count)  # (rows, count)
    row_scores = ops.reshape(row_scores, (-1, beam_size * count))  # (batch, beam * count)
    row_tokens = ops.reshape(ops.cast(row_tokens, "int32"), (-1, beam_size * count))
    best_scores, best = _top_k(row_scores, count)  # (batch, count)
    best = ops.cast(best, "int32")
    return best_scores, best // count, ops.take_along_axis(row_tokens, best, axis=1)


def _unfold(tensor, index):
    """`(batch * n, ...)` rows gathered by an `(batch, n)` index, as `(batch, n, ...)`."""
    return ops.reshape(tensor, (-1, ops.shape(index)[1], *ops.shape(tensor)[1:]))


def _finished_list(carry):
    """The beam search's finished list in `carry`: its `finished_*` entries, unprefixed."""
    prefix = "finished_"
    return {key[len(prefix) :]: value for key, value in carry.items() if key.startswith(prefix)}


def _keep_best(kept, new, count):
    """The `count` best by `"scores"` of two lists of hypotheses `(batch, n, ...)`.

    Ties keep `kept`'s entries first (a hypothesis already kept is not displaced by an
    equal newcomer), then the order within each list.
    """
    merged = {key: ops.concatenate([kept[key], new[key]], axis=1) for key in kept}
    scores, order = _top_k(merged["scores"], count)  # (batch, count)
    size = ops.shape(merged["scores"])[1]
    rows = ops.reshape(
        ops.arange(ops.shape(order)[0], dtype="int32")[:, None] * size + ops.cast(order, "int32"),
        (-1,),
    )
    best = {}
    for key, value in merged.items():
        flat = ops.reshape(value, (-1, *ops.shape(value)[2:]))
        best[key] = _unfold(ops.take(flat, rows, axis=0), order)
    best["scores"] = scores
    return best


def _step_log_probs(logits, step, *, end_id, min_length):
    """float32 log-probabilities `(rows, vocab)`, with `end_id` banned before `min_length`."""
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    return _ban_early_end(log_probs, step, end_id, min_length)


def _ban_early_end(values, step, end_id, min_length):
    """`values` `(rows, vocab)` with `end_id`'s set to -inf while `step < min_length`."""
    if min_length > 0:
        vocab_ids = ops.arange(ops.shape(values)[-1], dtype="int32")
        banned = ops.logical_and(vocab_ids == end_id, step < min_length)  # (vocab,)
        values = ops.where(banned, _NEG_INF, values)
    return values


def _continue_finished(log_probs, finished, end_id):
    """Gives finished rows one continuation, `end_id` with log-probability 0."""
    vocab_ids = ops.arange(ops.shape(log_probs)[-1], dtype="int32")
    only_end = ops.cast(ops.where(vocab_ids == end_id, 0.0, _NEG_INF), "float32")  # (vocab,)
    return ops.where(finished[:, None], only_end, log_probs)


def _repeated_ngram_bans(tokens, step, ngram_size, vocab_size):
    """Which next tokens would repeat an n-gram of each hypothesis.

    Args:
        tokens: int32 `(rows, max_length)` buffer; positions `< step` are generated.
        step: Scalar int, the position of the token about to be generated.
        ngram_size: `n`.
        vocab_size: Size of the vocabulary.

    Returns:
        Boolean `(rows, vocab_size)`, or `None` if the buffer is too short to hold a
        repeated n-gram.
    """
    max_length = tokens.shape[1]
    starts = max_length - ngram_size + 1  # n-gram start positions in the buffer
    if starts <= 0:
        return None
    rows = ops.shape(tokens)[0]
    # The n-gram starting at i is repeated by the next token when its first n - 1
    # tokens equal the last n - 1 generated ones; only n-grams already complete count.
    matches = ops.arange(starts, dtype="int32") <= step - ngram_size  # (starts,)
    matches = ops.broadcast_to(matches[None, :], (rows, starts))
    for offset in range(ngram_size - 1):
        earlier = tokens[:, offset : offset + starts]  # (rows, starts)
        latest_position = ops.maximum(step - ngram_size + 1 + offset, 0)
        latest = ops.take(tokens, latest_position, axis=1)  # (rows,)
        matches = ops.logical_and(matches, earlier == latest[:, None])
    followers = tokens[:, ngram_size - 1 :]  # (rows, starts), the n-grams' last tokens
    row_ids = ops.broadcast_to(ops.arange(rows, dtype="int32")[:, None], (rows, starts))
    indices = ops.reshape(ops.stack([row_ids, followers], axis=-1), (-1, 2))
    # A scatter-add keeps the memory at (rows, vocab), not (rows, max_length, vocab).
    counts = ops.scatter(
        indices, ops.reshape(ops.cast(matches, "float32"), (-1,)), (rows, vocab_size)
    )
    return counts > 0


def _length_penalty(lengths, alpha):
    """GNMT length penalty `((5 + length) / 6) ** alpha`."""
    return ops.power((5.0 + ops.cast(lengths, "float32")) / 6.0, alpha)


def _coverage_penalty(coverage, source_mask, beta):
    """GNMT coverage penalty `(batch, n)` of `(batch, n, source)` summed attention."""
    coverage = ops.maximum(ops.minimum(coverage, 1.0), _COVERAGE_FLOOR)
    log_coverage = ops.log(coverage)
    if source_mask is not None:
        mask = ops.expand_dims(ops.cast(source_mask, "bool"), 1)  # (batch, 1, source)
        log_coverage = ops.where(mask, log_coverage, 0.0)
    return beta * ops.sum(log_coverage, axis=-1)


def _write(buffer, step, values):
    """Writes `values` `(rows, ...)` at time `step` of `buffer` `(rows, time, ...)`."""
    start = (0, step) + (0,) * (len(buffer.shape) - 2)
    return ops.slice_update(buffer, start, ops.expand_dims(values, 1))


def _as_tuple(tensors):
    if tensors is None:
        return ()
    if isinstance(tensors, (tuple, list)):
        return tuple(ops.convert_to_tensor(tensor) for tensor in tensors)
    return (ops.convert_to_tensor(tensors),)


def _batch_size(state, constants, source_mask):
    for tensor in (*state, *constants, source_mask):
        if tensor is not None:
            return ops.shape(tensor)[0]
    raise ValueError(
        "Cannot infer the batch size: give at least one tensor in `initial_state` or "
        "`constants` (or a `source_mask`)."
    )


def _check_lengths(max_length, min_length):
    # A tensor `max_length` (in a traced function, e.g. an exported model whose limit
    # depends on its input) sizes the buffers and bounds the loop all the same.
    if isinstance(max_length, int) and max_length < 1:
        raise ValueError(f"`max_length` must be at least 1, got max_length={max_length}")
    if min_length < 0:
        raise ValueError(f"`min_length` must be non-negative, got min_length={min_length}")
