"""Attention layers: numerics against NumPy, masking, precision, saving, training."""

import keras
import numpy as np
import pytest
from gradients import gradients

from multiattn import attention
from multiattn.attention import BahdanauAttention, KeyValueAttention, LuongAttention

QUERY_DIM, VALUE_DIM = 6, 6
ALL_NAMES = attention.NAMES


def make_layer(name, **kwargs):
    return attention.get(name, units=8, **kwargs)


def weights_of(layer):
    return {v.path.split("/")[-1]: keras.ops.convert_to_numpy(v) for v in layer.weights}


# -- NumPy references -----------------------------------------------------------
def np_softmax(scores, mask=None):
    scores = scores - scores.max(-1, keepdims=True)
    if mask is not None:
        scores = np.where(mask[:, None, :], scores, -np.inf)
        scores = scores - np.nanmax(np.where(np.isinf(scores), np.nan, scores), -1, keepdims=True)
    exp = np.exp(scores)
    return exp / exp.sum(-1, keepdims=True)


def np_scores(layer, query, value, coverage=None):
    """Scores computed from the layer's weights, straight from the papers' formulas."""
    w = weights_of(layer)
    if isinstance(layer, BahdanauAttention):
        vector = w["score_vector"]
        if layer.normalize:
            vector = w["score_scale"] * vector / np.linalg.norm(vector)
        hidden = (query @ w["query_kernel"])[:, :, None] + (value @ w["key_kernel"])[:, None]
        hidden = hidden + w["bias"]
        if coverage is not None:
            hidden = hidden + coverage[..., None] * w["coverage_kernel"]
        return np.tanh(hidden) @ vector
    if isinstance(layer, LuongAttention):
        if layer.score_mode == "dot":
            scores = np.einsum("bqd,bvd->bqv", query, value)
        elif layer.score_mode == "general":
            general = w["kernel"].T  # (dq, dk): q^T W k
            scores = np.einsum("bqd,de,bve->bqv", query, general, value)
        else:
            both = np.concatenate(
                [
                    np.broadcast_to(
                        query[:, :, None], (*query.shape[:2], value.shape[1], QUERY_DIM)
                    ),
                    np.broadcast_to(
                        value[:, None], (query.shape[0], query.shape[1], *value.shape[1:])
                    ),
                ],
                axis=-1,
            )
            concat_kernel = np.concatenate([w["query_kernel"], w["key_kernel"]], axis=0)
            scores = np.tanh(both @ concat_kernel) @ w["score_vector"]
        if layer.use_scale:
            scores = scores * w["scale"]
        return scores
    assert isinstance(layer, KeyValueAttention)
    query_projection = query @ w_kernel(layer.query_dense)
    key_projection = value @ w_kernel(layer.key_dense)
    return np.einsum("bqd,bvd->bqv", query_projection, key_projection) / np.sqrt(layer.key_units)


def w_kernel(dense):
    return keras.ops.convert_to_numpy(dense.kernel)


def np_values(layer, value):
    if isinstance(layer, KeyValueAttention):
        return value @ w_kernel(layer.value_dense)
    return value


def inputs(rng, batch=2, query_len=3, value_len=5):
    query = rng.normal(size=(batch, query_len, QUERY_DIM)).astype("float32")
    value = rng.normal(size=(batch, value_len, VALUE_DIM)).astype("float32")
    return query, value


LAYER_VARIANTS = [
    ("bahdanau", {}),
    ("bahdanau", {"normalize": True}),
    ("luong-dot", {}),
    ("luong-dot", {"use_scale": True}),
    ("luong-general", {}),
    ("luong-concat", {}),
    ("key-value", {}),
]


@pytest.mark.parametrize("name,kwargs", LAYER_VARIANTS)
def test_matches_numpy_reference(name, kwargs, rng):
    layer = make_layer(name, **kwargs)
    query, value = inputs(rng)
    value_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 1, 0]], bool)
    layer.build(query.shape, value.shape)
    # Move every weight away from its initial value so scale/bias terms are exercised.
    for variable in layer.weights:
        variable.assign(variable + rng.normal(size=variable.shape).astype("float32") * 0.3)
    context, weights = layer(query, value, value_mask=value_mask)

    expected_weights = np_softmax(np_scores(layer, query, value), value_mask)
    expected_context = expected_weights @ np_values(layer, value)
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(context, expected_context, rtol=1e-4, atol=1e-5)


def test_bahdanau_coverage_matches_numpy(rng):
    layer = BahdanauAttention(units=8, use_coverage=True)
    query, value = inputs(rng)
    coverage = rng.uniform(size=(2, 3, 5)).astype("float32")
    _, weights = layer(query, value, coverage=coverage)
    _, weights_without = layer(query, value, coverage=np.zeros_like(coverage))
    np.testing.assert_allclose(
        weights, np_softmax(np_scores(layer, query, value, coverage)), rtol=1e-4, atol=1e-6
    )
    assert not np.allclose(weights, weights_without)


def test_separate_key_is_scored_and_value_is_summed(rng):
    layer = LuongAttention("dot")
    query, value = inputs(rng)
    key = rng.normal(size=value.shape).astype("float32")
    context, weights = layer(query, value, key=key)
    expected = np_softmax(np.einsum("bqd,bvd->bqv", query, key))
    np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(context, expected @ value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_masking_zero_weights_and_fully_masked_rows(name, rng):
    layer = make_layer(name)
    query, value = inputs(rng, batch=3)
    value_mask = np.array([[1, 0, 1, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
    query_mask = np.array([[1, 1, 0], [1, 1, 1], [1, 1, 1]], bool)
    context, weights = layer(query, value, query_mask=query_mask, value_mask=value_mask)
    weights, context = np.asarray(weights), np.asarray(context)
    assert np.all(np.isfinite(weights)) and np.all(np.isfinite(context))
    assert np.all(weights[0][:, ~value_mask[0]] == 0.0)
    np.testing.assert_allclose(weights[0, :2].sum(-1), 1.0, rtol=1e-5)
    # Masked query, fully masked memory: zero weights and zero context.
    assert np.all(weights[0, 2] == 0.0) and np.all(context[0, 2] == 0.0)
    assert np.all(weights[1] == 0.0) and np.all(context[1] == 0.0)
    np.testing.assert_allclose(weights[2].sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_padding_invariance(name, rng):
    layer = make_layer(name)
    query, value = inputs(rng, value_len=4)
    context, weights = layer(query, value)
    padding = rng.normal(size=(2, 3, VALUE_DIM)).astype("float32") * 10
    padded_value = np.concatenate([value, padding], axis=1)
    value_mask = np.arange(7)[None].repeat(2, 0) < 4
    padded_context, padded_weights = layer(query, padded_value, value_mask=value_mask)
    np.testing.assert_allclose(padded_context, context, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(padded_weights)[..., :4], weights, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(padded_weights)[..., 4:] == 0.0)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_masks_propagate_from_embedding(name, rng):
    query_ids = keras.Input(shape=(None,), dtype="int32")
    value_ids = keras.Input(shape=(None,), dtype="int32")
    embedding = keras.layers.Embedding(20, QUERY_DIM, mask_zero=True)
    context, weights = make_layer(name)(embedding(query_ids), embedding(value_ids))
    model = keras.Model([query_ids, value_ids], [context, weights])
    query = np.array([[3, 4, 0], [5, 0, 0]])
    value = np.array([[1, 2, 3, 0, 0], [7, 8, 9, 10, 11]])
    context, weights = (np.asarray(x) for x in model.predict([query, value], verbose=0))
    assert np.all(weights[0, :, 3:] == 0.0)
    np.testing.assert_allclose(weights[0, :2].sum(-1), 1.0, rtol=1e-5)
    # Padded queries give zero context.
    assert np.all(context[0, 2] == 0.0) and np.all(context[1, 1:] == 0.0)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_mixed_precision(policy, name, rng):
    query, value = inputs(rng)
    value_mask = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], bool)
    reference = make_layer(name)
    expected_context, expected_weights = reference(query, value, value_mask=value_mask)
    layer = make_layer(name, dtype=policy)
    layer.build(query.shape, value.shape)
    layer.set_weights(reference.get_weights())
    context, weights = layer(query, value, value_mask=value_mask)
    assert keras.backend.standardize_dtype(context.dtype) == policy.split("_")[1]
    context, weights = (
        keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")) for x in (context, weights)
    )
    assert np.all(np.isfinite(context)) and np.all(np.isfinite(weights))
    assert np.all(weights[0, :, 3:] == 0.0) and np.all(weights[1] == 0.0)
    np.testing.assert_allclose(weights, expected_weights, atol=0.05)
    np.testing.assert_allclose(context, expected_context, atol=0.1)


# luong-dot without a scale has no weights, so it is left out here; its gradients (and
# every other variant's) are checked against the inputs below.
WEIGHTED_VARIANTS = [
    ("bahdanau", {"use_coverage": True}),
    ("bahdanau", {"normalize": True}),
    ("luong-dot", {"use_scale": True}),
    ("luong-general", {}),
    ("luong-concat", {}),
    ("key-value", {}),
]


@pytest.mark.parametrize("name,kwargs", WEIGHTED_VARIANTS)
def test_gradients_reach_every_weight(name, kwargs, rng):
    layer = make_layer(name, **kwargs)
    query, value = inputs(rng)
    coverage = {"coverage": np.ones((2, 3, 5), "float32")} if kwargs.get("use_coverage") else {}
    layer(query, value, **coverage)

    def loss():
        context, _ = layer(query, value, **coverage)
        return keras.ops.sum(context**2)

    found, _ = gradients(loss, layer.trainable_variables)
    assert len(found) == len(layer.weights) > 0
    for variable, gradient in zip(layer.trainable_variables, found, strict=True):
        assert np.any(gradient != 0), variable.path


def np_loss(layer, query, value, value_mask):
    """`sum(context**2)` of the NumPy reference, in float64."""
    weights = np_softmax(np_scores(layer, query, value), value_mask)
    return np.sum((weights @ np_values(layer, value)) ** 2)


def np_numeric_gradient(function, array, step=1e-5):
    """Central finite differences of `function` with respect to each entry of `array`."""
    array = array.astype("float64")
    gradient = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        plus, minus = array.copy(), array.copy()
        plus[index] += step
        minus[index] -= step
        gradient[index] = (function(plus) - function(minus)) / (2 * step)
    return gradient


@pytest.mark.parametrize("name,kwargs", LAYER_VARIANTS)
def test_input_gradients_match_finite_differences(name, kwargs, rng):
    """Gradients reach the query and the memory, luong-dot's included (it has no weights)."""
    layer = make_layer(name, **kwargs)
    query, value = inputs(rng)
    value_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 1, 0]], bool)
    layer.build(query.shape, value.shape)
    for variable in layer.weights:
        variable.assign(variable + rng.normal(size=variable.shape).astype("float32") * 0.3)

    def loss(query, value):
        context, _ = layer(query, value, value_mask=value_mask)
        return keras.ops.sum(context**2)

    _, (query_gradient, value_gradient) = gradients(loss, inputs=(query, value))

    expected_query = np_numeric_gradient(lambda q: np_loss(layer, q, value, value_mask), query)
    expected_value = np_numeric_gradient(lambda v: np_loss(layer, query, v, value_mask), value)
    np.testing.assert_allclose(query_gradient, expected_query, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(value_gradient, expected_value, rtol=1e-3, atol=1e-4)
    # Masked memory positions take no part, so they get exactly no gradient.
    assert np.all(value_gradient[1, [2, 4]] == 0.0)
    assert np.all(np.abs(value_gradient[:, :2]) > 0)


@pytest.mark.parametrize("name,kwargs", LAYER_VARIANTS)
def test_config_round_trip(name, kwargs, rng):
    layer = make_layer(name, dropout=0.1, seed=3, **kwargs)
    query, value = inputs(rng)
    context, _ = layer(query, value)
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    clone.build(query.shape, value.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(query, value)[0], context, rtol=1e-6)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_keras_file_round_trip(name, rng, tmp_path):
    query_input = keras.Input(shape=(3, QUERY_DIM))
    value_input = keras.Input(shape=(5, VALUE_DIM))
    context, weights = make_layer(name)(query_input, value_input)
    model = keras.Model([query_input, value_input], [context, weights])
    query, value = inputs(rng)
    expected = model.predict([query, value], verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for got, want in zip(loaded.predict([query, value], verbose=0), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_get_names_and_errors():
    assert isinstance(attention.get("bahdanau"), BahdanauAttention)
    for mode in ("dot", "general", "concat"):
        assert attention.get(f"luong-{mode}").score_mode == mode
    assert isinstance(attention.get("key-value", units=4), KeyValueAttention)
    layer = LuongAttention("dot")
    assert attention.get(layer) is layer
    with pytest.raises(ValueError, match="Unknown attention 'luong-cosine'"):
        attention.get("luong-cosine")
    with pytest.raises(ValueError, match="score_mode"):
        LuongAttention("cosine")


def test_clear_errors(rng):
    query, value = inputs(rng)
    with pytest.raises(ValueError, match="same size"):
        LuongAttention("dot")(query, value[..., :4])
    with pytest.raises(ValueError, match="use_coverage=True"):
        LuongAttention("general")(query, value, coverage=np.zeros((2, 3, 5), "float32"))
    with pytest.raises(ValueError, match="dropout"):
        BahdanauAttention(4, dropout=1.5)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_dropout_only_in_training(name, rng):
    layer = make_layer(name, dropout=0.5, seed=1)
    query, value = inputs(rng)
    inference = np.asarray(layer(query, value)[0])
    np.testing.assert_array_equal(inference, layer(query, value, training=False)[0])
    assert not np.allclose(layer(query, value, training=True)[0], inference)
