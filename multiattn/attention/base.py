"""The part every attention mechanism shares: mask, softmax, dropout, weighted sum."""

import keras
from keras import ops

# Scores are masked and normalised in float32 whatever the compute dtype, so this
# constant never overflows under mixed_float16 / mixed_bfloat16.
_MASKED_SCORE = -1e9


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

    Args:
        dropout: Float in [0, 1), fraction of attention weights to drop during
            training (the returned weights are the ones before dropout).
        seed: Integer seed of the dropout.
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

    Returns:
        `(context, weights)`: context `(batch, Tq, dv)` (or the projected value
        size), weights `(batch, Tq, Tv)`. A fully masked row gives zero weights and
        a zero context.
    """

    def __init__(self, dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got dropout={dropout}")
        self.dropout = dropout
        self.seed = seed
        self.supports_masking = True
        self.seed_generator = keras.random.SeedGenerator(seed) if dropout > 0 else None

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
    ):
        """Attention over an already prepared memory (see `prepare_memory`)."""
        if coverage is not None and not self.supports_coverage:
            raise ValueError(
                f"{self.__class__.__name__} was not built for coverage; "
                "create it with `use_coverage=True` to pass `coverage`."
            )
        scores = self.score(query, keys, coverage=coverage)  # (batch, Tq, Tv)
        weights = masked_softmax(scores, value_mask, query_mask)
        weights = ops.cast(weights, self.compute_dtype)
        used_weights = weights
        if training and self.dropout > 0:
            used_weights = keras.random.dropout(
                weights, rate=self.dropout, seed=self.seed_generator
            )
        context = ops.matmul(used_weights, values)  # (batch, Tq, dv)
        return context, weights

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        value_units = self._context_units(value_shape)
        context_shape = (*query_shape[:-1], value_units)
        weights_shape = (*query_shape[:-1], value_shape[1])
        return context_shape, weights_shape

    def _context_units(self, value_shape):
        return value_shape[-1]

    def get_config(self):
        config = super().get_config()
        config.update({"dropout": self.dropout, "seed": self.seed})
        return config


def masked_softmax(scores, value_mask=None, query_mask=None):
    """Softmax over the last axis in float32, exactly zero where masked.

    Args:
        scores: `(batch, Tq, Tv)` raw scores.
        value_mask: Optional `(batch, Tv)` boolean mask.
        query_mask: Optional `(batch, Tq)` boolean mask.

    Returns:
        float32 weights `(batch, Tq, Tv)` that sum to one over the unmasked values,
        and are all zero in rows with no unmasked value or a masked query.
    """
    scores = ops.cast(scores, "float32")
    mask = None
    if value_mask is not None:
        mask = ops.expand_dims(ops.cast(value_mask, "bool"), axis=-2)  # (batch, 1, Tv)
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
