"""Ensembles: the averaged step against NumPy, search, teacher forcing, saving, errors."""

import keras
import numpy as np
import pytest

from multiattn import AttentionDecoder, BeamSearch, BiLSTMEncoder, Seq2Seq, Seq2SeqEnsemble

VOCAB = 17
SOURCE = np.array([[5, 6, 7, 8, 0], [9, 4, 0, 0, 0], [3, 12, 11, 5, 6]], "int32")


def make_model(seed, attention="bahdanau", order="bahdanau"):
    keras.utils.set_random_seed(seed)
    model = Seq2Seq(
        BiLSTMEncoder(VOCAB, 6, 8),
        AttentionDecoder(VOCAB, 6, 8, attention=attention, attention_order=order),
    )
    model.build(((None, None), (None, None)))
    # Larger weights than the initial ones, so the models disagree on their tokens.
    for variable in model.trainable_variables:
        variable.assign(variable * 3.0)
    return model


def np_log_softmax(logits):
    logits = np.asarray(logits, "float64")
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def np_greedy(models, source, max_length):
    """Greedy decoding on the mean of the models' log-softmaxes, step by step in NumPy."""
    states, memories = [], []
    for model in models:
        memory, mask, encoder_state = model.encode(source)
        states.append(model.decoder.get_initial_state(memory, mask, encoder_state))
        memories.append((model.decoder.prepare_memory(memory), mask))
    tokens = np.full(len(source), models[0].start_id, "int32")
    finished = np.zeros(len(source), bool)
    rows, total = [], np.zeros(len(source))
    for _ in range(max_length):
        log_probs = []
        for index, model in enumerate(models):
            logits, states[index], _ = model.decoder.step(tokens, states[index], *memories[index])
            log_probs.append(np_log_softmax(logits))
        mean = np.mean(log_probs, axis=0)
        mean = mean - np.log(np.exp(mean).sum(-1, keepdims=True))  # the search's softmax
        tokens = mean.argmax(-1).astype("int32")
        total += np.where(finished, 0.0, mean[np.arange(len(source)), tokens])
        rows.append(np.where(finished, 0, tokens))
        finished |= tokens == models[0].end_id
    return np.stack(rows, 1), total


def test_greedy_follows_the_averaged_step_in_numpy():
    models = [make_model(1), make_model(2, "luong-general", "luong")]
    result = Seq2SeqEnsemble(models).generate(SOURCE, max_length=6)
    expected_tokens, expected_log_probs = np_greedy(models, SOURCE, 6)
    np.testing.assert_array_equal(result["tokens"], expected_tokens)
    np.testing.assert_allclose(result["log_probs"], expected_log_probs, rtol=1e-4, atol=1e-5)
    # The models disagree alone, so the test sees the averaging.
    alone = [model.generate(SOURCE, max_length=6)["tokens"] for model in models]
    assert not np.array_equal(alone[0], alone[1])


def test_one_model_and_a_model_twice_decode_as_the_model():
    model = make_model(3)
    beam = BeamSearch(beam_size=3, num_return=2)
    expected = model.generate(SOURCE, search=beam, max_length=6)
    for models in ([model], [model, model]):
        result = Seq2SeqEnsemble(models).generate(SOURCE, search=beam, max_length=6)
        np.testing.assert_array_equal(result["tokens"], expected["tokens"])
        np.testing.assert_allclose(result["scores"], expected["scores"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result["attention"], expected["attention"], atol=1e-6)


def test_call_averages_the_teacher_forced_log_probabilities():
    models = [make_model(4), make_model(5)]
    target_in = np.array([[1, 5, 6], [1, 7, 0], [1, 8, 9]], "int32")
    log_probs, alignment = Seq2SeqEnsemble(models)((SOURCE, target_in))
    expected = np.mean([np_log_softmax(m((SOURCE, target_in))[0]) for m in models], axis=0)
    np.testing.assert_allclose(log_probs, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alignment, models[0]((SOURCE, target_in))[1], atol=1e-6)


@pytest.mark.slow
def test_keras_file_round_trip(tmp_path):
    ensemble = Seq2SeqEnsemble([make_model(6), make_model(7)])
    expected = ensemble.generate(SOURCE, search="beam", max_length=6)
    ensemble.save(tmp_path / "ensemble.keras")
    loaded = keras.saving.load_model(tmp_path / "ensemble.keras", safe_mode=True)
    assert isinstance(loaded, Seq2SeqEnsemble) and len(loaded.models) == 2
    result = loaded.generate(SOURCE, search="beam", max_length=6)
    np.testing.assert_array_equal(result["tokens"], expected["tokens"])


def test_clear_errors():
    with pytest.raises(ValueError, match="at least one model"):
        Seq2SeqEnsemble([])
    other = Seq2Seq(BiLSTMEncoder(VOCAB, 6, 8), AttentionDecoder(VOCAB + 1, 6, 8))
    with pytest.raises(ValueError, match=r"models\[1\] has a target vocabulary of 18"):
        Seq2SeqEnsemble([make_model(8), other])
    shifted = Seq2Seq(BiLSTMEncoder(VOCAB, 6, 8), AttentionDecoder(VOCAB, 6, 8), end_id=5)
    with pytest.raises(ValueError, match=r"models\[1\].end_id is 5"):
        Seq2SeqEnsemble([make_model(9), shifted])
