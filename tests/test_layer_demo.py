"""A functional model with each attention layer, trained with `model.fit` on a task only
attention solves (fetch the value stored under the query's key), beats the same budget
without attention: the layer demo, run as a test."""

from recipes import layer_demo


def test_layer_demo_runs_and_writes_pictures(tmp_path, capsys):
    layer_demo.main(["--out", str(tmp_path), "--epochs", "2"])
    printed = capsys.readouterr().out
    for name in ("bahdanau", "luong-dot", "luong-general", "luong-concat", "key-value"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
        line = next(line for line in printed.splitlines() if line.startswith(f"[{name}] test"))
        accuracy = float(line.split("accuracy ")[1].split()[0])
        assert accuracy > 0.9, line
    baseline = next(line for line in printed.splitlines() if line.startswith("[none] test"))
    assert float(baseline.split("accuracy ")[1].split()[0]) < 0.6
