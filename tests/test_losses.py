import numpy as np
import pytest

from multiattn.losses import (
    MaskedCrossEntropy,
    PolicyGradientLoss,
    coverage_loss,
    doubly_stochastic_penalty,
    leave_one_out_advantages,
    masked_cross_entropy,
)


def np_log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_masked_cross_entropy_matches_numpy(label_smoothing, rng):
    logits = rng.normal(size=(2, 4, 6)).astype("float32")
    targets = np.array([[3, 1, 5, 0], [2, 0, 0, 0]])
    log_probs = np_log_softmax(logits)
    vocab = logits.shape[-1]
    smoothed = np.eye(vocab)[targets] * (1 - label_smoothing) + label_smoothing / vocab
    per_token = -(smoothed * log_probs).sum(-1)
    mask = targets != 0
    expected = per_token[mask].mean()
    got = masked_cross_entropy(targets, logits, label_smoothing=label_smoothing)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    loss = MaskedCrossEntropy(label_smoothing=label_smoothing)
    np.testing.assert_allclose(loss(targets, logits), expected, rtol=1e-5)
    assert MaskedCrossEntropy.from_config(loss.get_config()).label_smoothing == label_smoothing


def test_padding_does_not_change_the_loss(rng):
    logits = rng.normal(size=(1, 3, 5)).astype("float32")
    targets = np.array([[1, 2, 3]])
    padded_logits = np.concatenate([logits, rng.normal(size=(1, 2, 5)) * 9], 1)
    padded_targets = np.array([[1, 2, 3, 0, 0]])
    np.testing.assert_allclose(
        masked_cross_entropy(padded_targets, padded_logits.astype("float32")),
        masked_cross_entropy(targets, logits),
        rtol=1e-6,
    )


def test_doubly_stochastic_penalty_matches_numpy(rng):
    alignment = rng.dirichlet(np.ones(4), size=(2, 3)).astype("float32")  # (2, 3, 4)
    target_mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    source_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    received = (alignment * target_mask[..., None]).sum(1)
    expected = (((1 - received) ** 2) * source_mask).sum(-1).mean()
    got = doubly_stochastic_penalty(alignment, target_mask, source_mask)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Attention that visits every position exactly once costs nothing.
    np.testing.assert_allclose(doubly_stochastic_penalty(np.eye(3)[None]), 0.0, atol=1e-7)


def test_coverage_loss_matches_numpy(rng):
    alignment = rng.dirichlet(np.ones(5), size=(2, 4)).astype("float32")
    target_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    expected_steps = np.zeros((2, 4))
    for step in range(4):
        coverage = alignment[:, :step].sum(1)
        expected_steps[:, step] = np.minimum(alignment[:, step], coverage).sum(-1)
    expected = expected_steps[target_mask].mean()
    np.testing.assert_allclose(coverage_loss(alignment, target_mask), expected, rtol=1e-5)
    # Never attending twice to one position costs nothing; attending twice does.
    np.testing.assert_allclose(coverage_loss(np.eye(4)[None]), 0.0, atol=1e-7)
    assert float(coverage_loss(np.ones((1, 2, 1), "float32"))) > 0.4


def test_leave_one_out_advantages_match_numpy(rng):
    rewards = rng.uniform(size=(3, 4)).astype("float32")
    others = (rewards.sum(1, keepdims=True) - rewards) / 3
    np.testing.assert_allclose(
        leave_one_out_advantages(rewards), rewards - others, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="at least 2 samples"):
        leave_one_out_advantages(rewards[:, :1])


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_policy_gradient_loss_matches_numpy(temperature, rng):
    logits = rng.normal(size=(3, 4, 6)).astype("float32")
    targets = np.array([[3, 1, 5, 0], [2, 0, 0, 0], [4, 4, 2, 0]])
    advantages = np.array([0.5, -1.0, 2.0], dtype="float32")
    log_probs = np_log_softmax(logits / temperature)
    log_probs = np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    sequence_log_probs = (log_probs * (targets != 0)).sum(1)
    expected = -(advantages * sequence_log_probs).mean()
    loss = PolicyGradientLoss(temperature=temperature)
    np.testing.assert_allclose(loss(targets, logits, sample_weight=advantages), expected, rtol=1e-5)
    assert PolicyGradientLoss.from_config(loss.get_config()).temperature == temperature
    with pytest.raises(ValueError, match="advantage"):
        loss(targets, logits)
