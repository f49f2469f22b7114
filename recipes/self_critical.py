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

import contextlib
import dataclasses
import math
import os
import time

import numpy as np

from multiattn.special_tokens import END_ID, PAD_ID, START_ID
from recipes import cli


@dataclasses.dataclass(frozen=True)
class SelfCriticalConfig:
    """The self-critical flags both recipes share."""

    self_critical_epochs: int = dataclasses.field(
        default=0,
        metadata={
            "help": "then this many epochs of self-critical training (Rennie et al. 2017): "
            "REINFORCE on the score of sampled outputs (captions: CIDEr-D, translations: "
            "sentence BLEU), each against the mean of its source's other samples; the "
            "model is kept by --monitor, which must be a score"
        },
    )
    self_critical_samples: int = dataclasses.field(
        default=5, metadata={"help": "self-critical training: outputs sampled per source"}
    )
    self_critical_batch_size: int = dataclasses.field(
        default=16,
        metadata={"help": "self-critical training: sources (images, sentences) per step"},
    )
    self_critical_steps: int = dataclasses.field(
        default=0,
        metadata={
            "help": "self-critical training: steps per epoch, each epoch scored on val "
            "(0: one pass over the training sources)"
        },
    )
    self_critical_learning_rate: float = 5e-5
    self_critical_time_budget: float = dataclasses.field(
        default=0.0,
        metadata={
            "help": "minutes: stop the self-critical epochs after the one when another as "
            "long would end past this much self-critical training (0: no limit; "
            "--time-budget bounds the cross-entropy epochs)"
        },
    )
    self_critical_temperature: float = dataclasses.field(
        default=0.5,
        metadata={
            "help": "self-critical training samples from, and trains, softmax(logits / T): "
            "below 1 keeps the samples of a label-smoothed model near its greedy output"
        },
    )


def check_flags(config):
    """One-line errors for the self-critical flags, before anything runs."""
    if not config.self_critical_epochs:
        return
    if config.self_critical_epochs < 0:
        raise cli.UsageError(
            f"--self-critical-epochs {config.self_critical_epochs}: must be 0 (none) or more"
        )
    if config.monitor == "val_loss":
        raise cli.UsageError(
            "--self-critical-epochs: choose the model by a score of its outputs with "
            "--monitor (the val loss does not judge sampled outputs)"
        )
    if config.strategy != "default":
        raise cli.UsageError(
            f"--self-critical-epochs: runs on one device, not with --strategy {config.strategy}"
        )
    for flag, value, least in (
        ("samples", config.self_critical_samples, 2),
        ("batch-size", config.self_critical_batch_size, 1),
        ("steps", config.self_critical_steps, 0),
    ):
        if value < least:
            raise cli.UsageError(f"--self-critical-{flag} {value}: must be {least} or more")
    if not config.self_critical_time_budget >= 0:
        raise cli.UsageError(
            f"--self-critical-time-budget {config.self_critical_time_budget}: "
            "must be 0 (none) or more minutes"
        )
    for flag in ("learning_rate", "temperature"):
        value = getattr(config, f"self_critical_{flag}")
        if not value > 0:
            raise cli.UsageError(
                f"--self-critical-{flag.replace('_', '-')} {value}: must be positive"
            )


def cross_entropy_finished(run):
    """Whether the run's cross-entropy epochs ended (its self-critical ones may not have)."""
    return bool(cli.read_json(os.path.join(run, "metrics.json")).get("cross_entropy_finished"))


def train_after_cross_entropy(
    config, run, model, restore_best, source_batch, count, reward, scorer, reward_name, max_length
):
    """`--self-critical-epochs`: `train` from the best model so far, with the run's record.

    Until it ends the record does not say `training_finished`, so a rerun of an
    interrupted command goes on from the best model saved, with the epochs left.
    `restore_best(model)` loads the best model so far into `model`.
    """
    metrics_path = os.path.join(run, "metrics.json")
    record = cli.read_json(metrics_path)
    record.pop("training_finished", None)
    record["cross_entropy_finished"] = True
    cli.write_json(metrics_path, record)
    started = time.time()
    restore_best(model)
    cli.stage(
        f"self-critical training: {config.self_critical_epochs} epochs, "
        f"{config.self_critical_samples} samples of each of {config.self_critical_batch_size} "
        f"sources per step, reward {reward_name}"
    )
    train(
        model,
        source_batch,
        count,
        reward,
        run=run,
        epochs=config.self_critical_epochs,
        samples=config.self_critical_samples,
        batch_size=config.self_critical_batch_size,
        steps_per_epoch=config.self_critical_steps or None,
        learning_rate=config.self_critical_learning_rate,
        temperature=config.self_critical_temperature,
        max_length=max_length,
        scorer=scorer,
        monitor=config.monitor,
        time_budget=config.self_critical_time_budget,
        seed=config.seed,
        jit_compile=config.jit_compile,
    )
    record = cli.read_json(metrics_path)
    record["self_critical_seconds"] = round(
        record.get("self_critical_seconds", 0) + time.time() - started, 1
    )
    record["training_finished"] = True
    cli.write_json(metrics_path, record)


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


def _next_batch(queue, order, count, batch_size):
    """`(batch, queue)`: the next items of the pass, a new shuffled pass when it is over."""
    if not len(queue):
        queue = order.permutation(count)
    return queue[:batch_size], queue[batch_size:]


@contextlib.contextmanager
def sampling_policy(model):
    """`model` in training behaves as when it samples: the policy trained is the one
    that sampled.

    REINFORCE's gradient is that of the log-probability of the distribution the samples
    came from, inference's. So, until the block ends, every dropout of the model (its
    `Dropout` layers, and the `dropout` / `memory_dropout` / `recurrent_dropout` rates
    of its layers: encoder, decoder, attention) is 0, and hard attention takes in
    training the expectation it takes in inference instead of sampling positions (no
    hard-attention REINFORCE term).
    """
    import keras

    changed = []  # (layer, attribute, value before)
    try:
        for layer in model._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.Dropout):
                changed.append((layer, "rate", layer.rate))
                layer.rate = 0.0
            for name in ("dropout", "memory_dropout", "recurrent_dropout"):
                value = layer.__dict__.get(name)  # not a property reading a sublayer's
                if isinstance(value, (int, float)) and value:
                    changed.append((layer, name, value))
                    setattr(layer, name, 0.0)
            if getattr(layer, "hard", False):
                if layer.hard_inference != "expected":
                    raise ValueError(
                        "self-critical training needs hard attention whose inference takes "
                        f"the expectation, not {layer.hard_inference!r} ({layer.name})"
                    )
                changed.append((layer, "hard", True))
                layer.hard = False
        yield
    finally:
        for layer, name, value in reversed(changed):
            setattr(layer, name, value)


def train(
    model,
    source_batch,
    count,
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
    steps_per_epoch=None,
    temperature=1.0,
    time_budget=0.0,
    seed=0,
    jit_compile="auto",
    clock=time.monotonic,
):
    """Self-critical epochs over `count` items; keeps the model the val `monitor` finds best.

    Args:
        model: A trained `Seq2Seq` (the one `model.fit` trained); it is recompiled
            with Adam at `learning_rate` and `PolicyGradientLoss`.
        source_batch: `source_batch(items)`: the model's source batch of the items
            (an int array of their indices), e.g. images or padded token ids.
        count: The number of items (images, sentences).
        reward: `reward(token_rows, items) -> (n,)` floats: the score of each sampled
            row of token ids for the item it was sampled for.
        run: The run directory: `model.keras` is replaced whenever an epoch's
            `monitor` beats the run's best, and `metrics.json` records the epochs.
        epochs: Passes over the items.
        samples: Samples per item and step (2 or more).
        batch_size: Items per step (so `batch_size * samples` sequences per step).
        steps_per_epoch: Steps between two val scores; `None`: one pass over the
            items. The items come in shuffled passes, one after the other.
        learning_rate: Adam's rate.
        temperature: The policy is `softmax(logits / temperature)`: samples are drawn
            from it and `PolicyGradientLoss(temperature)` trains it.
        max_length: Most tokens sampled (the end token included).
        scorer: The recipe's scorer callback (`cli.scorer_callback`): its
            `score(logs, label)` writes the val `monitor` into `logs`.
        monitor: The val score that chooses the model (higher is better).
        time_budget: Minutes (0: no limit): no epoch begins that would, if as long
            as the last one, end more than this long after the loop began.
        seed: Seed of the item order and of the samples. A resumed run (the record
            counts epochs done) draws the items the uninterrupted run would have;
            its samples start again from the seed.
        jit_compile: As `Model.compile`.
        clock: Seconds, for the time budget.

    Returns:
        The list of each epoch's logs (`reward` is the mean reward of the samples).
    """
    import keras

    from multiattn import PolicyGradientLoss, RandomSampling
    from multiattn.losses import leave_one_out_advantages

    model.compile(
        cli.make_optimizer(learning_rate),
        loss=PolicyGradientLoss(temperature),
        jit_compile=jit_compile,
    )
    sampler = RandomSampling(temperature=temperature, seed=seed)
    order = np.random.default_rng(seed)
    metrics_path = os.path.join(run, "metrics.json")
    record = cli.read_json(metrics_path)
    best = record.get(f"best_{monitor}", -math.inf)
    done = record.get("self_critical_epochs_completed", 0)
    history = []
    steps = steps_per_epoch or math.ceil(count / batch_size)
    queue = np.zeros(0, dtype="int64")  # the items of this pass not yet drawn
    for _ in range(done * steps):  # a resumed run goes on with the items it would have drawn
        queue = _next_batch(queue, order, count, batch_size)[1]
    began = clock()
    for epoch in range(done, epochs):
        started = clock()
        progress = keras.utils.Progbar(steps, verbose=cli.fit_verbosity(), unit_name="step")
        print(f"Self-critical epoch {epoch + 1}/{epochs}", flush=True)
        model.reset_metrics()  # `train_on_batch` returns the mean loss since the reset
        total_reward = 0.0
        with sampling_policy(model):
            for step in range(steps):
                batch, queue = _next_batch(queue, order, count, batch_size)
                batch = np.repeat(batch, samples)
                source = source_batch(batch)
                tokens = model.generate(
                    source,
                    search=sampler,
                    max_length=max_length,
                    batch_size=len(source),
                    return_attention=False,
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
                total_reward += float(rewards.mean())
                # Keras' progress bar shows the values it is given: the means so far.
                mean_reward = total_reward / (step + 1)
                progress.update(step + 1, [("loss", logs["loss"]), ("reward", mean_reward)])
        logs = {"loss": float(logs["loss"]), "reward": mean_reward}
        scorer.score(logs, f"self-critical epoch {epoch + 1}")
        logs["seconds"] = round(clock() - started, 1)
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
        now = clock()
        if (
            time_budget
            and epoch + 1 < epochs
            and cli.past_budget(
                time_budget, now - began, now - started, f"self-critical epoch {epoch + 1}"
            )
        ):
            break
    return history
