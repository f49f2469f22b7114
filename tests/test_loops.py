"""multiattn.loops.scan: values and gradients against NumPy, with and without XLA."""

import keras
import numpy as np
import pytest
from gradients import gradients
from keras import ops

from multiattn import loops


def numpy_rnn(weights, sequence, hidden):
    """h_t = tanh(h_{t-1} W + x_t); returns every h_t and every h_t summed over units."""
    states = []
    for x in sequence:
        hidden = np.tanh(hidden @ weights + x)
        states.append(hidden)
    states = np.stack(states)
    return states, states.sum(-1)


def rnn_step(weights):
    def step(hidden, x):
        hidden = ops.tanh(ops.matmul(hidden, weights) + x)
        return hidden, (hidden, ops.sum(hidden, axis=-1))  # outputs unlike the carry

    return step


@pytest.mark.parametrize("steps", [1, 6])
def test_scan_matches_numpy(steps, rng):
    weights = rng.normal(size=(4, 4)).astype("float32")
    sequence = rng.normal(size=(steps, 3, 4)).astype("float32")
    hidden = rng.normal(size=(3, 4)).astype("float32")
    last, (states, sums) = loops.scan(rnn_step(weights), hidden, sequence)
    want_states, want_sums = numpy_rnn(weights, sequence, hidden)
    np.testing.assert_allclose(states, want_states, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sums, want_sums, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(last, want_states[-1], rtol=1e-5, atol=1e-6)


def numpy_gradient(weights, sequence, hidden, epsilon=1e-5):
    """Central differences of sum(h_t ** 2) over every step, in float64."""

    def numpy_loss(w):
        return np.sum(numpy_rnn(w, sequence.astype("float64"), hidden)[0] ** 2)

    w = weights.astype("float64")
    want = np.zeros_like(w)
    for index in np.ndindex(*w.shape):
        step = np.zeros_like(w)
        step[index] = epsilon
        want[index] = (numpy_loss(w + step) - numpy_loss(w - step)) / (2 * epsilon)
    return want


def scan_problem(rng):
    weights = rng.normal(size=(4, 4)).astype("float32") * 0.5
    sequence = rng.normal(size=(5, 3, 4)).astype("float32")
    return weights, sequence, np.zeros((3, 4), "float32")


def test_scan_gradient_matches_numpy(rng):
    weights, sequence, hidden = scan_problem(rng)
    variable = keras.Variable(weights)

    def loss():
        _, (states, _) = loops.scan(rnn_step(variable), hidden, sequence)
        return ops.sum(ops.square(states))

    (found,), _ = gradients(loss, [variable])
    want = numpy_gradient(weights, sequence, hidden)
    np.testing.assert_allclose(found, want, rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(
    keras.config.backend() != "tensorflow", reason="tf.function and its XLA: TensorFlow only"
)
@pytest.mark.parametrize("jit_compile", [False, True])
def test_scan_gradient_matches_numpy_in_a_tf_function(jit_compile, rng):
    import tensorflow as tf

    weights, sequence, hidden = scan_problem(rng)
    variable = tf.Variable(weights)

    @tf.function(jit_compile=jit_compile)
    def gradient(sequence):
        with tf.GradientTape() as tape:
            _, (states, _) = loops.scan(rnn_step(variable), hidden, sequence)
            loss = ops.sum(ops.square(states))
        return tape.gradient(loss, variable)

    want = numpy_gradient(weights, sequence, hidden)
    np.testing.assert_allclose(gradient(sequence), want, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(
    keras.config.backend() != "tensorflow", reason="XLA through compile(): TensorFlow only"
)
@pytest.mark.parametrize(
    "attention, order, use_gate",
    [
        ("bahdanau", "bahdanau", False),
        ("luong-concat", "luong", True),
        ("key-value", "luong", True),
    ],
)
def test_decoder_trains_under_xla_like_without(attention, order, use_gate, rng):
    """The scanned recurrence compiles with XLA, with the batch size unknown (tf.data)."""
    import tensorflow as tf

    from multiattn import AttentionDecoder, BiLSTMEncoder, Seq2Seq

    source = rng.integers(3, 20, (12, 6)).astype("int32")
    source[:, 4:] = 0
    target_in = rng.integers(3, 20, (12, 5)).astype("int32")
    target_out = rng.integers(3, 20, (12, 5)).astype("int32")
    # Batches of 8 and 4: a dynamic batch dimension, as a recipe's input pipeline has.
    data = tf.data.Dataset.from_tensor_slices(((source, target_in), target_out)).batch(8)
    losses = {}
    for jit_compile in (False, True):
        keras.utils.set_random_seed(0)
        decoder = AttentionDecoder(
            20,
            8,
            16,
            attention=attention,
            attention_order=order,
            input_feeding=True,
            use_gate=use_gate,
            use_coverage=attention == "bahdanau",
        )
        model = Seq2Seq(
            BiLSTMEncoder(20, 8, 16), decoder, coverage_loss_weight=0.5 * (attention == "bahdanau")
        )
        model.compile(keras.optimizers.SGD(0.1), jit_compile=jit_compile)
        losses[jit_compile] = model.fit(data, epochs=3, verbose=0).history["loss"]
    assert not decoder.uses_fast_path
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
    assert losses[True][-1] < losses[True][0]  # and it learns
