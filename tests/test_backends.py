"""The library end to end in one small script, the same on every Keras backend.

    KERAS_BACKEND=jax python -m pytest tests/test_backends.py   # or torch, tensorflow

`make test` runs it on TensorFlow and JAX, `make test-backends` on PyTorch as well.
"""

import keras
import numpy as np
import pytest

from multiattn import AttentionDecoder, BeamSearch, BiLSTMEncoder, ImageGridEncoder, Seq2Seq
from multiattn import attention as attention_layers

VOCAB = 9  # 0 padding, 1 start, 2 end, 3-8 symbols


def copy_task(rng, size, length=5):
    """Targets repeat their sources, which are padded after a random length."""
    lengths = rng.integers(2, length + 1, size)
    source = np.zeros((size, length), "int32")
    target_in = np.zeros((size, length + 1), "int32")
    target_out = np.zeros((size, length + 1), "int32")
    for row, count in enumerate(lengths):
        symbols = rng.integers(3, VOCAB, count)
        source[row, :count] = symbols
        target_in[row, 0], target_in[row, 1 : count + 1] = 1, symbols
        target_out[row, :count], target_out[row, count] = symbols, 2
    return source, target_in, target_out


def test_layers_with_masks(rng):
    query = rng.normal(size=(2, 3, 4)).astype("float32")
    value = rng.normal(size=(2, 5, 4)).astype("float32")
    value_mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    for name in attention_layers.NAMES:
        layer = attention_layers.get(name, units=4)
        context, weights = layer(query, value, value_mask=value_mask)
        weights = keras.ops.convert_to_numpy(weights)
        assert keras.ops.convert_to_numpy(context).shape[:2] == (2, 3), name
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5, err_msg=name)
        assert np.all(weights[0, :, 3:] == 0.0), name


@pytest.mark.slow
def test_seq2seq_fits_generates_saves_and_loads(rng, tmp_path):
    source, target_in, target_out = copy_task(rng, 384)
    model = Seq2Seq(
        BiLSTMEncoder(VOCAB, 8, 16),
        AttentionDecoder(VOCAB, 8, 16, attention="bahdanau"),
        start_id=1,
        end_id=2,
    )
    model.compile(keras.optimizers.Adam(0.02, clipnorm=1.0))
    history = model.fit((source, target_in), target_out, batch_size=32, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.6 * losses[0], losses

    greedy = model.generate(source[:16], search="greedy", max_length=6)
    beam_of_one = model.generate(source[:16], search=BeamSearch(beam_size=1), max_length=6)
    beam = model.generate(source[:16], search=BeamSearch(beam_size=3, num_return=2), max_length=6)
    assert greedy["tokens"].shape == (16, 6) and greedy["attention"].shape == (16, 6, 5)
    np.testing.assert_array_equal(beam_of_one["tokens"][:, 0], greedy["tokens"])
    assert beam["tokens"].shape == (16, 2, 6)
    assert np.all(beam["scores"][:, 0] >= beam["scores"][:, 1])

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    again = loaded.generate(source[:16], search="greedy", max_length=6)
    np.testing.assert_array_equal(again["tokens"], greedy["tokens"])


def test_image_grid_encoder_forward(rng):
    images = rng.uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    encoder = ImageGridEncoder(backbone="small_cnn", units=8)
    regions = keras.ops.convert_to_numpy(encoder(images))
    assert regions.shape[0] == 2 and regions.shape[2] == 8 and regions.shape[1] > 1
    assert np.isfinite(regions).all() and np.abs(regions).max() > 0
