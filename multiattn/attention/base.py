"""The part every attention mechanism shares: mask, softmax, dropout, weighted sum."""

import keras
from keras import ops

# Scores are masked and normalised in float32 whatever the compute dtype, so this
# constant never overflows under mixed_float16 / mixed_bfloat16.
_MASKED_SCORE = -1e9
HARD_INFERENCE = ("expected", "argmax")


@keras.saving.register_keras_serializable(package="multiattn")
class BaseAttention(keras.layers.Layer):
    """Base class of the attention layers: subclasses give only the score.

    An attention layer maps a query sequence and a memory (keys and values) to one
    context vector per query: `context_i = sum_j weights_ij * value_j`, where
    `weights_i = softmax_j(score(query_i, key_j))` over the unmasked memory positions.

    Subclasses implement `score(query, keys, coverage=None)` returning raw scores of
    shape `(batch, Tq, Tv)`, and may override `prepare_memory(value, key)` to project
    keys and values once per sequence (a step-wise decoder calls it once and then
    `attend(...)` at every step, so key projections are not recomputed per step).

    Hard (stochastic) attention, Show, Attend and Tell's (Xu et al. 2015, section
    4.1): with `hard=True`, in training each query attends to one memory position
    `s ~ Multinoulli(weights)` (the weights row becomes one-hot, never on a masked
    position, and the context is that position's value), except in a random
    `expectation_rate` share of the sequences, which use the expected (soft)
    context. Sampling is by the Gumbel-max trick on uniform noise that
    `sampling_inputs` draws (a step-wise decoder draws it once for all steps and
    passes each step its slice, so one sequence is soft or sampled at every step).
    No gradient flows through the choice itself: train the score with a score
    function estimator (`multiattn.Seq2Seq` adds the REINFORCE term). Outside
    training hard attention is deterministic: the expected context
    (`hard_inference="expected"`) or the most likely position (`"argmax"`).

    Args:
        dropout: Float in [0, 1), fraction of attention weights to drop during
            training (the returned weights are the ones before dropout).
        seed: Integer seed of the dropout and of the hard attention's sampling.
        hard: Whether to attend to one sampled position in training.
        hard_inference: `"expected"` or `"argmax"`: what hard attention does outside
            training.
        expectation_rate: Float in [0, 1]: the probability that a sequence uses the
            expected context instead of a sample in training (0.5 in the paper).
        **kwargs: Standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: Query tensor `(batch, Tq, dq)`.
        value: Value tensor `(batch, Tv, dv)`.
        key: Optional key tensor `(batch, Tv, dk)`; `value` is used if not given.
        query_mask: Optional boolean mask `(batch, Tq)`; masked queries get zero
            weights and a zero context. Filled from `query`'s Keras mask.
        value_mask: Optional boolean mask `(batch, Tv)`; masked positions get a
            weight of exactly zero. Filled from `value`'s Keras mask.
        training: Whether dropout is active.
        coverage: Optional running sum of past attention weights, `(batch, Tq, Tv)`
            or `(batch, 1, Tv)`, for layers built with `use_coverage=True`.
        sampling: Optional `(use_sample, noise)` from `sampling_inputs`, for hard
            attention in training; drawn by the layer when not given.
        query_positions: Optional positions of the queries `(batch, Tq)`, for
            layers whose weights depend on them (`LocalAttention`); others ignore it.

    Returns:
        `(context, weights)`: context `(batch, Tq, dv)` (or the projected value
        size), weights `(batch, Tq, Tv)`: the weights the context was computed
        with (one-hot rows where hard attention sampled). A fully masked row gives
        zero weights and a zero context.
    """

    def __init__(
        self,
        dropout=0.0,
        seed=None,
        hard=False,
        hard_inference="expected",
        expectation_rate=0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got dropout={dropout}")
        if hard_inference not in HARD_INFERENCE:
            raise ValueError(
                f"`hard_inference` must be one of {HARD_INFERENCE}, got {hard_inference!r}"
            )
        if not 0.0 <= expectation_rate <= 1.0:
            raise ValueError(f"`expectation_rate` must be in [0, 1], got {expectation_rate}")
        self.dropout = dropout
        self.seed = seed
        self.hard = hard
        self.hard_inference = hard_inference
        self.expectation_rate = expectation_rate
        self.supports_masking = True
        self.seed_generator = keras.random.SeedGenerator(seed) if dropout > 0 or hard else None

    # -- what subclasses provide ------------------------------------------------
    @property
    def supports_coverage(self):
        return False

    def prepare_memory(self, value, key=None):
        """Returns `(keys, values)` in the form `score` and the weighted sum use."""
        return (value if key is None else key), value

    def score(self, query, keys, coverage=None):
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------
    def build(self, query_shape, value_shape, key_shape=None):
        self.built = True

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        training=None,
        coverage=None,
        sampling=None,
        query_positions=None,
    ):
        keys, values = self.prepare_memory(value, key)
        return self.attend(
            query,
            keys,
            values,
            query_mask=query_mask,
            value_mask=value_mask,
            training=training,
            coverage=coverage,
            sampling=sampling,
            query_positions=query_positions,
        )

    def attend(
        self,
        query,
        keys,
        values,
        query_mask=None,
        value_mask=None,
        training=None,
        coverage=None,
        sampling=None,
        return_probabilities=False,
        query_positions=None,
    ):
        """Attention over an already prepared memory (see `prepare_memory`).

        With `return_probabilities=True` it returns `(context, weights,
        probabilities)`: `probabilities` are the float32 softmax weights, which
        differ from `weights` where hard attention sampled or took the argmax.
        """
        if coverage is not None and not self.supports_coverage:
            raise ValueError(
                f"{self.__class__.__name__} was not built for coverage; "
                "create it with `use_coverage=True` to pass `coverage`."
            )
        scores = self.score(query, keys, coverage=coverage)  # (batch, Tq, Tv)
        probabilities = self.attention_probabilities(
            scores, query, value_mask, query_mask, query_positions
        )  # float32
        weights = probabilities
        if self.hard and training:
            if sampling is None:
                shape = ops.shape(probabilities)
                sampling = self.sampling_inputs(shape[0], shape[1], shape[2])
            weights = sample_positions(probabilities, *sampling)
        elif self.hard and self.hard_inference == "argmax":
            weights = one_hot_rows(probabilities, ops.argmax(probabilities, axis=-1))
        weights = ops.cast(weights, self.compute_dtype)
        used_weights = weights
        if training and self.dropout > 0:
            used_weights = keras.random.dropout(
                weights, rate=self.dropout, seed=self.seed_generator
            )
        context = ops.matmul(used_weights, values)  # (batch, Tq, dv)
        if return_probabilities:
            return context, weights, probabilities
        return context, weights

    def attention_probabilities(
        self, scores, query, value_mask=None, query_mask=None, query_positions=None
    ):
        """The float32 weights `(batch, Tq, Tv)` of `scores`: their masked softmax."""
        return masked_softmax(scores, value_mask, query_mask)

    def sampling_inputs(self, batch_size, num_queries, memory_length):
        """The random draws of hard attention for one batch: `(use_sample, noise)`.

        Returns:
            `use_sample`, boolean `(batch,)`: the sequences that attend to a sample
            (each with probability `1 - expectation_rate`), and `noise`, float32
            `(batch, num_queries, memory_length)` uniform in (0, 1), which
            `sample_positions` turns into the samples.
        """
        draw = keras.random.uniform((batch_size,), seed=self.seed_generator)
        use_sample = ops.greater_equal(draw, self.expectation_rate)
        noise = keras.random.uniform(
            (batch_size, num_queries, memory_length),
            minval=1e-7,
            maxval=1.0,
            seed=self.seed_generator,
        )
        return use_sample, noise

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        value_units = self._context_units(value_shape)
        context_shape = (*query_shape[:-1], value_units)
        weights_shape = (*query_shape[:-1], value_shape[1])
        return context_shape, weights_shape

    def _context_units(self, value_shape):
        return value_shape[-1]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "dropout": self.dropout,
                "seed": self.seed,
                "hard": self.hard,
                "hard_inference": self.hard_inference,
                "expectation_rate": self.expectation_rate,
            }
        )
        return config


def masked_softmax(scores, value_mask=None, query_mask=None):
    """Softmax over the last axis in float32, exactly zero where masked.

    Args:
        scores: `(batch, Tq, Tv)` raw scores.
        value_mask: Optional `(batch, Tv)` boolean mask, or `(batch, Tq, Tv)` to
            mask each query's positions apart.
        query_mask: Optional `(batch, Tq)` boolean mask.

    Returns:
        float32 weights `(batch, Tq, Tv)` that sum to one over the unmasked values,
        and are all zero in rows with no unmasked value or a masked query.
    """
    scores = ops.cast(scores, "float32")
    mask = None
    if value_mask is not None:
        mask = ops.cast(value_mask, "bool")
        if len(mask.shape) == 2:
            mask = ops.expand_dims(mask, axis=-2)  # (batch, 1, Tv)
    if query_mask is not None:
        rows = ops.expand_dims(ops.cast(query_mask, "bool"), axis=-1)  # (batch, Tq, 1)
        mask = rows if mask is None else ops.logical_and(mask, rows)
    if mask is None:
        return ops.softmax(scores, axis=-1)
    scores = ops.where(mask, scores, _MASKED_SCORE)
    weights = ops.softmax(scores, axis=-1)
    # A row with nothing to attend to is uniform after the softmax; zero it.
    return weights * ops.cast(mask, "float32")


def project(function, inputs):
    """`function(inputs)`, a projection of the last axis (`x @ W`, a `Dense` layer).

    A one-step query `(batch, 1, d)`, as a step-wise decoder attends with, is projected
    as the 2-D product it is. On TensorFlow a 3-D by 2-D product is a tensordot, whose
    gradient inside a loop keeps its permutation per step, and XLA cannot compile
    that when the batch size is unknown. Other shapes are passed on unchanged.
    """
    if len(inputs.shape) == 3 and inputs.shape[1] == 1:
        return ops.expand_dims(function(ops.squeeze(inputs, 1)), 1)
    return function(inputs)


def one_hot_rows(probabilities, positions):
    """One-hot rows at `positions` `(batch, Tq)`; zero where `probabilities` sum to zero.

    A row with nothing to attend to (every position masked) stays all zero.
    """
    length = ops.shape(probabilities)[-1]
    one_hot = ops.cast(
        ops.equal(ops.expand_dims(positions, -1), ops.arange(length, dtype=positions.dtype)),
        "float32",
    )  # (batch, Tq, Tv)
    attendable = ops.cast(ops.sum(probabilities, axis=-1, keepdims=True) > 0, "float32")
    return ops.stop_gradient(one_hot * attendable)


def sample_positions(probabilities, use_sample, noise):
    """Hard attention's weights: a one-hot sample per row where `use_sample`, else `probabilities`.

    The sample is `argmax_j(log p_j + g_j)` with Gumbel noise `g = -log(-log noise)`,
    which is distributed as `p` (the Gumbel-max trick); positions of probability
    zero (masked) are never chosen.

    Args:
        probabilities: float32 `(batch, Tq, Tv)` attention weights.
        use_sample: boolean `(batch,)`: the sequences that attend to a sample.
        noise: `(batch, Tq, Tv)` uniform in (0, 1).

    Returns:
        float32 `(batch, Tq, Tv)`.
    """
    noise = ops.cast(noise, "float32")
    gumbel = -ops.log(-ops.log(noise))
    log_probabilities = ops.log(ops.maximum(probabilities, 1e-30))
    candidates = ops.where(probabilities > 0, log_probabilities + gumbel, _MASKED_SCORE)
    samples = one_hot_rows(probabilities, ops.argmax(candidates, axis=-1))
    use_sample = ops.reshape(ops.cast(use_sample, "bool"), (-1, 1, 1))
    return ops.where(use_sample, samples, probabilities)
