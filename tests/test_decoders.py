"""Decoders: one `step` equals the training path; NumPy reference; masking; saving."""

import json

import keras
import numpy as np
import pytest
from gradients import gradients

from multiattn.attention import BahdanauAttention, LocalAttention, LuongAttention
from multiattn.decoders import AttentionDecoder, PlainDecoder

VOCAB, EMBEDDING, UNITS, MEMORY_DIM = 13, 5, 8, 6

CONFIGS = {
    "bahdanau-order": {},
    "luong-feeding": {"attention": "luong-general", "attention_order": "luong"},
    "luong-fast-path": {
        "attention": "luong-general",
        "attention_order": "luong",
        "input_feeding": False,
    },
    "coverage-gate-2-layers": {"use_coverage": True, "use_gate": True, "num_layers": 2},
    "key-value-zero-bridge": {"attention": "key-value", "bridge": "zero"},
    "luong-concat-2-layers": {
        "attention": "luong-concat",
        "attention_order": "luong",
        "num_layers": 2,
    },
    # Layers are made per decoder: a function in place of the attention.
    "local-monotonic-bahdanau-order": {
        "attention": lambda: LocalAttention(BahdanauAttention(8), window=2, local="monotonic"),
    },
    "local-monotonic-fast-path": {
        "attention": lambda: LocalAttention(LuongAttention("general"), 2, local="monotonic"),
        "attention_order": "luong",
        "input_feeding": False,
    },
    "local-predictive-luong-feeding": {
        "attention": lambda: LocalAttention(LuongAttention("general"), window=2),
        "attention_order": "luong",
    },
    "tied-luong-fast-path": {
        "attention": "luong-general",
        "attention_order": "luong",
        "input_feeding": False,
        "tie_embeddings": True,
    },
    # The dot score needs memory of the query's size: the embedding gives it.
    "memory-embedding-luong-dot": {
        "attention": "luong-dot",
        "attention_order": "luong",
        "memory_units": UNITS,
        "memory_dropout": 0.3,
    },
}


def make_decoder(config_name):
    if config_name == "plain":
        return PlainDecoder(VOCAB, EMBEDDING, UNITS, num_layers=2)
    config = dict(CONFIGS[config_name])
    if callable(config.get("attention")):
        config["attention"] = config["attention"]()
    return AttentionDecoder(VOCAB, EMBEDDING, UNITS, **config)


def batch(rng, source_len=7):
    memory = rng.normal(size=(3, source_len, MEMORY_DIM)).astype("float32")
    memory_mask = np.ones((3, source_len), bool)
    memory_mask[1, 4:] = False
    memory_mask[2, 2:] = False
    target_ids = rng.integers(1, VOCAB, size=(3, 6)).astype("int32")
    return target_ids, memory, memory_mask


def first_output(outputs):
    """The logits, whether the decoder returned `(logits, alignment)` or logits alone."""
    return outputs[0] if isinstance(outputs, tuple) else outputs


def run_steps(decoder, target_ids, memory, memory_mask):
    state = decoder.get_initial_state(memory, memory_mask)
    prepared = decoder.prepare_memory(memory)
    all_logits, all_weights = [], []
    for position in range(target_ids.shape[1]):
        logits, state, weights = decoder.step(target_ids[:, position], state, prepared, memory_mask)
        all_logits.append(np.asarray(logits))
        all_weights.append(None if weights is None else np.asarray(weights))
    return np.stack(all_logits, 1), all_weights


@pytest.mark.parametrize("config_name", [*CONFIGS, "plain"])
def test_step_equals_training_path(config_name, rng):
    decoder = make_decoder(config_name)
    target_ids, memory, memory_mask = batch(rng)
    outputs = decoder(target_ids, memory, memory_mask=memory_mask)
    logits, alignment = outputs if config_name != "plain" else (outputs, None)
    step_logits, step_weights = run_steps(decoder, target_ids, memory, memory_mask)
    np.testing.assert_allclose(step_logits, logits, rtol=1e-4, atol=1e-5)
    if config_name == "plain":
        assert step_weights[0] is None
    else:
        np.testing.assert_allclose(np.stack(step_weights, 1), alignment, rtol=1e-4, atol=1e-6)
        alignment = np.asarray(alignment)
        assert np.all(alignment[~np.broadcast_to(memory_mask[:, None], alignment.shape)] == 0)
        if "predictive" in config_name:  # Gaussian-weighted: at most one
            assert np.all(alignment.sum(-1) <= 1.0 + 1e-6) and np.all(alignment.sum(-1) > 0)
        else:
            np.testing.assert_allclose(alignment.sum(-1), 1.0, rtol=1e-5)


def test_fast_path_is_taken_only_when_the_order_allows():
    assert make_decoder("luong-fast-path").uses_fast_path
    assert make_decoder("plain").uses_fast_path
    for name in ("bahdanau-order", "luong-feeding", "coverage-gate-2-layers"):
        assert not make_decoder(name).uses_fast_path


@pytest.mark.parametrize("config_name", ["luong-fast-path", "local-monotonic-fast-path"])
def test_fast_path_equals_scanned_recurrence(config_name, rng):
    decoder = make_decoder(config_name)
    target_ids, memory, memory_mask = batch(rng)
    decoder(target_ids, memory, memory_mask=memory_mask)
    state = decoder.get_initial_state(memory, memory_mask)
    keys, values = decoder.prepare_memory(memory)
    embedded = decoder.embedding(target_ids)
    fast = decoder._call_fast(embedded, state, keys, values, memory_mask, False)
    scanned = decoder._call_scan(embedded, state, keys, values, memory_mask, False)
    for got, want in zip(fast, scanned, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


# -- NumPy reference of one step, straight from the papers' equations ------------------
def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_lstm(weights, inputs, hidden, cell):
    kernel, recurrent_kernel, bias = weights
    gates = inputs @ kernel + hidden @ recurrent_kernel + bias
    i, f, c, o = np.split(gates, 4, axis=-1)  # Keras' gate order
    cell = sigmoid(f) * cell + sigmoid(i) * np.tanh(c)
    hidden = sigmoid(o) * np.tanh(cell)
    return hidden, cell


def np_softmax_masked(scores, mask):
    scores = np.where(mask, scores, -np.inf)
    exp = np.exp(scores - scores.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def numpy_of(layer):
    return [keras.ops.convert_to_numpy(w) for w in layer.weights]


@pytest.mark.parametrize(
    "order, output, embedding_dim, memory_units",
    [
        ("bahdanau", "separate", EMBEDDING, None),
        ("luong", "separate", EMBEDDING, None),
        ("bahdanau", "tied", UNITS, None),  # the attentional state is an embedding
        ("luong", "tied", EMBEDDING, None),  # projected to the embeddings' size first
        ("bahdanau", "separate", EMBEDDING, 4),  # the regions embedded first
        ("luong", "separate", EMBEDDING, 4),
    ],
)
def test_first_steps_match_numpy(order, output, embedding_dim, memory_units, rng):
    attention = "bahdanau" if order == "bahdanau" else "luong-general"
    decoder = AttentionDecoder(
        VOCAB,
        embedding_dim,
        UNITS,
        attention=attention,
        attention_order=order,
        input_feeding=True,
        tie_embeddings=output == "tied",
        memory_units=memory_units,
        memory_dropout=0.5,  # inference: none
    )
    target_ids, memory, memory_mask = batch(rng)
    logits, alignment = decoder(target_ids, memory, memory_mask=memory_mask)
    if memory_units is None:
        assert decoder.memory_dense is None
    else:
        memory_kernel, memory_bias = numpy_of(decoder.memory_dense)
        memory = np.maximum(memory @ memory_kernel + memory_bias, 0.0)  # what it reads

    embeddings = numpy_of(decoder.embedding)[0]
    lstm = numpy_of(decoder.lstm_layers[0])
    attentional_kernel, attentional_bias = numpy_of(decoder.attentional_dense)
    if output == "separate":
        output_kernel, output_bias = numpy_of(decoder.output_dense)
    else:
        # Random, so that a bias left out or added twice shows.
        output_bias = rng.normal(size=VOCAB).astype("float32")
        decoder.output_bias.assign(output_bias)
        logits, alignment = decoder(target_ids, memory, memory_mask=memory_mask)
        output_kernel = embeddings.T  # (E, vocab)
        if embedding_dim != UNITS:
            output_kernel = numpy_of(decoder.output_projection)[0] @ output_kernel
        else:
            assert decoder.output_projection is None
    bridge_kernel, bridge_bias = numpy_of(decoder.bridge_dense)
    mask = memory_mask.astype("float32")[..., None]
    mean = (memory * mask).sum(1) / mask.sum(1)
    hidden, cell = np.split(np.tanh(mean @ bridge_kernel + bridge_bias), 2, axis=-1)
    feed = np.zeros_like(hidden)
    attention_weights = {
        w.path.split("/")[-1]: keras.ops.convert_to_numpy(w) for w in decoder.attention.weights
    }

    def attend(query):
        if order == "bahdanau":
            hidden_scores = np.tanh(
                (query @ attention_weights["query_kernel"])[:, None]
                + memory @ attention_weights["key_kernel"]
                + attention_weights["bias"]
            )
            scores = hidden_scores @ attention_weights["score_vector"]
        else:
            scores = np.einsum("bd,bvd->bv", query, memory @ attention_weights["kernel"])
        weights = np_softmax_masked(scores, memory_mask)
        return np.einsum("bv,bvd->bd", weights, memory), weights

    for position in range(3):
        embedded = embeddings[target_ids[:, position]]
        if order == "bahdanau":
            context, weights = attend(hidden)
            hidden, cell = np_lstm(lstm, np.concatenate([embedded, context], -1), hidden, cell)
            features = np.tanh(
                np.concatenate([hidden, context, embedded], -1) @ attentional_kernel
                + attentional_bias
            )
        else:
            hidden, cell = np_lstm(lstm, np.concatenate([embedded, feed], -1), hidden, cell)
            context, weights = attend(hidden)
            features = np.tanh(
                np.concatenate([context, hidden], -1) @ attentional_kernel + attentional_bias
            )
            feed = features
        np.testing.assert_allclose(alignment[:, position], weights, rtol=1e-4, atol=1e-6)
        expected_logits = features @ output_kernel + output_bias
        np.testing.assert_allclose(logits[:, position], expected_logits, rtol=1e-4, atol=1e-5)


def test_coverage_accumulates_attention(rng):
    decoder = make_decoder("coverage-gate-2-layers")
    target_ids, memory, memory_mask = batch(rng)
    _, alignment = decoder(target_ids, memory, memory_mask=memory_mask)
    state = decoder.get_initial_state(memory, memory_mask)
    prepared = decoder.prepare_memory(memory)
    for position in range(target_ids.shape[1]):
        _, state, _ = decoder.step(target_ids[:, position], state, prepared, memory_mask)
    np.testing.assert_allclose(state[-1], np.asarray(alignment).sum(1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "config_name",
    ["bahdanau-order", "luong-fast-path", "local-monotonic-bahdanau-order", "plain"],
)
def test_memory_padding_invariance(config_name, rng):
    decoder = make_decoder(config_name)
    target_ids, memory, memory_mask = batch(rng)
    logits = first_output(decoder(target_ids, memory, memory_mask=memory_mask))
    padded = np.concatenate([memory, rng.normal(size=(3, 4, MEMORY_DIM)) * 5], 1)
    padded_mask = np.concatenate([memory_mask, np.zeros((3, 4), bool)], 1)
    padded_logits = first_output(
        decoder(target_ids, padded.astype("float32"), memory_mask=padded_mask)
    )
    np.testing.assert_allclose(padded_logits, logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config_name", [*CONFIGS, "plain"])
def test_gradients_reach_every_weight(config_name, rng):
    decoder = make_decoder(config_name)
    target_ids, memory, memory_mask = batch(rng)
    decoder(target_ids, memory, memory_mask=memory_mask)

    def loss(memory):
        logits = first_output(decoder(target_ids, memory, memory_mask=memory_mask, training=True))
        return keras.ops.mean(keras.ops.square(logits))

    found, (memory_gradient,) = gradients(loss, decoder.trainable_variables, inputs=(memory,))
    assert len(decoder.trainable_variables) > 5
    for variable, gradient in zip(decoder.trainable_variables, found, strict=True):
        assert np.any(gradient != 0), variable.path
    assert np.any(memory_gradient != 0)


@pytest.mark.parametrize(
    "dropouts", [{"dropout": 0.3, "num_layers": 2}, {"memory_dropout": 0.3, "memory_units": 4}]
)
def test_dropout_only_in_training(dropouts, rng):
    decoder = AttentionDecoder(VOCAB, EMBEDDING, UNITS, seed=1, **dropouts)
    target_ids, memory, memory_mask = batch(rng)
    inference = np.asarray(decoder(target_ids, memory, memory_mask=memory_mask)[0])
    np.testing.assert_array_equal(
        decoder(target_ids, memory, memory_mask=memory_mask)[0], inference
    )
    training = decoder(target_ids, memory, memory_mask=memory_mask, training=True)[0]
    assert not np.allclose(training, inference)


@pytest.mark.slow
@pytest.mark.parametrize("config_name", [*CONFIGS, "plain"])
def test_keras_file_round_trip(config_name, rng, tmp_path):
    decoder = make_decoder(config_name)
    target_input = keras.Input(shape=(None,), dtype="int32")
    memory_input = keras.Input(shape=(None, MEMORY_DIM))
    logits = first_output(decoder(target_input, memory_input))
    model = keras.Model([target_input, memory_input], logits)
    target_ids, memory, _ = batch(rng)
    expected = model.predict([target_ids, memory], verbose=0)
    model.save(tmp_path / "decoder.keras")
    loaded = keras.saving.load_model(tmp_path / "decoder.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict([target_ids, memory], verbose=0), expected)
    # JSON, because shapes in nested build configs come back as lists, not tuples.
    as_json = lambda layer: json.dumps(layer.get_config(), sort_keys=True)  # noqa: E731
    assert as_json(loaded.layers[-1]) == as_json(decoder)


def test_tied_embeddings_replace_the_output_kernel(rng):
    target_ids, memory, memory_mask = batch(rng)
    counts = {}
    for tie in (False, True):
        config = {**CONFIGS["tied-luong-fast-path"], "tie_embeddings": tie}
        decoder = AttentionDecoder(VOCAB, EMBEDDING, UNITS, **config)
        decoder(target_ids, memory, memory_mask=memory_mask)
        counts[tie] = decoder.count_params()
    # A (units, vocab) kernel gives way to a (units, embedding_dim) projection.
    assert counts[False] - counts[True] == UNITS * VOCAB - UNITS * EMBEDDING


def test_accepts_attention_layer_instances():
    attention = LuongAttention("dot")
    decoder = AttentionDecoder(VOCAB, EMBEDDING, UNITS, attention=attention)
    assert decoder.attention is attention


def test_clear_errors():
    with pytest.raises(ValueError, match="attention_order"):
        AttentionDecoder(VOCAB, EMBEDDING, UNITS, attention_order="sideways")
    with pytest.raises(ValueError, match="bridge"):
        AttentionDecoder(VOCAB, EMBEDDING, UNITS, bridge="magic")
    with pytest.raises(ValueError, match="supports coverage"):
        AttentionDecoder(VOCAB, EMBEDDING, UNITS, attention="luong-dot", use_coverage=True)
    with pytest.raises(ValueError, match="need an attention layer"):
        AttentionDecoder(VOCAB, EMBEDDING, UNITS, attention=None, use_gate=True)
    with pytest.raises(ValueError, match="num_layers"):
        AttentionDecoder(VOCAB, EMBEDDING, UNITS, num_layers=0)
    with pytest.raises(ValueError, match="memory_units"):
        AttentionDecoder(VOCAB, EMBEDDING, UNITS, memory_units=0)
    with pytest.raises(ValueError, match="memory_dropout"):
        AttentionDecoder(VOCAB, EMBEDDING, UNITS, memory_dropout=1.0)
    decoder = AttentionDecoder(VOCAB, EMBEDDING, UNITS, attention=BahdanauAttention(4))
    assert not decoder.attention.use_coverage


def test_memory_dropout_zeroes_or_rescales_what_the_decoder_reads(rng):
    decoder = AttentionDecoder(VOCAB, EMBEDDING, UNITS, memory_units=4, memory_dropout=0.5)
    _, memory, _ = batch(rng)
    decoder.build((None, None), memory.shape)
    read = np.asarray(decoder.read_memory(memory))  # (batch, source_len, 4), ReLU'd
    assert np.all(read >= 0) and np.any(read > 0)
    dropped = np.asarray(decoder.read_memory(memory, training=True))
    kept = dropped != 0
    assert np.any(~kept & (read != 0))  # some dropped
    np.testing.assert_allclose(dropped[kept], 2 * read[kept], rtol=1e-5)


def test_initial_state_and_memory_read_the_memory_once(rng):
    decoder = make_decoder("memory-embedding-luong-dot")
    target_ids, memory, memory_mask = batch(rng)
    decoder(target_ids, memory, memory_mask=memory_mask)
    calls = []
    dense_call = decoder.memory_dense.call
    decoder.memory_dense.call = lambda inputs: calls.append(1) or dense_call(inputs)
    state, prepared = decoder.initial_state_and_memory(memory, memory_mask)
    assert len(calls) == 1
    expected_state = decoder.get_initial_state(memory, memory_mask)
    expected_prepared = decoder.prepare_memory(memory)
    expected = (*expected_state, *expected_prepared)
    for got, want in zip((*state, *prepared), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
