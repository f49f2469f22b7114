"""Both recipes on many devices, with mixed precision and with XLA (`recipes/runtime.py`).

Strategies run in subprocesses: logical devices and a multi-worker cluster must be set
up before TensorFlow starts, which in this process it already has.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from recipe_flags import CAPTION, TRANSLATE

from multiattn.search import BeamSearch, GreedySearch
from recipes import caption, cli, runtime, translate
from recipes.data.batching import pad_batch
from recipes.data.generated import number_phrase_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Whole words as subwords and at most 4 words a sentence: a few batch shapes, so a few
# XLA compilations.
TRANSLATE_TINY = [*TRANSLATE, "--batch-size", "16"]
CAPTION_TINY = [*CAPTION, "--num-train", "32", "--num-val", "8", "--num-test", "4"]


@pytest.fixture(scope="module")
def phrases(tmp_path_factory):
    """`--data` flags of a tiny English -> German directory: 48/8/8 number phrases."""
    directory = tmp_path_factory.mktemp("phrases")
    corpus = number_phrase_corpus(48, 8, 8, seed=0, max_tokens=4)
    for split, pairs in corpus.items():
        for side, language in enumerate(("en", "de")):
            lines = "".join(pair[side] + "\n" for pair in pairs)
            (directory / f"{split}.{language}").write_text(lines, encoding="utf-8")
    return ["--data", str(directory), "--source-lang", "en", "--target-lang", "de"]


def run_python(code, *args, env=None, timeout=240):
    """Runs `code` in a fresh Python from the repository; returns the finished process."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- MirroredStrategy on two logical CPU devices -------------------------------------------
MIRRORED = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from recipes import caption, runtime, translate

    out = sys.argv[1]
    translate_flags, caption_flags = json.loads(sys.argv[2]), json.loads(sys.argv[3])
    strategy = runtime.make_strategy("mirrored", 2)
    flags = ["--strategy", "mirrored", "--devices", "2"]
    codes = [
        translate.main(["train", *translate_flags, *flags, "--out", out + "/translate"]),
        caption.main(["train", *caption_flags, *flags, "--out", out + "/caption"]),
    ]

    # One batch whose two halves are equal, so each replica's loss is the whole batch's:
    # with the same weights, two replicas must give the loss of one device.
    config = translate.TranslateConfig(units=16, embedding_dim=8, dropout=0.0)
    single = translate.build_model(config, 20, 20)
    single.build(((None, None), (None, None)))
    with strategy.scope():
        mirrored = translate.build_model(config, 20, 20)
        mirrored.build(((None, None), (None, None)))
    mirrored.set_weights(single.get_weights())
    rng = np.random.default_rng(0)
    source = np.tile(rng.integers(3, 20, (4, 5)), (2, 1))
    source[[1, 5], 3:] = 0
    target_in = np.tile(rng.integers(3, 20, (4, 4)), (2, 1))
    target_in[:, 0] = 1
    target_out = np.roll(target_in, -1, axis=1)
    losses = []
    for model in (single, mirrored):
        scores = model.evaluate((source, target_in), target_out, batch_size=8, return_dict=True)
        losses.append(scores["loss"])
    print("RESULT " + json.dumps(
        {"codes": codes, "replicas": strategy.num_replicas_in_sync, "losses": losses}
    ))
    """
)


def test_mirrored_strategy_trains_both_recipes_on_two_cpu_devices(phrases, tmp_path):
    process = run_python(
        MIRRORED, str(tmp_path), json.dumps(phrases + TRANSLATE_TINY), json.dumps(CAPTION_TINY)
    )
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.split("RESULT ")[-1])
    assert result["codes"] == [0, 0]
    assert result["replicas"] == 2
    # Each recipe reports the replicas it trained on, and keeps the setting in its run.
    assert process.stdout.count("mirrored strategy, 2 replica(s)") == 2
    for recipe in ("translate", "caption"):
        config = json.loads((tmp_path / recipe / "config.json").read_text())
        assert (config["strategy"], config["devices"]) == ("mirrored", 2)
        assert (tmp_path / recipe / "model.keras").is_file()
        metrics = json.loads((tmp_path / recipe / "metrics.json").read_text())
        assert np.isfinite(metrics["best_val_loss"])
    single_loss, mirrored_loss = result["losses"]
    np.testing.assert_allclose(mirrored_loss, single_loss, rtol=1e-5)


# -- MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 ------------------------
def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_multi_worker_training_ends_with_the_same_weights_on_both_workers(phrases, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "recipes.translate",
        "train",
        *phrases,
        *TRANSLATE_TINY,
        "--strategy",
        "multi-worker",
        "--out",
        str(run),
    ]
    workers = []
    try:
        for index in range(2):
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="2")
            log = open(tmp_path / f"worker{index}.log", "w+", encoding="utf-8")
            workers.append(
                (subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log), log)
            )
        codes = [process.wait(timeout=240) for process, _ in workers]
    finally:
        for process, log in workers:  # never left behind, whatever failed
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    logs = [(tmp_path / f"worker{index}.log").read_text(encoding="utf-8") for index in range(2)]
    assert codes == [0, 0], "\n".join(log[-2000:] for log in logs)
    for log in logs:
        assert "multi-worker strategy, 2 replica(s)" in log
    # The chief (worker 0) writes the run; worker 1 its own directory inside it.
    chief_model = run / "model.keras"
    worker_model = run / "workers" / "worker-1" / "model.keras"
    assert json.loads((run / "config.json").read_text())["strategy"] == "multi-worker"
    chief_weights = cli.load_model(str(chief_model)).get_weights()
    worker_weights = cli.load_model(str(worker_model)).get_weights()
    assert len(chief_weights) == len(worker_weights) > 0
    for chief, worker in zip(chief_weights, worker_weights, strict=True):
        np.testing.assert_array_equal(chief, worker)
        assert np.isfinite(chief).all()


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(cli.UsageError, match="--strategy multi-worker needs TF_CONFIG"):
        runtime.make_strategy("multi-worker")


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{not json", "TF_CONFIG: not JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', 'needs a "cluster" and a "task"'),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "names no"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "range"),
    ],
)
def test_bad_tf_config_is_one_line(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(cli.UsageError, match=message):
        runtime.task_of_tf_config()


@pytest.mark.parametrize(
    "task_type, index, chief",
    [("chief", 0, True), ("worker", 0, True), ("worker", 1, False), (None, None, True)],
)
def test_only_the_chief_writes_the_run(tmp_path, task_type, index, chief):
    class Resolver:
        task_id = index

    Resolver.task_type = task_type

    class Strategy:
        cluster_resolver = Resolver()

    directory = runtime.worker_directory(str(tmp_path), Strategy())
    assert (directory == str(tmp_path)) == chief
    assert os.path.isdir(directory)


def test_splitting_the_cpu_after_tensorflow_started_is_one_line():
    import tensorflow as tf

    tf.constant(0)  # TensorFlow has started: its devices are fixed
    with pytest.raises(cli.UsageError, match="--devices 3: TensorFlow already started"):
        runtime.make_strategy("mirrored", 3)


# -- mixed precision and XLA ---------------------------------------------------------------
def test_padding_for_xla_gives_few_shapes_and_the_same_loss():
    from recipes.data.batching import make_dataset

    rng = np.random.default_rng(0)
    lengths = [3, 5, 9, 2, 7]
    source_ids = [list(rng.integers(3, 20, length)) for length in lengths]
    target_ids = [list(rng.integers(3, 20, length + 1)) for length in lengths]
    dataset = make_dataset(source_ids, target_ids, batch_size=8, bucket_boundaries=[])
    padded = runtime.pad_for_xla(dataset, batch_size=8)
    (source, target_in), target_out = next(iter(dataset))
    (padded_source, padded_target_in), padded_target_out = next(iter(padded))
    assert padded.element_spec[0][0].shape.as_list() == [8, None]  # a static batch size
    assert padded_source.shape == (8, 16) and padded_target_in.shape == (8, 16)
    for original, result in (
        (source, padded_source),
        (target_in, padded_target_in),
        (target_out, padded_target_out),
    ):
        rows, length = original.shape
        np.testing.assert_array_equal(result[:rows, :length], original)
        assert np.count_nonzero(result) == np.count_nonzero(original)
    model = translate.build_model(translate.TranslateConfig(units=8, embedding_dim=8), 20, 20)
    losses = [model.evaluate(data, verbose=0, return_dict=True) for data in (dataset, padded)]
    np.testing.assert_allclose(losses[1]["loss"], losses[0]["loss"], rtol=1e-5)
    np.testing.assert_allclose(losses[1]["accuracy"], losses[0]["accuracy"], rtol=1e-5)


# Every recipe trains under each precision, and with XLA under one of them; the
# translation's output layer tied to its embeddings under one.
CASES = [
    ("translate", "bfloat16", True, ["--tie-embeddings"]),
    ("translate", "float16", False, []),
    ("caption", "float16", True, []),
    ("caption", "bfloat16", False, []),
]


@pytest.mark.parametrize("recipe, precision, jit_compile, extra_flags", CASES)
def test_mixed_precision_and_xla_train_and_search(
    phrases, tmp_path, recipe, precision, jit_compile, extra_flags
):
    run = str(tmp_path / "run")
    flags = ["--mixed-precision", precision, *(["--jit-compile"] if jit_compile else [])]
    flags += extra_flags
    module = translate if recipe == "translate" else caption
    data_flags = phrases + TRANSLATE_TINY if recipe == "translate" else CAPTION_TINY
    assert module.main(["train", *data_flags, *flags, "--out", run]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["best_val_loss"])

    # A later command (evaluate, translate, caption) decodes as the run trained.
    keras.config.set_dtype_policy("float32")
    if recipe == "translate":
        config, model, source_vocabulary, _ = translate.load_run(run)
    else:
        config, model, _ = caption.load_run(run)
    assert (config.mixed_precision, config.jit_compile) == (precision, jit_compile)
    assert model.decoder.dtype_policy.name == runtime.POLICIES[precision]
    assert model.decoder.tie_embeddings == ("--tie-embeddings" in extra_flags)
    assert keras.config.dtype_policy().name == runtime.POLICIES[precision]
    assert model.jit_compile == jit_compile
    is_loss_scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert is_loss_scaled == (precision == "float16")

    if recipe == "translate":
        corpus = translate.load_data(config)
        source_ids = source_vocabulary.encode([source for source, _ in corpus.test])
        source = pad_batch(source_ids)
        # Three more padding positions must change nothing but the attention's width
        # (checked without XLA, where it costs no more compilations).
        longer = None if jit_compile else pad_batch(source_ids, source.shape[1] + 3)
        check_search(model, source, longer, max_length=8)
    else:
        images = caption.load_splits(config, ("test",))["test"].images.astype("float32")
        check_search(model, images, None, max_length=config.max_caption_length + 1)


def check_search(model, source, longer, max_length):
    """Greedy and beam search: finite, attention a distribution until the end, then 0.

    For token sources, padded positions get exactly zero attention, and `longer` (the
    same sources with more padding) gives the same tokens and attention.
    """
    searches = {"greedy": GreedySearch(), "beam": BeamSearch(beam_size=2, length_penalty=0.0)}
    for method, search in searches.items():
        result = model.generate(source, search=search, max_length=max_length)
        if method == "beam":
            result = {key: value[:, 0] for key, value in result.items()}
        assert np.isfinite(result["scores"]).all()
        attention, lengths = result["attention"], result["lengths"]
        steps = np.arange(max_length)[None, :] < lengths[:, None]  # (batch, max_length)
        np.testing.assert_allclose(attention.sum(-1)[steps], 1.0, atol=1e-2)
        assert (attention[~steps] == 0).all()
        if source.ndim == 2:  # token ids, 0 the padding
            padded = np.broadcast_to((source == 0)[:, None, :], attention.shape)
            assert padded.any()
            assert (attention[padded] == 0).all()  # exactly: masked, not merely small
        if longer is None:
            continue
        longer_result = model.generate(longer, search=search, max_length=max_length)
        if method == "beam":
            longer_result = {key: value[:, 0] for key, value in longer_result.items()}
        np.testing.assert_array_equal(longer_result["tokens"], result["tokens"])
        width = source.shape[1]
        assert (longer_result["attention"][..., width:] == 0).all()
        np.testing.assert_allclose(longer_result["attention"][..., :width], attention, atol=1e-3)
