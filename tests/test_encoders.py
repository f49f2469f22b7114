import gc
from pathlib import Path

import keras
import numpy as np
import pytest
from gradients import gradients

from multiattn.encoders import BiLSTMEncoder, ImageGridEncoder

OFFICIAL_MOBILENET_WEIGHTS = (
    Path(__file__).parents[2] / "shared/data/keras_weights/mobilenet_2_5_224_tf_no_top.h5"
)

# Two right-padded rows of real lengths 3 and 2.
TOKEN_IDS = np.array([[3, 7, 2, 0], [5, 1, 0, 0]], dtype="int32")
REAL_LENGTHS = (3, 2)


def _numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def _assert_close(actual, expected, rtol=1e-5):
    # Randomly initialised deep backbones give tiny features: tolerances are relative
    # to the largest one.
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def _assert_differ(a, b):
    assert np.abs(a - b).max() > 1e-3 * max(np.abs(a).max(), np.abs(b).max())


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_lstm(inputs, cell):
    """Runs a Keras LSTM cell (gate order i, f, c, o) over `inputs` `(time, dim)`."""
    kernel, recurrent_kernel, bias = (_numpy(w) for w in cell.weights)
    units = recurrent_kernel.shape[0]
    h, c = np.zeros(units), np.zeros(units)
    outputs = []
    for x in inputs:
        z = x @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = (z[k * units : (k + 1) * units] for k in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs), h, c


def _images(size, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, (batch, size, size, 3)).astype("float32")


def _round_trip(model, tmp_path):
    path = tmp_path / "model.keras"
    model.save(path)
    return keras.models.load_model(path, safe_mode=True)


# -- BiLSTMEncoder ------------------------------------------------------------


@pytest.mark.parametrize("num_layers", [1, 2])
def test_bilstm_shapes_and_mask(num_layers):
    encoder = BiLSTMEncoder(vocab_size=10, embedding_dim=4, units=6, num_layers=num_layers)
    memory, memory_mask, (h, c) = encoder(TOKEN_IDS)
    assert tuple(memory.shape) == (2, 4, 6)
    assert tuple(h.shape) == tuple(c.shape) == (2, 6)
    np.testing.assert_array_equal(_numpy(memory_mask), TOKEN_IDS != 0)
    assert _numpy(memory_mask).dtype == bool


def test_bilstm_without_mask_zero_treats_zero_as_a_token():
    encoder = BiLSTMEncoder(vocab_size=10, embedding_dim=4, units=6, mask_zero=False)
    memory, memory_mask, _ = encoder(TOKEN_IDS)
    assert _numpy(memory_mask).all()
    assert np.abs(_numpy(memory)[:, -1]).min() > 0  # the trailing zeros were read


@pytest.mark.parametrize("num_layers", [1, 2])
def test_bilstm_padding_changes_nothing(num_layers):
    encoder = BiLSTMEncoder(vocab_size=10, embedding_dim=4, units=6, num_layers=num_layers)
    memory, _, (h, c) = encoder(TOKEN_IDS)
    padded_memory, _, (padded_h, padded_c) = encoder(np.pad(TOKEN_IDS, ((0, 0), (0, 5))))
    memory, padded_memory = _numpy(memory), _numpy(padded_memory)
    for row, length in enumerate(REAL_LENGTHS):
        _assert_close(padded_memory[row, :length], memory[row, :length])
        assert not padded_memory[row, length:].any()  # padded positions are zero
    _assert_close(_numpy(padded_h), _numpy(h))
    _assert_close(_numpy(padded_c), _numpy(c))


def test_bilstm_matches_numpy_lstm_in_both_directions():
    encoder = BiLSTMEncoder(vocab_size=10, embedding_dim=4, units=6)
    encoder.build(TOKEN_IDS.shape)
    # Embeddings of unit scale, so that the states are far from zero.
    embeddings = np.random.default_rng(2).normal(size=(10, 4)).astype("float32")
    encoder.embedding.embeddings.assign(embeddings)
    memory, _, (h, c) = encoder(TOKEN_IDS)
    memory, h, c = _numpy(memory), _numpy(h), _numpy(c)
    for row, length in enumerate(REAL_LENGTHS):
        inputs = embeddings[TOKEN_IDS[row, :length]]  # (length, embedding_dim)
        forward, forward_h, forward_c = _numpy_lstm(inputs, encoder.forward_layers[0].cell)
        backward, backward_h, backward_c = _numpy_lstm(
            inputs[::-1], encoder.backward_layers[0].cell
        )
        # The backward states are aligned with the positions they were read at.
        expected_memory = np.concatenate([forward, backward[::-1]], axis=-1)
        _assert_close(memory[row, :length], expected_memory, rtol=1e-4)
        _assert_close(h[row], np.concatenate([forward_h, backward_h]), rtol=1e-4)
        _assert_close(c[row], np.concatenate([forward_c, backward_c]), rtol=1e-4)
        # The backward LSTM ends on the first real token.
        _assert_close(h[row, 3:], memory[row, 0, 3:])
        # Every position holds a state far from zero, so the comparison above means something.
        assert np.abs(memory[row, :length]).max(axis=-1).min() > 1e-2


def test_bilstm_gradients_reach_every_weight():
    encoder = BiLSTMEncoder(vocab_size=10, embedding_dim=4, units=6, num_layers=2, dropout=0.2)
    encoder.build(TOKEN_IDS.shape)
    rng = np.random.default_rng(1)
    memory, _, (h, c) = encoder(TOKEN_IDS)
    # Random weights, so that no output sums to a constant.
    memory_weights, h_weights, c_weights = (
        rng.normal(size=tuple(x.shape)).astype("float32") for x in (memory, h, c)
    )

    def loss():
        memory, _, (h, c) = encoder(TOKEN_IDS, training=True)
        outputs = zip((memory, h, c), (memory_weights, h_weights, c_weights), strict=True)
        return sum(keras.ops.sum(keras.ops.multiply(x, weights)) for x, weights in outputs)

    variables = encoder.trainable_weights
    assert len(variables) == 1 + 2 * 2 * 3  # embeddings + (kernel, recurrent, bias) x 4
    for variable, gradient in zip(variables, gradients(loss, variables)[0], strict=True):
        assert np.abs(gradient).max() > 0, variable.path


def test_bilstm_dropout_only_in_training():
    encoder = BiLSTMEncoder(vocab_size=10, embedding_dim=4, units=6, dropout=0.5, seed=3)
    inference_a, _, _ = encoder(TOKEN_IDS)
    inference_b, _, _ = encoder(TOKEN_IDS, training=False)
    training, _, _ = encoder(TOKEN_IDS, training=True)
    np.testing.assert_array_equal(_numpy(inference_a), _numpy(inference_b))
    _assert_differ(_numpy(training), _numpy(inference_a))


def test_bilstm_functional_model_keras_round_trip(tmp_path):
    token_ids = keras.Input(shape=(None,), dtype="int32")
    encoder = BiLSTMEncoder(vocab_size=10, embedding_dim=4, units=6, num_layers=2, dropout=0.1)
    memory, memory_mask, (h, c) = encoder(token_ids)
    assert tuple(memory.shape) == (None, None, 6) and memory_mask.dtype == "bool"
    model = keras.Model(token_ids, [memory, memory_mask, h, c])
    restored = _round_trip(model, tmp_path)
    restored_encoder = restored.layers[1]
    assert isinstance(restored_encoder, BiLSTMEncoder)
    assert restored_encoder.get_config() == encoder.get_config()
    for expected, actual in zip(model(TOKEN_IDS), restored(TOKEN_IDS), strict=True):
        np.testing.assert_array_equal(_numpy(actual), _numpy(expected))
    # The mask also reaches the LSTMs in the functional graph.
    _, _, h, c = model(TOKEN_IDS)
    _, _, padded_h, padded_c = model(np.pad(TOKEN_IDS, ((0, 0), (0, 3))))
    _assert_close(_numpy(padded_h), _numpy(h))
    _assert_close(_numpy(padded_c), _numpy(c))
    # A freshly initialised twin differs, so the weights did come from the file.
    twin = BiLSTMEncoder.from_config(encoder.get_config())
    _assert_differ(_numpy(twin(TOKEN_IDS)[0]), _numpy(model(TOKEN_IDS)[0]))


def test_bilstm_builds_distinct_lstms_while_a_model_loads():
    # `load_model` builds layers inside Keras' object-sharing scope, which maps the
    # addresses of objects it serialized to objects it rebuilt. A layer that
    # serializes a temporary inside `__init__` (as `keras.layers.Bidirectional` does)
    # can then get back another layer once the temporary's address is reused:
    # the CI failure "Forward layer and backward layer should have different
    # `go_backwards` value". Garbage collection between constructions frees the
    # temporaries, so their addresses are reused.
    from keras.src.saving.serialization_lib import ObjectSharingScope

    encoders = []
    with ObjectSharingScope():
        for _ in range(40):
            gc.collect()
            encoders.append(BiLSTMEncoder(vocab_size=10, embedding_dim=4, units=6))
    lstms = [layer for e in encoders for layer in (*e.forward_layers, *e.backward_layers)]
    assert len({id(layer) for layer in lstms}) == len(lstms) == 80
    assert [layer.go_backwards for layer in lstms[:2]] == [False, True]


@pytest.mark.parametrize("units", [7, 1])
def test_bilstm_rejects_odd_units(units):
    with pytest.raises(ValueError, match=r"`units` must be a positive even number.*units // 2"):
        BiLSTMEncoder(vocab_size=10, embedding_dim=4, units=units)


# -- ImageGridEncoder -----------------------------------------------------------

# backbone, constructor arguments, image size, grid, backbone channels
BACKBONE_CASES = [
    ("small_cnn", {"filters": (4, 8)}, 32, (8, 8), 8),
    ("mobilenet", {"alpha": 0.25}, 64, (2, 2), 256),
    ("mobilenet_v2", {"alpha": 0.35}, 64, (2, 2), 1280),
    ("efficientnet_b0", {}, 64, (2, 2), 1280),
    ("resnet50", {}, 64, (2, 2), 2048),
]
PREPROCESS = {
    "small_cnn": lambda images: images / 255.0,
    "mobilenet": keras.applications.mobilenet.preprocess_input,
    "mobilenet_v2": keras.applications.mobilenet_v2.preprocess_input,
    "efficientnet_b0": keras.applications.efficientnet.preprocess_input,
    "resnet50": keras.applications.resnet50.preprocess_input,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "backbone, arguments, size, grid, channels", BACKBONE_CASES, ids=[c[0] for c in BACKBONE_CASES]
)
def test_image_grid_regions_are_the_backbone_feature_map(backbone, arguments, size, grid, channels):
    encoder = ImageGridEncoder(backbone, **arguments)
    images = _images(size)
    untouched = images.copy()
    regions = _numpy(encoder(images))
    np.testing.assert_array_equal(images, untouched)  # the caller's array is not modified
    regions_count = grid[0] * grid[1]
    assert regions.shape == (2, regions_count, channels)
    assert encoder.grid_shape((size, size)) == grid
    assert encoder.compute_output_shape((None, size, size, 3)) == (None, regions_count, channels)
    # Region i * W + j is the cell (i, j) of the feature map of the preprocessed images.
    features = _numpy(encoder.backbone_model(PREPROCESS[backbone](images.copy()), training=False))
    _assert_close(regions.reshape(2, *grid, channels), features)


def test_image_grid_projection_and_functional_shapes():
    encoder = ImageGridEncoder("small_cnn", units=5, filters=(4, 8, 8))
    images = keras.Input(shape=(None, None, 3))
    assert tuple(encoder(images).shape) == (None, None, 5)
    assert tuple(encoder(_images(40)).shape) == (2, 25, 5)  # 40 / 2**3 = 5, any image size
    assert encoder.compute_output_shape((3, 16, 24, 3)) == (3, 6, 5)
    assert encoder.projection.activation is keras.activations.linear


@pytest.mark.parametrize(
    "backbone, arguments", [("small_cnn", {"filters": (4, 8)}), ("mobilenet", {"alpha": 0.25})]
)
@pytest.mark.parametrize("trainable_backbone", [False, True])
def test_image_grid_frozen_or_fine_tuned_backbone(backbone, arguments, trainable_backbone):
    encoder = ImageGridEncoder(
        backbone, units=4, trainable_backbone=trainable_backbone, **arguments
    )
    images = _images(32, batch=4)
    inference = _numpy(encoder(images, training=False))
    moving_statistics = [_numpy(w) for w in encoder.backbone_model.non_trainable_weights]
    training = _numpy(encoder(images, training=True))
    statistics_changed = any(
        not np.array_equal(before, _numpy(after))
        for before, after in zip(
            moving_statistics, encoder.backbone_model.non_trainable_weights, strict=True
        )
    )
    projection_weights = encoder.projection.trainable_weights
    if trainable_backbone:
        assert len(encoder.backbone_model.trainable_weights) > 0
        assert len(encoder.trainable_weights) > len(projection_weights)
        # BatchNorm uses and updates batch statistics when fine-tuning.
        assert statistics_changed
        _assert_differ(training, inference)
    else:
        assert encoder.backbone_model.trainable_weights == []
        assert [id(w) for w in encoder.trainable_weights] == [id(w) for w in projection_weights]
        # BatchNorm of a frozen backbone stays in inference mode.
        assert not statistics_changed
        _assert_close(training, inference, rtol=1e-6)


@pytest.mark.parametrize("weights, trainable", [(None, True), ("some.weights.h5", False)])
def test_image_grid_freezes_only_pretrained_backbones_by_default(weights, trainable):
    assert ImageGridEncoder("mobilenet", weights=weights).backbone_is_trainable is trainable


def _mobilenet_025():
    return keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=None, input_shape=(None, None, 3)
    )


@pytest.mark.slow
def test_image_grid_loads_a_local_weights_file_and_reloads_without_it(tmp_path):
    source = _mobilenet_025()
    weights_path = tmp_path / "mobilenet.weights.h5"
    source.save_weights(weights_path)
    images = _images(64)
    expected = _numpy(source(keras.applications.mobilenet.preprocess_input(images.copy())))

    encoder = ImageGridEncoder("mobilenet", alpha=0.25, weights=weights_path)  # a Path
    regions = _numpy(encoder(images))
    _assert_close(regions, expected.reshape(2, 4, 256))
    assert encoder.trainable_weights == []  # pretrained weights are frozen by default
    random = _numpy(ImageGridEncoder("mobilenet", alpha=0.25)(images))
    _assert_differ(random, regions)

    # The .keras file carries the weights: loading needs no weights file any more.
    inputs = keras.Input(shape=(None, None, 3))
    model = keras.Model(inputs, encoder(inputs))
    model_path = tmp_path / "model.keras"
    model.save(model_path)
    weights_path.unlink()
    restored = keras.models.load_model(model_path, safe_mode=True)
    assert restored.layers[1].get_config()["weights"] == str(weights_path)
    np.testing.assert_array_equal(_numpy(restored(images)), regions)


@pytest.mark.slow
def test_image_grid_loads_the_official_mobilenet_weights():
    if not OFFICIAL_MOBILENET_WEIGHTS.exists():
        pytest.skip(f"{OFFICIAL_MOBILENET_WEIGHTS} is not there (it sits in ../shared on CI)")
    images = _images(64)
    encoder = ImageGridEncoder("mobilenet", alpha=0.25, weights=str(OFFICIAL_MOBILENET_WEIGHTS))
    regions = _numpy(encoder(images))
    reference = keras.applications.MobileNet(
        alpha=0.25,
        include_top=False,
        weights=str(OFFICIAL_MOBILENET_WEIGHTS),
        input_shape=(64, 64, 3),
    )
    expected = _numpy(reference(keras.applications.mobilenet.preprocess_input(images.copy())))
    _assert_close(regions, expected.reshape(2, 4, 256))
    random = _numpy(ImageGridEncoder("mobilenet", alpha=0.25)(images))
    _assert_differ(random, regions)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backbone, arguments",
    [("small_cnn", {"filters": (4, 8), "units": 6}), ("mobilenet", {"alpha": 0.25})],
)
def test_image_grid_keras_round_trip(backbone, arguments, tmp_path):
    encoder = ImageGridEncoder(backbone, trainable_backbone=True, **arguments)
    images = _images(64)
    encoder(images, training=True)  # moves the BatchNorm statistics away from their init
    inputs = keras.Input(shape=(None, None, 3))
    model = keras.Model(inputs, encoder(inputs))
    restored = _round_trip(model, tmp_path)
    restored_encoder = restored.layers[1]
    assert isinstance(restored_encoder, ImageGridEncoder)
    assert restored_encoder.get_config() == encoder.get_config()
    assert len(restored_encoder.weights) == len(encoder.weights)
    for expected, actual in zip(encoder.weights, restored_encoder.weights, strict=True):
        np.testing.assert_array_equal(_numpy(actual), _numpy(expected), err_msg=expected.path)
    np.testing.assert_array_equal(_numpy(restored(images)), _numpy(model(images)))
    twin = ImageGridEncoder.from_config(encoder.get_config())
    _assert_differ(_numpy(twin(images)), _numpy(model(images)))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"backbone": "vgg16"}, "Unknown backbone 'vgg16'; expected one of small_cnn"),
        ({"backbone": "resnet50", "alpha": 0.5}, "`alpha` is the width of mobilenet"),
        ({"backbone": "mobilenet", "filters": (8,)}, "`filters` configures `small_cnn` only"),
        ({"backbone": "small_cnn", "weights": "imagenet"}, "`small_cnn` has no ImageNet"),
    ],
)
def test_image_grid_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        ImageGridEncoder(**arguments)


def test_image_grid_reports_a_missing_weights_file(tmp_path):
    encoder = ImageGridEncoder("mobilenet", weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="Backbone weights file not found"):
        encoder(_images(32))


@pytest.mark.parametrize("units", [None, 5])
def test_image_grid_coordinates_mark_each_region(units):
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 24, 3)).astype("float32")
    encoder = ImageGridEncoder("small_cnn", units=units, filters=(4, 4), coordinates=True)
    regions = np.asarray(encoder(images))
    assert regions.shape == tuple(encoder.compute_output_shape(images.shape))
    if units is None:
        height, width = encoder.grid_shape((32, 24))  # (8, 6)
        rows = np.repeat(np.linspace(-1, 1, height), width)
        columns = np.tile(np.linspace(-1, 1, width), height)
        np.testing.assert_allclose(regions[0, :, -2], rows, atol=1e-6)
        np.testing.assert_allclose(regions[1, :, -1], columns, atol=1e-6)
        plain = ImageGridEncoder("small_cnn", filters=(4, 4))
        plain.build(images.shape)
        plain.set_weights(encoder.get_weights())
        np.testing.assert_allclose(regions[..., :-2], plain(images), atol=1e-6)
    clone = ImageGridEncoder.from_config(encoder.get_config())
    assert clone.coordinates


# -- fine-tuning the top of a backbone ----------------------------------------------------
TUNED_KERNELS = ["conv_dw_12", "conv_pw_12", "conv_dw_13", "conv_pw_13"]  # MobileNet's last two


def _saved_with_random_batch_norm(source, path, seed):
    """Gives `source`'s BatchNorm layers random moving means, saves its weights to `path`,
    and returns `(path, source)`."""
    for layer in source.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            mean = np.random.default_rng(seed).normal(size=layer.moving_mean.shape)
            layer.moving_mean.assign(mean.astype("float32"))
    source.save_weights(path)
    return path, source


@pytest.fixture
def mobilenet_weights(tmp_path):
    """A MobileNet (alpha 0.25) weights file and the model that wrote it."""
    # Random BatchNorm statistics, so that a BatchNorm in training mode would show.
    return _saved_with_random_batch_norm(
        _mobilenet_025(), tmp_path / "mobilenet.weights.h5", seed=1
    )


def test_fine_tune_from_trains_the_later_layers_without_their_batch_norm(mobilenet_weights):
    path, source = mobilenet_weights
    encoder = ImageGridEncoder(
        "mobilenet", alpha=0.25, weights=path, units=3, fine_tune_from="conv_dw_12"
    )
    images = _images(64, batch=4)
    inference = _numpy(encoder(images, training=False))
    trained = sorted(w.path.split("/")[-2] for w in encoder.trainable_weights)
    assert trained == sorted([*TUNED_KERNELS, "projection", "projection"])  # kernel, bias
    statistics = [_numpy(w) for w in encoder.non_trainable_weights]
    np.testing.assert_array_equal(_numpy(encoder(images, training=True)), inference)
    for before, after in zip(statistics, encoder.non_trainable_weights, strict=True):
        np.testing.assert_array_equal(before, _numpy(after))

    # frozen_features: the backbone's output before conv_dw_12, from raw pixels.
    before = keras.Model(source.input, source.get_layer("conv_pad_12").output)
    expected = _numpy(before(keras.applications.mobilenet.preprocess_input(images.copy())))
    frozen = _numpy(encoder.frozen_features(images))
    _assert_close(frozen, expected)
    assert encoder.frozen_part.layers[-1].name == "conv_pad_12"
    assert encoder.tuned_part.layers[1].name == "conv_dw_12"

    # Its twin on those features gives the same regions and has the same weights.
    twin = ImageGridEncoder(
        "mobilenet", alpha=0.25, units=3, fine_tune_from="conv_dw_12", from_frozen_features=True
    )
    twin.build(frozen.shape)
    twin.set_weights(encoder.get_weights())
    _assert_close(_numpy(twin(frozen)), inference)
    assert twin.compute_output_shape(frozen.shape) == inference.shape

    def layer_names(weights):
        return [w.path.split("/", 1)[1] for w in weights]  # without the encoder's own name

    assert layer_names(twin.trainable_weights) == layer_names(encoder.trainable_weights)


@pytest.mark.slow
def test_fine_tune_from_gradients_reach_only_the_tuned_layers(mobilenet_weights):
    path, _ = mobilenet_weights
    encoder = ImageGridEncoder("mobilenet", alpha=0.25, weights=path, fine_tune_from="conv_dw_13")
    inputs = keras.Input(shape=(None, None, 3))
    model = keras.Model(inputs, encoder(inputs))
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    images = _images(64, batch=4)
    before = {w.path: _numpy(w) for w in model.weights}
    model.fit(images, np.ones((4, 4, 256), "float32"), epochs=1, verbose=0)
    changed = sorted(
        p.split("/")[-2]
        for p, w in before.items()
        if not np.array_equal(w, _numpy(next(v for v in model.weights if v.path == p)))
    )
    assert changed == ["conv_dw_13", "conv_pw_13"]


@pytest.mark.slow
def test_fine_tune_from_round_trips_through_a_keras_file(mobilenet_weights, tmp_path):
    path, _ = mobilenet_weights
    encoder = ImageGridEncoder("mobilenet", alpha=0.25, weights=path, fine_tune_from="conv_dw_12")
    inputs = keras.Input(shape=(None, None, 3))
    model = keras.Model(inputs, encoder(inputs))
    restored = _round_trip(model, tmp_path)
    restored_encoder = restored.layers[1]
    assert restored_encoder.get_config() == encoder.get_config()
    assert len(restored_encoder.weights) == len(encoder.weights)  # the parts add none
    assert len(restored_encoder.trainable_weights) == len(TUNED_KERNELS)
    images = _images(64)
    np.testing.assert_array_equal(_numpy(restored(images)), _numpy(model(images)))


@pytest.mark.parametrize(
    "backbone, arguments, message",
    [
        ("mobilenet", {"fine_tune_from": "conv_dw_99"}, "'conv_dw_99' is not a layer of the"),
        ("resnet50", {"fine_tune_from": "conv2_block1_2_conv"}, "cannot be cut there"),
    ],
)
def test_fine_tune_from_rejects_a_layer_it_cannot_cut_at(backbone, arguments, message):
    encoder = ImageGridEncoder(backbone, **arguments)
    with pytest.raises(ValueError, match=message):
        encoder(_images(32))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"fine_tune_from": "conv_dw_12", "trainable_backbone": True}, "cannot be combined"),
        ({"from_frozen_features": True}, "needs `fine_tune_from`"),
    ],
)
def test_fine_tune_from_rejects_conflicting_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        ImageGridEncoder("mobilenet", **arguments)


# -- a grid from an intermediate layer ----------------------------------------------------
FEATURE_LAYER = "block_13_expand_relu"  # MobileNetV2's 14 x 14 grid at 224 px


@pytest.fixture
def mobilenet_v2_weights(tmp_path):
    """A MobileNetV2 (alpha 0.35) weights file and the model that wrote it."""
    source = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, weights=None, input_shape=(None, None, 3)
    )
    # Random BatchNorm statistics, so that weights not loaded would show.
    return _saved_with_random_batch_norm(source, tmp_path / "mobilenet_v2.weights.h5", seed=2)


def test_feature_layer_regions_are_that_layers_output(mobilenet_v2_weights):
    path, source = mobilenet_v2_weights
    encoder = ImageGridEncoder(
        "mobilenet_v2", alpha=0.35, weights=path, feature_layer=FEATURE_LAYER
    )
    images = _images(64)
    regions = _numpy(encoder(images))
    assert regions.shape == (2, 4 * 4, 192)  # stride 16: a 4 x 4 grid at 64 px
    assert encoder.grid_shape((64, 64)) == (4, 4)
    assert encoder.grid_shape((224, 224)) == (14, 14)
    assert encoder.compute_output_shape((None, 64, 64, 3)) == (None, 16, 192)
    # The weights file is the whole backbone's: loaded whole, then cut at the layer.
    below = keras.Model(source.input, source.get_layer(FEATURE_LAYER).output)
    expected = _numpy(below(keras.applications.mobilenet_v2.preprocess_input(images.copy())))
    _assert_close(regions, expected.reshape(2, 16, 192))
    # The later layers are not part of the encoder: neither run nor saved.
    assert encoder.backbone_model.layers[-1].name == FEATURE_LAYER
    assert 0 < len(encoder.weights) < len(source.weights)
    random = ImageGridEncoder("mobilenet_v2", alpha=0.35, feature_layer=FEATURE_LAYER)
    _assert_differ(_numpy(random(images)), regions)


@pytest.mark.slow
def test_feature_layer_round_trips_through_a_keras_file(mobilenet_v2_weights, tmp_path):
    path, _ = mobilenet_v2_weights
    encoder = ImageGridEncoder(
        "mobilenet_v2", alpha=0.35, weights=path, feature_layer=FEATURE_LAYER, units=5
    )
    inputs = keras.Input(shape=(None, None, 3))
    model = keras.Model(inputs, encoder(inputs))
    path.unlink()  # the .keras file holds the weights
    restored = _round_trip(model, tmp_path)
    restored_encoder = restored.layers[1]
    assert restored_encoder.get_config() == encoder.get_config()
    assert restored_encoder.get_config()["feature_layer"] == FEATURE_LAYER
    assert len(restored_encoder.weights) == len(encoder.weights)
    images = _images(64)
    np.testing.assert_array_equal(_numpy(restored(images)), _numpy(model(images)))
    assert restored_encoder.grid_shape((224, 224)) == (14, 14)


def test_feature_layer_composes_with_fine_tune_from(mobilenet_v2_weights):
    path, _ = mobilenet_v2_weights
    arguments = {"alpha": 0.35, "feature_layer": FEATURE_LAYER, "fine_tune_from": "block_13_expand"}
    encoder = ImageGridEncoder("mobilenet_v2", weights=path, **arguments)
    images = _images(64)
    regions = _numpy(encoder(images))
    # Fine-tuned from block_13_expand up to the grid: one convolution, its BatchNorm frozen.
    assert [w.path.split("/")[-2] for w in encoder.trainable_weights] == ["block_13_expand"]
    assert encoder.tuned_part.layers[-1].name == FEATURE_LAYER
    frozen = _numpy(encoder.frozen_features(images))
    twin = ImageGridEncoder("mobilenet_v2", from_frozen_features=True, **arguments)
    twin.build(frozen.shape)
    twin.set_weights(encoder.get_weights())
    _assert_close(_numpy(twin(frozen)), regions)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            {"feature_layer": "block_13_expand_rel"},
            "feature_layer='block_13_expand_rel' is not a layer of the 'mobilenet_v2' "
            "backbone; close names: block_13_expand_relu",
        ),
        ({"feature_layer": "conv5_4"}, "layers end with .*, out_relu$"),
        (
            {"feature_layer": FEATURE_LAYER, "fine_tune_from": "block_16_expand"},
            "fine_tune_from='block_16_expand' comes after feature_layer='block_13_expand_relu'",
        ),
    ],
)
def test_feature_layer_names_a_layer_below_the_grid(arguments, message):
    encoder = ImageGridEncoder("mobilenet_v2", alpha=0.35, **arguments)
    with pytest.raises(ValueError, match=message):
        encoder(_images(32))
