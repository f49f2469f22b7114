"""What both recipes share: flags from a dataclass config, run directories, messages."""

import argparse
import dataclasses
import datetime
import json
import math
import os
import shutil
import sys
import time
import types
import typing
import zipfile

from recipes.data import SPLITS


def tie_embeddings_field():
    """The `--tie-embeddings` flag of both recipes' configs."""
    return dataclasses.field(
        default=False,
        metadata={
            "help": "logits from the transposed target embeddings, not a separate "
            "output projection (Press & Wolf 2017)"
        },
    )


@dataclasses.dataclass(frozen=True)
class HardAttentionConfig:
    """Show, Attend and Tell's hard attention: the flags both recipes share."""

    hard_attention: bool = dataclasses.field(
        default=False,
        metadata={"help": "attend to one sampled position in training (REINFORCE)"},
    )
    reinforce_weight: float = dataclasses.field(
        default=1.0, metadata={"help": "hard attention: weight of the REINFORCE term"}
    )
    entropy_weight: float = dataclasses.field(
        default=0.0, metadata={"help": "hard attention: weight of the entropy bonus"}
    )


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """The learning rate's schedule and the weights' average: the flags both recipes share."""

    learning_rate_decay: float = dataclasses.field(
        default=1.0,
        metadata={"help": "multiply the learning rate by this after every epoch (1: constant)"},
    )
    ema_decay: float = dataclasses.field(
        default=0.0,
        metadata={
            "help": "keep an exponential moving average of the weights with this "
            "momentum (e.g. 0.999); each epoch is judged, kept and saved by it (0: none)"
        },
    )
    average_last: int = dataclasses.field(
        default=0,
        metadata={
            "help": "after training, average the weights of the last N epochs and keep "
            "the average when val judges it better than the best epoch (0: none)"
        },
    )
    time_budget: float = dataclasses.field(
        default=0.0,
        metadata={
            "help": "minutes: stop after the epoch when one more epoch as long as it "
            "would end past this much training time (0: no limit)"
        },
    )


def check_schedule(config):
    """One-line errors for the schedule flags, before anything runs."""
    if not 0 < config.learning_rate_decay <= 1:
        raise UsageError(f"--learning-rate-decay {config.learning_rate_decay}: must be in (0, 1]")
    if not 0 <= config.ema_decay < 1:
        raise UsageError(f"--ema-decay {config.ema_decay}: must be in [0, 1)")
    if config.average_last < 0 or config.average_last == 1:
        raise UsageError(f"--average-last {config.average_last}: must be 0 (none) or 2 or more")
    if not config.time_budget >= 0:
        raise UsageError(f"--time-budget {config.time_budget}: must be 0 (none) or more minutes")


def make_optimizer(learning_rate, ema_decay=0.0):
    """Adam with gradients clipped to norm 1, keeping an EMA of the weights if `ema_decay`."""
    import keras

    ema = {"use_ema": True, "ema_momentum": ema_decay} if ema_decay else {}
    return keras.optimizers.Adam(learning_rate, clipnorm=1.0, **ema)


def check_attention(config):
    """One-line errors for the decoder's attention and layer flags, before anything runs."""
    if config.layers < 1:
        raise UsageError(f"--layers {config.layers}: must be 1 or more")
    window = getattr(config, "attention_window", 0)
    if window < 0:
        raise UsageError(f"--attention-window {window}: must be 0 (global) or more")
    if config.attention == "none" and (config.hard_attention or window):
        flag = "--hard-attention" if config.hard_attention else "--attention-window"
        raise UsageError(f"{flag} needs an --attention other than none")
    if window and config.hard_attention:
        raise UsageError(
            "--hard-attention and --attention-window: local attention has no hard mode"
        )


def attention_settings(config, units):
    """`(attention, seq2seq_kwargs)`: the decoder's attention and `Seq2Seq`'s hard-attention terms.

    `attention` is the name of `config.attention`, a hard attention layer of that
    kind with `--hard-attention`, or a `LocalAttention` scoring with it when the
    config has an `--attention-window`.
    """
    check_attention(config)
    window = getattr(config, "attention_window", 0)
    if not config.hard_attention and not window:
        return config.attention, {}
    from multiattn import attention

    if window:
        score = attention.get(config.attention, units=units)
        return attention.LocalAttention(score, window, local=config.local), {}
    layer = attention.get(config.attention, units=units, hard=True, seed=config.seed)
    weights = {"reinforce_weight": config.reinforce_weight, "entropy_weight": config.entropy_weight}
    return layer, weights


class UsageError(Exception):
    """A problem the user can fix (bad flag, missing file): printed as one line, exit 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training: printed as one line, exit 130; the same command resumes."""


def add_config_flags(parser, config_class):
    """Adds one `--field-name VALUE` flag per field of the dataclass `config_class`.

    Booleans also take `--field-name` / `--no-field-name`. Defaults are left as
    `None` in the namespace so `config_from_args` can tell what was given.
    """
    hints = typing.get_type_hints(config_class)
    # The recipe's own fields first, then the inherited ones (runtime.RuntimeConfig).
    own = config_class.__dict__.get("__annotations__", {})
    for field in sorted(dataclasses.fields(config_class), key=lambda field: field.name not in own):
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        help_text = f"{field.metadata.get('help', '')} (default: {field.default})".strip()
        if kind is bool:
            parser.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
            continue
        choices = field.metadata.get("choices")
        parser.add_argument(
            flag,
            dest=field.name,
            type=_parser_of(kind, field.name),
            default=None,
            choices=choices,
            metavar=field.name.upper() if choices is None else None,
            help=help_text,
        )


def config_from_args(config_class, args, base=None):
    """A config from parsed flags: given flags override `base` (or the defaults)."""
    base = base or config_class()
    given = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(config_class)
        if getattr(args, field.name, None) is not None
    }
    return dataclasses.replace(base, **given)


def _parser_of(kind, name):
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
        inner = [k for k in typing.get_args(kind) if k is not type(None)][0]
        parse_inner = _parser_of(inner, name)

        def parse_optional(text):
            return None if text.lower() == "none" else parse_inner(text)

        return parse_optional
    if kind in (int, float, str):
        return kind
    if typing.get_origin(kind) is tuple:
        inner = typing.get_args(kind)[0]
        return lambda text: tuple(inner(part) for part in text.split(",") if part)
    raise TypeError(f"config field {name}: unsupported type {kind}")


def save_config(config, path):
    with open(path, "w", encoding="utf-8") as file:
        json.dump(dataclasses.asdict(config), file, indent=2, sort_keys=True)


def load_config(config_class, path):
    try:
        with open(path, encoding="utf-8") as file:
            values = json.load(file)
    except FileNotFoundError:
        raise UsageError(f"--run: {os.path.dirname(path)} holds no config.json") from None
    names = {field.name for field in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    values = {
        name: tuple(value) if typing.get_origin(hints[name]) is tuple else value
        for name, value in values.items()
        if name in names
    }
    return config_class(**values)


def new_run_directory(kind, out=None):
    """`out`, or `runs/<kind>/<timestamp>/`: created, and returned."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = os.path.join("runs", kind, stamp)
    os.makedirs(out, exist_ok=True)
    return out


def require_run(run):
    """Checks that `--run DIR` holds a trained model; returns the model path."""
    if run is None:
        raise UsageError("--run DIR is required (a directory written by `train`)")
    if not os.path.exists(run):
        raise UsageError(f"--run: no such directory: {run}")
    if not os.path.isdir(run):
        raise UsageError(f"--run: {run} is not a directory")
    path = os.path.join(run, "model.keras")
    if not os.path.isfile(path):
        raise UsageError(f"--run: {run} holds no model.keras (has training finished?)")
    return path


def write_json(path, values):
    # Written beside and renamed over: a process killed mid-write leaves the old file whole.
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as file:
        json.dump(values, file, indent=2, sort_keys=True)
    os.replace(partial, path)
    return path


def write_rows(path, rows):
    """Tab-separated rows, one per line; any run of white space in a field is one space."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        for row in rows:
            file.write("\t".join(" ".join(str(field).split()) for field in row) + "\n")
    return path


def read_json(path):
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def load_model(path):
    """`keras.saving.load_model` in safe mode: nothing pickled or marshalled is ever run.

    A file that would need it (a `Lambda` layer holding a Python function) or that is not
    a `.keras` archive is refused with one line naming it.
    """
    import keras

    import multiattn  # noqa: F401  (registers the serializable classes)

    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path}: not a .keras archive (truncated, or another kind of file)")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except ValueError as error:
        if "safe_mode" in str(error):
            raise UsageError(
                f"{path}: refused, it holds Python code (a Lambda layer or other "
                "marshalled function), which a run never loads"
            ) from None
        raise UsageError(f"{path}: cannot load the model: {str(error).splitlines()[0]}") from None


def save_model(model, path):
    """`model.save(path)`, written beside and renamed over: a kill mid-save keeps the old file."""
    partial = path[: -len(".keras")] + ".partial.keras"
    model.save(partial)
    os.replace(partial, path)
    return path


def training_callbacks(
    run,
    patience,
    monitor="val_loss",
    scorer=None,
    learning_rate=None,
    learning_rate_decay=1.0,
    ema=False,
    average_last=0,
    time_budget=0.0,
):
    """Resume after interruption, keep the best model by `monitor`, stop early, log.

    With a `time_budget` (minutes), training also stops after an epoch when another
    epoch as long would end past the budget, counted from the start of this process'
    training (see `time_budget_callback`).

    With `learning_rate_decay` below 1, epoch `e` (from 0) trains at `learning_rate *
    learning_rate_decay ** e`; the epoch count, and so the rate, survives a resume.

    With `ema` (an optimizer made with `use_ema=True`, see `make_optimizer`), the
    moving average of the weights is what validation, `scorer`, the checkpoint and
    early stopping see at the end of every epoch; the trained weights come back before
    the backup, so a resumed training goes on from them (the average is saved with the
    optimizer).

    With `average_last`, the weights each epoch is judged by are also saved as
    `epochs/epoch-NNN.weights.h5`, the last `average_last` of them kept, for
    `keep_weight_average`.

    `monitor` is `val_loss` (lower is better) or a score that `scorer`, a callback
    run first at the end of every epoch, writes into the epoch's logs (higher is
    better, e.g. the val BLEU-4 of the model's own captions). The record keeps the
    best value as `best_<monitor>`.

    `BackupAndRestore` brings back the weights, optimizer state and epoch count of the
    last finished epoch. What the other callbacks knew is the training record in
    `metrics.json` (`epochs_completed`, `best_val_loss`, `best_epoch`), written after
    every epoch and read back on resuming. Without it a new process starts the
    checkpoint's best at infinity (a worse model would replace the better one saved
    before the interruption) and early stopping's patience from zero (every resume would
    grant `patience` more epochs); with it a resumed run keeps the better model and stops
    where an uninterrupted run would. When training ends (not by a NaN) the record says
    `training_finished`, and a rerun of the command skips to evaluation.
    """
    import keras

    model_path = os.path.join(run, "model.keras")
    # ModelCheckpoint writes in place; it writes here and `save_record` renames the file
    # over model.keras, so a kill mid-save never leaves a broken model.
    partial_path = os.path.join(run, "model.partial.keras")
    metrics_path = os.path.join(run, "metrics.json")
    mode = "min" if monitor == "val_loss" else "max"
    best_key = f"best_{monitor}"
    checkpoint = keras.callbacks.ModelCheckpoint(
        partial_path, monitor=monitor, mode=mode, save_best_only=True
    )
    early_stopping = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience)
    record = {}

    def restore_record(epoch, logs=None):
        if record:  # only before the first epoch of this process
            return
        # A first epoch past 0 means BackupAndRestore resumed an interrupted run.
        saved = read_json(metrics_path) if epoch > 0 else {}
        record.update(epochs_completed=epoch, resumed_from_epoch=epoch)
        if best_key in saved:
            record.update({best_key: saved[best_key], "best_epoch": saved["best_epoch"]})
            checkpoint.best = early_stopping.best = saved[best_key]
            early_stopping.best_epoch = saved["best_epoch"] - 1
            early_stopping.wait = max(0, epoch - saved["best_epoch"])
        write_json(metrics_path, record)  # a fresh run drops the record of an older one

    def save_record(epoch, logs=None):
        improved = checkpoint.best is not None and checkpoint.best != record.get(best_key)
        if improved and math.isfinite(checkpoint.best):
            os.replace(partial_path, model_path)
            record.update({best_key: float(checkpoint.best), "best_epoch": epoch + 1})
        elif os.path.exists(partial_path):  # a NaN model, or left by a killed process
            os.remove(partial_path)
        if math.isfinite((logs or {}).get("loss", math.nan)):  # a NaN epoch is not completed
            record["epochs_completed"] = epoch + 1
            write_json(metrics_path, record)

    def finish_record(logs=None):
        # Written before BackupAndRestore (last) deletes the backup: from then on this
        # mark is what tells a rerun of the command that training is over, so a kill
        # during evaluation does not start the training again. `logs` are the last
        # epoch's: a NaN loss there (TerminateOnNaN stopped it) is no finished training.
        if record and math.isfinite((logs or {}).get("loss", math.nan)):
            record["training_finished"] = True
            write_json(metrics_path, record)

    schedule = []
    if learning_rate_decay != 1:
        if learning_rate is None:
            raise ValueError("a learning_rate_decay needs the initial learning_rate")
        schedule.append(
            keras.callbacks.LearningRateScheduler(
                lambda epoch: learning_rate * learning_rate_decay**epoch
            )
        )
    average_in, average_out = [], []
    if ema:
        # Swaps the average in for validation and at the end of an epoch; its
        # `on_epoch_begin`, called last, swaps the trained weights back before the backup.
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
        average_in = [swap]
        average_out = [
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs=None: swap.on_epoch_begin(epoch)
            )
        ]
    epoch_weights = []
    if average_last:
        saver = keras.callbacks.LambdaCallback()
        saver.on_epoch_end = lambda epoch, logs=None: save_epoch_weights(
            saver.model, run, epoch, average_last, logs
        )
        epoch_weights.append(saver)
    return [
        *schedule,
        *average_in,
        *([scorer] if scorer is not None else []),
        checkpoint,
        *epoch_weights,
        early_stopping,
        *([time_budget_callback(time_budget)] if time_budget else []),
        keras.callbacks.LambdaCallback(
            on_epoch_begin=restore_record, on_epoch_end=save_record, on_train_end=finish_record
        ),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.TensorBoard(os.path.join(run, "logs"), write_graph=False),
        *average_out,
        # Last, so the model and the record of an epoch are saved before its backup: a
        # backup never claims an epoch whose record is missing.
        keras.callbacks.BackupAndRestore(os.path.join(run, "backup"), double_checkpoint=True),
    ]


def time_budget_callback(minutes, clock=time.monotonic):
    """A callback that stops training when another epoch would end past `minutes`.

    At the end of every epoch it takes that epoch's duration (its validation and
    scoring included) as the next one's, and stops training when the next would end
    more than `minutes` after training began.
    """
    import keras

    times = {}

    def begin_training(logs=None):
        times["training"] = clock()

    def begin_epoch(epoch, logs=None):
        times["epoch"] = clock()

    def end_epoch(epoch, logs=None):
        now = clock()
        if past_budget(
            minutes, now - times["training"], now - times["epoch"], f"epoch {epoch + 1}"
        ):
            callback.model.stop_training = True

    callback = keras.callbacks.LambdaCallback(
        on_train_begin=begin_training, on_epoch_begin=begin_epoch, on_epoch_end=end_epoch
    )
    return callback


def past_budget(minutes, used, last, epoch_name):
    """Whether another epoch as long as the `last` one (seconds) would end past `minutes`
    of training, `used` seconds of which are gone; says so if it would."""
    if used + last <= 60 * minutes:
        return False
    stage(
        f"stopping after {epoch_name}: another {last / 60:.1f}-minute epoch "
        f"would end past the {minutes:g}-minute budget ({used / 60:.1f} minutes used)"
    )
    return True


def epoch_weight_paths(run):
    """The saved weights of the last epochs, oldest first."""
    directory = os.path.join(run, "epochs")
    if not os.path.isdir(directory):
        return []
    names = sorted(name for name in os.listdir(directory) if name.endswith(".weights.h5"))
    return [os.path.join(directory, name) for name in names]


def save_epoch_weights(model, run, epoch, count, logs=None):
    """Saves `model`'s weights after `epoch` (from 0); keeps the last `count` files."""
    if not math.isfinite((logs or {}).get("loss", math.nan)):
        return  # a NaN epoch is no checkpoint to average
    os.makedirs(os.path.join(run, "epochs"), exist_ok=True)
    model.save_weights(os.path.join(run, "epochs", f"epoch-{epoch + 1:03d}.weights.h5"))
    for path in epoch_weight_paths(run)[:-count]:
        os.remove(path)


def keep_weight_average(run, model, count, monitor, judge):
    """Averages the last `count` epochs' weights; keeps them if `judge` finds them better.

    `judge()` returns the `monitor` value of `model` as it is (the val loss, lower is
    better, or a score, higher is better). When the average beats the best epoch's
    value in the run's record, it is saved as `model.keras` and the record says
    `averaged_last`; otherwise `model.keras` stays the best epoch's. Returns the
    average's value, or None when fewer than two epochs were saved.
    """
    paths = epoch_weight_paths(run)[-count:]
    if len(paths) < 2:
        return None
    import numpy as np

    stage(f"averaging the weights of the last {len(paths)} epochs")
    epochs = []
    for path in paths:
        model.load_weights(path)
        epochs.append(model.get_weights())
    # Floats are averaged; anything else (a dropout seed's state) is the last epoch's.
    model.set_weights(
        [
            np.mean(values, axis=0).astype(values[-1].dtype)
            if np.issubdtype(values[-1].dtype, np.floating)
            else values[-1]
            for values in zip(*epochs, strict=True)
        ]
    )
    value = float(judge())
    metrics_path = os.path.join(run, "metrics.json")
    record = read_json(metrics_path)
    best = record.get(f"best_{monitor}")
    better = best is None or (value < best if monitor == "val_loss" else value > best)
    print(
        f"    {monitor} of the average: {value:.4f}, of the best epoch: "
        + ("none" if best is None else f"{best:.4f}")
        + ("; the average is kept" if better else "; the best epoch is kept"),
        flush=True,
    )
    record[f"average_last_{monitor}"] = value
    if better:
        save_model(model, os.path.join(run, "model.keras"))
        record.update({f"best_{monitor}": value, "averaged_last": len(paths)})
    write_json(metrics_path, record)
    return value


def recipe_callbacks(run, config, scorer=None):
    """`training_callbacks` with a recipe config's patience, monitor and schedule flags."""
    return training_callbacks(
        run,
        config.patience,
        config.monitor,
        scorer,
        learning_rate=config.learning_rate,
        learning_rate_decay=config.learning_rate_decay,
        ema=config.ema_decay > 0,
        average_last=config.average_last,
        time_budget=config.time_budget,
    )


def average_after_training(run, model, config, val_data, scorer=None):
    """`--average-last N`: `keep_weight_average`, judged as the recipe's `--monitor` says."""
    if config.average_last:
        judge_model = judge(model, val_data, config.monitor, scorer)
        keep_weight_average(run, model, config.average_last, config.monitor, judge_model)


# Sources are padded, and output lengths rounded up, to a multiple of this: a model
# compiles one generate function per output length and search, each once per source
# length, so a few buckets keep a warm server from compiling on every new length.
LENGTH_BUCKET = 16


def length_bucket(length):
    """`length` rounded up to a multiple of `LENGTH_BUCKET`: an int, or an int tensor
    (the export computes it in its graph)."""
    return -(-length // LENGTH_BUCKET) * LENGTH_BUCKET


def decode(
    model,
    source,
    beam_size,
    max_length,
    length_penalty,
    batch_size,
    nbest=False,
    return_attention=True,
):
    """`model.generate` with greedy (beam_size 1) or beam search: one hypothesis per source.

    With `nbest`, every value keeps a hypothesis axis after the batch axis: the
    `beam_size` hypotheses of the beam, best first (greedy search's one).
    """
    from multiattn import BeamSearch, GreedySearch

    settings = {
        "max_length": max_length,
        "batch_size": batch_size,
        "return_attention": return_attention,
    }
    if beam_size <= 1:
        result = model.generate(source, search=GreedySearch(), **settings)
        return {key: value[:, None] for key, value in result.items()} if nbest else result
    num_return = beam_size if nbest else 1
    search = BeamSearch(beam_size, length_penalty=length_penalty, num_return=num_return)
    result = model.generate(source, search=search, **settings)
    return result if nbest else {key: value[:, 0] for key, value in result.items()}


def scorer_callback(score):
    """The callback of a scorer `score(logs, label)` that writes val scores into `logs`.

    It scores at the end of every epoch; its `score` also judges the weight average
    after training (`judge`).
    """
    import keras

    callback = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: score(logs, f"epoch {epoch + 1}")
    )
    callback.score = score
    return callback


def judge(model, val_data, monitor="val_loss", scorer=None):
    """The function `keep_weight_average` judges with: the val loss, or `scorer`'s
    `monitor` (a `scorer_callback`)."""

    def value():
        if monitor == "val_loss":
            return model.evaluate(val_data, verbose=0, return_dict=True)["loss"]
        logs = {}
        scorer.score(logs, "the average")
        return logs[monitor]

    return value


def record_training(run, history, started):
    """Adds this process's time and epochs to the record in `metrics.json`.

    A NaN loss is a clear error naming the model kept from before it.
    """
    metrics_path = os.path.join(run, "metrics.json")
    model_path = os.path.join(run, "model.keras")
    metrics = read_json(metrics_path)
    losses = history.history.get("loss", [])
    if not all(math.isfinite(loss) for loss in losses):
        epoch = metrics.get("epochs_completed", 0) + 1
        if "best_epoch" in metrics and os.path.isfile(model_path):
            kept = (
                f"the last good checkpoint is {model_path} (epoch {metrics['best_epoch']}, "
                + ", ".join(
                    f"{key[len('best_') :]} {value:.4f}"
                    for key, value in metrics.items()
                    if key.startswith("best_") and key != "best_epoch"
                )
                + ")"
            )
        else:
            kept = "no epoch finished before it, so no model was saved"
        raise UsageError(
            f"training stopped: the loss became NaN in epoch {epoch} "
            f"(try a lower --learning-rate); {kept}"
        )
    metrics["train_seconds"] = round(time.time() - started, 1)  # this process's
    metrics["epochs_run"] = len(losses)  # by this process; `epochs_completed` by the run
    write_json(metrics_path, metrics)
    print(f"    model: {model_path}", flush=True)


def fit_verbosity():
    """Progress bars on a terminal, one line per epoch in a log file."""
    return 1 if sys.stdout.isatty() else 2


def run_list(run):
    """The run directories of `--run`: one directory, or a list of them (an ensemble)."""
    return [run] if isinstance(run, str) else list(run)


def output_directory(run):
    """Where `evaluate` writes: the run, or for an ensemble `FIRST_RUN/ensemble`."""
    if isinstance(run, str):
        return run
    if len(run) == 1:
        return run[0]
    directory = os.path.join(run[0], "ensemble")
    os.makedirs(directory, exist_ok=True)
    return directory


def recipe_parser(prog, description, config_class, argv, ensembles=False):
    """The commands both recipes share: `train`, `evaluate`, `export`, the default `all`.

    Returns `(parser, commands, argv)`: the recipe adds its own command (`translate`,
    `caption`) to `commands`, then parses `argv` (which starts with `all` when no
    command was named). With `ensembles`, `evaluate` takes `--run` more than once
    (a list of runs).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    commands = parser.add_subparsers(dest="command")
    defaulted = not argv or argv[0].startswith("-")
    for name in ("train", "all") if defaulted else ("train",):
        helps = {"train": "train a model", "all": "train, then evaluate (the default)"}
        train_parser = commands.add_parser(name, help=helps[name])
        add_config_flags(train_parser, config_class)
        train_parser.add_argument("--out", help="run directory (resumes an interrupted run)")
    evaluate_parser = commands.add_parser("evaluate", help="scores and pictures of a run")
    if ensembles:
        evaluate_parser.add_argument(
            "--run", required=True, action="append", help="twice or more: an ensemble"
        )
    else:
        evaluate_parser.add_argument("--run", required=True)
    evaluate_parser.add_argument("--beam-size", type=int)
    evaluate_parser.add_argument(
        "--length-penalty", type=float, help="beam search's GNMT alpha (default: the run's)"
    )
    evaluate_parser.add_argument("--split", default="test", choices=SPLITS)
    export_parser = commands.add_parser(
        "export", help="a TensorFlow SavedModel for TensorFlow Serving"
    )
    export_parser.add_argument("--run", required=True)
    export_parser.add_argument("--out", required=True, help="a new or empty directory")
    return parser, commands, (["all", *argv] if defaulted else list(argv))


def run_training_command(args, config_class, kind, train, evaluate, check_config):
    """`train` / `all`: config from flags, a run directory, training, evaluation.

    `check_config(config)` raises the recipe's one-line flag errors, before a run
    directory exists.
    """
    config = config_from_args(config_class, args)
    check_config(config)
    created = args.out is None or not os.path.exists(args.out)
    run = new_run_directory(kind, args.out)
    stage(f"run directory: {run}")
    try:
        if not created and finished_training(run, config):
            stage("training finished earlier with this configuration; not training again")
        else:
            train(config, run)
    except KeyboardInterrupt:
        # The backup of the last finished epoch stays; `fit` restores it on the next run.
        raise Interrupted("interrupted: run the same command to resume") from None
    except (UsageError, ValueError, FileNotFoundError):
        if created:
            remove_if_untrained(run)
        raise
    if args.command == "all":
        evaluate(run)
    print(f"run: {run}")
    return 0


def finished_training(run, config):
    """Whether `run` holds a training that ended, with `config` (as saved in the run).

    Multi-worker runs always train: the other workers cannot see the chief's record
    and would wait for it forever.
    """
    if config.strategy == "multi-worker" or not os.path.isfile(os.path.join(run, "model.keras")):
        return False
    if not read_json(os.path.join(run, "metrics.json")).get("training_finished"):
        return False
    return load_config(type(config), os.path.join(run, "config.json")) == config


TRAINING_OUTPUTS = ("model.keras", "model.partial.keras", "backup", "workers")


def remove_if_untrained(run):
    """Deletes a run directory that bad input stopped before any training was saved.

    What it can hold then (a config, vocabularies, empty logs) is rebuilt by the next
    run, and an empty run would only be mistaken for a result.
    """
    if not any(os.path.exists(os.path.join(run, name)) for name in TRAINING_OUTPUTS):
        shutil.rmtree(run, ignore_errors=True)


def report_skips(corpus, kind="record"):
    """Prints one line per skip reason of a corpus (`skipped` and `skipped_examples`)."""
    for reason, count in sorted(corpus.skipped.items()):
        where = ", ".join(corpus.skipped_examples.get(reason, [])[:3])
        print(f"    skipped {count} {kind}(s): {reason}" + (f" ({where}, ...)" if where else ""))


def stage(message):
    """One line per stage of a long job, flushed at once."""
    print(f"==> {message}", flush=True)


def keras_backend():
    import keras

    return keras.config.backend()


def run_main(main_function, argv):
    """Runs `main_function(argv)`, turning `UsageError`/`ValueError` into one line + exit 2.

    Ctrl-C is one line too, and exit 130 (what a shell reports for SIGINT). A Keras set
    to another backend than TensorFlow is one line and exit 2 before anything runs.
    """
    backend = keras_backend()
    if backend != "tensorflow":
        print(
            f"error: the recipes run on Keras' TensorFlow backend (tf.data, TFDS, SavedModel "
            f"export), and Keras is set to {backend!r} (KERAS_BACKEND or "
            f"~/.keras/keras.json): run them with KERAS_BACKEND=tensorflow. The library, "
            f"multiattn, runs on TensorFlow, JAX and PyTorch alike.",
            file=sys.stderr,
        )
        return 2
    try:
        return main_function(argv)
    except (UsageError, ValueError, FileNotFoundError) as error:
        if os.environ.get("MULTIATTN_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interruption:  # Ctrl-C: one line, the shell's exit code
        if os.environ.get("MULTIATTN_TRACEBACK"):
            raise
        print(str(interruption) or "interrupted", file=sys.stderr)
        return 130
