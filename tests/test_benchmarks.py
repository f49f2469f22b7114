"""The benchmarks run (in --quick mode) and count what they say; speed is never asserted."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from keras import ops

from benchmarks import flops, length_curve, peers, speed
from multiattn import AttentionDecoder

ROOT = pathlib.Path(__file__).resolve().parents[1]
ATTENTIONS = ("bahdanau", "luong-dot", "luong-general", "luong-concat", "key-value")


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("order", ["bahdanau", "luong"])
def test_decoder_step_flops_count_every_matrix_product(attention, order, rng, monkeypatch):
    """The analytic count equals the products `decoder.step` really runs."""
    batch, source_len, memory_dim = 3, 7, 12
    use_gate = attention == "bahdanau"
    decoder = AttentionDecoder(
        50,
        8,
        16,
        attention=attention,
        attention_order=order,
        input_feeding=order == "luong",
        use_gate=use_gate,
    )
    memory = rng.normal(size=(batch, source_len, memory_dim)).astype("float32")
    if attention == "luong-dot":
        memory = rng.normal(size=(batch, source_len, 16)).astype("float32")
        memory_dim = 16
    decoder(ops.ones((batch, 2), "int32"), memory)  # builds
    state = decoder.get_initial_state(memory)
    counted = []
    original = ops.matmul

    def counting_matmul(a, b):
        result = original(a, b)
        # 2 * (multiply-adds): every output element is a dot product of length K
        counted.append(2 * int(np.prod(result.shape)) * a.shape[-1])
        return result

    import keras.src.ops  # where Keras' own Dense and LSTMCell find matmul

    monkeypatch.setattr(ops, "matmul", counting_matmul)
    monkeypatch.setattr(keras.src.ops, "matmul", counting_matmul)
    prepared = decoder.prepare_memory(memory)
    prepare_flops = sum(counted)
    decoder.step(ops.ones((batch,), "int32"), state, prepared)
    shape = flops.ModelShape(
        vocab_size=50,
        embedding_dim=8,
        units=16,
        memory_dim=memory_dim,
        attention=attention,
        attention_order=order,
        input_feeding=order == "luong",
        use_gate=use_gate,
        bridge=False,
    )
    assert prepare_flops == flops.prepare_memory(shape, batch, source_len)
    assert sum(counted) - prepare_flops == flops.decoder_step(shape, batch, source_len)


def test_speed_quick_writes_consistent_results(tmp_path):
    # A new process: --threads must reach TensorFlow before its runtime starts.
    out = tmp_path / "speed"
    argv = ["--quick", "--attentions", "bahdanau", "--threads", "1", "--out", str(out)]
    argv += ["--backends", "jax"]
    subprocess.run([sys.executable, "-m", "benchmarks.speed", *argv], check=True, cwd=ROOT)
    report = json.loads((out / "speed.json").read_text())
    assert report["threads"] == 1
    assert set(report["matmul_peak_gflop_per_second"]) == {"float32", "bfloat16"}
    rows = report["rows"]
    # 2 backends x 2 tasks x 2 paths; decoding measured once per attention and task
    assert [row["backend"] for row in rows] == ["tensorflow"] * 4 + ["jax"] * 4
    for row in rows:
        sizes = report["sizes"]
        length = sizes["target_len"] if row["task"] == "translate" else sizes["caption_len"]
        seconds = row["train_ms_per_step"] / 1000
        assert row["target_tokens_per_second"] == pytest.approx(
            sizes["batch"] * length / seconds, rel=0.05
        )
        assert row["peak_memory_mib"] > 0 and row["train_cpu_ms_per_step"] > 0
        assert ("greedy_sentences_per_second" in row) == (row["path"] == "step")
    # Every peer has a row: measured, or named as not installed.
    peer_rows = {peer["peer"]: peer for peer in report["peers"]}
    assert set(peer_rows) == set(peers.NAMES)
    for name, peer in peer_rows.items():
        installed = importlib.util.find_spec(peers.get(name).needs) is not None
        assert peer["status"] == ("measured" if installed else "not installed (torch)")
    # Each row's ratios are to the best measured peer of its kind.
    step_peers = [
        peer_rows[name]
        for name in ("tf_stepwise", "torch_stepwise")
        if peer_rows[name]["status"] == "measured"
    ]
    expected_peer = {
        ("translate", "step"): max(step_peers, key=lambda peer: peer["target_tokens_per_second"]),
        ("translate", "fast"): peer_rows["keras_full_sequence"],
        ("caption", "step"): peer_rows["tf_caption_stepwise"],
        ("caption", "fast"): peer_rows["tf_caption_stepwise"],
    }
    for row in rows:
        peer = expected_peer[row["task"], row["path"]]
        assert row["train_peer"] == peer["peer"]
        ratio = row["target_tokens_per_second"] / peer["target_tokens_per_second"]
        assert row["train_ratio"] == pytest.approx(ratio, abs=0.006)
    markdown = (out / "speed.md").read_text()
    assert markdown.count("\n| tensorflow | float32 |") == 4
    assert markdown.count("\n| jax | float32 |") == 4
    assert markdown.count("\n| tf_") == 2


def test_ratios_compare_each_row_with_the_best_peer_of_its_kind():
    def peer(name, kind, task, tokens, greedy, memory=100.0):
        return {
            "peer": name,
            "kind": kind,
            "task": task,
            "status": "measured",
            "target_tokens_per_second": tokens,
            "greedy_sentences_per_second": greedy,
            "peak_memory_mib": memory,
        }

    peer_rows = [
        peer("slow-step", "step-wise", "translate", 1000, 500),
        peer("fast-step", "step-wise", "translate", 2000, 100, memory=200.0),
        peer("full", "full-sequence", "translate", 4000, 50),
        peer("caption", "step-wise", "caption", 800, 400),
        {"peer": "absent", "kind": "step-wise", "task": "translate", "status": "not installed"},
    ]
    decoding = {"greedy_sentences_per_second": 1000, "beam_sentences_per_second": 250}
    rows = [
        {
            "task": "translate",
            "path": "step",
            "target_tokens_per_second": 6000,
            "peak_memory_mib": 300.0,
            **decoding,
        },
        {
            "task": "translate",
            "path": "fast",
            "target_tokens_per_second": 6000,
            "peak_memory_mib": 300.0,
        },
        {
            "task": "caption",
            "path": "fast",
            "target_tokens_per_second": 1600,
            "peak_memory_mib": 50.0,
            **decoding,
        },
    ]
    step, fast, caption = speed.add_ratios(rows, peer_rows)
    assert (step["train_peer"], step["train_ratio"], step["memory_ratio"]) == (
        "fast-step",
        3.0,
        1.5,
    )
    # decoding is compared with the fastest greedy decoder of the task, whatever its kind
    assert (step["decode_peer"], step["greedy_ratio"], step["beam_ratio"]) == (
        "slow-step",
        2.0,
        0.5,
    )
    assert (fast["train_peer"], fast["train_ratio"], fast["memory_ratio"]) == ("full", 1.5, 3.0)
    assert "greedy_ratio" not in fast
    assert (caption["train_peer"], caption["train_ratio"], caption["greedy_ratio"]) == (
        "caption",
        2.0,
        2.5,
    )


@pytest.mark.parametrize("name", peers.NAMES)
def test_peers_train_and_decode_greedily(name):
    """Each peer lowers its loss on the batch and decodes ids of the vocabulary."""
    peer = peers.get(name)
    pytest.importorskip(peer.needs)
    sizes = speed.QUICK
    source, target_in, target_out = speed.batch_arrays(sizes, peer.task)
    model = peers.build(peer, sizes, source, target_in, target_out)
    losses = [model.train(1) for _ in range(40)]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05
    steps = sizes.target_len if peer.task == "translate" else sizes.caption_len
    tokens = np.asarray(model.greedy(source, steps))
    assert tokens.shape == (sizes.batch, steps)
    assert tokens.min() >= 0 and tokens.max() < sizes.vocab_size


def test_the_peer_that_trains_with_fit_times_its_steps_as_our_rows_are():
    """The Keras peer's `step_seconds`, which `run_peers` divides by the steps, cover its
    steps alone, not the whole `fit` call."""
    import time

    sizes = speed.QUICK
    model = peers.build(
        peers.get("keras_full_sequence"), sizes, *speed.batch_arrays(sizes, "translate")
    )
    started = time.perf_counter()
    model.train(3)
    whole = time.perf_counter() - started
    wall, cpu = model.step_seconds
    assert 0 < wall < whole and cpu > 0


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--variants", "float64"], "--variants"),
        (["--threads", "0"], "--threads"),
        (["--peers", "tutorial"], "--peers"),
        (["--backends", "numpy"], "--backends"),
    ],
)
def test_speed_rejects_unknown_values(argv, flag, capsys):
    with pytest.raises(SystemExit):
        speed.parse(argv)
    assert flag in capsys.readouterr().err


def test_speed_threads_on_jax_need_xla_on_one_thread(monkeypatch, capsys):
    monkeypatch.setenv("KERAS_BACKEND", "jax")  # what parse reads; Keras is not restarted
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    with pytest.raises(SystemExit):
        speed.parse(["--threads", "1"])
    assert speed.XLA_ONE_THREAD in capsys.readouterr().err
    monkeypatch.setenv("XLA_FLAGS", speed.XLA_ONE_THREAD)
    args = speed.parse(["--threads", "1"])
    assert args.threads == 1 and args.peers == []  # the peers run on TensorFlow only
    with pytest.raises(SystemExit):
        speed.parse(["--threads", "2"])


@pytest.mark.parametrize("split", ["test", "val"])
def test_length_curve_quick_plots_every_model(split, tmp_path):
    out = tmp_path / "curve"
    argv = ["--quick", "--models", "none,bahdanau", "--split", split, "--out", str(out)]
    assert length_curve.main(argv) == 0
    report = json.loads((out / "length_curve.json").read_text())
    assert list(report["models"]) == ["none", "bahdanau"] and report["split"] == split
    for name, result in report["models"].items():
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["split"] == split
        assert result["bleu_by_length"] == metrics["bleu_by_length"]
        assert sum(bucket["count"] for bucket in result["bleu_by_length"]) == 40
    assert json.loads((out / "none" / "config.json").read_text())["attention"] == "none"
    assert (out / "length_curve.png").stat().st_size > 0
    table = (out / "length_curve.md").read_text()
    assert "| bahdanau |" in table and f"; {split} split." in table


def test_step_timer_times_the_steps_and_not_what_fit_does_after_them(rng):
    import time

    import keras

    class Slow(keras.callbacks.Callback):  # 50 ms a step, then 400 ms after the last
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.05)

        def on_train_end(self, logs=None):
            time.sleep(0.4)

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    timer = speed.step_timer()
    started = time.perf_counter()
    data = rng.normal(size=(8, 3)), rng.normal(size=(8, 1))
    model.fit(*data, batch_size=2, epochs=1, verbose=0, callbacks=[timer, Slow()])
    whole = time.perf_counter() - started
    # Four steps: the sleeps of the first three fall between the first step's start and
    # the last one's end (the timer's hook runs before Slow's), the wait after them not.
    # Bounds that hold on a loaded machine too, where the steps themselves take longer.
    assert timer.wall >= 0.15
    assert whole - timer.wall >= 0.4
    assert 0 < timer.cpu < timer.wall  # sleeping takes no CPU time
