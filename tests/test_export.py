"""SavedModel export of both recipes: the served model gives the recipe's own output.

The exported pipelines are core TensorFlow ops. Each piece is checked against the Python
it stands in for, and each SavedModel is loaded in a subprocess that cannot import
`multiattn`, `recipes`, Keras, keras-hub or TensorFlow Text.
"""

import json
import random
import subprocess
import sys
import unicodedata

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from recipes import caption, cli, export, translate
from recipes.data import generated
from recipes.data.images import WordVocabulary, load_image
from recipes.data.scenes import make_scenes
from recipes.data.text import SubwordVocabulary

SERVE = r"""
import json, sys
for name in ("multiattn", "recipes", "keras", "keras_hub", "tensorflow_text"):
    sys.modules[name] = None  # any import of them fails
import tensorflow as tf

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


# -- text ----------------------------------------------------------------------------------
ALPHABET = [
    *"aeoAEKx \t\x00\x1c",
    *"\u00a0\u3000\u2028",  # whitespace to Python, not to TensorFlow's split
    *"\u0301\u0308\u0323\u0302\u0304\u0331\u0345\u05b0",  # marks of several classes
    *"\u1100\u1161\u11a8\uac00",  # Hangul jamo and a syllable
    *"\u212b\u212a\u2126\u0958\u0344\u1e9b\u0f73\uf900",  # singletons, exclusions
    *"\u0b47\u0b3e\u0b57\u0915\u093c",  # starters that compose
    *"\u00c4\u00e4\u1ea1\u03a3\u0130\u00df\u1e9e",  # composites, case specials
]


def python_normalize(texts, lowercase):
    """`recipes.data.text._normalize`, whose result the vocabulary encodes."""
    return SubwordVocabulary(["[PAD]", "[START]", "[END]", "[UNK]"], lowercase).normalize(texts)


@pytest.mark.parametrize("lowercase", [False, True])
def test_text_normalizer_matches_python(lowercase):
    rng = random.Random(0)
    texts = ["".join(rng.choices(ALPHABET, k=rng.randint(0, 10))) for _ in range(2000)]
    texts += ["", "  ", "ΟΔΟΣ ΣΟΦΌΣ", "İSTANBUL", "ẞ STRASSE", "a\u0308\u0304 e\u0302\u0323"]
    # Every character NFC changes, alone.
    texts += [
        chr(code)
        for code in range(export.UNICODE_SIZE)
        if not 0xD800 <= code < 0xE000 and unicodedata.normalize("NFC", chr(code)) != chr(code)
    ]
    normalizer = export.TextNormalizer(lowercase=lowercase)
    normalized = tf.function(normalizer)(tf.constant(texts)).numpy()
    expected = python_normalize(texts, lowercase)
    wrong = [
        (text, want, got.decode())
        for text, want, got in zip(texts, expected, normalized, strict=True)
        if got.decode() != want
    ]
    assert not wrong, wrong[:5]


def german_vocabulary():
    pairs = generated.number_phrase_corpus(200, 0, 0)["train"]
    texts = [german for _, german in pairs] + ["Café Ångström naïve ΣΟΦΌΣ Straße"]
    return SubwordVocabulary.build(texts, 120, lowercase=True)


def test_word_piece_encoder_matches_the_vocabulary():
    vocabulary = german_vocabulary()
    rng = random.Random(1)
    characters = [*"abdefhinrstuvzäöüßé#[]Q", "##", "[UNK]", "\u00e5", " "]
    words = ["".join(rng.choices(characters, k=rng.randint(1, 14))) for _ in range(1000)]
    words += ["a" * 100, "a" * 101, "ä" * 50, "ä" * 51, "[UNK]", "[PAD]", "##", "###"]
    sentences = [" ".join(words[i : i + 5]) for i in range(0, len(words), 5)]
    sentences += ["", "  ", "zwölf und Fünf", "a" * 101]  # the last: one over-long word alone
    normalizer = export.TextNormalizer(lowercase=True)
    encoder = export.WordPieceEncoder(vocabulary.token_list)
    encode = tf.function(lambda texts: encoder(tf.strings.split(normalizer(texts))))
    assert encode(tf.constant(sentences)).to_list() == vocabulary.encode(sentences)


def special_ids(rng, shape, vocabulary_size):
    """Random ids with plenty of padding, start and end tokens."""
    ids = rng.integers(0, vocabulary_size, shape)
    special = rng.random(shape) < 0.3
    return np.where(special, rng.integers(0, 3, shape), ids).astype("int32")


def test_detokenizers_match_the_vocabularies():
    rng = np.random.default_rng(2)
    subwords = german_vocabulary()
    ids = special_ids(rng, (300, 9), len(subwords))
    texts = export.detokenize_word_pieces(tf.constant(ids), subwords.token_list).numpy()
    assert [text.decode() for text in texts] == subwords.decode(ids.tolist())

    words = WordVocabulary(["[PAD]", "[START]", "[END]", "[UNK]", "a", "red", "circle"])
    ids = special_ids(rng, (300, 6), len(words))
    texts = export.join_words(tf.constant(ids), words.words).numpy()
    assert [text.decode() for text in texts] == [" ".join(words.decode(row)) for row in ids]


# -- search --------------------------------------------------------------------------------
@pytest.mark.parametrize("beam_size, length_penalty, limit", [(1, 0.0, 6), (3, 2.0, 8)])
def test_search_with_a_tensor_limit_matches_generate(beam_size, length_penalty, limit):
    from multiattn import AttentionDecoder, BeamSearch, BiLSTMEncoder, GreedySearch, Seq2Seq

    keras.utils.set_random_seed(0)  # a model whose hypotheses often end before the limit
    model = Seq2Seq(BiLSTMEncoder(30, 8, 16), AttentionDecoder(30, 8, 16), start_id=1, end_id=2)
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 7, 64)
    source = np.where(np.arange(6) < lengths[:, None], rng.integers(3, 30, (64, 6)), 0)
    source = source.astype("int32")
    search = GreedySearch()
    if beam_size > 1:
        search = BeamSearch(beam_size=beam_size, length_penalty=length_penalty)
    expected = model.generate(source, search=search, max_length=limit)["tokens"]
    expected = expected[:, 0] if beam_size > 1 else expected

    @tf.function
    def search(source, limit):  # `limit` a tensor, as in the exported model
        return export.search_tokens(model, source, limit, beam_size, length_penalty)

    tokens = search(tf.constant(source), tf.constant(limit)).numpy()
    np.testing.assert_array_equal(tokens, expected)
    # Both ways of ending occur: the end token, and the limit.
    ended = (expected == 2).any(axis=1)
    assert ended.any() and not ended.all()


# -- images --------------------------------------------------------------------------------
def scene_picture(index, size, mode="RGB"):
    image = Image.fromarray(make_scenes(index + 1, 64, seed=4)[index].image)
    return image.resize(size).convert(mode)


def noise_picture(size, mode="RGB"):
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (size[1], size[0], 4), dtype="uint8")
    return Image.fromarray(pixels, "RGBA").convert(mode)


PICTURES = {
    "same_size.png": lambda: scene_picture(0, (32, 32)),
    "larger.png": lambda: scene_picture(1, (48, 48)),
    "smaller.png": lambda: scene_picture(2, (20, 20)),
    "wide.png": lambda: scene_picture(3, (70, 41)),
    "grey.png": lambda: scene_picture(0, (40, 40), "L"),
    "palette.png": lambda: scene_picture(1, (50, 50), "P"),
    "over_six_times.png": lambda: noise_picture((230, 200)),  # Pillow's box reduction
    "rgba.png": lambda: noise_picture((61, 47), "RGBA"),
    "grey_alpha.png": lambda: noise_picture((35, 30), "LA"),
    "sixteen_bit.png": lambda: Image.fromarray(
        np.random.default_rng(6).integers(0, 65536, (40, 30)).astype("uint16")
    ),
    "photo.jpg": lambda: noise_picture((300, 260)),  # decoded at 1/8 scale
    "draft.jpg": lambda: scene_picture(3, (64, 64)),  # at 1/2 scale
    "grey.jpg": lambda: scene_picture(2, (50, 45), "L"),
    "photo.gif": lambda: scene_picture(0, (40, 40), "P"),
    "photo.bmp": lambda: noise_picture((37, 29)),
}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pictures")
    for name, make in PICTURES.items():
        make().save(directory / name)
    return directory


def test_decode_image_matches_load_image(pictures):
    decode = tf.function(lambda data: export.decode_image(data, 32))
    for name in PICTURES:
        expected = load_image(pictures / name, 32).astype("float32")
        pixels = decode(tf.io.read_file(str(pictures / name))).numpy()
        difference = np.abs(pixels - expected)
        # Pillow's fixed-point passes round some values the other way (up to a quarter of
        # them for some shapes), never by more than one level.
        assert difference.max() <= 1 and difference.mean() < 0.3, name


# -- the exported recipes ------------------------------------------------------------------
TINY_TRANSLATE = [
    *("--units", "16", "--embedding-dim", "8", "--batch-size", "32", "--beam-size", "2"),
    *("--epochs", "1", "--vocabulary-size", "200", "--max-tokens", "40"),
    # Weights kept near their random start: the output depends on the input, where
    # a tiny model after a real epoch says the same thing to everything.
    *("--learning-rate", "1e-5"),
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


def test_exported_translation_serves_the_recipe_output(translation_run, tmp_path, capsys):
    out = tmp_path / "saved_model"
    assert translate.main(["export", "--run", str(translation_run), "--out", str(out)]) == 0
    assert f"SavedModel: {out}" in capsys.readouterr().out
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
        "eins",
        "zwei und drei und vier und fünf",
    ]
    expected = translate.translate(str(translation_run), texts)
    assert "truncated 1 input(s)" in capsys.readouterr().err
    served = serve(out, tmp_path, texts=texts)
    assert served == {"translation": expected}
    assert len(set(expected)) > 3  # the outputs differ, the comparison means something


def test_exported_captioning_serves_the_recipe_output(tmp_path_factory, pictures, capsys):
    directory = tmp_path_factory.mktemp("caption")
    run, out = directory / "run", directory / "saved_model"
    assert caption.main(["train", *TINY_CAPTION, "--out", str(run)]) == 0
    assert caption.main(["export", "--run", str(run), "--out", str(out)]) == 0
    assert f"SavedModel: {out}" in capsys.readouterr().out
    # Scenes as PNG (lossless), at the image size, larger, smaller and not square: sizes
    # whose resampling gives Pillow's pixels exactly. Elsewhere a few pixels differ by
    # one level (see above), which may flip a near tie of a barely trained model.
    names = ["same_size.png", "larger.png", "smaller.png", "wide.png"]
    paths = [str(pictures / name) for name in names]
    for path in paths:
        pixels = export.decode_image(tf.io.read_file(path), 32).numpy()
        np.testing.assert_array_equal(pixels, load_image(path, 32))
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
