import math

import keras
from keras import ops

from multiattn.attention.base import BaseAttention, project


@keras.saving.register_keras_serializable(package="multiattn")
class KeyValueAttention(BaseAttention):
    """Key-value attention with learned query, key and value projections.

    `score(q, k) = (W_q q)^T (W_k k) / sqrt(key_units)` and the context is the
    weighted sum of the projected values `W_v v`, so what a memory position is
    matched by (its key) is separate from what it contributes (its value).

    Args:
        key_units: Size of the projected queries and keys.
        value_units: Size of the projected values, and so of the context.
        use_bias: Whether the projections have biases.
        kernel_initializer: Initializer of the projection matrices.
        bias_initializer: Initializer of the biases.
        dropout: Fraction of attention weights dropped during training.
        seed: Seed of the dropout and of hard attention's sampling.
        **kwargs: `hard`, `hard_inference` and `expectation_rate` (hard,
            stochastic attention: see `BaseAttention`) and standard layer arguments.

    Call arguments and returns: see `BaseAttention`; the context has
    `value_units` features.

    Examples:
        >>> layer = KeyValueAttention(key_units=16, value_units=4)
        >>> query = keras.random.normal((2, 3, 8))
        >>> value = keras.random.normal((2, 5, 12))
        >>> context, weights = layer(query, value)
        >>> tuple(context.shape), tuple(weights.shape)
        ((2, 3, 4), (2, 3, 5))

    Reference:
        Daniluk, Rocktäschel, Welbl & Riedel, "Frustratingly Short Attention Spans
        in Neural Language Modeling", ICLR 2017 (arXiv:1702.04521); the scaled dot
        product of Vaswani et al. 2017 (arXiv:1706.03762).
    """

    def __init__(
        self,
        key_units,
        value_units,
        use_bias=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(dropout=dropout, seed=seed, **kwargs)
        self.key_units = int(key_units)
        self.value_units = int(value_units)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, query_shape, value_shape, key_shape=None):
        key_dim = (key_shape or value_shape)[-1]
        self.query_dense = self._dense("query", query_shape[-1], self.key_units)
        self.key_dense = self._dense("key", key_dim, self.key_units)
        self.value_dense = self._dense("value", value_shape[-1], self.value_units)
        self.built = True

    def _dense(self, name, input_dim, units):
        dense = keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
            name=f"{name}_projection",
        )
        dense.build((None, None, input_dim))
        return dense

    def prepare_memory(self, value, key=None):
        keys = value if key is None else key
        return self.key_dense(keys), self.value_dense(value)

    def score(self, query, keys, coverage=None):
        projected_query = project(self.query_dense, query)  # (batch, Tq, key_units)
        scores = ops.matmul(projected_query, ops.transpose(keys, (0, 2, 1)))
        return scores * (1.0 / math.sqrt(self.key_units))

    def _context_units(self, value_shape):
        return self.value_units

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "key_units": self.key_units,
                "value_units": self.value_units,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
