"""Seq2Seq: fit, generate, save; the toy task that shows what attention buys."""

import keras
import numpy as np
import pytest

from multiattn.decoders import AttentionDecoder, PlainDecoder
from multiattn.encoders import BiLSTMEncoder, ImageGridEncoder
from multiattn.search import BeamSearch, GreedySearch, RandomSampling
from multiattn.seq2seq import Seq2Seq, reverse_padded

SYMBOLS = 10
VOCAB = SYMBOLS + 3  # 0 padding, 1 start, 2 end


def reversal_data(rng, size, min_length, max_length):
    """Sources of random symbols; targets are the sources reversed."""
    lengths = rng.integers(min_length, max_length + 1, size)
    source = np.zeros((size, max_length), "int32")
    target_in = np.zeros((size, max_length + 1), "int32")
    target_out = np.zeros((size, max_length + 1), "int32")
    for row, length in enumerate(lengths):
        symbols = rng.integers(3, VOCAB, length)
        source[row, :length] = symbols
        target_in[row, 0] = 1
        target_in[row, 1 : length + 1] = symbols[::-1]
        target_out[row, :length] = symbols[::-1]
        target_out[row, length] = 2
    return source, target_in, target_out, lengths


def make_model(attention="bahdanau", units=32, learning_rate=0.01, **model_kwargs):
    if attention is None:
        decoder = PlainDecoder(VOCAB, 16, units)
    else:
        order = "bahdanau" if attention == "bahdanau" else "luong"
        decoder = AttentionDecoder(VOCAB, 16, units, attention=attention, attention_order=order)
    model = Seq2Seq(BiLSTMEncoder(VOCAB, 16, units), decoder, start_id=1, end_id=2, **model_kwargs)
    model.compile(keras.optimizers.Adam(learning_rate, clipnorm=1.0))
    return model


@pytest.fixture(scope="module")
def trained():
    """A small model trained on short reversals, shared by the generation tests."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    source, target_in, target_out, _ = reversal_data(rng, 1500, 2, 8)
    model = make_model()
    history = model.fit((source, target_in), target_out, batch_size=50, epochs=6, verbose=0)
    test = reversal_data(np.random.default_rng(1), 64, 2, 8)
    return model, history, test


def exact_matches(tokens, target_out, lengths):
    return np.array(
        [np.array_equal(tokens[i, : n + 1], target_out[i, : n + 1]) for i, n in enumerate(lengths)]
    )


def test_fit_learns_and_greedy_generates(trained):
    model, history, (source, _, target_out, lengths) = trained
    losses = history.history["loss"]
    assert losses[-1] < losses[0] / 5
    assert history.history["accuracy"][-1] > 0.9
    result = model.generate(source, search="greedy", max_length=9)
    assert result["tokens"].shape == (64, 9) and result["attention"].shape == (64, 9, 8)
    assert exact_matches(result["tokens"], target_out, lengths).mean() > 0.9


def test_beam_of_one_is_greedy_and_nbest_is_sorted(trained):
    model, _, (source, *_rest) = trained
    greedy = model.generate(source, search=GreedySearch(), max_length=9)
    beam_one = model.generate(
        source, search=BeamSearch(beam_size=1, length_penalty=0.0), max_length=9
    )
    np.testing.assert_array_equal(beam_one["tokens"][:, 0], greedy["tokens"])
    nbest_search = BeamSearch(beam_size=4, length_penalty=0.0, num_return=3)
    nbest = model.generate(source, search=nbest_search, max_length=9)
    assert nbest["tokens"].shape == (64, 3, 9)
    assert np.all(np.diff(nbest["scores"], axis=1) <= 1e-6)
    assert nbest["attention"].shape == (64, 3, 9, 8)


def test_sampling_and_plain_predict_after_generate(trained):
    model, _, (source, target_in, *_rest) = trained
    first = model.generate(source, search=RandomSampling(top_k=2, seed=3), max_length=9)
    again = model.generate(source, search=RandomSampling(top_k=2, seed=3), max_length=9)
    np.testing.assert_array_equal(first["tokens"], again["tokens"])
    logits, alignment = model.predict((source, target_in), verbose=0)
    assert logits.shape == (64, 9, VOCAB) and alignment.shape == (64, 9, 8)
    with pytest.raises(ValueError, match="search"):
        model.generate(source, search="telepathy")


def test_predict_returns_the_teacher_forced_outputs_after_generate(trained):
    model, _, (source, target_in, *_rest) = trained
    model.generate(source, search=BeamSearch(beam_size=2), max_length=9)
    model.generate(source, search="sample", max_length=9)
    logits, alignment = model.predict((source, target_in), batch_size=64, verbose=0)
    want_logits, want_alignment = model((source, target_in))
    np.testing.assert_allclose(logits, keras.ops.convert_to_numpy(want_logits), atol=1e-5)
    np.testing.assert_allclose(alignment, keras.ops.convert_to_numpy(want_alignment), atol=1e-5)


def test_random_sampling_owns_its_seed(trained):
    """The same seed gives the same samples; another seed, or a second call, others."""
    model, _, (source, *_rest) = trained
    options = {"max_length": 9}
    # A high temperature: the trained model is nearly certain otherwise.
    first = model.generate(source, search=RandomSampling(temperature=3.0, seed=3), **options)
    again = model.generate(source, search=RandomSampling(temperature=3.0, seed=3), **options)
    other = model.generate(source, search=RandomSampling(temperature=3.0, seed=4), **options)
    for key in ("tokens", "lengths", "log_probs"):
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    assert not np.array_equal(first["tokens"], other["tokens"])
    sampling = RandomSampling(temperature=3.0, seed=3)
    np.testing.assert_array_equal(
        model.generate(source, search=sampling, **options)["tokens"], first["tokens"]
    )
    second = model.generate(source, search=sampling, **options)  # the seed moved on
    assert not np.array_equal(second["tokens"], first["tokens"])
    by_name = [model.generate(source, search="sample", **options)["tokens"] for _ in range(2)]
    assert not np.array_equal(*by_name)


def test_search_names_are_the_default_objects(trained):
    model, _, (source, *_rest) = trained
    for name, search in (("greedy", GreedySearch()), ("beam", BeamSearch())):
        by_name = model.generate(source, search=name, max_length=9)
        by_object = model.generate(source, search=search, max_length=9)
        assert by_name.keys() == by_object.keys()
        for key in by_name:
            np.testing.assert_array_equal(by_name[key], by_object[key], err_msg=f"{name} {key}")
    assert by_name["tokens"].shape == (64, 1, 9)  # beam search, one hypothesis


def test_generate_function_is_cached_per_settings(trained):
    model = trained[0]
    function = model.make_generate_function(BeamSearch(beam_size=3), 9)
    assert model.make_generate_function(BeamSearch(beam_size=3), 9) is function
    assert model.make_generate_function(BeamSearch(beam_size=2), 9) is not function
    assert model.make_generate_function(BeamSearch(beam_size=2), 10) is not function
    sampling = RandomSampling(seed=1)
    function = model.make_generate_function(sampling, 9)
    assert model.make_generate_function(sampling, 9) is function
    # Another object holds another seed: a function of its own.
    assert model.make_generate_function(RandomSampling(seed=1), 9) is not function


def test_batches_and_inputs_give_the_same_result(trained):
    """Batches of 24 (the last one padded), one batch, a tf.data.Dataset, a tensor."""
    import tensorflow as tf

    model, _, (source, *_rest) = trained
    whole = model.generate(source, max_length=9, batch_size=64)
    results = {
        "batches of 24": model.generate(source, max_length=9, batch_size=24),
        "dataset": model.generate(
            tf.data.Dataset.from_tensor_slices(source).batch(24), max_length=9
        ),
        "tensor": model.generate(keras.ops.convert_to_tensor(source), max_length=9),
    }
    for name, result in results.items():
        assert result.keys() == whole.keys(), name
        np.testing.assert_array_equal(result["tokens"], whole["tokens"], err_msg=name)
        np.testing.assert_array_equal(result["lengths"], whole["lengths"], err_msg=name)
        np.testing.assert_allclose(result["scores"], whole["scores"], atol=1e-4, err_msg=name)
        np.testing.assert_allclose(result["attention"], whole["attention"], atol=1e-4)
    if keras.config.backend() == "tensorflow":
        # 24, 24 and 16 sentences: the last batch is padded, so one trace serves all.
        search = GreedySearch(min_length=1)  # settings of their own: a new function
        model.generate(source, search=search, max_length=9, batch_size=24)
        function = model.make_generate_function(search, 9)
        assert function.experimental_get_tracing_count() == 1


@pytest.mark.skipif(
    keras.config.backend() != "tensorflow",
    reason="compile(jit_compile=...) chooses between tf.function and XLA on TensorFlow only",
)
def test_generate_with_and_without_xla_agree(trained):
    model, _, (source, *_rest) = trained
    search = BeamSearch(beam_size=3)
    results = {}
    compiled_with = model.jit_compile
    try:
        for jit_compile in (False, True):
            model.jit_compile = jit_compile
            function = model.make_generate_function(search, 9)
            assert function._jit_compile == jit_compile
            results[jit_compile] = model.generate(source, search=search, max_length=9)
    finally:
        model.jit_compile = compiled_with
    np.testing.assert_array_equal(results[False]["tokens"], results[True]["tokens"])
    np.testing.assert_allclose(results[False]["scores"], results[True]["scores"], atol=1e-4)


def test_token_accuracy_matches_numpy_argmax(rng):
    model = make_model()
    logits = rng.normal(size=(4, 6, VOCAB)).astype("float32")
    targets = rng.integers(1, VOCAB, (4, 6))
    targets[:, :3] = logits[:, :3].argmax(-1)  # some right, some wrong
    targets[2:, 4:] = 0  # padding does not count
    model.compute_metrics(None, targets, (logits, None))
    mask = targets != 0
    want = (logits.argmax(-1) == targets)[mask].mean()
    assert float(model.token_accuracy.result()) == pytest.approx(want)


@pytest.mark.slow
@pytest.mark.parametrize(
    "search",
    [GreedySearch(min_length=4), BeamSearch(length_penalty=0.0, min_length=4)],
    ids=["greedy", "beam"],
)
def test_generate_before_any_fit_builds_the_model(search, rng):
    source = rng.integers(3, VOCAB, (3, 5))
    result = make_model().generate(source, search=search, max_length=4)
    assert result["lengths"].min() == 4


def test_keras_file_round_trip(trained, tmp_path):
    model, _, (source, target_in, *_rest) = trained
    path = tmp_path / "seq2seq.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for got, want in zip(
        loaded.predict((source, target_in), verbose=0),
        model.predict((source, target_in), verbose=0),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)
    search = BeamSearch(beam_size=3, length_penalty=0.0)
    np.testing.assert_array_equal(
        loaded.generate(source, search=search, max_length=9)["tokens"],
        model.generate(source, search=search, max_length=9)["tokens"],
    )
    np.testing.assert_array_equal(
        loaded.generate(source, search="greedy", max_length=9)["tokens"],
        model.generate(source, search="greedy", max_length=9)["tokens"],
    )


def test_reverse_padded():
    ids = np.array([[5, 6, 7, 0, 0], [1, 2, 3, 4, 9], [0, 0, 0, 0, 0]])
    expected = np.array([[7, 6, 5, 0, 0], [9, 4, 3, 2, 1], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(reverse_padded(ids), expected)


@pytest.mark.slow
def test_reverse_source_reaches_the_encoder(rng):
    source, target_in, target_out, _ = reversal_data(rng, 4, 2, 6)
    model = make_model(attention=None, reverse_source=True)
    plain = make_model(attention=None)
    model((source, target_in))
    plain((source, target_in))
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model((source, target_in))),
        keras.ops.convert_to_numpy(plain((reverse_padded(source), target_in))),
        rtol=1e-5,
    )


@pytest.mark.slow
@pytest.mark.parametrize("weight_name", ["attention_penalty", "coverage_loss_weight"])
def test_attention_penalties_enter_the_loss(weight_name, rng):
    source, target_in, target_out, _ = reversal_data(rng, 8, 2, 6)
    with_penalty = make_model(**{weight_name: 5.0})
    without = make_model()
    with_penalty((source, target_in))
    without((source, target_in))
    without.set_weights(with_penalty.get_weights())
    loss_with = with_penalty.evaluate((source, target_in), target_out, verbose=0)[0]
    loss_without = without.evaluate((source, target_in), target_out, verbose=0)[0]
    assert loss_with > loss_without + 1e-3
    with pytest.raises(ValueError, match="need a decoder with attention"):
        Seq2Seq(BiLSTMEncoder(VOCAB, 8, 8), PlainDecoder(VOCAB, 8, 8), **{weight_name: 1.0})


@pytest.mark.slow
def test_image_regions_as_memory(rng):
    """Captioning-style: an image encoder's regions are the memory, with no mask."""
    images = rng.uniform(0, 255, size=(6, 16, 16, 3)).astype("float32")
    target_in = rng.integers(1, VOCAB, size=(6, 5)).astype("int32")
    target_out = rng.integers(3, VOCAB, size=(6, 5)).astype("int32")
    encoder = ImageGridEncoder("small_cnn", units=16, filters=(8, 8))
    decoder = AttentionDecoder(VOCAB, 8, 16, use_gate=True)
    model = Seq2Seq(encoder, decoder, attention_penalty=1.0)
    model.compile(keras.optimizers.Adam(0.01))
    model.fit((images, target_in), target_out, epochs=1, verbose=0)
    result = model.generate(
        images, search=BeamSearch(beam_size=2, length_penalty=0.0), max_length=4
    )
    regions = encoder.compute_output_shape(images.shape)[1]
    assert result["attention"].shape == (6, 1, 4, regions)


class StopWhenLearned(keras.callbacks.Callback):
    """Ends training once the training token accuracy reaches `target`."""

    def __init__(self, target):
        super().__init__()
        self.target = target
        self.epochs_run = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_run = epoch + 1
        if logs["accuracy"] >= self.target:
            self.model.stop_training = True


@pytest.mark.slow
def test_attention_holds_up_with_length_and_the_bottleneck_does_not():
    """Reversal of 5 to 40 symbols: with attention nearly perfect, without it falls off.

    Both models see the same data for the same number of epochs: a short warm-up on
    sequences of 5 to 12 symbols, then the full range until the attentional model has
    learned it (at most 12 epochs).
    """
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    warm_up = reversal_data(rng, 3000, 5, 12)
    full = reversal_data(rng, 3000, 5, 40)
    test_source, _, test_target, test_lengths = reversal_data(rng, 200, 5, 40)
    accuracy = {}
    stopper = StopWhenLearned(0.995)
    # At a constant 0.005 the loss spikes late in training, and where the last epoch
    # lands decides the result: a float-level change of the graph moved the long-
    # sequence accuracy from 1.0 to 0.94. Decaying to a fifth over the 16 epochs at
    # most keeps training smooth (seeds 0 and 1: 0.992 and 0.979).
    steps = len(full[0]) // 50 * 16
    learning_rate = keras.optimizers.schedules.ExponentialDecay(0.005, steps, decay_rate=0.2)
    for attention in ("bahdanau", None):
        model = make_model(attention=attention, units=64, learning_rate=learning_rate)
        model.fit(warm_up[:2], warm_up[2], batch_size=50, epochs=4, verbose=0)
        model.fit(
            full[:2],
            full[2],
            batch_size=50,
            epochs=12 if attention else stopper.epochs_run,
            callbacks=[stopper] if attention else [],
            verbose=0,
        )
        tokens = model.generate(test_source, max_length=41)["tokens"]
        per_sentence = np.array(
            [np.mean(tokens[i, :n] == test_target[i, :n]) for i, n in enumerate(test_lengths)]
        )
        short, long = test_lengths <= 15, test_lengths >= 30
        accuracy[attention] = per_sentence[short].mean(), per_sentence[long].mean()
    attention_short, attention_long = accuracy["bahdanau"]
    plain_short, plain_long = accuracy[None]
    assert attention_short > 0.97 and attention_long > 0.95, (accuracy, stopper.epochs_run)
    assert plain_long < 0.75 * plain_short, accuracy  # the bottleneck falls off with length
    assert attention_long > plain_long + 0.4, accuracy


@pytest.mark.slow
@pytest.mark.parametrize("per_token", [False, True])
def test_sample_weight_weighs_each_sentence(per_token, rng):
    """evaluate/fit's `sample_weight` against a NumPy reference of the weighted mean."""
    source, target_in, target_out, _ = reversal_data(rng, 6, 2, 5)
    sentence_weights = np.array([1.0, 0.0, 2.0, 0.5, 1.0, 3.0], "float32")
    weights = sentence_weights
    if per_token:
        weights = np.repeat(sentence_weights[:, None], target_out.shape[1], 1)
        weights[:, 0] *= 2.0  # and the first token twice again
    model = make_model()
    model((source, target_in))
    for variable in model.trainable_variables:  # logits far apart, so weights tell
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.5)
    logits = keras.ops.convert_to_numpy(model((source, target_in))[0]).astype("float64")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    token_losses = -np.take_along_axis(log_probs, target_out[..., None], -1)[..., 0]
    token_weights = (target_out != 0) * (weights if per_token else weights[:, None])
    want_loss = (token_losses * token_weights).sum() / token_weights.sum()
    right = logits.argmax(-1) == target_out
    want_accuracy = (right * token_weights).sum() / token_weights.sum()

    result = model.evaluate(
        (source, target_in), target_out, sample_weight=weights, batch_size=6, return_dict=True
    )
    assert result["loss"] == pytest.approx(want_loss, rel=1e-5)
    assert result["accuracy"] == pytest.approx(want_accuracy, rel=1e-5)
    unweighted = model.evaluate((source, target_in), target_out, batch_size=6, return_dict=True)
    assert unweighted["loss"] != pytest.approx(want_loss, rel=1e-2)


@pytest.mark.slow
def test_a_zero_weight_sentence_has_no_say_in_training(rng):
    source, target_in, target_out, _ = reversal_data(rng, 8, 2, 5)
    weights = np.array([1, 1, 1, 1, 0, 0, 0, 0], "float32")
    models = []
    for sentences, sample_weight in ((slice(None), weights), (slice(0, 4), None)):
        keras.utils.set_random_seed(3)
        model = make_model()
        model.fit(
            (source[sentences], target_in[sentences]),
            target_out[sentences],
            sample_weight=sample_weight,
            batch_size=8,
            epochs=2,
            shuffle=False,
            verbose=0,
        )
        models.append(model)
    for weighted, kept in zip(*(m.get_weights() for m in models), strict=True):
        np.testing.assert_allclose(weighted, kept, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_policy_gradient_moves_the_sample_by_the_sign_of_its_advantage(advantage, rng):
    """Compiled with `PolicyGradientLoss`, one step makes a sample with a positive
    advantage likelier and one with a negative advantage less likely; the loss value
    is the NumPy one."""
    from multiattn.losses import PolicyGradientLoss

    source, target_in, target_out, _ = reversal_data(rng, 4, 2, 5)
    model = make_model()
    model.compile(keras.optimizers.SGD(0.5), loss=PolicyGradientLoss())
    model((source, target_in))

    def sequence_log_probs():
        logits = keras.ops.convert_to_numpy(model((source, target_in))[0]).astype("float64")
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        token = np.take_along_axis(log_probs, target_out[..., None], -1)[..., 0]
        return (token * (target_out != 0)).sum(1)

    before = sequence_log_probs()
    advantages = np.full(4, advantage, "float32")
    logs = model.train_on_batch(
        (source, target_in), target_out, sample_weight=advantages, return_dict=True
    )
    assert logs["loss"] == pytest.approx(-(advantages * before).mean(), rel=1e-4)
    change = sequence_log_probs() - before
    assert np.all(np.sign(change) == advantage), change


def test_a_compiled_loss_must_be_a_loss_object(rng):
    source, target_in, target_out, _ = reversal_data(rng, 2, 2, 3)
    model = make_model()
    model.compile("adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="must be a keras.losses.Loss object"):
        model.train_on_batch((source, target_in), target_out)
