"""What both recipes share: flags from a dataclass config, run directories, messages."""

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
import types
import typing


class UsageError(Exception):
    """A problem the user can fix (bad flag, missing file): printed as one line, exit 2."""


def add_config_flags(parser, config_class):
    """Adds one `--field-name VALUE` flag per field of the dataclass `config_class`.

    Booleans also take `--field-name` / `--no-field-name`. Defaults are left as
    `None` in the namespace so `config_from_args` can tell what was given.
    """
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        if kind is bool:
            parser.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"(default: {field.default})",
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
            help=f"{field.metadata.get('help', '')} (default: {field.default})".strip(),
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
    if not os.path.isdir(run):
        raise UsageError(f"--run: no such directory: {run}")
    path = os.path.join(run, "model.keras")
    if not os.path.isfile(path):
        raise UsageError(f"--run: {run} holds no model.keras (has training finished?)")
    return path


def write_json(path, values):
    with open(path, "w", encoding="utf-8") as file:
        json.dump(values, file, indent=2, sort_keys=True)
    return path


def read_json(path):
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def training_callbacks(run, patience):
    """Resume after interruption, keep the best model by val loss, stop early, log."""
    import keras

    return [
        keras.callbacks.BackupAndRestore(os.path.join(run, "backup")),
        keras.callbacks.ModelCheckpoint(
            os.path.join(run, "model.keras"), monitor="val_loss", save_best_only=True
        ),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.TensorBoard(os.path.join(run, "logs"), write_graph=False),
    ]


def record_training(run, history, started):
    """Adds training time and epochs to `metrics.json`; a NaN loss is a clear error."""
    losses = history.history.get("loss", [])
    if any(loss != loss for loss in losses):  # NaN
        raise UsageError(
            "training stopped: the loss became NaN (try a lower --learning-rate); "
            f"the last good checkpoint is {os.path.join(run, 'model.keras')}"
        )
    metrics = read_json(os.path.join(run, "metrics.json"))
    metrics["train_seconds"] = round(time.time() - started, 1)
    metrics["epochs_run"] = len(losses)
    metrics["best_val_loss"] = float(min(history.history.get("val_loss", [float("nan")])))
    write_json(os.path.join(run, "metrics.json"), metrics)
    print(f"    model: {os.path.join(run, 'model.keras')}", flush=True)


def fit_verbosity():
    """Progress bars on a terminal, one line per epoch in a log file."""
    return 1 if sys.stdout.isatty() else 2


def recipe_parser(prog, description, config_class, argv):
    """The commands both recipes share: `train`, `evaluate`, and the default `all`.

    Returns `(parser, commands, argv)`: the recipe adds its own command (`translate`,
    `caption`) to `commands`, then parses `argv` (which starts with `all` when no
    command was named).
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
    evaluate_parser.add_argument("--run", required=True)
    evaluate_parser.add_argument("--beam-size", type=int)
    evaluate_parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    return parser, commands, (["all", *argv] if defaulted else list(argv))


def run_training_command(args, config_class, kind, train, evaluate):
    """`train` / `all`: config from flags, a run directory, training, evaluation."""
    config = config_from_args(config_class, args)
    run = new_run_directory(kind, args.out)
    stage(f"run directory: {run}")
    train(config, run)
    if args.command == "all":
        evaluate(run)
    print(f"run: {run}")
    return 0


def report_skips(corpus, kind="record"):
    """Prints one line per skip reason of a corpus (`skipped` and `skipped_examples`)."""
    for reason, count in sorted(corpus.skipped.items()):
        where = ", ".join(corpus.skipped_examples.get(reason, [])[:3])
        print(f"    skipped {count} {kind}(s): {reason}" + (f" ({where}, ...)" if where else ""))


def stage(message):
    """One line per stage of a long job, flushed at once."""
    print(f"==> {message}", flush=True)


def run_main(main_function, argv):
    """Runs `main_function(argv)`, turning `UsageError`/`ValueError` into one line + exit 2."""
    try:
        return main_function(argv)
    except (UsageError, ValueError, FileNotFoundError) as error:
        if os.environ.get("MULTIATTN_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
