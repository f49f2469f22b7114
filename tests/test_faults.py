"""Faults: killed and interrupted runs resume, a NaN loss keeps the last good model, and a
saved run loads on a fresh process (in safe mode: nothing is ever unpickled)."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image
from recipe_flags import CAPTION, SCENES, TRANSLATE
from time_budget_cases import TIME_BUDGET_CASES

from recipes import caption, cli, translate

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRANSLATE_TINY = [*TRANSLATE, "--batch-size", "16"]
CAPTION_TINY = [*CAPTION, *SCENES]
TIMEOUT = 120  # seconds, for any one subprocess or wait


def start(module, argv, log_path, signal_at=None):
    """`python -m module argv` in the repository, stdout and stderr to `log_path`.*.

    `signal_at=(epoch, batch, signal_number)`: the process sends itself that signal
    when that batch of that epoch begins (see `signal_at_batch.py`).
    """
    environment = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", module, *argv]
    if signal_at is not None:
        wrapper = pathlib.Path(__file__).with_name("signal_at_batch.py")
        command = [sys.executable, str(wrapper), *map(str, signal_at), module, *argv]
    # Files, not pipes: nobody reads while the child runs, and a full pipe would block it.
    with open(f"{log_path}.out", "w") as out, open(f"{log_path}.err", "w") as err:
        return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=err)


def finish(process, log_path):
    """Waits (bounded) for `process`; returns its exit code, stdout and stderr."""
    process.wait(timeout=TIMEOUT)
    return (
        process.returncode,
        pathlib.Path(f"{log_path}.out").read_text(),
        pathlib.Path(f"{log_path}.err").read_text(),
    )


@pytest.fixture
def processes():
    """Started subprocesses; whatever the test's outcome, none outlives it."""
    started = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def backed_up_epochs(run):
    """Epochs saved by BackupAndRestore (0 if none yet, or the file is being written)."""
    try:
        return json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def epochs_started(output):
    return [int(number) for number in re.findall(r"^Epoch (\d+)/", output, re.MULTILINE)]


@pytest.fixture(scope="module")
def resumed_translate_run(tmp_path_factory):
    """One training command run three times: killed (SIGKILL) in epoch 2, interrupted
    (SIGINT) in epoch 3, then left to finish its 4 epochs.

    Returns the run directory and, per attempt, its exit code, stdout, stderr and the
    epochs backed up when it ended.
    """
    directory = tmp_path_factory.mktemp("resume")
    run = directory / "run"
    argv = ["train", "--num-train", "1200", *TRANSLATE_TINY, "--epochs", "4", "--out", str(run)]
    attempts = {}
    for name, signal_at in (
        ("killed", (2, 5, signal.SIGKILL)),  # at batch 5 of epoch 2, of 79
        ("interrupted", (3, 5, signal.SIGINT)),
        ("resumed", None),
    ):
        process = start("recipes.translate", argv, directory / name, signal_at)
        try:
            attempts[name] = (*finish(process, directory / name), backed_up_epochs(run))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return run, attempts


def test_killed_and_interrupted_run_resumes_to_its_epochs(resumed_translate_run):
    run, attempts = resumed_translate_run
    code, output, _, backed_up = attempts["killed"]
    assert (code, backed_up) == (-signal.SIGKILL, 1)  # killed in epoch 2, not after it
    assert epochs_started(output) == [1, 2]

    code, output, errors, backed_up = attempts["interrupted"]
    assert (code, backed_up) == (130, 2)
    assert errors.strip().splitlines()[-1] == "interrupted: run the same command to resume"
    assert "Traceback" not in errors
    assert epochs_started(output) == [2, 3]  # the killed epoch 2 is run again, not epoch 1

    code, output, errors, backed_up = attempts["resumed"]
    assert code == 0, errors
    assert epochs_started(output) == [3, 4]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 4
    assert (metrics["resumed_from_epoch"], metrics["epochs_run"]) == (2, 2)
    assert 1 <= metrics["best_epoch"] <= 4 and np.isfinite(metrics["best_val_loss"])
    assert backed_up == 0 and not (run / "backup").exists()  # removed once training ended
    assert not (run / "model.partial.keras").exists()


class Interrupt(keras.callbacks.Callback):
    """Ctrl-C at the end of epoch `epoch` (1-based), after every other callback ran."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt


class Sabotage(keras.callbacks.Callback):
    """Makes every epoch it sees worse than the ones before the interruption."""

    def on_epoch_begin(self, epoch, logs=None):
        kernel = self.model.layers[0].kernel
        kernel.assign(np.full(kernel.shape, 50.0, "float32"))


def regression_model(optimizer=None):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer or keras.optimizers.SGD(0.05), loss="mse")
    model.build((None, 4))
    return model


def regression_data(rng):
    features = rng.normal(size=(64, 4)).astype("float32")
    return features, features @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")


def fit_regression(model, data, epochs, callbacks):
    """48 training rows in batches of 16 (3 steps an epoch), 16 validation rows."""
    features, targets = data
    return model.fit(
        features,
        targets,
        validation_split=0.25,
        epochs=epochs,
        batch_size=16,
        verbose=0,
        callbacks=callbacks,
    )


def test_resumed_run_keeps_the_better_model_and_its_patience(tmp_path, rng):
    data = regression_data(rng)

    def fit(model, extra_callbacks):
        callbacks = [*cli.training_callbacks(str(tmp_path), 2), *extra_callbacks]
        return fit_regression(model, data, 10, callbacks)

    with pytest.raises(KeyboardInterrupt):
        fit(regression_model(), [Interrupt(2)])
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert (record["epochs_completed"], record["best_epoch"]) == (2, 2)
    best_weights = cli.load_model(str(tmp_path / "model.keras")).get_weights()

    # A new process: new model and callbacks. Every resumed epoch is worse than epoch 2,
    # so model.keras stays epoch 2's, and a patience of 2 ends training after epoch 4
    # (a fresh EarlyStopping would have counted epoch 3 as its best and run to epoch 5).
    history = fit(regression_model(), [Sabotage()])
    assert len(history.history["loss"]) == 2
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert (record["epochs_completed"], record["best_epoch"]) == (4, 2)
    assert record["resumed_from_epoch"] == 2
    assert min(history.history["val_loss"]) > record["best_val_loss"]
    kept_weights = cli.load_model(str(tmp_path / "model.keras")).get_weights()
    for kept, best in zip(kept_weights, best_weights, strict=True):
        np.testing.assert_array_equal(kept, best)


class LearningRates(keras.callbacks.Callback):
    """The optimizer's learning rate at the start of every epoch."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_epoch_begin(self, epoch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_learning_rate_decays_every_epoch_and_resumes_where_it_was(tmp_path, rng):
    data = regression_data(rng)

    def fit(model, extra_callbacks):
        callbacks = cli.training_callbacks(
            str(tmp_path), 10, learning_rate=0.08, learning_rate_decay=0.5
        )
        return fit_regression(model, data, 4, [*callbacks, *extra_callbacks])

    first = LearningRates()
    with pytest.raises(KeyboardInterrupt):
        fit(regression_model(), [first, Interrupt(2)])
    resumed = LearningRates()
    fit(regression_model(), [resumed])  # a new process: the SGD's own rate is 0.05 again
    np.testing.assert_allclose(first.rates + resumed.rates, [0.08, 0.04, 0.02, 0.01], rtol=1e-6)


@pytest.mark.parametrize("epoch_seconds,epochs_run", TIME_BUDGET_CASES)
def test_time_budget_stops_before_an_epoch_that_would_end_past_it(
    epoch_seconds, epochs_run, tmp_path, rng, capsys
):
    now = [0.0]

    class Clock(keras.callbacks.Callback):  # each epoch takes its seconds
        def on_epoch_end(self, epoch, logs=None):
            now[0] += epoch_seconds[epoch]

    budget = cli.time_budget_callback(1, clock=lambda: now[0])
    history = fit_regression(regression_model(), regression_data(rng), 4, [Clock(), budget])
    assert len(history.history["loss"]) == epochs_run
    assert f"stopping after epoch {epochs_run}:" in capsys.readouterr().out


class TrainedWeights(keras.callbacks.Callback):
    """The model's weights after every batch and at the start of every epoch."""

    def __init__(self):
        super().__init__()
        self.after_batch, self.at_epoch_begin = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.after_batch.append(self.model.get_weights())

    def on_epoch_begin(self, epoch, logs=None):
        self.at_epoch_begin.append(self.model.get_weights())


def test_moving_average_is_judged_and_kept_and_training_resumes_from_the_trained_weights(
    tmp_path, rng
):
    data = regression_data(rng)
    momentum = 0.8

    def fit(extra_callbacks):
        model = regression_model(cli.make_optimizer(0.05, ema_decay=momentum))
        callbacks = cli.training_callbacks(str(tmp_path), 10, ema=True)
        return fit_regression(model, data, 3, [*callbacks, *extra_callbacks])

    first = TrainedWeights()
    with pytest.raises(KeyboardInterrupt):
        fit([first, Interrupt(2)])
    # The average by its formula: the first step's weights, then m * average + (1 - m) * w.
    average = first.after_batch[0]
    for weights in first.after_batch[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights, strict=True)]
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["best_epoch"] == 2  # the loss falls every epoch
    kept = cli.load_model(str(tmp_path / "model.keras")).get_weights()
    for got, want in zip(kept, average, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(kept[0], first.after_batch[-1][0])  # the average, not the last step

    resumed = TrainedWeights()
    fit([resumed])
    for got, want in zip(resumed.at_epoch_begin[0], first.after_batch[-1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)  # the trained weights, not the average


class EpochEndWeights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


@pytest.mark.parametrize("average_wins", [True, False])
def test_average_of_the_last_epochs_replaces_the_model_only_when_better(
    average_wins, tmp_path, rng
):
    model = regression_model()
    epoch_end = EpochEndWeights()
    callbacks = cli.training_callbacks(str(tmp_path), 10, average_last=3)
    fit_regression(model, regression_data(rng), 4, [*callbacks, epoch_end])
    assert [os.path.basename(path) for path in cli.epoch_weight_paths(str(tmp_path))] == [
        "epoch-002.weights.h5",
        "epoch-003.weights.h5",
        "epoch-004.weights.h5",
    ]
    best = json.loads((tmp_path / "metrics.json").read_text())["best_val_loss"]
    before = cli.load_model(str(tmp_path / "model.keras")).get_weights()
    verdict = best / 2 if average_wins else best * 2
    assert cli.keep_weight_average(str(tmp_path), model, 3, "val_loss", lambda: verdict) == verdict
    expected = [np.mean(arrays, axis=0) for arrays in zip(*epoch_end.weights[1:], strict=True)]
    kept = cli.load_model(str(tmp_path / "model.keras")).get_weights()
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["average_last_val_loss"] == verdict
    if average_wins:
        for got, want in zip(kept, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6)
        assert record["averaged_last"] == 3 and record["best_val_loss"] == verdict
    else:
        for got, want in zip(kept, before, strict=True):
            np.testing.assert_array_equal(got, want)
        assert "averaged_last" not in record and record["best_val_loss"] == best


class Poison(keras.callbacks.Callback):
    """At the start of epoch 2, remembers the weights, then makes them NaN."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.good_weights = self.model.get_weights()
            variable = self.model.trainable_variables[0]
            variable.assign(np.full(variable.shape, np.nan, "float32"))


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_model(tmp_path, monkeypatch, capsys):
    poison = Poison()
    original = cli.training_callbacks
    monkeypatch.setattr(
        cli, "training_callbacks", lambda *args, **kwargs: [*original(*args, **kwargs), poison]
    )
    run = tmp_path / "run"
    argv = ["train", "--num-train", "100", *TRANSLATE_TINY, "--epochs", "3", "--out", str(run)]
    assert cli.run_main(translate.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        "error: training stopped: the loss became NaN in epoch 2 (try a lower "
        f"--learning-rate); the last good checkpoint is {run / 'model.keras'} (epoch 1, "
        f"val_loss {json.loads((run / 'metrics.json').read_text())['best_val_loss']:.4f})"
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 1 and "training_finished" not in metrics
    assert not (run / "model.partial.keras").exists()
    weights = cli.load_model(str(run / "model.keras")).get_weights()
    assert all(np.isfinite(array).all() for array in weights)
    for saved, good in zip(weights, poison.good_weights, strict=True):
        np.testing.assert_array_equal(saved, good)


def test_run_stopped_while_evaluating_evaluates_again_without_training(
    tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    argv = ["--num-train", "100", *TRANSLATE_TINY, "--out", str(run)]  # train, then evaluate
    evaluate = translate.evaluate

    def interrupted_evaluation(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(translate, "evaluate", interrupted_evaluation)
    assert cli.run_main(translate.main, argv) == 130
    assert "==> training:" in capsys.readouterr().out
    # The backup is gone once fit ends: the record alone says training is over.
    assert json.loads((run / "metrics.json").read_text())["training_finished"]
    assert not (run / "backup").exists()
    model = (run / "model.keras").read_bytes()

    monkeypatch.setattr(translate, "evaluate", evaluate)
    assert cli.run_main(translate.main, argv) == 0
    output = capsys.readouterr().out
    assert "==> training:" not in output and "not training again" in output
    assert (run / "model.keras").read_bytes() == model
    assert "bleu" in json.loads((run / "metrics.json").read_text())

    # The same directory with another configuration is a new training.
    assert cli.run_main(translate.main, [*argv, "--seed", "1"]) == 0
    assert "==> training:" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained_runs(resumed_translate_run, tmp_path_factory):
    """The resumed translation run, a tiny caption run, and images to caption."""
    directory = tmp_path_factory.mktemp("faults")
    runs = {"translate": resumed_translate_run[0], "caption": directory / "caption"}
    assert caption.main(["train", *CAPTION_TINY, "--out", str(runs["caption"])]) == 0
    images = []
    for index, colour in enumerate([(200, 30, 30), (30, 30, 200), (240, 240, 240)]):
        pixels = np.zeros((32, 32, 3), "uint8")
        pixels[8:24, 4 + 4 * index : 20 + 4 * index] = colour
        images.append(directory / f"image{index}.png")
        Image.fromarray(pixels).save(images[-1])
    return runs, images


def test_saved_runs_give_the_same_outputs_in_a_fresh_process(
    trained_runs, tmp_path, processes, capsys
):
    runs, images = trained_runs
    commands = {
        "translate": [
            "translate",
            "--run",
            str(runs["translate"]),
            "twelve",
            "ninety seven and three",
            "one hundred",
        ],
        "caption": ["caption", "--run", str(runs["caption"]), *map(str, images)],
    }
    # Both fresh processes at once: each spends most of its time importing TensorFlow.
    for name, argv in commands.items():
        processes.append(start(f"recipes.{name}", argv, tmp_path / name))
    for process, (name, argv) in zip(processes, commands.items(), strict=True):
        code, fresh_output, errors = finish(process, tmp_path / name)
        assert code == 0, errors
        main = {"translate": translate.main, "caption": caption.main}[name]
        assert main(argv) == 0
        here_output = capsys.readouterr().out
        assert fresh_output == here_output
        assert len(here_output.splitlines()) == 3 and here_output.strip()


def lambda_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Lambda(lambda values: values * 2)(inputs))


@pytest.mark.parametrize("recipe", ["translate", "caption"])
@pytest.mark.parametrize("fault", ["lambda layer", "not a keras archive"])
def test_unsafe_or_broken_model_is_refused_with_one_line(
    trained_runs, recipe, fault, tmp_path, capsys
):
    runs, images = trained_runs
    run = tmp_path / "run"
    run.mkdir()
    for path in runs[recipe].glob("*.*"):
        if path.is_file():
            (run / path.name).write_bytes(path.read_bytes())
    model_path = run / "model.keras"
    if fault == "lambda layer":
        lambda_model().save(model_path)  # the lambda's code is marshalled into the file
    else:
        model_path.write_bytes(model_path.read_bytes()[:300])
    argv = {"translate": ["translate", "twelve"], "caption": ["caption", str(images[0])]}[recipe]
    main = {"translate": translate.main, "caption": caption.main}[recipe]
    assert cli.run_main(main, [argv[0], "--run", str(run), *argv[1:]]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and error.startswith(f"error: {model_path}: ")
    expected = "refused, it holds Python code" if fault == "lambda layer" else "not a .keras"
    assert expected in error


def test_code_loads_models_in_safe_mode_only():
    """Every model load goes through `safe_mode=True`; nothing opts out or unpickles."""
    sources = [*(ROOT / "recipes").rglob("*.py"), *(ROOT / "multiattn").rglob("*.py")]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for forbidden in (
            "safe_mode=False",
            "enable_unsafe_deserialization",
            "import pickle",
            "allow_pickle=True",
        ):
            assert forbidden not in text, f"{path}: {forbidden}"
        for arguments in re.findall(r"keras\.(?:saving|models)\.load_model\(([^)]*)\)", text):
            assert "safe_mode=True" in arguments, f"{path}: load_model({arguments})"
