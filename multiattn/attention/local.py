import keras
from keras import ops

from multiattn.attention.base import BaseAttention, masked_softmax, project

LOCAL_MODES = ("monotonic", "predictive")


@keras.saving.register_keras_serializable(package="multiattn")
class LocalAttention(BaseAttention):
    """Local attention of Luong et al. 2015 (section 3.2), with any of our scores.

    Each query `t` attends only to the memory positions `j` within a window around
    an aligned position `p_t`, `|j - p_t| <= window`:

    - `"monotonic"` (local-m): `p_t = t`, the query's position (the target step),
      clamped to the last unmasked memory position. The weights are the softmax of
      the scores over the window.
    - `"predictive"` (local-p): `p_t = S * sigmoid(v_p^T tanh(W_p q_t))`, where `S`
      is the number of unmasked memory positions; the softmax weights over the window
      are multiplied by a Gaussian centred on `p_t`, `exp(-(j - p_t)^2 / (2 sigma^2))`
      with `sigma = window / 2`, so, as in the paper, they sum to less than one.

    The score comes from `attention` (`BahdanauAttention`, `LuongAttention`,
    `KeyValueAttention`): its `prepare_memory`, `score` and context size are used, and
    its coverage where it has one. Dropout is this layer's; hard attention is not
    supported (the Gaussian weights are no distribution to sample from).

    Args:
        attention: The attention layer that scores (without dropout or hard mode).
        window: The half-width `D` of the window, an integer >= 1.
        local: `"predictive"` (local-p) or `"monotonic"` (local-m).
        units: Hidden size of `W_p` (local-p); the query size if `None`.
        kernel_initializer: Initializer of `W_p` and `v_p`.
        dropout: Fraction of attention weights dropped during training.
        seed: Seed of the dropout.
        **kwargs: Standard layer arguments.

    Call arguments: see `BaseAttention`, and
        query_positions: Optional `(batch, Tq)` or `(Tq,)` positions `t` of the
            queries for local-m; `0, 1, ..., Tq - 1` when not given (a whole target
            sequence). A step-wise decoder passes its step.

    Returns:
        `(context, weights)`, see `BaseAttention`; weights are zero outside the window.

    Examples:
        >>> from multiattn.attention import LuongAttention
        >>> layer = LocalAttention(LuongAttention("general"), window=2, local="monotonic")
        >>> query = keras.random.normal((2, 3, 8))
        >>> value = keras.random.normal((2, 9, 8))
        >>> context, weights = layer(query, value)
        >>> [int(n) for n in keras.ops.sum(keras.ops.cast(weights[0] > 0, "int32"), axis=-1)]
        [3, 4, 5]

    Reference:
        Luong, Pham & Manning, "Effective Approaches to Attention-based Neural
        Machine Translation", EMNLP 2015 (arXiv:1508.04025), section 3.2.
    """

    def __init__(
        self,
        attention,
        window,
        local="predictive",
        units=None,
        kernel_initializer="glorot_uniform",
        dropout=0.0,
        seed=None,
        **kwargs,
    ):
        if kwargs.get("hard"):
            raise ValueError("LocalAttention has no hard mode: its weights are no distribution")
        super().__init__(dropout=dropout, seed=seed, **kwargs)
        if isinstance(attention, dict):  # from get_config
            attention = keras.saving.deserialize_keras_object(attention)
        if not isinstance(attention, BaseAttention) or isinstance(attention, LocalAttention):
            raise ValueError(
                "`attention` must be an attention layer that scores (BahdanauAttention, "
                f"LuongAttention, KeyValueAttention), got {attention!r}"
            )
        if attention.hard or attention.dropout:
            raise ValueError(
                "the scoring `attention` of a LocalAttention must have no dropout and no "
                "hard mode; give LocalAttention the dropout"
            )
        if local not in LOCAL_MODES:
            raise ValueError(f"`local` must be one of {LOCAL_MODES}, got {local!r}")
        if int(window) != window or window < 1:
            raise ValueError(f"`window` must be an integer >= 1, got {window}")
        self.attention = attention
        self.window = int(window)
        self.local = local
        self.units = None if units is None else int(units)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @property
    def supports_coverage(self):
        return self.attention.supports_coverage

    @property
    def needs_query_positions(self):
        """Whether a step-wise caller must pass each step's `query_positions`."""
        return self.local == "monotonic"

    def build(self, query_shape, value_shape, key_shape=None):
        if not self.attention.built:
            self.attention.build(query_shape, value_shape, key_shape)
        if self.local == "predictive":
            query_dim = query_shape[-1]
            units = self.units or query_dim
            self.position_kernel = self.add_weight(
                name="position_kernel",
                shape=(query_dim, units),
                initializer=self.kernel_initializer,
            )
            self.position_vector = self.add_weight(
                name="position_vector", shape=(units,), initializer=self.kernel_initializer
            )
        self.built = True

    def prepare_memory(self, value, key=None):
        return self.attention.prepare_memory(value, key)

    def score(self, query, keys, coverage=None):
        return self.attention.score(query, keys, coverage=coverage)

    def _context_units(self, value_shape):
        return self.attention._context_units(value_shape)

    def attention_probabilities(
        self, scores, query, value_mask=None, query_mask=None, query_positions=None
    ):
        batch, num_queries, memory_length = (ops.shape(scores)[axis] for axis in range(3))
        if value_mask is None:
            lengths = ops.full((batch, 1), memory_length, "float32")
        else:
            lengths = ops.sum(ops.cast(value_mask, "float32"), axis=-1, keepdims=True)
        # lengths: (batch, 1)
        if self.local == "monotonic":
            if query_positions is None:
                query_positions = ops.arange(num_queries)
            centres = ops.cast(query_positions, "float32")
            if len(centres.shape) == 1:
                centres = ops.expand_dims(centres, 0)
            centres = ops.minimum(centres, ops.maximum(lengths - 1.0, 0.0))  # (batch, Tq)
        else:
            hidden = ops.tanh(project(lambda x: ops.matmul(x, self.position_kernel), query))
            alignment = ops.sum(hidden * self.position_vector, axis=-1)  # (batch, Tq)
            centres = lengths * ops.sigmoid(ops.cast(alignment, "float32"))
        positions = ops.cast(ops.arange(memory_length), "float32")
        distances = positions - ops.expand_dims(centres, -1)  # (batch, Tq, Tv)
        in_window = ops.less_equal(ops.abs(distances), float(self.window))
        if value_mask is not None:
            in_window = ops.logical_and(in_window, ops.expand_dims(ops.cast(value_mask, "bool"), 1))
        probabilities = masked_softmax(scores, in_window, query_mask)  # float32
        if self.local == "predictive":
            sigma = self.window / 2.0
            probabilities = probabilities * ops.exp(-ops.square(distances) / (2.0 * sigma**2))
        return probabilities

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "attention": keras.saving.serialize_keras_object(self.attention),
                "window": self.window,
                "local": self.local,
                "units": self.units,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
