"""Floating-point operations of the seq2seq models, counted analytically.

Only matrix products are counted (LSTM gates, `Dense` layers, attention projections,
scores and weighted sums, the output projection), at 2 operations per multiply-add;
elementwise work (activations, softmax, the additive score's `tanh`) is left out. For
these models the products are nearly all of the arithmetic, and they are what the
matrix units of a CPU or GPU run. A training step costs three forward passes (the
backward pass computes two products for every forward one).
"""

import dataclasses

TRAINING_PASSES = 3  # forward + backward (gradients of inputs and of weights)


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """The sizes that decide the arithmetic of an encoder-attention-decoder model.

    Attributes:
        vocab_size: Target vocabulary (the output projection).
        embedding_dim: Target embedding size.
        units: Decoder LSTM units (and attentional state).
        memory_dim: Size of a memory vector (encoder output or image region).
        attention: `"bahdanau"`, `"luong-dot"`, `"luong-general"`, `"luong-concat"`,
            `"key-value"` or `None`.
        attention_order: `"bahdanau"` or `"luong"`.
        input_feeding: Luong order with input feeding.
        use_gate: Show, Attend and Tell's gating scalar.
        attention_units: Units of the additive/key-value projections (default `units`).
        source_vocab_embedding: Source embedding size for a BiLSTM encoder, or `None`
            when the memory is given (image features).
        encoder_units: BiLSTM encoder units (both directions together).
        bridge: Whether a learned bridge maps the encoder summary to the initial state.
    """

    vocab_size: int
    embedding_dim: int
    units: int
    memory_dim: int
    attention: str | None = "bahdanau"
    attention_order: str = "bahdanau"
    input_feeding: bool = False
    use_gate: bool = False
    attention_units: int | None = None
    source_vocab_embedding: int | None = None
    encoder_units: int | None = None
    bridge: bool = True


def lstm_step(batch, input_dim, units):
    """One LSTM step: the four gates from `[x; h]`."""
    return 2 * batch * (input_dim + units) * 4 * units


def encoder(shape, batch, source_len):
    """A bidirectional LSTM over the source (0 for a memory given as features)."""
    if shape.source_vocab_embedding is None:
        return 0
    per_direction = shape.encoder_units // 2
    return 2 * source_len * lstm_step(batch, shape.source_vocab_embedding, per_direction)


def _context_dim(shape):
    if shape.attention == "key-value":  # the values are projected
        return shape.attention_units or shape.units
    return shape.memory_dim


def prepare_memory(shape, batch, source_len):
    """Projections of the memory made once per sequence, and the learned bridge."""
    attention_units = shape.attention_units or shape.units
    per_position = {
        None: 0,
        "bahdanau": shape.memory_dim * attention_units,
        "luong-dot": 0,
        "luong-general": shape.memory_dim * shape.units,
        "luong-concat": shape.memory_dim * attention_units,
        "key-value": shape.memory_dim * 2 * attention_units,
    }[shape.attention]
    bridge_input = shape.encoder_units or shape.memory_dim
    bridge = 2 * batch * bridge_input * 2 * shape.units if shape.bridge else 0
    return 2 * batch * source_len * per_position + bridge


def decoder_step(shape, batch, source_len, with_output=True):
    """One decoder step for `batch` rows: LSTM, attention, attentional state, logits."""
    units = shape.units
    attention_units = shape.attention_units or units
    flops = 0
    if shape.attention is None:
        flops += lstm_step(batch, shape.embedding_dim, units)
    else:
        context = _context_dim(shape)
        if shape.attention_order == "bahdanau":
            lstm_input = shape.embedding_dim + context
            attentional_input = units + context + shape.embedding_dim
        else:
            lstm_input = shape.embedding_dim + (units if shape.input_feeding else 0)
            attentional_input = context + units
        flops += lstm_step(batch, lstm_input, units)
        query = {
            "bahdanau": units * attention_units,
            "luong-dot": 0,
            "luong-general": 0,
            "luong-concat": units * attention_units,
            "key-value": units * attention_units,
        }[shape.attention]
        score_width = {
            "bahdanau": 0,  # v^T tanh(...) is elementwise work here
            "luong-dot": shape.memory_dim,
            "luong-general": units,  # keys were projected to the query's size
            "luong-concat": 0,
            "key-value": attention_units,
        }[shape.attention]
        flops += 2 * batch * (query + source_len * score_width + source_len * context)
        flops += 2 * batch * attentional_input * units
        if shape.use_gate:
            flops += 2 * batch * units
    if with_output:
        flops += 2 * batch * units * shape.vocab_size
    return flops


def forward(shape, batch, source_len, target_len):
    """One teacher-forced forward pass over a batch."""
    return (
        encoder(shape, batch, source_len)
        + prepare_memory(shape, batch, source_len)
        + target_len * decoder_step(shape, batch, source_len)
    )


def training_step(shape, batch, source_len, target_len):
    return TRAINING_PASSES * forward(shape, batch, source_len, target_len)


def generation(shape, batch, source_len, steps, beam_size=1):
    """Encoding once, then `steps` decoder steps for `batch * beam_size` hypotheses."""
    return (
        encoder(shape, batch, source_len)
        + prepare_memory(shape, batch, source_len)
        + steps * decoder_step(shape, batch * beam_size, source_len)
    )
