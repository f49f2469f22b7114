"""Peer: the TensorFlow image-captioning tutorial's step-wise decoder over image regions.

As "Image captioning with visual attention" (the `GradientTape` version) writes it, with
an LSTM cell where it has a GRU: a `CNN_Encoder` that is one `Dense` + ReLU over the
cached grid features, and an `RNN_Decoder` that attends over the regions with the
previous state (Bahdanau's score), feeds `[context; embedding]` to the cell, then
`fc1` and `fc2` to the vocabulary (the translation peer's layers, `fc1` added). The
decoder starts from a zero state. Training loops over caption positions inside one
`tf.function`; the loss is masked at padding.
"""

import keras
import tensorflow as tf

from benchmarks.peers.tf_stepwise import Decoder, StepwiseTranslator


class CNNEncoder(keras.layers.Layer):
    def __init__(self, embedding_dim, **kwargs):
        super().__init__(**kwargs)
        self.fc = keras.layers.Dense(embedding_dim, activation="relu")

    def call(self, features):
        return self.fc(features)  # (batch, regions, embedding_dim)


class RNNDecoder(Decoder):
    """The translation tutorial's decoder with the captioning tutorial's `fc1` before `fc2`."""

    def __init__(self, vocab_size, embedding_dim, units, **kwargs):
        super().__init__(vocab_size, embedding_dim, units, **kwargs)
        self.fc1 = keras.layers.Dense(units)

    def output_logits(self, output):
        return self.fc(self.fc1(output))  # the tutorial's fc2(fc1(output))


class StepwiseCaptioner(StepwiseTranslator):
    """The translator's training and greedy loops over the captioning tutorial's layers."""

    def layers(self, sizes):
        encoder = CNNEncoder(sizes.embedding_dim)
        return encoder, RNNDecoder(sizes.vocab_size, sizes.embedding_dim, sizes.units)

    def memory(self, features):
        zeros = tf.zeros([tf.shape(features)[0], self.units])
        return self.encoder(features), [zeros, zeros]


def build(sizes, features, target_in, target_out, threads=None):
    # threads: TensorFlow's pool is set for the whole process (`speed.set_threads`)
    return StepwiseCaptioner(sizes, features, target_in, target_out)
