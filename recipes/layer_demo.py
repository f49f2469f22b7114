"""A one-minute tour of the attention layers.

Trains a tiny model on a task only attention can solve (retrieve the value stored
under the query's key from a small memory), once per attention layer and once
without attention, prints the accuracies, and writes a heatmap of where each
layer looked.

    python -m recipes.layer_demo [--out DIR] [--epochs N]
"""

import argparse
import os
import time

import keras
import numpy as np

from multiattn import attention
from multiattn.plotting import plot_alignment

NUM_ITEMS, NUM_KEYS, NUM_VALUES, DIM = 8, 40, 10, 16


def make_data(rng, size):
    keys = np.stack(
        [rng.choice(np.arange(1, NUM_KEYS), NUM_ITEMS, replace=False) for _ in range(size)]
    )
    values = rng.integers(0, NUM_VALUES, size=(size, NUM_ITEMS))
    picked = rng.integers(0, NUM_ITEMS, size=size)
    query = keys[np.arange(size), picked][:, None]
    return [query, keys, values], values[np.arange(size), picked]


def make_model(name):
    query_ids = keras.Input(shape=(1,), dtype="int32", name="query")
    key_ids = keras.Input(shape=(NUM_ITEMS,), dtype="int32", name="keys")
    value_ids = keras.Input(shape=(NUM_ITEMS,), dtype="int32", name="values")
    key_embedding = keras.layers.Embedding(NUM_KEYS, DIM)
    query, keys = key_embedding(query_ids), key_embedding(key_ids)
    values = keras.layers.Embedding(NUM_VALUES, DIM)(value_ids)
    if name == "none":
        pooled = keras.layers.Flatten()(keras.layers.Concatenate(axis=1)([query, keys, values]))
        features = keras.layers.Dense(64, activation="relu")(pooled)
        outputs = [keras.layers.Dense(NUM_VALUES, activation="softmax")(features)]
    else:
        context, weights = attention.get(name, units=DIM)(query, values, key=keys)
        features = keras.layers.Flatten()(context)
        outputs = [keras.layers.Dense(NUM_VALUES, activation="softmax")(features), weights]
    model = keras.Model([query_ids, key_ids, value_ids], outputs)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/layer_demo")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    train_inputs, train_targets = make_data(rng, 4000)
    test_inputs, test_targets = make_data(rng, 500)
    print(f"Task: find the value stored under the query's key among {NUM_ITEMS} items.")
    for name in ("none", *attention.NAMES):
        start = time.time()
        model = make_model(name)
        trainer = keras.Model(model.inputs, model.outputs[0])
        trainer.compile(
            keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        print(f"[{name}] training {args.epochs} epochs")
        trainer.fit(train_inputs, train_targets, batch_size=64, epochs=args.epochs, verbose=2)
        accuracy = trainer.evaluate(test_inputs, test_targets, verbose=0)[1]
        line = f"[{name}] test accuracy {accuracy:.3f} ({time.time() - start:.0f}s)"
        if name != "none":
            sample = [x[:1] for x in test_inputs]
            weights = model.predict(sample, verbose=0)[1][0]  # (1, NUM_ITEMS)
            keys = [f"k{k}" for k in sample[1][0]]
            path = plot_alignment(
                weights,
                keys,
                [f"q=k{sample[0][0, 0]}"],
                os.path.join(args.out, f"{name}.png"),
                title=f"{name}: where the query looked",
                xlabel="memory keys",
                ylabel="query",
            )
            line += f", attention picture: {path}"
        print(line)


if __name__ == "__main__":
    main()
