"""The benchmarks run (in --quick mode) and count what they say; speed is never asserted."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from keras import ops

from benchmarks import flops, length_curve, speed
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
    subprocess.run([sys.executable, "-m", "benchmarks.speed", *argv], check=True, cwd=ROOT)
    report = json.loads((out / "speed.json").read_text())
    assert report["threads"] == 1
    assert set(report["matmul_peak_gflop_per_second"]) == {"float32", "bfloat16"}
    rows = report["rows"]
    # 2 tasks x 2 paths; decoding measured once per attention and task
    assert len(rows) == 4
    for row in rows:
        sizes = report["sizes"]
        length = sizes["target_len"] if row["task"] == "translate" else sizes["caption_len"]
        seconds = row["train_ms_per_step"] / 1000
        assert row["target_tokens_per_second"] == pytest.approx(
            sizes["batch"] * length / seconds, rel=0.05
        )
        assert row["peak_memory_mib"] > 0 and row["train_cpu_ms_per_step"] > 0
        assert ("greedy_sentences_per_second" in row) == (row["path"] == "step")
    markdown = (out / "speed.md").read_text()
    assert markdown.count("\n| float32 |") == len(rows)


@pytest.mark.parametrize(
    "argv, flag", [(["--variants", "float64"], "--variants"), (["--threads", "0"], "--threads")]
)
def test_speed_rejects_unknown_values(argv, flag, capsys):
    with pytest.raises(SystemExit):
        speed.parse(argv)
    assert flag in capsys.readouterr().err


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
