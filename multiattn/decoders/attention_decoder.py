import keras
from keras import ops

from multiattn import attention as attention_module
from multiattn import loops

ATTENTION_ORDERS = ("bahdanau", "luong")
BRIDGES = ("zero", "learned")


@keras.saving.register_keras_serializable(package="multiattn")
class AttentionDecoder(keras.layers.Layer):
    """A step-wise attentional LSTM decoder.

    `step(...)` advances every sequence of a batch by one token and is the single
    source of truth: `call` (training, teacher forcing) scans the same recurrence
    over the whole target, and search calls `step` token by token.

    Two orders of attention and recurrence:

    - `"bahdanau"` (Bahdanau et al. 2014; Show, Attend and Tell): attend with the
      previous top state `s_{i-1}`, feed `[y_{i-1}; c_i]` to the LSTM, and output
      `tanh(W_o [s_i; c_i; y_{i-1}])` (a deep output layer).
    - `"luong"` (Luong et al. 2015): run the LSTM on `[y_{i-1}; h~_{i-1}]` (input
      feeding) or on `y_{i-1}` alone, attend with `s_i`, and output the attentional
      state `h~_i = tanh(W_c [c_i; s_i])`.

    Logits are `W_s h~_i + b`, or with `tie_embeddings` `E P h~_i + b`, where `E` is
    the target embedding matrix (Press & Wolf 2017; Inan et al. 2017) and `P` a
    projection to `embedding_dim` (absent when `units == embedding_dim`).

    Luong order without input feeding and without coverage has no step-to-step
    dependence outside the LSTM, so `call` runs the whole target through
    `keras.layers.LSTM` at once and attends in one batched call (the fast path, where
    fused LSTM kernels apply); everything else scans `step`'s recurrence.

    With `attention=None` the decoder has no attention: the source reaches it only
    through the initial state (the fixed-vector bottleneck of Sutskever et al. 2014),
    see `PlainDecoder`.

    Args:
        vocab_size: Size of the target vocabulary (id 0 is padding).
        embedding_dim: Size of the target embeddings.
        units: Size of each LSTM layer and of the attentional state.
        attention: An attention layer, a name for `multiattn.attention.get`
            (`"bahdanau"`, `"luong-dot"`, `"luong-general"`, `"luong-concat"`,
            `"key-value"`), or `None` for no attention.
        attention_units: `units` passed to `attention.get` for a named attention;
            defaults to `units`.
        attention_order: `"bahdanau"` or `"luong"` (see above).
        input_feeding: With the Luong order, feed `h~_{i-1}` into the LSTM.
        num_layers: Number of stacked LSTM layers.
        dropout: Dropout on the embeddings, between LSTM layers and before the output
            projection (one mask per sequence across time steps).
        bridge: Initial state: `"zero"`, or `"learned"` (`tanh(W x)` of the encoder's
            final state, or of the masked mean of the memory when there is none).
        use_coverage: Keep the running sum of past attention weights in the state
            and feed it to the score (Tu et al. 2016); needs an attention layer that
            supports coverage (`BahdanauAttention`).
        use_gate: Scale the context by a gating scalar `beta = sigmoid(w^T s)` of the
            attention query (Show, Attend and Tell, Xu et al. 2015, section 4.2.1).
        tie_embeddings: Compute the logits with the transposed target embedding
            matrix instead of a separate output projection (a `vocab_size` bias is
            still learned), saving `units x vocab_size` weights.
        memory_units: With a size, every memory vector (an encoder state, an image
            region) first passes through `relu(W_m h_j + b_m)` of that size, and the
            decoder (its learned bridge, keys and values) reads that instead: a
            learned embedding of the regions, as the attention models of Rennie et
            al. 2017 and Anderson et al. 2018 embed theirs. None: the memory as given.
        memory_dropout: Dropout on the memory the decoder reads (after
            `memory_units`' embedding), in training only. The memory is the same at
            every step, so each sequence keeps one mask for all its steps.
        seed: Seed of the dropout.
        **kwargs: Standard layer arguments.

    Call arguments:
        target_ids: int `(batch, target_len)` decoder inputs (start token first).
        memory: `(batch, source_len, memory_dim)` encoder outputs.
        memory_mask: Optional boolean `(batch, source_len)`, filled from `memory`'s
            Keras mask.
        encoder_state: Optional `(h, c)` final encoder state for the learned bridge.
        training: Whether dropout is active (and hard attention samples).
        return_sampling: Also return the record of hard attention's samples,
            `(sample_log_probs, entropy, sampled)` (see `sampling_record`), which
            `Seq2Seq` turns into the REINFORCE term.

    Returns:
        `(logits, alignment)`: logits `(batch, target_len, vocab_size)` and the
        attention weights of every step `(batch, target_len, source_len)` (the
        softmax weights, also where hard attention sampled); the logits alone
        without attention; with `return_sampling`, the record follows.

    Examples:
        >>> decoder = AttentionDecoder(vocab_size=20, embedding_dim=8, units=16)
        >>> memory = keras.random.normal((2, 7, 12))
        >>> logits, alignment = decoder(keras.ops.ones((2, 5), "int32"), memory)
        >>> tuple(logits.shape), tuple(alignment.shape)
        ((2, 5, 20), (2, 5, 7))

    Reference:
        Bahdanau, Cho & Bengio 2014 (arXiv:1409.0473); Luong, Pham & Manning 2015
        (arXiv:1508.04025); Xu et al. 2015, "Show, Attend and Tell"
        (arXiv:1502.03044); Tu et al. 2016, "Modeling Coverage for Neural Machine
        Translation" (arXiv:1601.04811); Press & Wolf 2017, "Using the Output
        Embedding to Improve Language Models" (arXiv:1608.05859); Rennie et al. 2017,
        "Self-critical Sequence Training for Image Captioning" (arXiv:1612.00563);
        Anderson et al. 2018, "Bottom-Up and Top-Down Attention for Image Captioning
        and Visual Question Answering" (arXiv:1707.07998).
    """

    def __init__(
        self,
        vocab_size,
        embedding_dim,
        units,
        attention="bahdanau",
        attention_units=None,
        attention_order="bahdanau",
        input_feeding=True,
        num_layers=1,
        dropout=0.0,
        bridge="learned",
        use_coverage=False,
        use_gate=False,
        tie_embeddings=False,
        memory_units=None,
        memory_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention_order not in ATTENTION_ORDERS:
            raise ValueError(
                f"`attention_order` must be one of {ATTENTION_ORDERS}, got {attention_order!r}"
            )
        if bridge not in BRIDGES:
            raise ValueError(f"`bridge` must be one of {BRIDGES}, got {bridge!r}")
        if attention is None and (use_coverage or use_gate):
            raise ValueError("`use_coverage` and `use_gate` need an attention layer.")
        if int(num_layers) < 1:
            raise ValueError(f"`num_layers` must be at least 1, got {num_layers}")
        if memory_units is not None and int(memory_units) < 1:
            raise ValueError(f"`memory_units` must be None or positive, got {memory_units}")
        if not 0 <= memory_dropout < 1:
            raise ValueError(f"`memory_dropout` must be in [0, 1), got {memory_dropout}")
        self.vocab_size = int(vocab_size)
        self.embedding_dim = int(embedding_dim)
        self.units = int(units)
        self.attention_units = attention_units
        self.attention_order = attention_order
        self.input_feeding = input_feeding
        self.num_layers = int(num_layers)
        self.dropout = dropout
        self.bridge = bridge
        self.use_coverage = use_coverage
        self.use_gate = use_gate
        self.tie_embeddings = tie_embeddings
        self.memory_units = None if memory_units is None else int(memory_units)
        self.memory_dropout = float(memory_dropout)
        self.seed = seed

        if isinstance(attention, dict):  # from get_config
            attention = keras.saving.deserialize_keras_object(attention)
        elif attention is not None:
            # Only the additive score has a coverage term; others fail the check below.
            extra = {"use_coverage": True} if use_coverage and attention == "bahdanau" else {}
            attention = attention_module.get(attention, units=attention_units or units, **extra)
        if use_coverage and not attention.supports_coverage:
            raise ValueError(
                f"use_coverage=True needs an attention layer that supports coverage "
                f"(BahdanauAttention(use_coverage=True)), got {attention.__class__.__name__}."
            )
        self.attention = attention
        self.seed_generator = (
            keras.random.SeedGenerator(seed) if dropout > 0 or memory_dropout > 0 else None
        )
        self.memory_dense = None
        if self.memory_units is not None:
            self.memory_dense = keras.layers.Dense(
                self.memory_units, activation="relu", dtype=self.dtype_policy, name="memory_dense"
            )

        self.embedding = keras.layers.Embedding(
            vocab_size, embedding_dim, dtype=self.dtype_policy, name="embedding"
        )
        self.lstm_layers = [
            keras.layers.LSTM(
                units,
                return_sequences=True,
                return_state=True,
                dtype=self.dtype_policy,
                name=f"lstm_{index}",
            )
            for index in range(self.num_layers)
        ]
        self.attentional_dense = None
        if attention is not None:
            self.attentional_dense = keras.layers.Dense(
                units, activation="tanh", dtype=self.dtype_policy, name="attentional_dense"
            )
        self.gate_dense = None
        if use_gate:
            self.gate_dense = keras.layers.Dense(
                1, activation="sigmoid", dtype=self.dtype_policy, name="gate_dense"
            )
        self.bridge_dense = None
        if bridge == "learned":
            self.bridge_dense = keras.layers.Dense(
                2 * self.num_layers * units,
                activation="tanh",
                dtype=self.dtype_policy,
                name="bridge_dense",
            )
        self.output_dense = self.output_projection = None
        if not tie_embeddings:
            self.output_dense = keras.layers.Dense(
                vocab_size, dtype=self.dtype_policy, name="output_dense"
            )
        elif units != embedding_dim:
            self.output_projection = keras.layers.Dense(
                embedding_dim, use_bias=False, dtype=self.dtype_policy, name="output_projection"
            )

    # -- structure -------------------------------------------------------------
    @property
    def uses_input_feeding(self):
        return self.attention is not None and self.attention_order == "luong" and self.input_feeding

    @property
    def counts_steps(self):
        """Whether the state holds the step, for an attention that needs query positions."""
        return getattr(self.attention, "needs_query_positions", False)

    @property
    def uses_fast_path(self):
        """Whether `call` runs the target through the LSTMs in one go."""
        return self.attention is None or (
            self.attention_order == "luong" and not self.input_feeding and not self.use_coverage
        )

    def _context_dim(self, memory_dim):
        query_shape = (None, 1, self.units)
        context_shape, _ = self.attention.compute_output_shape(
            query_shape, (None, None, memory_dim)
        )
        return context_shape[-1]

    def build(self, target_ids_shape, memory_shape, *args, **kwargs):
        self.memory_dim = memory_dim = memory_shape[-1]  # what the decoder takes
        if self.memory_dense is not None:
            if not self.memory_dense.built:
                self.memory_dense.build((None, None, memory_dim))
            memory_dim = self.memory_units  # what the rest of it reads
        if not self.embedding.built:
            self.embedding.build(target_ids_shape)
        if self.attention is None:
            lstm_input_dim = self.embedding_dim
        elif self.attention_order == "bahdanau":
            lstm_input_dim = self.embedding_dim + self._context_dim(memory_dim)
        else:
            lstm_input_dim = self.embedding_dim + (self.units if self.input_feeding else 0)
        for index, lstm in enumerate(self.lstm_layers):
            if not lstm.built:
                lstm.build((None, None, lstm_input_dim if index == 0 else self.units))
        if self.attention is not None:
            if not self.attention.built:
                self.attention.build((None, 1, self.units), (None, None, memory_dim))
            context_dim = self._context_dim(memory_dim)
            if self.attention_order == "bahdanau":
                attentional_input_dim = self.units + context_dim + self.embedding_dim
            else:
                attentional_input_dim = context_dim + self.units
            if not self.attentional_dense.built:
                self.attentional_dense.build((None, attentional_input_dim))
            if self.gate_dense is not None and not self.gate_dense.built:
                self.gate_dense.build((None, self.units))
        if self.bridge_dense is not None and not self.bridge_dense.built:
            self.bridge_dense.build((None, memory_dim))
        if self.output_dense is not None and not self.output_dense.built:
            self.output_dense.build((None, self.units))
        if self.output_projection is not None and not self.output_projection.built:
            self.output_projection.build((None, self.units))
        if self.tie_embeddings:
            self.output_bias = self.add_weight(
                shape=(self.vocab_size,), initializer="zeros", name="output_bias"
            )
        self.built = True

    # -- state -----------------------------------------------------------------
    def read_memory(self, memory, training=None):
        """The memory as the rest of the decoder reads it: embedded with `memory_units`,
        with `memory_dropout` in training; unchanged without either."""
        if self.memory_dense is not None:
            memory = self.memory_dense(memory)  # (batch, source_len, memory_units)
        if training and self.memory_dropout > 0:
            memory = keras.random.dropout(
                memory, rate=self.memory_dropout, seed=self.seed_generator
            )
        return memory

    def get_initial_state(self, memory, memory_mask=None, encoder_state=None):
        """The decoder state before the first token: a flat tuple of tensors.

        Layout: `(h_1, c_1, ..., h_L, c_L)`, then the previous attentional state
        `(batch, units)` with input feeding, then the coverage `(batch, source_len)`
        with coverage, then the int32 step `(batch, 1)` with an attention that needs
        the query's position (`LocalAttention(local="monotonic")`). Every entry has the
        batch as its first axis, so search can reorder beams with one gather per entry.
        """
        return self._initial_state(self.read_memory(memory), memory_mask, encoder_state)

    def _initial_state(self, memory, memory_mask, encoder_state):
        batch = ops.shape(memory)[0]
        dtype = self.compute_dtype
        if self.bridge == "learned":
            if encoder_state is not None:
                summary = encoder_state[0]
            else:
                summary = masked_mean(memory, memory_mask)
            lstm_states = ops.split(self.bridge_dense(summary), 2 * self.num_layers, axis=-1)
        else:
            zeros = ops.zeros((batch, self.units), dtype=dtype)
            lstm_states = [zeros] * (2 * self.num_layers)
        state = [ops.cast(x, dtype) for x in lstm_states]
        if self.uses_input_feeding:
            state.append(ops.zeros((batch, self.units), dtype=dtype))
        if self.use_coverage:
            state.append(ops.zeros((batch, ops.shape(memory)[1]), dtype=dtype))
        if self.counts_steps:
            state.append(ops.zeros((batch, 1), dtype="int32"))
        return tuple(state)

    def prepare_memory(self, memory):
        """Projects the memory once per sequence: returns `(keys, values)` for `step`."""
        return self._prepare(self.read_memory(memory))

    def _prepare(self, memory):
        if self.attention is None:
            return memory, memory
        return self.attention.prepare_memory(memory)

    def initial_state_and_memory(self, memory, memory_mask=None, encoder_state=None, training=None):
        """`(state, (keys, values))`: `get_initial_state` and `prepare_memory` in one, the
        memory read once (so in training both see the same `memory_dropout` mask)."""
        memory = self.read_memory(memory, training)
        return self._initial_state(memory, memory_mask, encoder_state), self._prepare(memory)

    # -- one step --------------------------------------------------------------
    def step(self, token_ids, state, memory, memory_mask=None):
        """Advances every sequence by one token (inference: no dropout).

        Args:
            token_ids: int `(batch,)`, the previous tokens.
            state: The flat state tuple (see `get_initial_state`).
            memory: `(keys, values)` from `prepare_memory`.
            memory_mask: Optional boolean `(batch, source_len)`.

        Returns:
            `(logits, state, weights)`: logits `(batch, vocab_size)`, the new state,
            and this step's attention weights `(batch, source_len)` (`None` without
            attention).
        """
        keys, values = memory
        embedded = self.embedding(token_ids)  # (batch, embedding_dim)
        features, weights, _, state = self._advance(embedded, state, keys, values, memory_mask)
        return self._logits(features), state, weights

    def _logits(self, features):
        """`(..., units)` attentional states to `(..., vocab_size)` logits."""
        if not self.tie_embeddings:
            return self.output_dense(features)
        if self.output_projection is not None:
            features = self.output_projection(features)  # (..., embedding_dim)
        embeddings = ops.cast(self.embedding.embeddings, features.dtype)  # (vocab, E)
        logits = ops.matmul(features, ops.transpose(embeddings))
        return logits + ops.cast(self.output_bias, features.dtype)

    def _advance(self, embedded, state, keys, values, memory_mask, layer_masks=None, sampling=None):
        """The recurrence for one step: `(features, weights, probabilities, new_state)`.

        `weights` are the attention the context was computed with, `probabilities`
        the softmax it was drawn from (they differ under hard attention).
        """
        lstm_states = state[: 2 * self.num_layers]
        rest = list(state[2 * self.num_layers :])
        previous_features = rest.pop(0) if self.uses_input_feeding else None
        coverage = rest.pop(0) if self.use_coverage else None
        position = rest.pop(0) if self.counts_steps else None  # (batch, 1)

        weights = probabilities = None
        if self.attention is None:
            top, lstm_states = self._run_cells(embedded, lstm_states, layer_masks)
            features = top
        elif self.attention_order == "bahdanau":
            context, weights, probabilities = self._attend(
                lstm_states[-2], keys, values, memory_mask, coverage, sampling, position
            )
            inputs = ops.concatenate([embedded, context], axis=-1)
            top, lstm_states = self._run_cells(inputs, lstm_states, layer_masks)
            features = self.attentional_dense(ops.concatenate([top, context, embedded], axis=-1))
        else:
            inputs = embedded
            if previous_features is not None:
                inputs = ops.concatenate([embedded, previous_features], axis=-1)
            top, lstm_states = self._run_cells(inputs, lstm_states, layer_masks)
            context, weights, probabilities = self._attend(
                top, keys, values, memory_mask, coverage, sampling, position
            )
            features = self.attentional_dense(ops.concatenate([context, top], axis=-1))

        new_state = list(lstm_states)
        if previous_features is not None:
            new_state.append(features)
        if coverage is not None:
            new_state.append(coverage + ops.cast(weights, coverage.dtype))
        if position is not None:
            new_state.append(position + 1)
        return features, weights, probabilities, tuple(new_state)

    def _run_cells(self, inputs, lstm_states, layer_masks):
        new_states = []
        for index, lstm in enumerate(self.lstm_layers):
            if index > 0 and layer_masks is not None:
                inputs = inputs * layer_masks[index - 1]
            hidden, cell = lstm_states[2 * index], lstm_states[2 * index + 1]
            inputs, (hidden, cell) = lstm.cell(inputs, [hidden, cell])
            new_states += [hidden, cell]
        return inputs, new_states

    def _attend(self, query, keys, values, memory_mask, coverage, sampling=None, position=None):
        """Attention for a query sequence `(batch, Tq, units)` or one step `(batch, units)`.

        Returns `(context, weights, probabilities)`; `sampling` (hard attention in
        training) is `(use_sample, noise)` with noise shaped like the weights;
        `position` the step `(batch, 1)` of a one-step query (a sequence's queries are
        at `0, ..., Tq - 1`).
        """
        one_step = len(query.shape) == 2
        # The gate on the query as given: see `attention.base.project` for why a step
        # projects its 2-D query rather than a (batch, 1, units) one.
        gate = self.gate_dense(query) if self.gate_dense is not None else None
        if one_step:
            query = ops.expand_dims(query, 1)
            if coverage is not None:
                coverage = ops.expand_dims(coverage, 1)
            if gate is not None:
                gate = ops.expand_dims(gate, 1)
        context, weights, probabilities = self.attention.attend(
            query,
            keys,
            values,
            value_mask=memory_mask,
            coverage=coverage,
            training=sampling is not None,  # hard attention samples in training
            sampling=sampling,
            return_probabilities=True,
            query_positions=position,
        )
        if gate is not None:
            context = context * gate
        if one_step:
            context, weights, probabilities = (
                ops.squeeze(tensor, 1) for tensor in (context, weights, probabilities)
            )
        return context, weights, probabilities

    # -- a whole target sequence (training, scoring) -----------------------------
    def call(
        self,
        target_ids,
        memory,
        memory_mask=None,
        encoder_state=None,
        training=None,
        return_sampling=False,
    ):
        state, (keys, values) = self.initial_state_and_memory(
            memory, memory_mask, encoder_state, training
        )
        embedded = self._dropout(self.embedding(target_ids), training)  # (batch, T, E)
        sampling = None
        if training and self.attention is not None and self.attention.hard:
            # Drawn once for the whole target: a sequence is sampled or soft at every step.
            batch, steps = ops.shape(target_ids)[0], ops.shape(target_ids)[1]
            sampling = self.attention.sampling_inputs(batch, steps, ops.shape(memory)[1])
        path = self._call_fast if self.uses_fast_path else self._call_scan
        features, weights, alignment = path(
            embedded, state, keys, values, memory_mask, training, sampling
        )
        logits = self._logits(self._dropout(features, training))  # (batch, T, vocab)
        if alignment is None:  # functional models accept no None outputs
            return logits
        if not return_sampling:
            return logits, alignment
        return (logits, alignment, *sampling_record(weights, alignment, sampling))

    def _call_fast(self, embedded, state, keys, values, memory_mask, training, sampling=None):
        outputs = embedded
        for index, lstm in enumerate(self.lstm_layers):
            if index > 0:
                outputs = self._dropout(outputs, training)
            outputs = lstm(outputs, initial_state=list(state[2 * index : 2 * index + 2]))[0]
        if self.attention is None:
            return outputs, None, None
        context, weights, alignment = self._attend(
            outputs, keys, values, memory_mask, None, sampling
        )
        features = self.attentional_dense(ops.concatenate([context, outputs], axis=-1))
        # (batch, T, units), 2 x (batch, T, S)
        return features, weights, ops.cast(alignment, features.dtype)

    def _call_scan(self, embedded, state, keys, values, memory_mask, training, sampling=None):
        layer_masks = None
        if training and self.dropout > 0 and self.num_layers > 1:
            batch = ops.shape(embedded)[0]
            ones = ops.ones((batch, self.units), dtype=embedded.dtype)
            layer_masks = [self._dropout(ones, training) for _ in range(self.num_layers - 1)]

        def body(state, inputs):
            embedded_step, step_sampling = inputs, None
            if sampling is not None:
                embedded_step, noise_step = inputs
                step_sampling = (sampling[0], ops.expand_dims(noise_step, 1))
            features, weights, probabilities, state = self._advance(
                embedded_step, state, keys, values, memory_mask, layer_masks, step_sampling
            )
            if weights is None:  # no attention: an empty alignment keeps one structure
                weights = probabilities = ops.zeros(
                    (ops.shape(features)[0], 0), dtype=features.dtype
                )
            return state, (features, ops.cast(weights, "float32"), probabilities)

        sequence = ops.transpose(embedded, (1, 0, 2))  # (T, batch, E)
        if sampling is not None:
            sequence = (sequence, ops.transpose(sampling[1], (1, 0, 2)))  # noise (T, batch, S)
        _, outputs = loops.scan(body, state, sequence)
        features, weights, alignment = (
            ops.transpose(output, (1, 0, 2)) for output in outputs
        )  # (batch, T, units), 2 x (batch, T, S)
        if self.attention is None:
            return features, None, None
        return features, weights, ops.cast(alignment, features.dtype)

    def _dropout(self, inputs, training):
        if not training or self.dropout == 0:
            return inputs
        return keras.random.dropout(inputs, rate=self.dropout, seed=self.seed_generator)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "embedding_dim": self.embedding_dim,
                "units": self.units,
                "attention": (
                    None
                    if self.attention is None
                    else keras.saving.serialize_keras_object(self.attention)
                ),
                "attention_units": self.attention_units,
                "attention_order": self.attention_order,
                "input_feeding": self.input_feeding,
                "num_layers": self.num_layers,
                "dropout": self.dropout,
                "bridge": self.bridge,
                "use_coverage": self.use_coverage,
                "use_gate": self.use_gate,
                "tie_embeddings": self.tie_embeddings,
                "memory_units": self.memory_units,
                "memory_dropout": self.memory_dropout,
                "seed": self.seed,
            }
        )
        return config


def sampling_record(weights, probabilities, sampling):
    """What the REINFORCE term of hard attention needs from a decoded target.

    Args:
        weights: `(batch, T, S)` attention used (one-hot where sampled).
        probabilities: `(batch, T, S)` softmax attention weights.
        sampling: `(use_sample, noise)`, or None when nothing was sampled.

    Returns:
        `(sample_log_probs, entropy, sampled)`: float32 `log p(s_t)` of every step
        `(batch, T)` (zero in sequences that used the expected context), the entropy
        of every step's weights `(batch, T)`, and `(batch,)` 1.0 for the sampled
        sequences.
    """
    probabilities = ops.cast(probabilities, "float32")
    log_probabilities = ops.log(ops.maximum(probabilities, 1e-30))
    entropy = -ops.sum(probabilities * log_probabilities, axis=-1)  # (batch, T)
    if sampling is None:
        sampled = ops.zeros(ops.shape(probabilities)[:1], "float32")
    else:
        sampled = ops.cast(sampling[0], "float32")
    sample_log_probs = ops.sum(ops.cast(weights, "float32") * log_probabilities, axis=-1)
    return sample_log_probs * ops.expand_dims(sampled, -1), entropy, sampled


def masked_mean(memory, memory_mask=None):
    """Mean over the source axis of `(batch, S, d)`, counting unmasked positions only."""
    memory = ops.convert_to_tensor(memory)  # a NumPy array times a torch tensor fails
    if memory_mask is None:
        return ops.mean(memory, axis=1)
    mask = ops.cast(ops.expand_dims(memory_mask, -1), memory.dtype)  # (batch, S, 1)
    total = ops.sum(memory * mask, axis=1)
    count = ops.maximum(ops.sum(mask, axis=1), ops.cast(1, memory.dtype))
    return total / count
