"""The recipe commands keep TensorFlow's C++ log lines and sacreBLEU's advice to detokenize
off the terminal, and still show what matters (`recipes/tensorflow_logs.py`).

The commands run as a user's shell runs them: without the `TF_CPP_MIN_LOG_LEVEL` that
`conftest.py` sets for the suite (nor any other `TF_` variable). Started together, they
take about 40 seconds on two cores.
"""

import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
import types
import urllib.request

import pytest
from recipe_flags import CAPTION, SCENES, TRANSLATE

from recipes import tensorflow_logs

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds, for any one command
# A line of absl's log format, which TensorFlow's C++ side writes: severity (info,
# warning, error), date, time, thread, file:line.
LOG_LINE = re.compile(r"^[EIW]\d{4} ")
# TensorFlow's check that fails on a scalar and aborts (TensorFlow 2.21): a fatal line.
FAILED_CHECK = """
tf.raw_ops.FusedPadConv2D(
    input=tf.constant(1.5, dtype=tf.float64),
    paddings=tf.ones([4, 2], dtype=tf.int32),
    filter=tf.zeros([1, 1, 0, 1, 0], dtype=tf.float64),
    mode="REFLECT",
    strides=[1, 1, 1, 1],
    padding="VALID",
)
"""


def user_environment(**settings):
    """This process's environment without TensorFlow's variables, plus `settings`."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("TF_")}
    return {**environment, **settings}


def noise(stderr):
    """The lines of `stderr` that should not reach the user of a recipe command."""
    return [
        line
        for line in stderr.splitlines()
        if LOG_LINE.match(line)
        or "absl::InitializeLog" in line  # absl's notice before its lines
        or "rebuild TensorFlow with the appropriate compiler flags" in line  # a second line
        or "forgot to detokenize" in line  # sacreBLEU's, on tokenized translations
    ]


class Command:
    """`python ARGUMENTS` started in the repository as a user would (`user_environment`),
    its output in files under `directory`."""

    def __init__(self, directory, name, arguments):
        self.output = directory / f"{name}.out"
        self.errors = directory / f"{name}.err"
        with open(self.output, "w") as output, open(self.errors, "w") as errors:
            self.process = subprocess.Popen(
                [sys.executable, *arguments],
                cwd=ROOT,
                env=user_environment(),
                stdout=output,
                stderr=errors,
            )

    def finish(self):
        """Waits for the command; returns `(exit code, stdout, stderr)`."""
        self.process.wait(timeout=TIMEOUT)
        return self.process.returncode, self.output.read_text(), self.errors.read_text()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def tokenized_corpus(directory):
    """A German-English corpus in `directory` whose English side is tokenized periods.

    Any translation the model learns then ends in " .", as a tokenized sentence does, and
    each scored split has more than the 100 such lines that make sacreBLEU warn.
    """
    directory.mkdir()
    words = "ein zwei drei hund katze mann frau".split()
    chooser = random.Random(0)
    for split, count in (("train", 300), ("val", 120), ("test", 120)):
        sources = [" ".join(chooser.choices(words, k=3)) + " ." for _ in range(count)]
        (directory / f"{split}.de").write_text("\n".join(sources) + "\n")
        (directory / f"{split}.en").write_text(". . .\n" * count)
    return directory


def wait_for_line(path, prefix, process, timeout=TIMEOUT):
    """The first line of the file `path` that starts with `prefix`, once written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if line.startswith(prefix):
                return line
        assert process.poll() is None, f"exited with {process.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"no line starting with {prefix!r} in {path} after {timeout} s")


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    """`({name: (exit code, stdout, stderr)}, {recipe: run directory})` of the commands,
    started together:

    - `translate`: train then evaluate (the default command) on tokenized data,
      with the val BLEU after each epoch;
    - `caption`: train on a frozen pretrained backbone, through the feature cache;
    - `serve`: the web demo of the caption run, asked for its runs, then stopped
      with Ctrl-C;
    - `failures`: in a process that imported the recipes, a Python warning, a
      TensorFlow error and a failed check of TensorFlow's, which aborts.
    """
    import keras

    directory = tmp_path_factory.mktemp("quiet")
    weights = directory / "mobilenet.weights.h5"
    keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(weights)
    data = tokenized_corpus(directory / "data")
    runs = {"translate": directory / "translate_run", "caption": directory / "caption_run"}
    translate = [*("--data", str(data), "--source-lang", "de", "--target-lang", "en")]
    translate += [*TRANSLATE, "--monitor", "val_bleu", "--out", str(runs["translate"])]
    backbone = ["--backbone", "mobilenet", "--alpha", "0.25", "--weights", str(weights)]
    caption = ["train", *SCENES, *CAPTION, *backbone, "--out", str(runs["caption"])]
    failures = """
        import traceback
        import warnings

        import recipes
        import tensorflow as tf

        warnings.warn("a warning of Python's", UserWarning)
        try:
            tf.reshape(tf.zeros([3]), [2, 2])
        except tf.errors.InvalidArgumentError:
            traceback.print_exc()
        print("checking", flush=True)
    """
    started = {
        "translate": Command(directory, "translate", ["-m", "recipes.translate", *translate]),
        "caption": Command(directory, "caption", ["-m", "recipes.caption", *caption]),
        "failures": Command(
            directory, "failures", ["-c", textwrap.dedent(failures) + FAILED_CHECK]
        ),
    }
    try:
        results = {"caption": started["caption"].finish()}
        serve = ["-m", "recipes.serve", "--run", str(runs["caption"]), "--port", "0"]
        started["serve"] = Command(directory, "serve", serve)
        line = wait_for_line(started["serve"].output, "serving ", started["serve"].process)
        url = re.search(r"http://\S+/", line).group()
        with urllib.request.urlopen(url + "api/runs", timeout=60) as response:
            assert response.status == 200
        started["serve"].process.send_signal(signal.SIGINT)  # Ctrl-C
        results.update({name: command.finish() for name, command in started.items()})
    finally:
        for command in started.values():
            command.kill()
    return results, runs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["translate", "caption", "serve"])
def test_commands_keep_tensorflow_logs_and_sacrebleu_advice_off_the_terminal(commands, name):
    results, _ = commands
    code, output, errors = results[name]
    assert code == 0, errors
    assert not noise(errors), errors
    if name != "serve":
        assert "run: " in output  # the command's own output is all there


@pytest.mark.slow
def test_the_translations_scored_end_as_tokenized_sentences_do(commands):
    """What makes sacreBLEU warn, but for `warn_if_tokenized=False`: 100 or more
    hypotheses ending in " ." (without it, its three lines came four times: for the val
    BLEU of the epoch, then for the test BLEU with beam, greedy and by length)."""
    results, runs = commands
    assert "epoch 1: val BLEU" in results["translate"][1]
    rows = (runs["translate"] / "test_translations.tsv").read_text().splitlines()
    assert sum(row.split("\t")[2].endswith(" .") for row in rows) >= 100


@pytest.mark.slow
def test_warnings_errors_and_failed_checks_still_reach_the_user(commands):
    """Python's warnings and TensorFlow's errors are untouched; a failed check of
    TensorFlow's (a fatal line, then an abort) shows under the level the recipes set."""
    results, _ = commands
    code, output, errors = results["failures"]
    assert "a warning of Python's" in errors
    assert "Traceback" in errors and "InvalidArgumentError" in errors
    if code == 0:
        pytest.skip("TensorFlow no longer fails this check: no fatal line to look for")
    assert code == -signal.SIGABRT, errors
    assert output.endswith("checking\n")
    assert re.search(r"^F\d{4} .*Check failed", errors, re.MULTILINE), errors
    assert not noise(errors), errors


def test_a_level_the_user_set_is_kept(monkeypatch):
    imported = []
    monkeypatch.setattr(tensorflow_logs, "import_filtered", imported.append)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)  # not imported yet
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    tensorflow_logs.quiet_tensorflow_logs()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    assert imported == []


def test_without_a_level_tensorflow_is_imported_quietly(monkeypatch):
    imported = []
    monkeypatch.setattr(tensorflow_logs, "import_filtered", imported.append)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    tensorflow_logs.quiet_tensorflow_logs()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"  # fatal lines only
    assert imported == ["tensorflow"]


def test_nothing_is_set_once_tensorflow_is_imported(monkeypatch):
    """TensorFlow read the level when it was imported: setting it now changes nothing."""
    monkeypatch.setattr(tensorflow_logs, "import_filtered", pytest.fail)
    imported_already = sys.modules.get("tensorflow") or types.ModuleType("tensorflow")
    monkeypatch.setitem(sys.modules, "tensorflow", imported_already)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    tensorflow_logs.quiet_tensorflow_logs()
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ


# What a module writes to standard error while it imports: TensorFlow's lines, then others.
NOISY_IMPORT = r"""
import os
import sys
import warnings

os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
            b"written to STDERR\n")
os.write(2, b"I0000 00:00:1796689669.414934    5427 port.cc:153] oneDNN custom operations "
            b"are on.\n")
os.write(2, b"W1208 00:26:01.000001 5427 some_file.cc:7] a warning\n")
os.write(2, b"E0000 00:00:1796689675.037786    5427 cuda_platform.cc:52] failed call to "
            b"cuInit: INTERNAL: CUDA error\n")
os.write(2, b"F0000 00:00:1796689983.120892    7315 tensor_shape.cc:362] Check failed: "
            b"d < dims() (1 vs. 0)\n")
os.write(2, b"a line of a library's own\n")
print("printed to sys.stderr", file=sys.__stderr__, flush=True)  # pytest swaps sys.stderr
warnings.warn("a warning of Python's", UserWarning)
"""


def test_import_filtered_drops_the_loading_lines_and_keeps_the_rest(tmp_path, monkeypatch, capfd):
    (tmp_path / "noisy_module.py").write_text(NOISY_IMPORT)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="a warning of Python's"):
        tensorflow_logs.import_filtered("noisy_module")
    os.write(2, b"after the import\n")
    errors = capfd.readouterr().err.splitlines()
    assert errors == [
        "F0000 00:00:1796689983.120892    7315 tensor_shape.cc:362] Check failed: "
        "d < dims() (1 vs. 0)",
        "a line of a library's own",
        "printed to sys.stderr",
        "after the import",  # standard error is back, after everything the filter passed
    ]


def test_a_failing_import_raises_and_gives_standard_error_back(tmp_path, monkeypatch, capfd):
    (tmp_path / "failing_module.py").write_text(
        "import os\nos.write(2, b'said before failing\\n')\nraise RuntimeError('a bug')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="a bug"):
        tensorflow_logs.import_filtered("failing_module")
    os.write(2, b"written after\n")
    assert capfd.readouterr().err == "said before failing\nwritten after\n"


def test_what_is_written_before_an_abort_during_the_import_is_shown(tmp_path):
    """The filter is a process of its own: it passes on what it read after this one died."""
    (tmp_path / "aborting_module.py").write_text(
        "import os\nos.write(2, b'F0000 00:00:1.5 7 check.cc:1] Check failed\\n')\nos.abort()\n"
    )
    code = f"""
        import sys

        sys.path.insert(0, {str(tmp_path)!r})
        from recipes import tensorflow_logs

        tensorflow_logs.import_filtered("aborting_module")
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        # A level set: importing `recipes` leaves TensorFlow alone.
        env=user_environment(TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=60,
    )
    assert done.returncode == -signal.SIGABRT
    assert done.stderr.startswith("F0000 00:00:1.5 7 check.cc:1] Check failed\n"), done.stderr
