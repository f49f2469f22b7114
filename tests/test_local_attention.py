"""Local attention (Luong et al. 2015, section 3.2) against a NumPy reference of its equations."""

import keras
import numpy as np
import pytest
from gradients import gradients
from test_attention import inputs, make_layer, np_scores, np_values, weights_of

from multiattn import BeamSearch, Seq2Seq
from multiattn.attention import LOCAL_MODES, LocalAttention
from multiattn.decoders import AttentionDecoder

WINDOW = 2
SCORES = ["bahdanau", "luong-dot", "luong-general", "key-value"]


def local_layer(score, local, **kwargs):
    return LocalAttention(make_layer(score), window=WINDOW, local=local, **kwargs)


def np_local(layer, query, value, value_mask, query_positions=None):
    """Weights and context from the paper's equations and the layer's weights."""
    scores = np_scores(layer.attention, query, value)  # (batch, Tq, Tv)
    lengths = value_mask.sum(-1, keepdims=True).astype("float64")  # (batch, 1)
    if layer.local == "monotonic":
        if query_positions is None:
            query_positions = np.arange(query.shape[1])[None]
        centres = np.minimum(query_positions, lengths - 1)
    else:
        weights = weights_of(layer)
        hidden = np.tanh(query @ weights["position_kernel"]) @ weights["position_vector"]
        centres = lengths / (1 + np.exp(-hidden))  # S * sigmoid(v_p^T tanh(W_p q))
    distances = np.arange(value.shape[1]) - centres[..., None]  # (batch, Tq, Tv)
    attendable = (np.abs(distances) <= layer.window) & value_mask[:, None, :]
    scores = np.where(attendable, scores, -np.inf)
    exp = np.exp(scores - scores.max(-1, keepdims=True))
    weights = exp / exp.sum(-1, keepdims=True)
    if layer.local == "predictive":
        sigma = layer.window / 2
        weights = weights * np.exp(-(distances**2) / (2 * sigma**2))
    return weights, weights @ np_values(layer.attention, value)


def shifted_weights(layer, rng):
    """Every weight moved away from its initial value, so each term matters."""
    for variable in layer.weights:
        variable.assign(variable + rng.normal(size=variable.shape).astype("float32") * 0.5)


@pytest.mark.parametrize("local", LOCAL_MODES)
@pytest.mark.parametrize("score", SCORES)
def test_matches_numpy_reference(score, local, rng):
    layer = local_layer(score, local)
    query, value = inputs(rng, query_len=6, value_len=9)
    value_mask = np.ones((2, 9), bool)
    value_mask[1, 4:] = False  # a shorter memory: S = 4, and local-m clamps p_t to 3
    layer.build(query.shape, value.shape)
    shifted_weights(layer, rng)
    context, weights = layer(query, value, value_mask=value_mask)
    expected_weights, expected_context = np_local(layer, query, value, value_mask)
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(context, expected_context, rtol=1e-4, atol=1e-5)
    # Nothing outside the window or the memory is attended to.
    assert np.all(np.asarray(weights)[expected_weights == 0] == 0)
    assert np.all(np.asarray(weights)[1, :, 4:] == 0)


def test_monotonic_window_follows_the_given_positions(rng):
    layer = local_layer("luong-dot", "monotonic")
    query, value = inputs(rng, query_len=1, value_len=9)
    value_mask = np.ones((2, 9), bool)
    positions = np.array([[0], [6]], "int32")  # one step each, as a decoder passes them
    _, weights = layer(query, value, value_mask=value_mask, query_positions=positions)
    expected, _ = np_local(layer, query, value, value_mask, positions)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-7)
    attended = [list(np.flatnonzero(np.asarray(row[0]))) for row in weights]
    assert attended == [[0, 1, 2], [4, 5, 6, 7, 8]]


def test_predictive_gradients_reach_the_position_weights(rng):
    layer = local_layer("luong-general", "predictive")
    query, value = inputs(rng, query_len=4, value_len=9)
    layer(query, value)

    def loss():
        context, _ = layer(query, value)
        return keras.ops.sum(context**2)

    found, _ = gradients(loss, layer.trainable_variables)
    names = [variable.path.split("/")[-1] for variable in layer.trainable_variables]
    assert {"kernel", "position_kernel", "position_vector"} <= set(names)
    for name, gradient in zip(names, found, strict=True):
        assert np.any(gradient != 0), name


@pytest.mark.parametrize("local", LOCAL_MODES)
def test_mixed_precision(local, rng):
    query, value = inputs(rng, query_len=4, value_len=9)
    value_mask = np.ones((2, 9), bool)
    value_mask[1, 5:] = False
    reference = local_layer("bahdanau", local)
    expected_context, expected_weights = reference(query, value, value_mask=value_mask)
    layer = local_layer("bahdanau", local, dtype="mixed_bfloat16")
    layer.build(query.shape, value.shape)
    layer.set_weights(reference.get_weights())
    context, weights = layer(query, value, value_mask=value_mask)
    assert keras.backend.standardize_dtype(context.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(weights.dtype) == "bfloat16"
    weights = keras.ops.convert_to_numpy(keras.ops.cast(weights, "float32"))
    np.testing.assert_allclose(weights, expected_weights, atol=0.05)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(context, "float32")), expected_context, atol=0.1
    )
    assert np.all(weights[1, :, 5:] == 0)


@pytest.mark.parametrize("local", LOCAL_MODES)
def test_keras_file_round_trip(local, rng, tmp_path):
    query_input = keras.Input(shape=(4, 6))
    value_input = keras.Input(shape=(9, 6))
    outputs = local_layer("luong-general", local)(query_input, value_input)
    model = keras.Model([query_input, value_input], list(outputs))
    query, value = inputs(rng, query_len=4, value_len=9)
    expected = model.predict([query, value], verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert isinstance(loaded.layers[-1], LocalAttention)
    assert loaded.layers[-1].local == local and loaded.layers[-1].window == WINDOW
    for got, want in zip(loaded.predict([query, value], verbose=0), expected, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("local", LOCAL_MODES)
def test_beam_search_steps_through_the_window(local, rng):
    """Search calls the decoder's `step`: beam 1 is greedy, and beam 3 keeps the windows."""
    attention = local_layer("luong-general", local)
    decoder = AttentionDecoder(12, 8, 6, attention=attention, attention_order="luong")
    model = Seq2Seq(keras.layers.Identity(), decoder, start_id=1, end_id=2)
    memory = rng.normal(size=(3, 9, 6)).astype("float32")
    model((memory, np.ones((3, 2), "int32")))
    shifted_weights(model, rng)
    greedy = model.generate(memory, search="greedy", max_length=8)
    beam = model.generate(memory, search=BeamSearch(beam_size=1), max_length=8)
    np.testing.assert_array_equal(beam["tokens"][:, 0], greedy["tokens"])
    result = model.generate(memory, search=BeamSearch(beam_size=3), max_length=8)
    alignment = result["attention"][:, 0]  # (batch, steps, source)
    attended = np.sum(alignment > 0, axis=-1)
    assert np.all(attended <= 2 * WINDOW + 1)
    if local == "monotonic":  # step t attends to [t - 2, t + 2]
        for step in range(alignment.shape[1]):
            outside = np.abs(np.arange(9) - min(step, 8)) > WINDOW
            assert np.all(alignment[:, step, outside] == 0)


def test_clear_errors():
    with pytest.raises(ValueError, match="window"):
        LocalAttention(make_layer("luong-dot"), window=0)
    with pytest.raises(ValueError, match="local"):
        LocalAttention(make_layer("luong-dot"), window=2, local="sideways")
    with pytest.raises(ValueError, match="no hard mode"):
        LocalAttention(make_layer("luong-dot"), window=2, hard=True)
    with pytest.raises(ValueError, match="no dropout and no hard mode"):
        LocalAttention(make_layer("luong-dot", hard=True), window=2)
    with pytest.raises(ValueError, match="scores"):
        LocalAttention(local_layer("luong-dot", "monotonic"), window=2)
