"""The self-critical loop of the recipes on a tiny model: it learns what the reward asks."""

import json

import keras
import numpy as np
import pytest
from test_seq2seq import VOCAB, reversal_data
from time_budget_cases import TIME_BUDGET_CASES

from multiattn import AttentionDecoder, BahdanauAttention, BiLSTMEncoder, RandomSampling, Seq2Seq
from recipes import cli, self_critical

FAVOURITE = 5  # the reward counts this token


def run_loop(model, source, reward, run, score, **settings):
    """`self_critical.train` over the rows of `source`, judged by `score` (key "score")."""
    return self_critical.train(
        model,
        lambda items: source[items],
        len(source),
        reward,
        run=str(run),
        scorer=cli.scorer_callback(score),
        monitor="score",
        **settings,
    )


def test_the_loop_raises_the_reward_and_keeps_the_best(tmp_path, rng):
    source, target_in, target_out, _ = reversal_data(rng, 32, 2, 4)
    # Both dropouts are off in the loop, then back.
    decoder = AttentionDecoder(VOCAB, 16, 32, dropout=0.2, memory_dropout=0.3)
    model = Seq2Seq(BiLSTMEncoder(VOCAB, 16, 32), decoder, start_id=1, end_id=2)
    model.compile(keras.optimizers.Adam(0.01))
    model.fit((source, target_in), target_out, epochs=1, verbose=0)
    cli.write_json(str(tmp_path / "metrics.json"), {"best_score": -1.0})

    step_rewards = []

    def reward(tokens, items):
        rewards = (np.asarray(tokens) == FAVOURITE).sum(axis=1).astype("float32")
        if items is not None:  # a step of the loop
            step_rewards.append(rewards.mean())
            assert (model.decoder.dropout, model.decoder.memory_dropout) == (0.0, 0.0)
        return rewards

    def sample_reward():
        result = model.generate(source, search="sample", max_length=6)
        return reward(result["tokens"], None).mean()

    scores = iter(range(100))  # every epoch's score beats the last one's

    def score(logs, label):
        logs["score"] = float(next(scores))

    keras.utils.set_random_seed(0)
    before = np.mean([sample_reward() for _ in range(5)])
    history = run_loop(
        model,
        source,
        reward,
        tmp_path,
        score,
        epochs=3,
        samples=4,
        batch_size=8,
        learning_rate=0.01,
        max_length=6,
    )
    after = np.mean([sample_reward() for _ in range(5)])
    assert after > before + 0.5, (before, after)
    assert [logs["score"] for logs in history] == [0.0, 1.0, 2.0]
    steps = len(source) // 8  # per epoch
    for epoch, logs in enumerate(history):  # the epoch's mean reward
        epoch_rewards = step_rewards[epoch * steps : (epoch + 1) * steps]
        assert logs["reward"] == pytest.approx(np.mean(epoch_rewards), rel=1e-5)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["self_critical_epochs_completed"] == 3
    assert record["self_critical_best_epoch"] == 3 and record["best_score"] == 2.0
    loaded = cli.load_model(str(tmp_path / "model.keras")).decoder
    for decoder in (model.decoder, loaded):
        assert (decoder.dropout, decoder.memory_dropout) == (0.2, 0.3)


def sampled_tokens_log_probs(model, source, result):
    """Summed log-probabilities `(batch,)` of the sampled rows of `result` under `model`
    in training mode, teacher-forced as the policy-gradient loss computes them."""
    target_in, target_out = self_critical.sampled_targets(result["tokens"])
    logits = model((source, target_in), training=True)[0]  # (batch, target_len, vocab)
    log_probs = keras.ops.convert_to_numpy(keras.ops.log_softmax(logits, axis=-1))
    chosen = np.take_along_axis(log_probs, target_out[..., None], axis=-1)[..., 0]
    generated = np.arange(target_out.shape[1]) < result["lengths"][:, None]
    return np.where(generated, chosen, 0.0).sum(axis=1)


def test_the_policy_trained_is_the_one_that_sampled(rng):
    source, target_in, target_out, _ = reversal_data(rng, 16, 2, 4)
    # Dropout in the encoder, the decoder and the attention, and hard attention: in
    # training each would make the model another distribution than the sampler's.
    attention = BahdanauAttention(16, dropout=0.4, hard=True)
    decoder = AttentionDecoder(VOCAB, 16, 32, attention=attention, dropout=0.3, memory_dropout=0.3)
    encoder = BiLSTMEncoder(VOCAB, 16, 32, dropout=0.5)
    model = Seq2Seq(encoder, decoder, start_id=1, end_id=2)
    model.compile(keras.optimizers.Adam(0.01))
    model.fit((source, target_in), target_out, epochs=1, verbose=0)
    result = model.generate(source, search=RandomSampling(seed=2), max_length=6)

    with self_critical.sampling_policy(model):
        inside = sampled_tokens_log_probs(model, source, result)
    outside = sampled_tokens_log_probs(model, source, result)

    np.testing.assert_allclose(inside, result["log_probs"], rtol=1e-4, atol=1e-4)
    assert np.abs(outside - result["log_probs"]).max() > 1e-2  # training mode differs
    assert (encoder.dropout_layers[0].rate, decoder.dropout, decoder.memory_dropout) == (
        0.5,
        0.3,
        0.3,
    )
    assert attention.dropout == 0.4 and attention.hard


def test_steps_per_epoch_draw_the_items_in_whole_passes_and_resume_where_they_were(tmp_path, rng):
    source, target_in, target_out, _ = reversal_data(rng, 12, 2, 4)
    model = Seq2Seq(BiLSTMEncoder(VOCAB, 8, 8), AttentionDecoder(VOCAB, 8, 8), 1, 2)
    model.build(((None, None), (None, None)))
    steps = []

    def reward(tokens, items):
        steps.append(items[::2])  # one per item: 2 samples each
        return np.arange(len(items), dtype="float32")

    settings = {
        "epochs": 2,
        "samples": 2,
        "batch_size": 5,
        "steps_per_epoch": 4,
        "learning_rate": 1e-3,
        "max_length": 4,
    }
    history = run_loop(
        model, source, reward, tmp_path, lambda logs, label: logs.update(score=0.0), **settings
    )
    assert len(history) == 2 and len(steps) == 8
    # Passes of 12 items in batches of 5: 5, 5, 2, then the next pass.
    assert [len(items) for items in steps[:4]] == [5, 5, 2, 5]
    assert sorted(np.concatenate(steps[:3])) == list(range(12))
    # Resumed after its first epoch, a run draws the items of the uninterrupted one.
    uninterrupted, steps[:] = list(steps), []
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    cli.write_json(str(resumed / "metrics.json"), {"self_critical_epochs_completed": 1})
    run_loop(model, source, reward, resumed, lambda logs, label: logs.update(score=0.0), **settings)
    assert len(steps) == 4
    for expected, drawn in zip(uninterrupted[4:], steps, strict=True):
        np.testing.assert_array_equal(drawn, expected)


@pytest.mark.parametrize("epoch_seconds,epochs_run", TIME_BUDGET_CASES)
def test_time_budget_stops_before_an_epoch_that_would_end_past_it(
    epoch_seconds, epochs_run, tmp_path, rng, capsys
):
    source = reversal_data(rng, 4, 2, 4)[0]
    model = Seq2Seq(BiLSTMEncoder(VOCAB, 8, 8), AttentionDecoder(VOCAB, 8, 8), 1, 2)
    model.build(((None, None), (None, None)))
    now = [0.0]

    def score(logs, label):  # each epoch takes its seconds
        now[0] += epoch_seconds[int(label.split()[-1]) - 1]
        logs["score"] = 0.0

    history = run_loop(
        model,
        source,
        lambda tokens, items: np.zeros(len(items), "float32"),
        tmp_path,
        score,
        epochs=4,
        samples=2,
        batch_size=4,
        learning_rate=1e-3,
        max_length=4,
        time_budget=1,
        clock=lambda: now[0],
    )
    assert len(history) == epochs_run
    out = capsys.readouterr().out
    assert f"stopping after self-critical epoch {epochs_run}:" in out
