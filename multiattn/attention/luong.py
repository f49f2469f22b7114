import keras
from keras import ops

from multiattn.attention.base import BaseAttention, project

SCORE_MODES = ("dot", "general", "concat")


@keras.saving.register_keras_serializable(package="multiattn")
class LuongAttention(BaseAttention):
    """Multiplicative (and concat) attention of Luong et al. 2015.

    The three scores of the paper:

    - `"dot"`: `score(q, k) = q^T k` (query and key must have the same size);
    - `"general"`: `score(q, k) = q^T W k`;
    - `"concat"`: `score(q, k) = v^T tanh(W [q; k])`, computed as
      `v^T tanh(W_q q + W_k k)`.

    Args:
        score_mode: One of `"dot"`, `"general"`, `"concat"`.
        units: Hidden size of the `"concat"` score; the query size if `None`.
            Ignored by the other modes.
        use_scale: Whether to multiply the scores by a learned scalar (initialised
            to 1), like the `scale` option of TensorFlow Addons' `LuongAttention`.
        kernel_initializer: Initializer of `W` (and `v`).
        dropout: Fraction of attention weights dropped during training.
        seed: Seed of the dropout and of hard attention's sampling.
        **kwargs: `hard`, `hard_inference` and `expectation_rate` (hard,
            stochastic attention: see `BaseAttention`) and standard layer arguments.

    Call arguments and returns: see `BaseAttention`.

    Examples:
        >>> layer = LuongAttention(score_mode="general")
        >>> query = keras.random.normal((2, 3, 8))
        >>> value = keras.random.normal((2, 5, 12))
        >>> context, weights = layer(query, value)
        >>> tuple(context.shape), tuple(weights.shape)
        ((2, 3, 12), (2, 3, 5))

    Reference:
        Luong, Pham & Manning, "Effective Approaches to Attention-based Neural
        Machine Translation", EMNLP 2015 (arXiv:1508.04025).
    """

    def __init__(
        self,
        score_mode="general",
        units=None,
        use_scale=False,
        kernel_initializer="glorot_uniform",
        dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(dropout=dropout, seed=seed, **kwargs)
        if score_mode not in SCORE_MODES:
            raise ValueError(f"`score_mode` must be one of {SCORE_MODES}, got {score_mode!r}")
        self.score_mode = score_mode
        self.units = None if units is None else int(units)
        self.use_scale = use_scale
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, query_shape, value_shape, key_shape=None):
        query_dim = query_shape[-1]
        key_dim = (key_shape or value_shape)[-1]
        if self.score_mode == "dot" and query_dim != key_dim:
            raise ValueError(
                f"LuongAttention(score_mode='dot') needs queries and keys of the same "
                f"size, got query size {query_dim} and key size {key_dim}; use "
                "score_mode='general' to learn a projection between them."
            )
        if self.score_mode == "general":
            # Stored as (key_dim, query_dim) so keys are projected once per sequence.
            self.kernel = self.add_weight(
                name="kernel", shape=(key_dim, query_dim), initializer=self.kernel_initializer
            )
        elif self.score_mode == "concat":
            units = self.units or query_dim
            self.query_kernel = self.add_weight(
                name="query_kernel", shape=(query_dim, units), initializer=self.kernel_initializer
            )
            self.key_kernel = self.add_weight(
                name="key_kernel", shape=(key_dim, units), initializer=self.kernel_initializer
            )
            self.score_vector = self.add_weight(
                name="score_vector", shape=(units,), initializer=self.kernel_initializer
            )
        if self.use_scale:
            self.scale = self.add_weight(name="scale", shape=(), initializer="ones")
        self.built = True

    def prepare_memory(self, value, key=None):
        keys = value if key is None else key
        if self.score_mode == "general":
            keys = ops.matmul(keys, self.kernel)  # (batch, Tv, dq)
        elif self.score_mode == "concat":
            keys = ops.matmul(keys, self.key_kernel)  # (batch, Tv, units)
        return keys, value

    def score(self, query, keys, coverage=None):
        if self.score_mode == "concat":
            # (batch, Tq, units)
            projected_query = project(lambda x: ops.matmul(x, self.query_kernel), query)
            hidden = ops.tanh(ops.expand_dims(projected_query, 2) + ops.expand_dims(keys, 1))
            scores = ops.sum(hidden * self.score_vector, axis=-1)
        else:
            scores = ops.matmul(query, ops.transpose(keys, (0, 2, 1)))
        if self.use_scale:
            scores = scores * self.scale
        return scores  # (batch, Tq, Tv)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "score_mode": self.score_mode,
                "units": self.units,
                "use_scale": self.use_scale,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
