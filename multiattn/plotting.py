"""Pictures of attention: alignment heatmaps and attention over image regions.

The pictures need matplotlib, which the library itself does not install (it comes with
`pip install 'multiattn[recipes]'`): it is imported when a picture is first drawn.
"""

import os

import numpy as np

from multiattn.optional_imports import require


def _figure(**kwargs):
    """A new matplotlib `Figure(**kwargs)`, matplotlib imported at first use.

    Figures are made with matplotlib's object API and drawn by the Agg canvas: no
    pyplot, so drawing leaves the user's matplotlib backend as it was.
    """
    return require("matplotlib.figure", "multiattn.plotting").Figure(**kwargs)


def plot_alignment(
    weights, source_tokens, target_tokens, path, title=None, xlabel="source", ylabel="target"
):
    """Writes an alignment heatmap (target tokens down, source tokens across) to `path`.

    Args:
        weights: Array-like `(target_len, source_len)` attention weights; rows and
            columns beyond the given tokens are cut off.
        source_tokens: List of source token strings (the columns).
        target_tokens: List of target token strings (the rows).
        path: Output file (PNG); parent directories are created.
        title: Optional title.
        xlabel: Label of the source axis.
        ylabel: Label of the target axis.

    Returns:
        The path written.
    """
    weights = np.asarray(weights, dtype="float32")[: len(target_tokens), : len(source_tokens)]
    width = max(4.0, 0.45 * len(source_tokens) + 1.5)
    height = max(3.0, 0.4 * len(target_tokens) + 1.2)
    figure = _figure(figsize=(width, height))
    axes = figure.subplots()
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(source_tokens)), source_tokens, rotation=90)
    axes.set_yticks(range(len(target_tokens)), target_tokens)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if title:
        axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.04)
    return _save(figure, path)


def plot_image_attention(image, weights, grid_shape, words, path, columns=5):
    """Writes one panel per word: the image with that step's attention overlaid.

    Args:
        image: `(height, width, 3)` array, uint8 or floats in [0, 255].
        weights: `(num_words, grid_height * grid_width)` attention over regions.
        grid_shape: `(grid_height, grid_width)` of the encoder's feature map.
        words: The generated words, one per row of `weights` (cut to the shorter).
        path: Output file (PNG).
        columns: Panels per row.

    Returns:
        The path written.
    """
    image = np.clip(np.asarray(image, dtype="float32"), 0, 255) / 255.0
    weights = np.asarray(weights, dtype="float32")[: len(words)]
    words = list(words)[: len(weights)]
    panels = len(words) + 1
    rows = -(-panels // columns)
    figure = _figure(figsize=(2.4 * columns, 2.5 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("image")
    extent = (0, image.shape[1], image.shape[0], 0)
    for index, word in enumerate(words, start=1):
        axis = axes.ravel()[index]
        axis.imshow(image, extent=extent)
        grid = weights[index - 1].reshape(grid_shape)
        axis.imshow(grid, cmap="gray", alpha=0.6, extent=extent, interpolation="bilinear")
        axis.set_title(word)
    return _save(figure, path)


def plot_lines(series, path, xlabel, ylabel, title=None):
    """Writes a line plot of `{label: (xs, ys)}` (for example BLEU by source length)."""
    figure = _figure(figsize=(6, 4))
    axes = figure.subplots()
    for label, (xs, ys) in series.items():
        axes.plot(xs, ys, marker="o", label=label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    return _save(figure, path)


def _save(figure, path):
    # matplotlib is imported already: `figure` was made by `_figure`.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
