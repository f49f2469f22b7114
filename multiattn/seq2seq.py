import keras
from keras import ops

from multiattn.generative_model import GenerativeModel
from multiattn.losses import (
    MaskedCrossEntropy,
    coverage_loss,
    doubly_stochastic_penalty,
    score_function_surrogate,
    token_cross_entropy,
    token_weights,
)
from multiattn.special_tokens import END_ID, START_ID


@keras.saving.register_keras_serializable(package="multiattn")
class Seq2Seq(GenerativeModel):
    """An encoder and a decoder, trained with `model.fit` and decoded with `generate`.

    `fit` takes `((source, target_in), target_out)`: `target_in` is the target with the
    start token prepended, `target_out` the target followed by the end token, both
    padded with 0. The loss is the cross-entropy over non-padding tokens (optionally
    label-smoothed) plus the attention penalties that are switched on; the metric
    `accuracy` is the token accuracy over non-padding tokens. `fit(...,
    sample_weight=w)` with `w` of shape `(batch,)` weighs each sentence: every token of
    sentence b counts `w_b` times in the loss and the accuracy (a weight of 0 leaves
    the sentence out); `(batch, T)` weighs each target token. The penalties are not
    weighted. A loss given to `compile` replaces the cross-entropy: it is called with
    `target_out`, the logits and the sample weights (e.g. `PolicyGradientLoss`, for
    self-critical training on the model's own samples).

    The encoder is any layer that maps a source batch to either `memory` or
    `(memory, memory_mask, encoder_state)` (like `BiLSTMEncoder`; `ImageGridEncoder`
    returns the memory alone). The decoder is an `AttentionDecoder` or `PlainDecoder`.

    Args:
        encoder: The encoder layer.
        decoder: The decoder layer.
        start_id: Id of the start token (the first decoder input when generating);
            `multiattn.special_tokens.START_ID` by default.
        end_id: Id of the end token; `multiattn.special_tokens.END_ID` by default.
        reverse_source: Reverse every source sequence (its unpadded part) before
            encoding, as Sutskever et al. 2014 did for their model without attention.
        label_smoothing: Label smoothing of the cross-entropy.
        attention_penalty: Weight `lambda` of the doubly stochastic attention penalty
            (Show, Attend and Tell); 0 switches it off. The penalty is divided by the
            mean target length, since the cross-entropy here is a mean per token
            while the paper's is a sum over the caption: `lambda=1` keeps the paper's
            balance.
        coverage_loss_weight: Weight of the coverage loss (See et al. 2017); 0
            switches it off.
        reinforce_weight: With hard attention (a decoder attention layer built with
            `hard=True`), the weight `lambda_r` of the REINFORCE term of Show, Attend
            and Tell's variational lower bound: its gradient is
            `lambda_r (log p(y|s) - b) d log p(s)`, with the reward `log p(y|s)` (the
            sequence's log-likelihood under the sampled locations `s`) held
            constant and `b` a moving average of it (`b <- 0.9 b + 0.1 mean`, the
            non-trainable weight `reward_baseline`). Like the penalty above it is
            divided by the mean target length.
        entropy_weight: With hard attention, the weight `lambda_e` of the entropy
            bonus `sum_t H(alpha_t)` (also divided by the mean target length).
        **kwargs: Standard model arguments.

    Call arguments:
        inputs: `(source, target_in)`.
        training: Whether dropout is active.

    Returns:
        `(logits, alignment)` with the decoder's attention, logits alone without.

    Examples:
        >>> import numpy as np
        >>> from multiattn import AttentionDecoder, BeamSearch, BiLSTMEncoder
        >>> encoder = BiLSTMEncoder(vocab_size=30, embedding_dim=8, units=16)
        >>> decoder = AttentionDecoder(vocab_size=30, embedding_dim=8, units=16)
        >>> model = Seq2Seq(encoder, decoder, start_id=1, end_id=2)
        >>> model.compile(optimizer="adam")
        >>> source = np.array([[5, 6, 7, 0], [8, 9, 0, 0]])
        >>> target_in, target_out = np.array([[1, 7, 6, 5]]*2), np.array([[7, 6, 5, 2]]*2)
        >>> history = model.fit((source, target_in), target_out, epochs=1, verbose=0)
        >>> result = model.generate(source, search=BeamSearch(beam_size=4), max_length=6)
        >>> result["tokens"].shape, result["attention"].shape
        ((2, 1, 6), (2, 1, 6, 4))
    """

    def __init__(
        self,
        encoder,
        decoder,
        start_id=START_ID,
        end_id=END_ID,
        reverse_source=False,
        label_smoothing=0.0,
        attention_penalty=0.0,
        coverage_loss_weight=0.0,
        reinforce_weight=1.0,
        entropy_weight=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (attention_penalty or coverage_loss_weight) and decoder.attention is None:
            raise ValueError("Attention penalties need a decoder with attention.")
        self.encoder = encoder
        self.decoder = decoder
        self.start_id = int(start_id)
        self.end_id = int(end_id)
        self.reverse_source = reverse_source
        self.label_smoothing = label_smoothing
        self.attention_penalty = attention_penalty
        self.coverage_loss_weight = coverage_loss_weight
        self.reinforce_weight = reinforce_weight
        self.entropy_weight = entropy_weight
        self.reward_baseline = None  # a weight of models with hard attention, see `build`
        self.cross_entropy = MaskedCrossEntropy(label_smoothing=label_smoothing)
        self.token_accuracy = keras.metrics.Mean(name="accuracy")

    @property
    def hard_attention(self):
        """Whether the decoder's attention samples locations in training."""
        attention = getattr(self.decoder, "attention", None)
        return attention is not None and attention.hard

    # -- forward ---------------------------------------------------------------
    def encode(self, source, training=None):
        """Returns `(memory, memory_mask, encoder_state)`; the mask is never `None`."""
        if self.reverse_source:
            source = reverse_padded(source)
        outputs = self.encoder(source, training=training)
        if isinstance(outputs, (tuple, list)):
            memory, memory_mask, encoder_state = outputs
        else:
            memory, memory_mask, encoder_state = outputs, None, None
        if memory_mask is None:
            memory_mask = ops.ones(ops.shape(memory)[:2], dtype="bool")
        return memory, memory_mask, encoder_state

    def call(self, inputs, training=None):
        """`(logits, alignment)`; in training with hard attention also the sampling record.

        That record is `(sample_log_probs, entropy, sampled)` (see
        `multiattn.decoders.attention_decoder.sampling_record`), which
        `compute_loss` turns into the REINFORCE term.
        """
        source, target_in = inputs
        memory, memory_mask, encoder_state = self.encode(source, training=training)
        sampling = bool(training) and self.hard_attention
        outputs = self.decoder(
            target_in,
            memory,
            memory_mask=memory_mask,
            encoder_state=encoder_state,
            training=training,
            **({"return_sampling": True} if sampling else {}),
        )
        if not isinstance(outputs, (tuple, list)):  # no attention
            return outputs
        logits, alignment = outputs[:2]
        target_mask = ops.not_equal(target_in, 0)
        if self.attention_penalty:
            # The paper adds the penalty to the cross-entropy summed over the caption;
            # ours is a mean per token, so the penalty is divided by the mean length.
            penalty = doubly_stochastic_penalty(alignment, target_mask, memory_mask)
            tokens_per_sequence = ops.mean(ops.sum(ops.cast(target_mask, "float32"), axis=1))
            self.add_loss(self.attention_penalty * penalty / ops.maximum(tokens_per_sequence, 1.0))
        if self.coverage_loss_weight:
            self.add_loss(self.coverage_loss_weight * coverage_loss(alignment, target_mask))
        return tuple(outputs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits = y_pred[0] if isinstance(y_pred, (tuple, list)) else y_pred
        # Through a Keras loss and the trainer's aggregation, as a compiled loss would
        # be: under tf.distribute each replica's loss is divided by the replica count.
        # `fit(..., sample_weight=w)`: one weight per sentence, or per target token.
        # A loss given to `compile` (e.g. `PolicyGradientLoss`) replaces the cross-entropy.
        token_loss = self.cross_entropy if self.loss is None else self.loss
        if not isinstance(token_loss, keras.losses.Loss):
            raise ValueError(
                "Seq2Seq: a loss given to `compile` replaces the token cross-entropy and "
                "must be a keras.losses.Loss object called with (target_out, logits, "
                f"sample_weight), e.g. multiattn.PolicyGradientLoss(); got {token_loss!r}"
            )
        loss = token_loss(y, logits, sample_weight=sample_weight)
        for extra in self.losses:
            loss = loss + ops.cast(self._aggregate_additional_loss(extra), loss.dtype)
        if isinstance(y_pred, (tuple, list)) and len(y_pred) > 2:
            # Training with hard attention: `call` added the record of the samples.
            loss = loss - self._hard_attention_objective(y, *y_pred)
        return loss

    def _hard_attention_objective(self, y, logits, alignment, log_probs, entropy, sampled):
        """The terms of the lower bound that train where hard attention looks.

        Returns the scalar to subtract from the loss, whose gradient is that of
        `(lambda_r * mean_b[(log p(y_b|s_b) - b) log p(s_b)] + lambda_e * mean_b sum_t
        H_bt) / mean length` and whose value is zero, and moves the baseline `b`
        towards this batch's mean reward of the sampled sequences.
        """
        mask = token_weights(y)  # (batch, T)
        log_likelihood = -ops.sum(token_cross_entropy(y, logits) * mask, axis=1)  # (batch,)
        sample_log_prob = ops.sum(log_probs * mask, axis=1)  # log p(s) of each sequence
        baseline = ops.cast(self.reward_baseline, "float32")
        objective = self.reinforce_weight * score_function_surrogate(
            log_likelihood, sample_log_prob, baseline
        )
        if self.entropy_weight:
            objective = objective + self.entropy_weight * ops.mean(ops.sum(entropy * mask, 1))
        count = ops.sum(sampled)
        batch_reward = ops.sum(ops.stop_gradient(log_likelihood) * sampled) / ops.maximum(
            count, 1.0
        )
        self.reward_baseline.assign(
            ops.where(count > 0, 0.9 * baseline + 0.1 * batch_reward, baseline)
        )
        tokens_per_sequence = ops.maximum(ops.mean(ops.sum(mask, axis=1)), 1.0)
        objective = objective / tokens_per_sequence
        # Only its gradient is wanted: valued zero, the reported loss stays the
        # cross-entropy (plus penalties), comparable with `val_loss`.
        return objective - ops.stop_gradient(objective)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logits = y_pred[0] if isinstance(y_pred, (tuple, list)) else y_pred
        # A token is right when its logit is the largest (ties count as right): a max
        # and a gather, cheaper than argmax over (batch, T, vocab) on every backend.
        target_logits = ops.take_along_axis(
            logits, ops.expand_dims(ops.cast(y, "int32"), -1), axis=-1
        )  # (batch, T, 1)
        correct = ops.greater_equal(ops.squeeze(target_logits, -1), ops.max(logits, axis=-1))
        self.token_accuracy.update_state(
            ops.cast(correct, "float32"), sample_weight=token_weights(y, sample_weight)
        )
        return super().compute_metrics(x, y, y_pred, sample_weight)

    # -- generation ------------------------------------------------------------
    def search_inputs(self, source):
        """`(step_fn, state, constants, source_mask)` for a search (see `GenerativeModel`):
        the source encoded once, and the decoder's `step`."""
        memory, memory_mask, encoder_state = self.encode(source, training=False)
        decoder = self.decoder
        state, (keys, values) = decoder.initial_state_and_memory(memory, memory_mask, encoder_state)

        def step_fn(token_ids, state, constants):
            keys, values, memory_mask = constants
            return decoder.step(token_ids, state, (keys, values), memory_mask)

        return step_fn, state, (keys, values, memory_mask), memory_mask

    # -- saving ----------------------------------------------------------------
    def build(self, input_shape=None):
        if self.built:
            return
        source_shape, target_shape = input_shape
        if not self.encoder.built:
            self.encoder.build(source_shape)
        memory_shape = self.encoder.compute_output_shape(source_shape)
        if isinstance(memory_shape, (tuple, list)) and isinstance(memory_shape[0], (tuple, list)):
            memory_shape = memory_shape[0]
        if not self.decoder.built:
            self.decoder.build(target_shape, memory_shape)
        if self.hard_attention and self.reward_baseline is None:
            self.reward_baseline = self.add_weight(
                name="reward_baseline",
                shape=(),
                initializer="zeros",
                trainable=False,
                aggregation="mean",
            )
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "decoder": keras.saving.serialize_keras_object(self.decoder),
                "start_id": self.start_id,
                "end_id": self.end_id,
                "reverse_source": self.reverse_source,
                "label_smoothing": self.label_smoothing,
                "attention_penalty": self.attention_penalty,
                "coverage_loss_weight": self.coverage_loss_weight,
                "reinforce_weight": self.reinforce_weight,
                "entropy_weight": self.entropy_weight,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)


def reverse_padded(token_ids):
    """Reverses the non-padding prefix of each row: `[a b c 0 0] -> [c b a 0 0]`."""
    lengths = ops.sum(ops.cast(ops.not_equal(token_ids, 0), "int32"), axis=1, keepdims=True)
    positions = ops.expand_dims(ops.arange(ops.shape(token_ids)[1], dtype="int32"), 0)
    source_positions = ops.where(positions < lengths, lengths - 1 - positions, positions)
    return ops.take_along_axis(token_ids, source_positions, axis=1)
