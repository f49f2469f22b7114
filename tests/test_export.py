"""SavedModel export of both recipes: the served model gives the recipe's own output.

The exported pipelines are the recipe's own TensorFlow functions (normalisation,
tokenizer, detokenization, image resize); what differs is the decoding of image files,
Pillow's in the recipe and TensorFlow's in the SavedModel, checked here pixel for pixel.
Each SavedModel is loaded in a subprocess that cannot import `multiattn`, `recipes` or
keras-hub: TensorFlow and TensorFlow Text (which imports Keras) are all it has.
"""

import io
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from recipes import caption, cli, export, translate
from recipes.data import generated
from recipes.data.image_files import load_image, read_pixels
from recipes.data.scenes import make_scenes

SERVE = r"""
import json, sys
for name in ("multiattn", "recipes", "keras_hub"):
    sys.modules[name] = None  # any import of them fails
import tensorflow as tf
import tensorflow_text  # registers the ops of the text pipeline: before loading

request = json.load(sys.stdin)
serve = tf.saved_model.load(request.pop("path")).signatures["serving_default"]
if "images" in request:
    request["images"] = [open(path, "rb").read() for path in request["images"]]
outputs = serve(**{name: tf.constant(values) for name, values in request.items()})
print(json.dumps({name: [v.decode() for v in t.numpy().tolist()] for name, t in outputs.items()}))
"""


def serve(path, directory, **inputs):
    """The outputs of the SavedModel at `path` for `inputs`, run with TensorFlow alone."""
    done = subprocess.run(
        [sys.executable, "-c", SERVE],
        input=json.dumps({"path": str(path), **inputs}),
        capture_output=True,
        text=True,
        cwd=directory,  # not the repository: `recipes` is not on the path either
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- search --------------------------------------------------------------------------------
@pytest.mark.parametrize("beam_size, length_penalty, limit", [(1, 0.0, 6), (3, 2.0, 8)])
def test_search_with_a_tensor_limit_matches_generate(beam_size, length_penalty, limit):
    from multiattn import AttentionDecoder, BeamSearch, BiLSTMEncoder, GreedySearch, Seq2Seq

    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 7, 64)
    source = np.where(np.arange(6) < lengths[:, None], rng.integers(3, 30, (64, 6)), 0)
    source = source.astype("int32")
    search = GreedySearch()
    if beam_size > 1:
        search = BeamSearch(beam_size=beam_size, length_penalty=length_penalty)
    # The first initialisation whose hypotheses end both ways, by the end token and by
    # the limit, so that the comparison covers both.
    for seed in range(20):
        keras.utils.set_random_seed(seed)
        model = Seq2Seq(BiLSTMEncoder(30, 8, 16), AttentionDecoder(30, 8, 16), 1, 2)
        expected = model.generate(source, search=search, max_length=limit)["tokens"]
        expected = expected[:, 0] if beam_size > 1 else expected
        ended = (expected == 2).any(axis=1)
        if ended.any() and not ended.all():
            break
    else:
        pytest.fail("no initialisation among 20 ends some hypotheses and not all")

    @tf.function
    def search(source, limit):  # `limit` a tensor, as in the exported model
        return export.search_tokens(model, source, limit, beam_size, length_penalty)

    tokens = search(tf.constant(source), tf.constant(limit)).numpy()
    np.testing.assert_array_equal(tokens, expected)


# -- images --------------------------------------------------------------------------------
def scene_picture(index, size, mode="RGB"):
    image = Image.fromarray(make_scenes(index + 1, 64, seed=4)[index].image)
    return image.resize(size).convert(mode)


def noise_picture(size, mode="RGB"):
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (size[1], size[0], 4), dtype="uint8")
    return Image.fromarray(pixels, "RGBA").convert(mode)


def sixteen_bit_colour_png(size):
    pixels = np.random.default_rng(7).integers(0, 65536, (size[1], size[0], 3), "uint16")
    return Image.open(io.BytesIO(tf.io.encode_png(pixels).numpy()))  # Pillow cannot write it


def rotated_jpeg(size):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    return noise_picture(size), {"exif": exif}


# `name: make`, `make()` gives an image or `(image, save options)`. Ordinary JPEG and PNG
# (and GIF, BMP): the recipe and the SavedModel see the same pixels.
PICTURES = {
    "same_size.png": lambda: scene_picture(0, (32, 32)),
    "larger.png": lambda: scene_picture(1, (48, 48)),
    "smaller.png": lambda: scene_picture(2, (20, 20)),
    "wide.png": lambda: scene_picture(3, (70, 41)),
    "grey.png": lambda: scene_picture(0, (40, 40), "L"),
    "palette.png": lambda: scene_picture(1, (50, 50), "P"),
    "much_larger.png": lambda: noise_picture((230, 200)),
    "sixteen_bit.png": lambda: Image.fromarray(
        np.random.default_rng(6).integers(0, 65536, (40, 30)).astype("uint16")
    ),
    "sixteen_bit_colour.png": lambda: sixteen_bit_colour_png((33, 27)),
    "photo.jpg": lambda: noise_picture((300, 260)),
    "scene.jpg": lambda: scene_picture(3, (64, 64)),
    "grey.jpg": lambda: scene_picture(2, (50, 45), "L"),
    "fine.jpg": lambda: (scene_picture(1, (61, 37)), {"quality": 95, "subsampling": 0}),
    "half_chroma.jpg": lambda: (scene_picture(2, (45, 45)), {"quality": 60, "subsampling": 1}),
    "progressive.jpg": lambda: (scene_picture(0, (80, 70)), {"progressive": True}),
    "cmyk.jpg": lambda: scene_picture(3, (40, 44), "CMYK"),
    "photo.gif": lambda: scene_picture(0, (40, 40), "P"),
    "photo.bmp": lambda: noise_picture((37, 29)),
    "rgba.png": lambda: noise_picture((61, 47), "RGBA"),
    "grey_alpha.png": lambda: noise_picture((35, 30), "LA"),
    "transparent_colour.png": lambda: (scene_picture(2, (30, 30), "P"), {"transparency": 0}),
}
# The known differences: the recipe turns the photo upright, or composites on white.
DIFFERENT = {
    "rotated.jpg": lambda: rotated_jpeg((40, 30)),
    "transparent.gif": lambda: (scene_picture(2, (30, 30), "P"), {"transparency": 0}),
}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pictures")
    for name, make in {**PICTURES, **DIFFERENT}.items():
        made = make()
        image, options = made if isinstance(made, tuple) else (made, {})
        image.save(directory / name, **options)
    return directory


def test_tensorflow_decodes_the_pixels_pillow_decodes(pictures):
    decode = tf.function(export.decode_pixels)  # a graph, as in the SavedModel
    for name in PICTURES:
        pixels = decode(tf.io.read_file(str(pictures / name))).numpy()
        np.testing.assert_array_equal(pixels, read_pixels(pictures / name), err_msg=name)
    # TensorFlow's default JPEG decoding (its fast DCT) is not Pillow's.
    data = tf.io.read_file(str(pictures / "photo.jpg"))
    fast = tf.io.decode_jpeg(data, channels=3).numpy()
    assert (fast != read_pixels(pictures / "photo.jpg")).any()


def test_decode_image_gives_the_pixels_of_load_image(pictures):
    decode = tf.function(lambda data: export.decode_image(data, 32))
    for name in PICTURES:
        pixels = decode(tf.io.read_file(str(pictures / name))).numpy()
        np.testing.assert_array_equal(pixels, load_image(pictures / name, 32), err_msg=name)
    for name in DIFFERENT:  # the known differences, as the docstring of `export` says
        pixels = decode(tf.io.read_file(str(pictures / name))).numpy()
        assert (pixels != load_image(pictures / name, 32)).any(), name


# -- the exported recipes ------------------------------------------------------------------
TINY_TRANSLATE = [
    *("--units", "16", "--embedding-dim", "8", "--batch-size", "32", "--beam-size", "2"),
    *("--epochs", "1", "--vocabulary-size", "200", "--max-tokens", "40"),
    # Weights kept near their random start: the output depends on the input, where
    # a tiny model after a real epoch says the same thing to everything.
    *("--learning-rate", "1e-5", "--length-penalty", "0.8"),
]
TINY_CAPTION = [
    *("--units", "16", "--embedding-dim", "8", "--batch-size", "16", "--beam-size", "2"),
    *("--epochs", "1", "--image-size", "32", "--learning-rate", "1e-5", "--length-penalty", "1"),
    *("--num-train", "64", "--num-val", "16", "--num-test", "8"),
]


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory):
    """German -> English with accents, lowercased: the normalisation has work to do."""
    directory = tmp_path_factory.mktemp("translate")
    splits = generated.number_phrase_corpus(200, 20, 0)
    extra = ["Café", "Ångström", "naïve", "ΣΟΦΌΣ", "Straße"]
    lines = [
        f"{extra[index % 5] + ' ' if index % 4 == 0 else ''}{german}\t{english}\n"
        for index, (english, german) in enumerate(splits["train"] + splits["val"])
    ]
    (directory / "pairs.tsv").write_text("".join(lines), encoding="utf-8")
    run = directory / "run"
    argv = ["train", "--data", str(directory / "pairs.tsv"), "--lowercase", *TINY_TRANSLATE]
    assert translate.main([*argv, "--out", str(run)]) == 0
    return run


def recording_search(monkeypatch):
    """`export.search_tokens`, recording the settings each traced search gets."""
    settings, search_tokens = [], export.search_tokens

    def record(model, source, max_length, beam_size, length_penalty=0.0):
        settings.append((beam_size, length_penalty))
        return search_tokens(model, source, max_length, beam_size, length_penalty)

    monkeypatch.setattr(export, "search_tokens", record)
    return settings


def test_exported_translation_serves_the_recipe_output(
    translation_run, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "saved_model"
    settings = recording_search(monkeypatch)
    assert translate.main(["export", "--run", str(translation_run), "--out", str(out)]) == 0
    assert f"SavedModel: {out}" in capsys.readouterr().out
    # The run's search (a near-random model may not show a length penalty's effect).
    assert set(settings) == {(2, 0.8)}
    texts = [
        "fünf und zwanzig",
        "",
        " \u3000 ",
        "DREISSIG  UND\u00a0ZWÖLF",
        "Cafe\u0301 sieben",  # decomposed: NFC composes it
        "\u212bngstro\u0308m neun",  # the Angstrom sign: NFC makes it Å
        "ΣΟΦΌΣ acht",
        "qqq xyz",  # unknown characters
        "hundert " * 60,  # more than --max-tokens subwords: truncated
        "a\x00b vier",
        "\u2c2f \x1c elf",  # a recent capital (Unicode 14), a separator Python splits on
        "eins",
        "zwei und drei und vier und fünf",
    ]
    expected = translate.translate(str(translation_run), texts)
    assert "truncated 1 input(s)" in capsys.readouterr().err
    served = serve(out, tmp_path, texts=texts)
    assert served == {"translation": expected}
    assert len(set(expected)) > 3  # the outputs differ, the comparison means something


def test_exported_captioning_serves_the_recipe_output(
    tmp_path_factory, pictures, capsys, monkeypatch
):
    directory = tmp_path_factory.mktemp("caption")
    run, out = directory / "run", directory / "saved_model"
    assert caption.main(["train", *TINY_CAPTION, "--out", str(run)]) == 0
    settings = recording_search(monkeypatch)
    assert caption.main(["export", "--run", str(run), "--out", str(out)]) == 0
    assert f"SavedModel: {out}" in capsys.readouterr().out
    assert set(settings) == {(2, 1.0)}  # the run's beam size and length penalty
    # Every ordinary picture: the same pixels reach the model (tested above).
    paths = [str(pictures / name) for name in PICTURES]
    expected = caption.caption(str(run), paths)
    served = serve(out, directory, images=paths)
    assert served == {"caption": expected}
    assert len(set(expected)) > 2  # the captions differ, the comparison means something


@pytest.mark.parametrize("problem", ["no run", "out not empty", "out is a file"])
def test_export_errors_are_one_line(problem, tmp_path, capsys):
    # The output directory is checked before the run is loaded.
    run, out = tmp_path, tmp_path / "out"
    if problem == "no run":
        run = tmp_path / "missing"
    elif problem == "out not empty":
        out.mkdir()
        (out / "kept.txt").write_text("mine")
    else:
        out.write_text("a file")
    argv = ["export", "--run", str(run), "--out", str(out)]
    assert cli.run_main(translate.main, argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --") and error.count("\n") == 1, error
    if problem == "out not empty":
        assert (out / "kept.txt").read_text() == "mine"
