"""Self-critical sequence training: a trained model fine-tuned on its own samples' scores.

Rennie et al. 2017 ("Self-critical Sequence Training for Image Captioning",
arXiv:1612.00563) train a captioner, after cross-entropy training, to maximise the
expected CIDEr-D of the captions it samples, with REINFORCE. Here every source gets
`samples` sampled outputs and each is judged against the mean reward of the other
samples of its source (Luo 2020's variant: no greedy decoding for a baseline). Each
step samples with the current weights, scores the samples with the recipe's `reward`
(NumPy, outside the graph) and takes one `train_on_batch` step of `Seq2Seq` compiled
with `multiattn.PolicyGradientLoss`, the advantages as sample weights; so it runs on
every Keras backend.
"""

import math
import os
import time

import numpy as np

from multiattn.special_tokens import END_ID, PAD_ID, START_ID
from recipes import cli


def sampled_targets(tokens):
    """`(target_in, target_out)` that teacher-force `tokens`, the rows a search returned.

    A row holds the generated tokens, its end token included, then padding;
    `target_out` is the row and `target_in` the start token followed by the row
    without its end token.
    """
    tokens = np.asarray(tokens, dtype="int32")
    shifted = np.where(tokens == END_ID, PAD_ID, tokens)[:, :-1]
    target_in = np.concatenate([np.full((len(tokens), 1), START_ID, "int32"), shifted], axis=1)
    return target_in, tokens


def train(
    model,
    sources,
    reward,
    *,
    run,
    epochs,
    samples,
    batch_size,
    learning_rate,
    max_length,
    scorer,
    monitor,
    seed=0,
    jit_compile="auto",
):
    """Self-critical epochs over `sources`; keeps the model the val `monitor` finds best.

    Args:
        model: A trained `Seq2Seq` (the one `model.fit` trained); it is recompiled
            with Adam at `learning_rate` and `PolicyGradientLoss`.
        sources: The training sources, one per item (image), indexable by a NumPy
            index array.
        reward: `reward(token_rows, items) -> (n,)` floats: the score of each sampled
            row of token ids for the item it was sampled for.
        run: The run directory: `model.keras` is replaced whenever an epoch's
            `monitor` beats the run's best, and `metrics.json` records the epochs.
        epochs: Passes over the items.
        samples: Samples per item and step (2 or more).
        batch_size: Items per step (so `batch_size * samples` sequences per step).
        learning_rate: Adam's rate.
        max_length: Most tokens sampled (the end token included).
        scorer: The recipe's scorer callback (`cli.scorer_callback`): its
            `score(logs, label)` writes the val `monitor` into `logs`.
        monitor: The val score that chooses the model (higher is better).
        seed: Seed of the item order and of the samples.
        jit_compile: As `Model.compile`.

    Returns:
        The list of each epoch's logs (`reward` is the mean reward of the samples).
    """
    import keras

    from multiattn import PolicyGradientLoss, RandomSampling
    from multiattn.losses import leave_one_out_advantages

    model.compile(
        cli.make_optimizer(learning_rate), loss=PolicyGradientLoss(), jit_compile=jit_compile
    )
    sampler = RandomSampling(seed=seed)
    order = np.random.default_rng(seed)
    metrics_path = os.path.join(run, "metrics.json")
    record = cli.read_json(metrics_path)
    best = record.get(f"best_{monitor}", -math.inf)
    done = record.get("self_critical_epochs_completed", 0)
    history = []
    for epoch in range(done, epochs):
        started = time.time()
        items = order.permutation(len(sources))
        steps = math.ceil(len(items) / batch_size)
        progress = keras.utils.Progbar(steps, verbose=cli.fit_verbosity(), unit_name="step")
        print(f"Self-critical epoch {epoch + 1}/{epochs}", flush=True)
        totals = {"loss": 0.0, "reward": 0.0}
        for step in range(steps):
            batch = np.repeat(items[step * batch_size : (step + 1) * batch_size], samples)
            source = np.asarray(sources[batch], dtype="float32")
            tokens = model.generate(
                source, search=sampler, max_length=max_length, batch_size=len(source)
            )["tokens"]
            rewards = np.asarray(reward(tokens, batch), dtype="float32")  # (items * samples,)
            advantages = leave_one_out_advantages(rewards.reshape(-1, samples))
            target_in, target_out = sampled_targets(tokens)
            logs = model.train_on_batch(
                (source, target_in),
                target_out,
                sample_weight=keras.ops.convert_to_numpy(advantages).reshape(-1),
                return_dict=True,
            )
            if not math.isfinite(logs["loss"]):
                raise cli.UsageError(
                    f"self-critical training: the loss became NaN in epoch {epoch + 1} "
                    "(try a lower --self-critical-learning-rate); the best model is "
                    f"{os.path.join(run, 'model.keras')}"
                )
            totals["loss"] += logs["loss"]
            totals["reward"] += float(rewards.mean())
            progress.update(step + 1, [("loss", logs["loss"]), ("reward", float(rewards.mean()))])
        logs = {key: value / steps for key, value in totals.items()}
        scorer.score(logs, f"self-critical epoch {epoch + 1}")
        logs["seconds"] = round(time.time() - started, 1)
        history.append(logs)
        record = cli.read_json(metrics_path)
        if logs[monitor] > best:
            best = logs[monitor]
            cli.save_model(model, os.path.join(run, "model.keras"))
            record.update({f"best_{monitor}": float(best), "self_critical_best_epoch": epoch + 1})
            print(f"    {monitor} improved: the model of this epoch is kept", flush=True)
        record["self_critical_epochs_completed"] = epoch + 1
        record.setdefault("self_critical", []).append(logs)
        cli.write_json(metrics_path, record)
    return history
