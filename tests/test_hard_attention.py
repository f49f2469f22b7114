"""Hard (stochastic) attention: sampling, the REINFORCE estimator, training and saving."""

import keras
import numpy as np
import pytest
from gradients import gradients
from keras import ops

from multiattn.attention import BahdanauAttention, KeyValueAttention, LuongAttention
from multiattn.attention.base import sample_positions
from multiattn.decoders import AttentionDecoder
from multiattn.decoders.attention_decoder import sampling_record
from multiattn.encoders import BiLSTMEncoder
from multiattn.losses import token_cross_entropy
from multiattn.seq2seq import Seq2Seq

LAYERS = {
    "bahdanau": lambda **kwargs: BahdanauAttention(8, **kwargs),
    "luong-general": lambda **kwargs: LuongAttention("general", **kwargs),
    "key-value": lambda **kwargs: KeyValueAttention(8, 8, **kwargs),
}


def inputs(rng, batch=6, queries=4, length=5):
    query = rng.normal(size=(batch, queries, 6)).astype("float32")
    value = rng.normal(size=(batch, length, 6)).astype("float32")
    mask = np.ones((batch, length), bool)
    mask[0, 3:] = False
    mask[1, 1:] = False
    mask[2, :] = False  # nothing to attend to
    return query, value, mask


@pytest.mark.parametrize("name", LAYERS)
def test_sampled_rows_are_one_hot_and_never_on_masked_positions(name, rng):
    layer = LAYERS[name](hard=True, expectation_rate=0.0, seed=3)
    query, value, mask = inputs(rng)
    for _ in range(5):
        context, weights = layer(query, value, value_mask=mask, training=True)
        weights, context = ops.convert_to_numpy(weights), ops.convert_to_numpy(context)
        attendable = mask.any(axis=1)
        row_sums = weights.sum(-1)  # (batch, queries)
        np.testing.assert_array_equal(row_sums[attendable], 1.0)
        np.testing.assert_array_equal(weights[attendable].max(-1), 1.0)
        assert not weights[~mask[:, None, :].repeat(weights.shape[1], 1)].any()
        assert not weights[~attendable].any() and not context[~attendable].any()
        # The context is the value at the sampled position.
        positions = weights.argmax(-1)
        if name != "key-value":  # key-value attention projects its values
            expected = np.take_along_axis(value, positions[..., None], axis=1)
            np.testing.assert_allclose(context[attendable], expected[attendable], rtol=1e-6)


@pytest.mark.parametrize("name", LAYERS)
def test_outside_training_hard_attention_is_deterministic(name, rng):
    query, value, mask = inputs(rng)
    soft = LAYERS[name]()
    soft((query, value)[0], value)  # build, then share the weights
    expected_layer = LAYERS[name](hard=True)
    argmax_layer = LAYERS[name](hard=True, hard_inference="argmax")
    for layer in (expected_layer, argmax_layer):
        layer(query, value)
        layer.set_weights(soft.get_weights())
    _, soft_weights = soft(query, value, value_mask=mask)
    _, expected = expected_layer(query, value, value_mask=mask)
    context, argmax = argmax_layer(query, value, value_mask=mask)
    soft_weights = ops.convert_to_numpy(soft_weights)
    np.testing.assert_array_equal(ops.convert_to_numpy(expected), soft_weights)
    one_hot = (
        np.eye(value.shape[1])[soft_weights.argmax(-1)] * (soft_weights.sum(-1) > 0)[..., None]
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(argmax), one_hot)
    again = argmax_layer(query, value, value_mask=mask)[0]
    np.testing.assert_array_equal(ops.convert_to_numpy(context), ops.convert_to_numpy(again))


def test_expectation_rate_chooses_per_sequence(rng):
    """A sequence uses the expected context (all its rows soft) or samples every row."""
    layer = BahdanauAttention(8, hard=True, expectation_rate=0.5, seed=1)
    query, value, _ = inputs(rng, batch=400, queries=3)
    _, weights = layer(query, value, training=True)
    weights = ops.convert_to_numpy(weights)
    one_hot_rows = (weights.max(-1) == 1.0).astype(int)  # soft rows are never exactly 1 here
    per_sequence = one_hot_rows.sum(-1)
    assert set(per_sequence) == {0, 3}
    assert 0.4 < np.mean(per_sequence == 3) < 0.6
    _, always_soft = BahdanauAttention(8, hard=True, expectation_rate=1.0)(
        query, value, training=True
    )
    assert (ops.convert_to_numpy(always_soft).max(-1) < 1.0).all()


def test_samples_follow_the_weights():
    """Frequencies of 40,000 samples against the weights: a chi-square test."""
    probabilities = np.array([0.5, 0.3, 0.15, 0.05, 0.0], "float32")  # last: masked
    count = 40000
    rows = np.broadcast_to(probabilities, (count, 1, 5))
    noise = keras.random.uniform((count, 1, 5), minval=1e-7, maxval=1.0, seed=7)
    samples = ops.convert_to_numpy(sample_positions(rows, np.ones(count, bool), noise))[:, 0]
    frequencies = samples.sum(0)
    assert frequencies[4] == 0
    expected = probabilities[:4] * count
    chi_square = (((frequencies[:4] - expected) ** 2) / expected).sum()
    assert chi_square < 16.27  # the 0.999 quantile of chi-square with 3 degrees of freedom
    # The test can fail: samples from other weights are rejected.
    biased = ops.convert_to_numpy(
        sample_positions(
            np.broadcast_to(np.array([0.45, 0.35, 0.15, 0.05, 0.0], "float32"), (count, 1, 5)),
            np.ones(count, bool),
            noise,
        )
    )[:, 0].sum(0)
    assert (((biased[:4] - expected) ** 2) / expected).sum() > 16.27


def test_sampling_record_against_numpy(rng):
    probabilities = rng.dirichlet(np.ones(4), size=(3, 2)).astype("float32")
    probabilities[2, 1] = [1.0, 0.0, 0.0, 0.0]
    positions = np.array([[1, 3], [0, 2], [2, 0]])
    weights = np.eye(4, dtype="float32")[positions]
    use_sample = np.array([True, False, True])
    weights[1] = probabilities[1]  # a soft sequence
    log_probs, entropy, sampled = (
        ops.convert_to_numpy(x) for x in sampling_record(weights, probabilities, (use_sample, None))
    )
    expected = np.log(np.take_along_axis(probabilities, positions[..., None], -1))[..., 0]
    expected[1] = 0.0
    np.testing.assert_allclose(log_probs, expected, rtol=1e-6)
    plogp = np.where(probabilities > 0, probabilities * np.log(np.maximum(probabilities, 1e-30)), 0)
    np.testing.assert_allclose(entropy, -plogp.sum(-1), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(sampled, [1.0, 0.0, 1.0])


@pytest.mark.parametrize("order, input_feeding", [("bahdanau", True), ("luong", False)])
def test_decoder_records_the_sampled_log_probabilities(order, input_feeding, rng):
    """Scan and fast path: log p(s_t) is the log of one of the step's weights, 0 if soft."""
    attention = BahdanauAttention(8, hard=True, seed=5)
    decoder = AttentionDecoder(
        11, 4, 8, attention=attention, attention_order=order, input_feeding=input_feeding
    )
    assert decoder.uses_fast_path == (order == "luong")
    memory = rng.normal(size=(32, 5, 6)).astype("float32")
    mask = np.ones((32, 5), bool)
    mask[:, 4] = False
    target = rng.integers(1, 11, (32, 3))
    outputs = decoder(target, memory, memory_mask=mask, training=True, return_sampling=True)
    _, alignment, log_probs, entropy, sampled = (ops.convert_to_numpy(x) for x in outputs)
    assert 0 < sampled.sum() < 32
    assert not log_probs[sampled == 0].any()
    chosen = np.exp(log_probs[sampled == 1])  # (n, T): p(s_t) of the sampled positions
    matches = np.isclose(chosen[..., None], alignment[sampled == 1][..., :4], rtol=1e-5)
    assert matches.any(-1).all()
    assert (entropy > 0).all() and (entropy <= np.log(4) + 1e-5).all()
    # Outside training the decoder attends to the expectation: no sampling record.
    _, soft_alignment = decoder(target, memory, memory_mask=mask)
    np.testing.assert_allclose(ops.convert_to_numpy(soft_alignment).sum(-1), 1.0, rtol=1e-5)


def one_step_model(reinforce_weight=1.0, regions=3, seed=0):
    """A decoder that emits one token from a memory of `regions` image regions."""
    keras.utils.set_random_seed(seed)
    attention = BahdanauAttention(6, hard=True, expectation_rate=0.0, seed=seed)
    decoder = AttentionDecoder(5, 3, 6, attention=attention, attention_order="bahdanau")
    model = Seq2Seq(
        keras.layers.Identity(), decoder, start_id=1, end_id=2, reinforce_weight=reinforce_weight
    )
    memory = np.random.default_rng(seed).normal(size=(1, regions, 4)).astype("float32") * 2
    model((memory, np.ones((1, 1), "int32")))
    return model, memory


def estimator_gradient(model, memory, target, count):
    """The mean of `count` samples of the gradient of the model's training loss."""
    source = np.repeat(memory, count, axis=0)
    target_in, target_out = np.ones((count, 1), "int32"), np.full((count, 1), target, "int32")

    def loss():
        y_pred = model((source, target_in), training=True)
        return model.compute_loss(y=target_out, y_pred=y_pred)

    return gradients(loss, model.trainable_variables)[0]


def exact_gradient(model, memory, target):
    """The gradient of -sum_s p(s) log p(y|s), each location s forced in turn."""
    attention = model.decoder.attention
    regions = memory.shape[1]
    target_in, target_out = np.ones((1, 1), "int32"), np.full((1, 1), target, "int32")
    draw = attention.sampling_inputs

    def loss():
        objective = 0.0
        for location in range(regions):
            # Gumbel noise that makes `location` the sample whatever the weights
            noise = np.full((1, 1, regions), 1e-7, "float32")
            noise[..., location] = 1.0 - 1e-7
            attention.sampling_inputs = lambda *shape, noise=noise: (np.ones(1, bool), noise)
            logits, alignment = model.decoder(
                target_in, memory, training=True, return_sampling=True
            )[:2]
            log_likelihood = -token_cross_entropy(target_out, logits)[0, 0]
            objective += alignment[0, 0, location] * log_likelihood
        attention.sampling_inputs = draw
        return -objective

    return gradients(loss, model.trainable_variables)[0]


@pytest.mark.slow
def test_estimator_is_unbiased_against_the_enumerated_gradient():
    """Mean of the estimator over 50,000 samples = exact gradient of the lower bound.

    One step over three regions: sum_s p(s) log p(y|s) is enumerated exactly. The
    stated tolerance is 5% of the exact gradient's norm, over all weights together
    and over the score's weights alone (which learn only through REINFORCE). Without
    the REINFORCE term the score's gradient is zero: the test fails then.
    """
    model, memory = one_step_model()
    model.reward_baseline.assign(-1.0)  # any baseline leaves the estimate unbiased
    exact = exact_gradient(model, memory, target=3)
    estimate = estimator_gradient(model, memory, target=3, count=50000)
    names = [variable.path for variable in model.trainable_variables]
    score = [i for i, name in enumerate(names) if "bahdanau_attention" in name]
    assert len(score) == 4, names  # query and key kernels, bias, score vector

    def relative_error(indices):
        difference = [np.ravel(estimate[i] - exact[i]) for i in indices]
        reference = [np.ravel(exact[i]) for i in indices]
        return np.linalg.norm(np.concatenate(difference)) / np.linalg.norm(
            np.concatenate(reference)
        )

    everything = range(len(exact))
    assert min(np.linalg.norm(exact[i]) for i in score) > 1e-3
    assert relative_error(everything) < 0.05
    assert relative_error(score) < 0.05
    without = estimator_gradient(one_step_model(reinforce_weight=0.0)[0], memory, 3, 20000)
    assert not any(without[i].any() for i in score)


@pytest.mark.slow
def test_baseline_moves_by_the_formula(rng):
    """b <- 0.9 b + 0.1 mean log p(y|s); one region makes the sample the expectation."""
    model, memory = one_step_model(regions=1)
    model.compile(keras.optimizers.SGD(0.0))
    source = np.repeat(memory, 8, axis=0)
    target_in, target_out = np.ones((8, 1), "int32"), rng.integers(3, 5, (8, 1))
    for baseline in (0.0, -2.5):
        model.reward_baseline.assign(baseline)
        logits = model((source, target_in))[0]
        log_likelihood = -ops.convert_to_numpy(token_cross_entropy(target_out, logits))[:, 0]
        model.train_on_batch((source, target_in), target_out)
        expected = 0.9 * baseline + 0.1 * log_likelihood.mean()
        baseline = float(ops.convert_to_numpy(model.reward_baseline))
        np.testing.assert_allclose(baseline, expected, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("name", LAYERS)
def test_hard_attention_trains_saves_and_loads(name, policy, rng, tmp_path):
    keras.config.set_dtype_policy(policy)
    attention = LAYERS[name](hard=True, seed=2)
    decoder = AttentionDecoder(12, 8, 16, attention=attention)
    model = Seq2Seq(BiLSTMEncoder(12, 8, 16), decoder, entropy_weight=0.01)
    model.compile(keras.optimizers.Adam(0.01))
    source = rng.integers(3, 12, (48, 5))
    target_in = np.concatenate([np.ones((48, 1), int), source], 1)
    target_out = np.concatenate([source, np.full((48, 1), 2)], 1)
    history = model.fit((source, target_in), target_out, epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert float(model.reward_baseline) < 0
    result = model.generate(source[:4], search="greedy", max_length=7)
    path = tmp_path / "hard.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.decoder.attention.hard and loaded.entropy_weight == 0.01
    assert float(loaded.reward_baseline) == float(model.reward_baseline)
    again = loaded.generate(source[:4], search="greedy", max_length=7)
    np.testing.assert_array_equal(result["tokens"], again["tokens"])
    assert ops.convert_to_numpy(result["attention"]).max() < 1.0  # expected, not sampled
