"""What a user would write instead of multiattn: the peers `benchmarks.speed` runs beside us.

Each peer is written as its tutorial writes it, at the benchmark's sizes, and trains on
the same batch as our models:

- `keras_full_sequence`: a Keras functional model, a full-sequence `LSTM` decoder and
  `keras.layers.AdditiveAttention` over a bidirectional LSTM encoder, trained with
  `model.fit` (the full-sequence kind, like our fast path); greedy decoding re-runs the
  decoder over the prefix, as Keras' translation examples do.
- `tf_stepwise`: the TensorFlow NMT tutorial's step-wise Bahdanau decoder, a Python loop
  over target positions inside a `tf.function` with a `GradientTape`.
- `torch_stepwise`: the PyTorch seq2seq tutorial's step-wise Bahdanau decoder, eager,
  one call per target position (only when `torch` is importable).
- `tf_caption_stepwise`: the TensorFlow image-captioning tutorial's step-wise decoder
  with Bahdanau attention over a grid of image features.

A peer module has `build(sizes, source, target_in, target_out, threads)` returning an object
with `train(steps)` (that many optimizer steps on the batch, returning the last loss)
and `greedy(source, steps)` (token ids `(batch, steps)`, every sentence running every
step, as our benchmark's decoding does).
"""

import dataclasses
import importlib
import time


@dataclasses.dataclass(frozen=True)
class Peer:
    name: str
    kind: str  # "step-wise" or "full-sequence": the kind of our rows it is compared with
    task: str  # "translate" or "caption"
    needs: str  # the module that must be importable
    description: str


PEERS = (
    Peer(
        "keras_full_sequence",
        "full-sequence",
        "translate",
        "keras",
        "Keras full-sequence LSTM + keras.layers.AdditiveAttention, model.fit",
    ),
    Peer(
        "tf_stepwise",
        "step-wise",
        "translate",
        "tensorflow",
        "TF tutorial step-wise Bahdanau loop in a tf.function",
    ),
    Peer(
        "torch_stepwise",
        "step-wise",
        "translate",
        "torch",
        "PyTorch tutorial step-wise Bahdanau decoder, eager",
    ),
    Peer(
        "tf_caption_stepwise",
        "step-wise",
        "caption",
        "tensorflow",
        "TF captioning tutorial step-wise Bahdanau loop in a tf.function",
    ),
)
NAMES = tuple(peer.name for peer in PEERS)


def get(name):
    for peer in PEERS:
        if peer.name == name:
            return peer
    raise ValueError(f"unknown peer {name!r}; expected one of {', '.join(NAMES)}")


def available(peer):
    """Whether the peer's framework can be imported here."""
    try:
        importlib.import_module(peer.needs)
    except ImportError:
        return False
    return True


def repeated_dataset(inputs, targets):
    """One batch, repeated: the training data of every Keras peer and of our rows.

    A `tf.data` pipeline feeds `model.fit` on every Keras backend, at no cost per step
    worth counting (numpy arrays given to `fit` would be split and copied each call).
    """
    import tensorflow as tf

    return tf.data.Dataset.from_tensors((inputs, targets)).repeat()


def step_timer():
    """A callback timing a `fit`'s steps alone: from the first step's start to the last
    one's end, `(wall, cpu)` seconds in its `wall` and `cpu` attributes.

    What `fit` does before its first step and after its last is left out: on PyTorch,
    `fit` over a `tf.data` pipeline waits several seconds after its last step (20 steps
    of 0.5-0.8 s took 20.5 s from call to return, whatever the model), which is not the
    model's speed.
    """
    import keras

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.started = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, batch, logs=None):
            self.wall = time.perf_counter() - self.started[0]
            self.cpu = time.process_time() - self.started[1]

    return StepTimer()


def build(peer, sizes, source, target_in, target_out, threads=None):
    """The peer's model on this batch; `threads` reaches frameworks with their own pool."""
    module = importlib.import_module(f"benchmarks.peers.{peer.name}")
    return module.build(sizes, source, target_in, target_out, threads)
