"""The translation recipe end to end on tiny configurations, and its error messages."""

import gzip
import io
import json
import sys

import pytest
from recipe_flags import TRANSLATE

from multiattn.metrics import corpus_bleu
from recipes import translate

TINY = TRANSLATE


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("translate") / "run"
    code = translate.main(["--num-train", "300", *TINY, "--out", str(run)])
    assert code == 0
    return run


def test_default_command_trains_and_evaluates(trained_run, capsys):
    for name in (
        "model.keras",
        "config.json",
        "metrics.json",
        "source_vocabulary.txt",
        "target_vocabulary.txt",
        "bleu_by_length.png",
    ):
        assert (trained_run / name).stat().st_size > 0, name
    assert len(list((trained_run / "alignments").glob("*.png"))) == 4
    assert list((trained_run / "logs").rglob("*tfevents*"))
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in ("bleu", "bleu_greedy", "chrf", "bleu_by_length", "train_seconds"):
        assert key in metrics, key
    assert {bucket["bucket"] for bucket in metrics["bleu_by_length"]} >= {"1-10", "41+"}
    assert json.loads((trained_run / "config.json").read_text())["units"] == 16


def test_evaluate_val_split_with_greedy(trained_run, capsys):
    assert (
        translate.main(
            ["evaluate", "--run", str(trained_run), "--split", "val", "--beam-size", "1"]
        )
        == 0
    )
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["beam_size"] == 1
    assert "BLEU" in capsys.readouterr().out
    # The file holds the translations scored, each beside its source and reference.
    rows = [
        line.split("\t") for line in (trained_run / "val_translations.tsv").read_text().splitlines()
    ]
    assert len(rows) == metrics["sentences"]
    assert all(len(row) == 3 for row in rows)
    hypotheses, references = [row[2] for row in rows], [row[1] for row in rows]
    assert corpus_bleu(hypotheses, references) == pytest.approx(metrics["bleu"])


def test_translate_arguments_and_stdin_keep_order(trained_run, capsys, monkeypatch, tmp_path):
    texts = ["twelve", "", "ninety seven and three"]
    picture = tmp_path / "alignment.png"
    assert (
        translate.main(
            ["translate", "--run", str(trained_run), "--attention-png", str(picture), *texts]
        )
        == 0
    )
    lines = capsys.readouterr().out.split("\n")[:3]
    assert lines[1] == ""  # an empty input gives an empty line, in its place
    assert picture.stat().st_size > 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(texts) + "\n"))
    assert translate.main(["translate", "--run", str(trained_run), "--beam-size", "1"]) == 0
    assert capsys.readouterr().out.split("\n")[:3][1] == ""


def write_parallel(directory, gz=False):
    pairs = [("ein hund läuft", "a dog runs"), ("zwei katzen", "two cats")] * 15
    directory.mkdir()
    for split in ("train", "val", "test"):
        for lang, side in (("de", 0), ("en", 1)):
            text = "".join(pair[side] + "\n" for pair in pairs)
            path = directory / f"{split}.{lang}" if not gz else directory / f"{split}.{lang}.gz"
            if gz:
                path.write_bytes(gzip.compress(text.encode()))
            else:
                path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("layout", ["directory", "gz-directory", "tsv"])
def test_train_on_each_file_layout(layout, tmp_path, capsys):
    if layout == "tsv":
        data = tmp_path / "pairs.tsv"
        data.write_text("".join(f"go {i}\tva {i}\n" for i in range(60)), encoding="utf-8")
        language_flags = []
    else:
        data = tmp_path / "corpus"
        write_parallel(data, gz=layout == "gz-directory")
        language_flags = ["--source-lang", "de", "--target-lang", "en"]
    run = tmp_path / "run"
    assert (
        translate.main(["train", "--data", str(data), *language_flags, *TINY, "--out", str(run)])
        == 0
    )
    assert (run / "model.keras").exists()
    assert "train" in capsys.readouterr().out


def test_mismatched_files_name_both(tmp_path, capsys):
    from recipes import cli

    data = tmp_path / "corpus"
    write_parallel(data)
    (data / "train.en").write_text("only one line\n", encoding="utf-8")
    argv = [
        "train",
        "--data",
        str(data),
        "--source-lang",
        "de",
        "--target-lang",
        "en",
        "--out",
        str(tmp_path / "run"),
    ]
    assert cli.run_main(translate.main, argv) == 2
    error = capsys.readouterr().err
    assert "train.de" in error and "train.en" in error


def test_interrupted_training_resumes_where_it_stopped(tmp_path, monkeypatch):
    import keras

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    original = translate.cli.training_callbacks
    run = tmp_path / "run"
    argv = ["train", "--num-train", "100", *TINY, "--epochs", "3", "--out", str(run)]
    # Interrupted after its first epoch, once BackupAndRestore has saved it.
    monkeypatch.setattr(
        translate.cli, "training_callbacks", lambda *a, **k: [*original(*a, **k), Interrupt()]
    )
    with pytest.raises(KeyboardInterrupt):
        translate.main(argv)
    monkeypatch.setattr(translate.cli, "training_callbacks", original)
    assert translate.main(argv) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2  # epochs 2 and 3; epoch 1 was restored


def test_translate_reports_truncated_inputs(trained_run, capsys):
    long_text = " , ".join(["ninety seven"] * 60)
    assert (
        translate.main(
            ["translate", "--run", str(trained_run), "--beam-size", "1", long_text, "twelve"]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "truncated 1 input(s)" in captured.err
    assert captured.out.count("\n") == 2  # a line each, even an empty one


def test_hard_attention_flags_train_a_hard_model(tmp_path):
    import keras

    run = tmp_path / "run"
    argv = ["train", "--num-train", "100", *TINY, "--hard-attention", "--out", str(run)]
    assert translate.main([*argv, "--entropy-weight", "0.01"]) == 0
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert model.decoder.attention.hard and model.entropy_weight == 0.01
    assert float(model.reward_baseline) < 0  # the baseline followed the rewards


@pytest.mark.parametrize("attention", ["luong-general", "none"])
def test_tie_embeddings_flag_trains_a_tied_model(attention, tmp_path):
    import keras

    run = tmp_path / "run"
    flags = ["--tie-embeddings", "--attention", attention]
    assert translate.main(["train", "--num-train", "100", *TINY, *flags, "--out", str(run)]) == 0
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert model.decoder.tie_embeddings and model.decoder.output_dense is None


def test_joint_vocabulary_serves_both_languages(tmp_path, capsys):
    run = tmp_path / "run"
    flags = ["--joint-vocabulary", "--vocabulary-size", "300"]
    assert translate.main(["train", "--num-train", "100", *TINY, *flags, "--out", str(run)]) == 0
    assert "learning a joint subword vocabulary (300)" in capsys.readouterr().out
    source_path, target_path = translate.vocabulary_paths(run)
    joint = open(source_path, encoding="utf-8").read()
    assert joint == open(target_path, encoding="utf-8").read()
    _, _, source_vocabulary, target_vocabulary = translate.load_run(str(run))
    # the generated corpus is English -> German: words of both are whole subwords
    for word in ("three", "drei"):
        assert source_vocabulary.encode([word]) == target_vocabulary.encode([word])
        assert len(source_vocabulary.encode([word])[0]) == 1, word


@pytest.mark.parametrize("local", ["monotonic", "predictive"])
def test_attention_window_trains_a_local_model(local, tmp_path, capsys):
    import keras

    from multiattn import LocalAttention

    run = tmp_path / "run"
    flags = ["--attention-window", "3", "--local", local]
    assert translate.main(["--num-train", "100", *TINY, *flags, "--out", str(run)]) == 0
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    attention = model.decoder.attention
    assert isinstance(attention, LocalAttention)
    assert (attention.window, attention.local) == (3, local)
    assert "BLEU" in capsys.readouterr().out  # and it evaluated


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--attention-window", "-1"], "must be 0 (global) or more"),
        (["--attention-window", "2", "--hard-attention"], "local attention has no hard mode"),
        (["--attention-window", "2", "--attention", "none"], "needs an --attention other"),
        (["--hard-attention", "--attention", "none"], "--hard-attention needs an --attention"),
        (["--layers", "0"], "--layers 0: must be 1 or more"),
    ],
)
def test_attention_and_layer_flag_errors(flags, message, tmp_path, capsys):
    from recipes import cli

    argv = ["train", "--num-train", "100", *TINY, *flags, "--out", str(tmp_path / "run")]
    assert cli.run_main(translate.main, argv) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.splitlines()) == 1


def test_schedule_flags_train_with_a_decaying_rate_and_an_average(tmp_path, monkeypatch):
    import keras

    class Rates(keras.callbacks.Callback):
        rates, use_ema = [], None

        def on_epoch_begin(self, epoch, logs=None):
            optimizer = self.model.optimizer
            Rates.use_ema = optimizer.use_ema
            Rates.rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))

    original = translate.cli.training_callbacks
    monkeypatch.setattr(
        translate.cli, "training_callbacks", lambda *a, **k: [*original(*a, **k), Rates()]
    )
    run = tmp_path / "run"
    flags = ["--learning-rate", "0.004", "--learning-rate-decay", "0.5", "--ema-decay", "0.9"]
    argv = ["train", "--num-train", "100", *TINY, *flags, "--epochs", "2", "--patience", "5"]
    assert translate.main([*argv, "--out", str(run)]) == 0
    assert Rates.rates == pytest.approx([0.004, 0.002]) and Rates.use_ema


def test_an_ensemble_of_runs_evaluates_and_translates(trained_run, tmp_path, capsys):
    second = tmp_path / "second"  # the same data and vocabularies, another model
    argv = ["train", "--num-train", "300", *TINY, "--units", "8", "--out", str(second)]
    assert translate.main(argv) == 0
    before = (trained_run / "metrics.json").read_text()
    runs = ["--run", str(trained_run), "--run", str(second)]
    assert translate.main(["evaluate", *runs, "--split", "val"]) == 0
    metrics = json.loads((trained_run / "ensemble" / "metrics.json").read_text())
    assert metrics["ensemble"] == [str(trained_run), str(second)] and "bleu" in metrics
    assert (trained_run / "ensemble" / "bleu_by_length.png").stat().st_size > 0
    assert (trained_run / "metrics.json").read_text() == before  # the run's own stay
    capsys.readouterr()
    assert translate.main(["translate", *runs, "three hundred", "twelve"]) == 0
    assert capsys.readouterr().out.count("\n") == 2  # a line each, even an empty one


def test_an_ensemble_needs_the_same_vocabularies(trained_run, tmp_path, capsys):
    from recipes import cli

    other = tmp_path / "other"
    argv = ["train", "--num-train", "300", *TINY, "--vocabulary-size", "60"]
    assert translate.main([*argv, "--out", str(other)]) == 0
    capsys.readouterr()
    runs = ["--run", str(trained_run), "--run", str(other)]
    assert cli.run_main(translate.main, ["evaluate", *runs]) == 2
    error = capsys.readouterr().err
    assert f"--run {other}: its source vocabulary differs" in error
    assert len(error.splitlines()) == 1


def test_checkpoint_choice_by_val_bleu(tmp_path, capsys):
    """`--monitor val_bleu`: val translations scored each epoch, the best epoch kept."""
    run = tmp_path / "run"
    argv = ["train", "--num-train", "300", *TINY, "--epochs", "3", "--patience", "5"]
    flags = ["--monitor", "val_bleu", "--monitor-beam-size", "2", "--learning-rate", "0.01"]
    assert translate.main([*argv, *flags, "--out", str(run)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if ": val BLEU " in line]
    assert len(lines) == 3 and all(line.endswith("(beam 2)") for line in lines)
    scores = [float(line.split("val BLEU ")[1].split()[0]) for line in lines]
    metrics = json.loads((run / "metrics.json").read_text())
    assert "best_val_loss" not in metrics
    assert metrics["best_val_bleu"] == pytest.approx(max(scores), abs=0.01)
    assert metrics["best_epoch"] == 1 + scores.index(max(scores))


def test_average_last_judges_the_average_of_the_last_epochs(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--num-train", "300", *TINY, "--epochs", "3", "--average-last", "2"]
    assert translate.main([*argv, "--out", str(run)]) == 0
    assert "val_loss of the average" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert "average_last_val_loss" in metrics
    assert len(list((run / "epochs").glob("*.weights.h5"))) == 2


def test_self_critical_epochs_after_cross_entropy(tmp_path, capsys):
    """`--self-critical-epochs`: sampled translations, rewarded by their sentence BLEU;
    a budget too small for a second epoch stops them after the first."""
    run = tmp_path / "run"
    flags = ["--monitor", "val_bleu", "--self-critical-epochs", "2", "--self-critical-steps", "3"]
    budget = ["--self-critical-time-budget", "0.0001"]
    argv = ["train", "--num-train", "300", *TINY, *flags, *budget]
    assert translate.main([*argv, "--self-critical-batch-size", "32", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "reward sentence BLEU" in out and "self-critical epoch 1: val BLEU" in out
    assert "stopping after self-critical epoch 1:" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training_finished"] and metrics["self_critical_epochs_completed"] == 1
    assert 0 <= metrics["self_critical"][0]["reward"] <= 1
    assert translate.main(["evaluate", "--run", str(run), "--split", "val"]) == 0
