import keras
from keras import ops

from multiattn.attention.base import BaseAttention, project


@keras.saving.register_keras_serializable(package="multiattn")
class BahdanauAttention(BaseAttention):
    """Additive attention: `score(q, k) = v^T tanh(W_q q + W_k k + b)`.

    The query and key are projected to `units`, added, squashed and reduced by a
    learned vector `v`. Keys are projected once per sequence (`prepare_memory`), so a
    step-wise decoder pays only for the query projection at each step.

    Args:
        units: Size of the hidden layer of the score.
        normalize: Whether to weight-normalise `v` (`v = g * v / ||v||`, with a
            learned scalar `g`), as in Salimans & Kingma 2016 and TensorFlow
            Addons' `BahdanauAttention(normalize=True)`.
        use_coverage: Whether the score also sees a coverage vector (the running sum
            of past attention weights), `W_c * coverage_j` inside the `tanh`
            (Tu et al. 2016). Then `coverage` may be passed when calling.
        kernel_initializer: Initializer of the projection matrices and `v`.
        bias_initializer: Initializer of `b`.
        dropout: Fraction of attention weights dropped during training.
        seed: Seed of the dropout and of hard attention's sampling.
        **kwargs: `hard`, `hard_inference` and `expectation_rate` (hard,
            stochastic attention: see `BaseAttention`) and standard layer arguments.

    Call arguments and returns: see `BaseAttention`.

    Examples:
        >>> layer = BahdanauAttention(units=16)
        >>> query = keras.random.normal((2, 3, 8))
        >>> value = keras.random.normal((2, 5, 12))
        >>> context, weights = layer(query, value)
        >>> tuple(context.shape), tuple(weights.shape)
        ((2, 3, 12), (2, 3, 5))

    Reference:
        Bahdanau, Cho & Bengio, "Neural Machine Translation by Jointly Learning to
        Align and Translate", ICLR 2015 (arXiv:1409.0473).
    """

    def __init__(
        self,
        units,
        normalize=False,
        use_coverage=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(dropout=dropout, seed=seed, **kwargs)
        self.units = int(units)
        self.normalize = normalize
        self.use_coverage = use_coverage
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    @property
    def supports_coverage(self):
        return self.use_coverage

    def build(self, query_shape, value_shape, key_shape=None):
        key_dim = (key_shape or value_shape)[-1]
        self.query_kernel = self.add_weight(
            name="query_kernel",
            shape=(query_shape[-1], self.units),
            initializer=self.kernel_initializer,
        )
        self.key_kernel = self.add_weight(
            name="key_kernel", shape=(key_dim, self.units), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.units,), initializer=self.bias_initializer
        )
        self.score_vector = self.add_weight(
            name="score_vector", shape=(self.units,), initializer=self.kernel_initializer
        )
        if self.normalize:
            self.score_scale = self.add_weight(
                name="score_scale",
                shape=(),
                initializer=keras.initializers.Constant((1.0 / self.units) ** 0.5),
            )
        if self.use_coverage:
            self.coverage_kernel = self.add_weight(
                name="coverage_kernel", shape=(self.units,), initializer=self.kernel_initializer
            )
        self.built = True

    def prepare_memory(self, value, key=None):
        keys = value if key is None else key
        return ops.matmul(keys, self.key_kernel), value  # (batch, Tv, units)

    def score(self, query, keys, coverage=None):
        # (batch, Tq, units)
        projected_query = project(lambda x: ops.matmul(x, self.query_kernel), query)
        hidden = ops.expand_dims(projected_query, 2) + ops.expand_dims(keys, 1) + self.bias
        if coverage is not None:
            coverage = ops.cast(coverage, hidden.dtype)
            hidden = hidden + ops.expand_dims(coverage, -1) * self.coverage_kernel
        # hidden: (batch, Tq, Tv, units)
        vector = self.score_vector
        if self.normalize:
            vector = self.score_scale * vector * ops.rsqrt(ops.sum(ops.square(vector)))
        return ops.sum(ops.tanh(hidden) * vector, axis=-1)  # (batch, Tq, Tv)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "normalize": self.normalize,
                "use_coverage": self.use_coverage,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
