"""Peer: a Keras functional seq2seq with a full-sequence decoder and `AdditiveAttention`.

What a Keras user writes from the core layers alone: a bidirectional LSTM encoder, an
`LSTM` decoder over the whole (teacher-forced) target started from the encoder's final
states, `keras.layers.AdditiveAttention` of the decoder outputs over the encoder outputs,
then `tanh(W [decoded; context])` and the vocabulary projection. It trains with
`model.fit`. Having no step function, greedy decoding re-runs the model over the prefix
decoded so far (padded with id 0, which the masks skip) and reads the next position.
"""

import keras
import numpy as np

from benchmarks.peers import repeated_dataset, step_timer


def full_sequence_model(vocab_size, embedding_dim, units):
    source = keras.Input((None,), dtype="int32", name="source")
    target = keras.Input((None,), dtype="int32", name="target")
    embedded_source = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True)(source)
    memory, forward_h, forward_c, backward_h, backward_c = keras.layers.Bidirectional(
        keras.layers.LSTM(units // 2, return_sequences=True, return_state=True)
    )(embedded_source)
    state = [
        keras.layers.Concatenate()([forward_h, backward_h]),
        keras.layers.Concatenate()([forward_c, backward_c]),
    ]
    embedded_target = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True)(target)
    decoded = keras.layers.LSTM(units, return_sequences=True)(
        embedded_target, initial_state=state
    )  # (batch, target_len, units)
    context = keras.layers.AdditiveAttention()([decoded, memory])
    features = keras.layers.Dense(units, activation="tanh")(
        keras.layers.Concatenate()([decoded, context])
    )
    logits = keras.layers.Dense(vocab_size)(features)  # (batch, target_len, vocab_size)
    return keras.Model([source, target], logits)


class KerasFullSequence:
    def __init__(self, sizes, source, target_in, target_out, start_id=1):
        self.start_id = start_id
        self.model = full_sequence_model(sizes.vocab_size, sizes.embedding_dim, sizes.units)
        self.model.compile(
            keras.optimizers.Adam(1e-3, clipnorm=1.0),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        self.data = repeated_dataset((source, target_in), target_out)

    def train(self, steps):
        timer = step_timer()
        history = self.model.fit(
            self.data, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0, callbacks=[timer]
        )
        # The steps alone, as our rows are timed: not what `fit` does before and after.
        self.step_seconds = timer.wall, timer.cpu
        return history.history["loss"][-1]

    def greedy(self, source, steps):
        batch = source.shape[0]
        prefix = np.zeros((batch, steps), "int32")
        prefix[:, 0] = self.start_id
        tokens = np.zeros((batch, steps), "int32")
        for position in range(steps):
            logits = self.model.predict_on_batch([source, prefix])
            tokens[:, position] = np.argmax(logits[:, position], axis=-1)
            if position + 1 < steps:
                prefix[:, position + 1] = tokens[:, position]
        return tokens


def build(sizes, source, target_in, target_out, threads=None):
    # threads: TensorFlow's pool is set for the whole process (`speed.set_threads`)
    return KerasFullSequence(sizes, source, target_in, target_out)
