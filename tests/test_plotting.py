import numpy as np
from PIL import Image

from multiattn.plotting import plot_alignment, plot_image_attention, plot_lines


def read_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype="int32")


def test_alignment_heatmap_depends_on_weights(tmp_path):
    diagonal = np.eye(4)
    anti = np.eye(4)[::-1]
    tokens = ["a", "b", "c", "d"]
    first = read_png(plot_alignment(diagonal, tokens, tokens, tmp_path / "x" / "one.png"))
    second = read_png(plot_alignment(anti, tokens, tokens, tmp_path / "two.png"))
    assert first.shape == second.shape and first.shape[0] > 100
    assert np.abs(first - second).sum() > 0


def test_alignment_cuts_weights_to_tokens(tmp_path):
    weights = np.full((6, 9), 0.1)
    path = plot_alignment(weights, ["x", "y"], ["p"], tmp_path / "cut.png", title="t")
    assert read_png(path).size > 0


def test_image_attention_panels(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3))
    weights = np.zeros((2, 16))
    weights[0, 0], weights[1, 15] = 1.0, 1.0
    path = plot_image_attention(image, weights, (4, 4), ["top", "bottom"], tmp_path / "i.png")
    assert read_png(path).shape[1] > 300


def test_lines(tmp_path):
    path = plot_lines({"a": ([1, 2], [3, 4]), "b": ([1, 2], [4, 1])}, tmp_path / "l.png", "x", "y")
    assert read_png(path).size > 0


def test_importing_leaves_the_matplotlib_backend_alone(tmp_path):
    """A library must not switch its user's backend."""
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg')\n"
        "from multiattn.plotting import plot_lines\n"
        f"plot_lines({{'a': ([1, 2], [3, 4])}}, {str(tmp_path / 'l.png')!r}, 'x', 'y')\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "l.png").stat().st_size > 0
