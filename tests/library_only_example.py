"""The library alone, as `pip install multiattn jax` gives it: a tiny `Seq2Seq` on JAX.

Run by `.ci/library_install_check.sh` in a fresh virtual environment without TensorFlow
(not a test module: pytest imports it for doctests only, which runs nothing):

    KERAS_BACKEND=jax python tests/library_only_example.py

Trains a BiLSTM encoder with an attentional decoder for one epoch on random ids, decodes
with greedy and beam search, saves to `.keras` and loads it back with `safe_mode=True`.
It checks shapes and the round trip, not what the model learned.
"""

import os
import sys
import tempfile

VOCAB_SIZE = 12  # 0 pads, 1 starts, 2 ends, 3 is unknown, 4..11 are symbols
START_ID, END_ID = 1, 2
SOURCE_LENGTH = 5
MAX_LENGTH = 6


def random_copy_data(size, seed=0):
    """`(source, target_in, target_out)` of a copy task on random symbols."""
    import numpy as np

    rng = np.random.default_rng(seed)
    source = rng.integers(4, VOCAB_SIZE, size=(size, SOURCE_LENGTH))
    target_in = np.concatenate([np.full((size, 1), START_ID), source], axis=1)
    target_out = np.concatenate([source, np.full((size, 1), END_ID)], axis=1)
    return source, target_in, target_out


def main():
    """Runs the example; raises AssertionError on a wrong shape or round trip."""
    import keras
    import numpy as np

    import multiattn
    from multiattn import AttentionDecoder, BeamSearch, BiLSTMEncoder, GreedySearch, Seq2Seq

    print(f"multiattn {multiattn.__version__} from {os.path.dirname(multiattn.__file__)}")
    print(f"Keras {keras.__version__} on {keras.config.backend()}")
    keras.utils.set_random_seed(0)
    source, target_in, target_out = random_copy_data(64)
    model = Seq2Seq(
        BiLSTMEncoder(vocab_size=VOCAB_SIZE, embedding_dim=8, units=16),
        AttentionDecoder(vocab_size=VOCAB_SIZE, embedding_dim=8, units=16, attention="bahdanau"),
        start_id=START_ID,
        end_id=END_ID,
    )
    model.compile(keras.optimizers.Adam(1e-2))
    history = model.fit((source, target_in), target_out, batch_size=16, epochs=1, verbose=0)
    loss = history.history["loss"][-1]
    assert np.isfinite(loss), loss
    print(f"one epoch: loss {loss:.3f}")

    batch = source[:3]
    greedy = model.generate(batch, search=GreedySearch(), max_length=MAX_LENGTH)
    assert greedy["tokens"].shape == (3, MAX_LENGTH), greedy["tokens"].shape
    assert greedy["attention"].shape == (3, MAX_LENGTH, SOURCE_LENGTH)
    beam_search = BeamSearch(beam_size=3, length_penalty=0.6, num_return=2)
    beam = model.generate(batch, search=beam_search, max_length=MAX_LENGTH)
    assert beam["tokens"].shape == (3, 2, MAX_LENGTH), beam["tokens"].shape
    assert beam["attention"].shape == (3, 2, MAX_LENGTH, SOURCE_LENGTH)
    print(f"greedy and beam search: {greedy['tokens'].shape}, {beam['tokens'].shape}")

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "copy.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    reloaded = loaded.generate(batch, search=beam_search, max_length=MAX_LENGTH)
    np.testing.assert_array_equal(reloaded["tokens"], beam["tokens"])
    print("saved to .keras and loaded with safe_mode=True: the same beam search output")
    return 0


if __name__ == "__main__":
    sys.exit(main())
