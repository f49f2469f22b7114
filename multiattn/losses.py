"""Losses for sequence models: masked cross-entropy and attention penalties."""

import keras
from keras import ops


def token_cross_entropy(targets, logits, label_smoothing=0.0):
    """Cross-entropy of every token, in float32: `(batch, T)`.

    Args:
        targets: int `(batch, T)` target ids.
        logits: `(batch, T, vocab)` unnormalised scores.
        label_smoothing: Float in [0, 1): the target distribution is
            `(1 - label_smoothing) * one_hot + label_smoothing / vocab`
            (Szegedy et al. 2016).
    """
    logits = ops.cast(logits, "float32")  # (batch, T, vocab)
    # The fused kernel computes the loss and its gradient without materialising the
    # log-probabilities; picking them with take_along_axis costs a scatter over
    # batch * T * vocab positions in the backward pass.
    losses = ops.sparse_categorical_crossentropy(
        ops.cast(targets, "int32"), logits, from_logits=True
    )  # (batch, T)
    if label_smoothing:
        # -mean_v log p_v = logsumexp(logits) - mean_v logits_v
        uniform = ops.logsumexp(logits, axis=-1) - ops.mean(logits, axis=-1)
        losses = (1.0 - label_smoothing) * losses + label_smoothing * uniform
    return losses


def masked_cross_entropy(targets, logits, mask=None, label_smoothing=0.0):
    """Mean token cross-entropy over unmasked positions, in float32.

    Args:
        targets: int `(batch, T)` target ids.
        logits: `(batch, T, vocab)` unnormalised scores.
        mask: Optional boolean `(batch, T)`; default: `targets != 0` (0 is padding).
        label_smoothing: See `token_cross_entropy`.

    Returns:
        A float32 scalar: the loss summed over unmasked tokens divided by their count.
    """
    if mask is None:
        mask = ops.not_equal(targets, 0)
    losses = token_cross_entropy(targets, logits, label_smoothing)
    mask = ops.cast(mask, "float32")
    return ops.sum(losses * mask) / ops.maximum(ops.sum(mask), 1.0)


def token_weights(targets, sample_weight=None, pad_id=0):
    """float32 `(batch, T)`: 1 on tokens that are not `pad_id`, times `sample_weight`.

    `sample_weight` is None, `(batch,)` (one weight per sequence, for all its tokens)
    or `(batch, T)` (one per token).
    """
    weights = ops.cast(ops.not_equal(targets, pad_id), "float32")
    if sample_weight is None:
        return weights
    sample_weight = ops.cast(sample_weight, "float32")
    if len(sample_weight.shape) == 1:
        sample_weight = ops.expand_dims(sample_weight, 1)
    return weights * sample_weight


def doubly_stochastic_penalty(alignment, target_mask=None, source_mask=None):
    """Show, Attend and Tell's penalty `sum_j (1 - sum_i alpha_ij)^2`, averaged over the batch.

    It pushes every source position (image region) to receive, over the whole output,
    a total attention of about one.

    Args:
        alignment: `(batch, target_len, source_len)` attention weights.
        target_mask: Optional boolean `(batch, target_len)`: padded steps do not count.
        source_mask: Optional boolean `(batch, source_len)`: padded positions do not count.

    Reference:
        Xu et al. 2015, "Show, Attend and Tell" (arXiv:1502.03044), eq. 14.
    """
    alignment = ops.cast(alignment, "float32")
    if target_mask is not None:
        alignment = alignment * ops.cast(ops.expand_dims(target_mask, -1), "float32")
    received = ops.sum(alignment, axis=1)  # (batch, source_len)
    penalty = ops.square(1.0 - received)
    if source_mask is not None:
        penalty = penalty * ops.cast(source_mask, "float32")
    return ops.mean(ops.sum(penalty, axis=-1))


def coverage_loss(alignment, target_mask=None):
    """`sum_j min(alpha_ij, c_ij)` with `c_i` the attention of earlier steps, per target token.

    Penalises attending again to what was already attended to (repetition).

    Args:
        alignment: `(batch, target_len, source_len)` attention weights.
        target_mask: Optional boolean `(batch, target_len)`.

    Reference:
        See, Liu & Manning 2017, "Get To The Point" (arXiv:1704.04368), eq. 12-13;
        the coverage vector of Tu et al. 2016 (arXiv:1601.04811).
    """
    alignment = ops.cast(alignment, "float32")
    coverage = ops.cumsum(alignment, axis=1) - alignment  # attention before step i
    per_step = ops.sum(ops.minimum(alignment, coverage), axis=-1)  # (batch, target_len)
    if target_mask is None:
        return ops.mean(per_step)
    mask = ops.cast(target_mask, "float32")
    return ops.sum(per_step * mask) / ops.maximum(ops.sum(mask), 1.0)


def score_function_surrogate(reward, sample_log_prob, baseline=0.0):
    """A scalar whose gradient is the REINFORCE estimate `mean_b[(r_b - b) d log p(s_b)]`.

    Maximising it (subtracting it from a loss) moves the distribution the samples
    `s_b` were drawn from towards those with a high reward `r_b`. The reward is held
    constant (`stop_gradient`); the baseline `b` lowers the variance of the estimate
    and, since it does not depend on the sample, leaves it unbiased.

    Args:
        reward: `(batch,)` rewards, e.g. the log-likelihood `log p(y|s)` of each sequence.
        sample_log_prob: `(batch,)` `log p(s)` of the samples, differentiable.
        baseline: A scalar.

    Reference:
        Williams 1992, "Simple statistical gradient-following algorithms for
        connectionist reinforcement learning"; Xu et al. 2015, "Show, Attend and
        Tell" (arXiv:1502.03044), eq. 10-12.
    """
    advantage = ops.stop_gradient(ops.cast(reward, "float32") - baseline)
    return ops.mean(advantage * ops.cast(sample_log_prob, "float32"))


@keras.saving.register_keras_serializable(package="multiattn")
class MaskedCrossEntropy(keras.losses.Loss):
    """The token cross-entropy as a Keras loss, for `model.compile(loss=...)`.

    The mean over the tokens whose target is not `pad_id`: the per-token losses are
    reduced by Keras with the padding mask as sample weights
    (`reduction="mean_with_sample_weight"`), so that under `tf.distribute` the loss
    is scaled per replica as every Keras loss is. `y_pred` are logits; a
    `sample_weight` passed when calling multiplies the mask: `(batch,)` weighs each
    sequence (every token of sequence b counts w_b times, so the loss is
    `sum_bt w_b l_bt m_bt / sum_bt w_b m_bt`), `(batch, T)` each token.

    Args:
        label_smoothing: See `token_cross_entropy`.
        pad_id: The padding id of the targets.
        name: Name of the loss.
        **kwargs: Standard loss arguments.
    """

    def __init__(self, label_smoothing=0.0, pad_id=0, name="masked_cross_entropy", **kwargs):
        kwargs.setdefault("reduction", "mean_with_sample_weight")
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id

    def __call__(self, y_true, y_pred, sample_weight=None):
        weights = token_weights(y_true, sample_weight, self.pad_id)
        return super().__call__(y_true, y_pred, sample_weight=weights)

    def call(self, y_true, y_pred):
        return token_cross_entropy(y_true, y_pred, self.label_smoothing)

    def get_config(self):
        config = super().get_config()
        config.update({"label_smoothing": self.label_smoothing, "pad_id": self.pad_id})
        return config


def leave_one_out_advantages(rewards):
    """Each sample's reward minus the mean reward of the other samples of its source.

    The baseline of self-critical training with several samples per source (Kool et
    al. 2019; Luo 2020, "A Better Variant of Self-Critical Sequence Training"): it
    depends on the other samples only, so the gradient estimate stays unbiased, and it
    needs no extra greedy decoding.

    Args:
        rewards: float `(sources, samples)` rewards, `samples >= 2`.

    Returns:
        float32 `(sources, samples)`: `r_ij - mean_{k != j} r_ik`.
    """
    rewards = ops.cast(rewards, "float32")
    samples = ops.shape(rewards)[-1]
    if samples is not None and samples < 2:
        raise ValueError(f"leave-one-out needs at least 2 samples per source, got {samples}")
    total = ops.sum(rewards, axis=-1, keepdims=True)
    return rewards - (total - rewards) / (ops.cast(samples, "float32") - 1.0)


@keras.saving.register_keras_serializable(package="multiattn")
class PolicyGradientLoss(keras.losses.Loss):
    """REINFORCE for whole sequences: `-mean_b A_b log p(y_b)`, with advantages as weights.

    For self-critical sequence training (Rennie et al. 2017): `y_true` are sequences
    sampled from the model itself, `y_pred` the model's teacher-forced logits on them,
    and `sample_weight` (required) the advantage of each sequence, `(batch,)`: its
    reward (e.g. CIDEr-D) minus a baseline (e.g. `leave_one_out_advantages`). The
    sequence log-probability is summed over the tokens that are not `pad_id`, and the
    loss is `sum_b A_b * (-log p(y_b)) / batch`, whose gradient is the REINFORCE
    estimate of the gradient of the negated expected reward. Compile a `Seq2Seq` with
    it (`model.compile(optimizer, loss=PolicyGradientLoss())`) and train on batches
    of samples with `train_on_batch(..., sample_weight=advantages)`.

    With a `temperature` T the policy is the tempered distribution `softmax(logits /
    T)`, the one `RandomSampling(temperature=T)` samples from: the estimate stays
    unbiased for it, and a T below 1 keeps the samples of a model with a flat tail (a
    label-smoothed one) close to its greedy output.

    Args:
        temperature: Positive float: the logits are divided by it.
        pad_id: The padding id of the targets.
        name: Name of the loss.
        **kwargs: Standard loss arguments.

    Reference:
        Rennie et al. 2017, "Self-critical Sequence Training for Image Captioning"
        (arXiv:1612.00563); Williams 1992.
    """

    def __init__(self, temperature=1.0, pad_id=0, name="policy_gradient", **kwargs):
        kwargs.setdefault("reduction", "sum_over_batch_size")
        super().__init__(name=name, **kwargs)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be positive, got temperature={temperature}")
        self.temperature = float(temperature)
        self.pad_id = pad_id

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is None:
            raise ValueError(
                "PolicyGradientLoss needs each sequence's advantage as `sample_weight`"
            )
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        mask = ops.cast(ops.not_equal(y_true, self.pad_id), "float32")  # (batch, T)
        logits = ops.cast(y_pred, "float32") / self.temperature
        return ops.sum(token_cross_entropy(y_true, logits) * mask, axis=-1)  # (batch,)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "pad_id": self.pad_id})
        return config
