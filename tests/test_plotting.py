"""Plots: the PNG's size in pixels and the colours at known points of the drawing."""

import matplotlib
import numpy as np
import pytest
from PIL import Image

from multiattn import plotting
from multiattn.plotting import plot_alignment, plot_image_attention, plot_lines

SAVE_DPI = 100  # what `plotting._save` writes with
TOLERANCE = 3  # RGB units: Agg rounds blended colours


def read_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype="int32")


@pytest.fixture
def figures(monkeypatch):
    """The figures the plotting functions draw, in order; their PNGs are still written."""
    drawn = []
    save = plotting._save

    def spy(figure, path):
        drawn.append(figure)
        return save(figure, path)

    monkeypatch.setattr(plotting, "_save", spy)
    return drawn


def pixel(png, axes, point, transform="data"):
    """The PNG's RGB at `point` of `axes` (data or axes coordinates), as laid out when saved."""
    transform = axes.transData if transform == "data" else axes.transAxes
    x, y = transform.transform(point) * SAVE_DPI / axes.figure.dpi
    return png[int(png.shape[0] - y), int(x)]  # display y goes up, PNG rows go down


def viridis(value):
    return np.round(np.asarray(matplotlib.colormaps["viridis"](value)[:3]) * 255)


def assert_colour(actual, expected):
    np.testing.assert_allclose(actual, expected, atol=TOLERANCE)


@pytest.mark.parametrize("flip", [False, True], ids=["diagonal", "anti-diagonal"])
def test_alignment_heatmap_colours_each_cell(tmp_path, figures, flip):
    weights = np.zeros((4, 10))
    weights[1, 7] = 1.0
    weights = weights[::-1] if flip else weights
    source, target = [f"s{i}" for i in range(10)], ["a", "b", "c", "d"]
    png = read_png(plot_alignment(weights, source, target, tmp_path / "x" / "one.png"))
    # 0.45 inch per source token + 1.5 wide, at least 3 inches high, at 100 dpi.
    assert png.shape == (300, 600, 3)
    axes = figures[-1].axes[0]
    for row, column in np.ndindex(weights.shape):
        assert_colour(pixel(png, axes, (column, row)), viridis(weights[row, column]))
    assert [label.get_text() for label in axes.get_xticklabels()] == source
    assert [label.get_text() for label in axes.get_yticklabels()] == target


def test_alignment_heatmap_depends_on_weights(tmp_path, figures):
    diagonal = np.eye(4)
    anti = np.eye(4)[::-1]
    tokens = ["a", "b", "c", "d"]
    first = read_png(plot_alignment(diagonal, tokens, tokens, tmp_path / "x" / "one.png"))
    second = read_png(plot_alignment(anti, tokens, tokens, tmp_path / "two.png"))
    assert first.shape == second.shape == (300, 400, 3)
    assert np.abs(first - second).sum() > 0
    for png, figure, weights in zip((first, second), figures, (diagonal, anti), strict=True):
        assert_colour(pixel(png, figure.axes[0], (0, 0)), viridis(weights[0, 0]))
        assert_colour(pixel(png, figure.axes[0], (3, 0)), viridis(weights[0, 3]))


def test_alignment_cuts_weights_to_tokens(tmp_path, figures):
    weights = np.full((6, 9), 1.0)
    weights[0, :2] = 0.1, 0.5
    path = plot_alignment(weights, ["x", "y"], ["p"], tmp_path / "cut.png", title="t")
    png = read_png(path)
    assert png.shape == (300, 400, 3)
    axes = figures[-1].axes[0]
    assert axes.get_title() == "t"
    assert_colour(pixel(png, axes, (0, 0)), viridis(0.1))
    assert_colour(pixel(png, axes, (1, 0)), viridis(0.5))
    # The one row by two columns fill the axes: nothing of the cut-off weights shows.
    assert_colour(pixel(png, axes, (0.02, 0.02), "axes"), viridis(0.1))
    assert_colour(pixel(png, axes, (0.98, 0.02), "axes"), viridis(0.5))


def test_image_attention_panels(tmp_path, figures):
    red, blue, white, black = [255, 0, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]
    image = np.zeros((32, 32, 3))
    image[:16], image[16:] = red, blue  # top half red: the image is drawn upright
    weights = np.zeros((2, 16))
    weights[0, 0], weights[1, 15] = 1.0, 1.0  # the top-left, then the bottom-right region
    path = plot_image_attention(image, weights, (4, 4), ["top", "bottom"], tmp_path / "i.png")
    png = read_png(path)
    assert png.shape == (250, 1200, 3)  # one row of five 2.4 x 2.5 inch panels
    axes = figures[-1].axes
    assert [axis.get_title() for axis in axes[:3]] == ["image", "top", "bottom"]

    def overlay(weight, under):  # gray colormap at alpha 0.6 over the image
        return 0.6 * np.asarray(white if weight else black) + 0.4 * np.asarray(under)

    # Centres of grid regions as (x, y) in image pixels (y goes down).
    top_left, top_right, bottom_right = (4, 4), (28, 4), (28, 28)
    assert_colour(pixel(png, axes[0], top_left), red)
    assert_colour(pixel(png, axes[0], bottom_right), blue)
    assert_colour(pixel(png, axes[1], top_left), overlay(1, red))
    assert_colour(pixel(png, axes[1], top_right), overlay(0, red))
    assert_colour(pixel(png, axes[1], bottom_right), overlay(0, blue))
    assert_colour(pixel(png, axes[2], top_left), overlay(0, red))
    assert_colour(pixel(png, axes[2], bottom_right), overlay(1, blue))


def test_lines(tmp_path, figures):
    path = plot_lines({"a": ([1, 2], [3, 4]), "b": ([1, 2], [4, 1])}, tmp_path / "l.png", "x", "y")
    png = read_png(path)
    assert png.shape == (400, 600, 3)
    axes = figures[-1].axes[0]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("x", "y")
    first, second = (np.round(np.asarray(matplotlib.colors.to_rgb(c)) * 255) for c in ("C0", "C1"))
    for point in ((1, 3), (2, 4)):  # the markers of "a"
        assert_colour(pixel(png, axes, point), first)
    for point in ((1, 4), (2, 1)):  # the markers of "b"
        assert_colour(pixel(png, axes, point), second)


@pytest.mark.slow
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
    assert read_png(tmp_path / "l.png").shape == (400, 600, 3)
