import keras
from keras import ops


@keras.saving.register_keras_serializable(package="multiattn")
class BiLSTMEncoder(keras.layers.Layer):
    """Embedding followed by stacked bidirectional LSTMs: the memory of an attention.

    Token ids are embedded (id 0 is padding when `mask_zero=True`) and read by
    `num_layers` bidirectional LSTMs, each with `units // 2` cells per direction, so
    every memory vector is the forward and backward states at that position
    concatenated. The padding mask reaches every LSTM, so padding changes neither
    the memory at real positions nor the final state: the forward LSTM stops at the
    last real token and the backward LSTM ends on the first one.

    Args:
        vocab_size: Number of token ids, including the padding id 0.
        embedding_dim: Size of the token embeddings.
        units: Size of the memory vectors and of the final states. Must be even: each
            direction has `units // 2` cells.
        num_layers: Number of stacked bidirectional LSTMs. Each starts from a zero
            state and reads the sequence output of the one below.
        dropout: Fraction of units dropped during training between the stacked
            layers and on the returned memory (not on the final state).
        mask_zero: Whether id 0 is padding. If False, every position is a real token
            and `memory_mask` is all True.
        seed: Seed of the dropout.
        **kwargs: Standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        token_ids: Integer tensor `(batch, source_len)`.
        training: Whether dropout is active.

    Returns:
        `(memory, memory_mask, final_state)`:
        memory `(batch, source_len, units)`, zero at padded positions;
        memory_mask boolean `(batch, source_len)`, True at real tokens;
        final_state `(h, c)`, each `(batch, units)`, the top layer's final forward
        and backward states concatenated, to initialise a decoder of `units` cells.

    Examples:
        >>> encoder = BiLSTMEncoder(vocab_size=100, embedding_dim=8, units=16)
        >>> token_ids = keras.ops.convert_to_tensor([[5, 7, 9, 0], [3, 4, 0, 0]])
        >>> memory, memory_mask, (h, c) = encoder(token_ids)
        >>> tuple(memory.shape), tuple(memory_mask.shape), tuple(h.shape), tuple(c.shape)
        ((2, 4, 16), (2, 4), (2, 16), (2, 16))

    Reference:
        Bahdanau, Cho & Bengio, "Neural Machine Translation by Jointly Learning to
        Align and Translate", ICLR 2015 (arXiv:1409.0473), section 3.2.
    """

    def __init__(
        self,
        vocab_size,
        embedding_dim,
        units,
        num_layers=1,
        dropout=0.0,
        mask_zero=True,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(units) != units or units <= 0 or units % 2:
            raise ValueError(
                "`units` must be a positive even number, since each LSTM direction "
                f"gets `units // 2` cells; got units={units}"
            )
        if int(num_layers) != num_layers or num_layers < 1:
            raise ValueError(f"`num_layers` must be a positive integer, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got dropout={dropout}")
        self.vocab_size = int(vocab_size)
        self.embedding_dim = int(embedding_dim)
        self.units = int(units)
        self.num_layers = int(num_layers)
        self.dropout = dropout
        self.mask_zero = mask_zero
        self.seed = seed

        self.embedding = keras.layers.Embedding(
            self.vocab_size,
            self.embedding_dim,
            mask_zero=self.mask_zero,
            dtype=self.dtype_policy,
            name="embedding",
        )
        # Two LSTMs per layer rather than `keras.layers.Bidirectional`: that wrapper
        # serializes and rebuilds its LSTM inside `__init__`, which during
        # `load_model` can hand back another layer whose freed address it recorded
        # (Keras 3.15: "Forward layer and backward layer should have different
        # `go_backwards` value", or two encoders sharing one LSTM).
        self.forward_layers = [
            self._direction(f"forward_lstm_{index}", go_backwards=False)
            for index in range(self.num_layers)
        ]
        self.backward_layers = [
            self._direction(f"backward_lstm_{index}", go_backwards=True)
            for index in range(self.num_layers)
        ]
        # One dropout after each recurrent layer: between layers, then on the output.
        self.dropout_layers = [
            keras.layers.Dropout(
                self.dropout,
                seed=None if seed is None else seed + index,
                dtype=self.dtype_policy,
                name=f"dropout_{index}",
            )
            for index in range(self.num_layers)
        ]

    def build(self, token_ids_shape):
        if not self.embedding.built:
            self.embedding.build(token_ids_shape)
        sequence_shape = (*token_ids_shape, self.embedding_dim)
        for forward_layer, backward_layer in zip(
            self.forward_layers, self.backward_layers, strict=True
        ):
            for layer in (forward_layer, backward_layer):
                if not layer.built:
                    layer.build(sequence_shape)
            sequence_shape = (*token_ids_shape, self.units)
        self.built = True

    def call(self, token_ids, training=None):
        if self.mask_zero:
            memory_mask = ops.not_equal(token_ids, 0)  # (batch, source_len)
        else:
            memory_mask = ops.ones_like(token_ids, dtype="bool")
        sequence = self.embedding(token_ids)  # (batch, source_len, embedding_dim)
        # The mask is passed explicitly rather than trusted to ride on the embedded
        # tensor, so masked steps surely keep the LSTM state unchanged.
        lstm_mask = memory_mask if self.mask_zero else None
        for forward_layer, backward_layer, dropout_layer in zip(
            self.forward_layers, self.backward_layers, self.dropout_layers, strict=True
        ):
            # Each (batch, source_len, units // 2); states (batch, units // 2).
            forward, forward_h, forward_c = forward_layer(
                sequence, mask=lstm_mask, training=training
            )
            backward, backward_h, backward_c = backward_layer(
                sequence, mask=lstm_mask, training=training
            )
            # `go_backwards` returns the outputs last position first.
            backward = ops.flip(backward, axis=1)
            sequence = ops.concatenate([forward, backward], axis=-1)  # (batch, source_len, units)
            sequence = dropout_layer(sequence, training=training)
        final_h = ops.concatenate([forward_h, backward_h], axis=-1)  # (batch, units)
        final_c = ops.concatenate([forward_c, backward_c], axis=-1)  # (batch, units)
        return sequence, memory_mask, (final_h, final_c)

    def _direction(self, name, go_backwards):
        return keras.layers.LSTM(
            self.units // 2,
            return_sequences=True,
            return_state=True,
            go_backwards=go_backwards,
            # Zero memory at padded positions, as documented.
            zero_output_for_mask=True,
            dtype=self.dtype_policy,
            name=name,
        )

    def compute_output_shape(self, token_ids_shape):
        batch, source_len = token_ids_shape[0], token_ids_shape[1]
        state_shape = (batch, self.units)
        return (batch, source_len, self.units), (batch, source_len), (state_shape, state_shape)

    def compute_output_spec(self, token_ids, training=None):
        # Spelled out because the mask is boolean, not the layer's compute dtype.
        memory_shape, mask_shape, (state_shape, _) = self.compute_output_shape(token_ids.shape)
        state = keras.KerasTensor(state_shape, dtype=self.compute_dtype)
        return (
            keras.KerasTensor(memory_shape, dtype=self.compute_dtype),
            keras.KerasTensor(mask_shape, dtype="bool"),
            (state, keras.KerasTensor(state_shape, dtype=self.compute_dtype)),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "embedding_dim": self.embedding_dim,
                "units": self.units,
                "num_layers": self.num_layers,
                "dropout": self.dropout,
                "mask_zero": self.mask_zero,
                "seed": self.seed,
            }
        )
        return config
