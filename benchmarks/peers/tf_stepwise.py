"""Peer: the TensorFlow NMT tutorial's step-wise Bahdanau decoder.

As the tutorial ("Neural machine translation with attention", the `GradientTape`
version) writes it, with an LSTM cell where it has a GRU and a bidirectional encoder to
match our models: an `Encoder` layer, a `BahdanauAttention` layer scoring
`V tanh(W1 query + W2 values)` (the keys projected again at every step), and a `Decoder`
layer that attends with the previous state, feeds `[context; embedding]` to the cell and
projects its output to the vocabulary. Training is a Python loop over the target
positions inside one `tf.function` (unrolled when traced), the loss masked at padding;
greedy decoding is the same loop feeding back the argmax.
"""

import keras
import tensorflow as tf


class Encoder(keras.layers.Layer):
    def __init__(self, vocab_size, embedding_dim, units, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim)
        self.rnn = keras.layers.Bidirectional(
            keras.layers.LSTM(units // 2, return_sequences=True, return_state=True)
        )

    def call(self, token_ids):
        output, forward_h, forward_c, backward_h, backward_c = self.rnn(self.embedding(token_ids))
        state = [tf.concat([forward_h, backward_h], -1), tf.concat([forward_c, backward_c], -1)]
        return output, state


class BahdanauAttention(keras.layers.Layer):
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.W1 = keras.layers.Dense(units)
        self.W2 = keras.layers.Dense(units)
        self.V = keras.layers.Dense(1)

    def call(self, query, values):
        score = self.V(tf.nn.tanh(self.W1(query[:, None, :]) + self.W2(values)))  # (b, s, 1)
        attention_weights = tf.nn.softmax(score, axis=1)
        context = tf.reduce_sum(attention_weights * values, axis=1)
        return context, attention_weights


class Decoder(keras.layers.Layer):
    def __init__(self, vocab_size, embedding_dim, units, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim)
        self.cell = keras.layers.LSTMCell(units)
        self.fc = keras.layers.Dense(vocab_size)
        self.attention = BahdanauAttention(units)

    def call(self, token_ids, state, values):
        context, attention_weights = self.attention(state[0], values)
        inputs = tf.concat([context, self.embedding(token_ids)], axis=-1)
        output, state = self.cell(inputs, state)
        return self.output_logits(output), state, attention_weights

    def output_logits(self, output):
        return self.fc(output)


def masked_loss(loss_object, real, logits):
    mask = tf.cast(tf.not_equal(real, 0), logits.dtype)
    return tf.reduce_mean(loss_object(real, logits) * mask)


class StepwiseTranslator:
    def __init__(self, sizes, source, target_in, target_out, start_id=1):
        self.start_id = start_id
        self.units = sizes.units
        self.encoder, self.decoder = self.layers(sizes)
        self.optimizer = keras.optimizers.Adam(1e-3, clipnorm=1.0)
        self.loss_object = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="none"
        )
        self.batch = (tf.constant(source), tf.constant(target_in), tf.constant(target_out))
        self.build_variables()

    def layers(self, sizes):
        encoder = Encoder(sizes.vocab_size, sizes.embedding_dim, sizes.units)
        return encoder, Decoder(sizes.vocab_size, sizes.embedding_dim, sizes.units)

    def build_variables(self):
        """Creates the layers' and the optimizer's variables eagerly, outside `tf.function`."""
        source, target_in, _ = self.batch
        values, state = self.memory(source)
        self.decoder(target_in[:, 0], state, values)
        self.optimizer.build(self.trainable_variables())

    def memory(self, source):
        return self.encoder(source)

    @tf.function
    def train_step(self, source, target_in, target_out):
        with tf.GradientTape() as tape:
            values, state = self.memory(source)
            loss = 0.0
            for t in range(target_in.shape[1]):
                logits, state, _ = self.decoder(target_in[:, t], state, values)
                loss += masked_loss(self.loss_object, target_out[:, t], logits)
            loss = loss / target_in.shape[1]
        variables = self.trainable_variables()
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return loss

    def trainable_variables(self):
        return self.encoder.trainable_variables + self.decoder.trainable_variables

    def train(self, steps):
        for _ in range(steps):
            loss = self.train_step(*self.batch)
        return float(loss)

    @tf.function
    def greedy_step_loop(self, source, steps):
        values, state = self.memory(source)
        token_ids = tf.fill([tf.shape(source)[0]], self.start_id)
        outputs = []
        for _ in range(steps):
            logits, state, _ = self.decoder(token_ids, state, values)
            token_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
            outputs.append(token_ids)
        return tf.stack(outputs, axis=1)

    def greedy(self, source, steps):
        return self.greedy_step_loop(tf.constant(source), steps).numpy()


def build(sizes, source, target_in, target_out, threads=None):
    # threads: TensorFlow's pool is set for the whole process (`speed.set_threads`)
    return StepwiseTranslator(sizes, source, target_in, target_out)
