"""Bad inputs for both recipes: each gives one clear error line or a counted skip.

Every case writes its bad input into `tmp_path`. An error case runs the recipe's command
line (`cli.run_main`) and expects exit code 2 and a single `error: ...` line on stderr that
names the file (and the line or flag where there is one). A skip case runs the recipe's
data stage (`translate.load_data`, `caption.load_splits`: what `train` runs first, with the
same report) and expects the skip counted with its reason and every valid record kept.
One tiny training per recipe runs all the skips through the whole command line, and the
`translate` / `caption` commands are then fed bad input against the model it wrote.
"""

import contextlib
import io
import json
import re
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from recipes import caption, cli, translate
from recipes.data.caption_corpora import load_caption_corpus

TRANSLATE_TINY = ["--units", "8", "--embedding-dim", "8", "--epochs", "1"]
TRANSLATE_TINY += ["--vocabulary-size", "100", "--batch-size", "16"]
CAPTION_TINY = ["--units", "16", "--embedding-dim", "8", "--epochs", "1", "--batch-size", "16"]
CAPTION_TINY += ["--image-size", "32", "--beam-size", "2"]
LANGUAGES = ["--source-lang", "en", "--target-lang", "de"]
MAX_TOKENS = 12  # valid pairs have at most 10 characters a side, so at most 10 subwords
LONG_LINE = " ".join(f"word{index}" for index in range(60))


# -- writing bad input ---------------------------------------------------------------------
def write_lines(path, lines):
    """Writes `lines` (str as UTF-8, bytes as they are) each ending in a newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = [line.encode("utf-8") if isinstance(line, str) else line for line in lines]
    path.write_bytes(b"".join(line + b"\n" for line in encoded))
    return path


def valid_pairs(count, start=0):
    return [(f"the cat {index}", f"die katze {index}") for index in range(start, start + count)]


def write_parallel(directory, splits):
    """`DIR/{split}.en` and `DIR/{split}.de` from `{split: [(english, german), ...]}`."""
    for split, pairs in splits.items():
        write_lines(directory / f"{split}.en", [english for english, _ in pairs])
        write_lines(directory / f"{split}.de", [german for _, german in pairs])
    return directory


def write_image(path, size=(20, 20), color=(90, 120, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_text_named_jpg(path):
    path.write_text("a caption, not a picture\n", encoding="utf-8")


def write_truncated_jpeg(path):
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def write_zero_bytes(path):
    path.write_bytes(b"")


def write_huge_png(path):
    """A PNG whose header claims 100,000 x 100,000 pixels: a few bytes, never decoded."""

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


# Files no image loader can use: (file name, writer, the reason the skip or error gives).
BAD_IMAGES = [
    pytest.param("text.jpg", write_text_named_jpg, "cannot identify image file", id="text"),
    pytest.param("truncated.jpg", write_truncated_jpeg, "image file is truncated", id="truncated"),
    pytest.param("zero.jpg", write_zero_bytes, "an empty file: 0 bytes", id="zero-bytes"),
    pytest.param("huge.png", write_huge_png, "decompression bomb", id="huge"),
]


def write_flickr(directory, valid=10, bad=(), missing=(), extra_captions=()):
    """A Flickr8k-layout directory; returns `{image name: [caption, ...]}` of the valid images.

    Args:
        valid: Number of readable 20 x 20 images, one caption each.
        bad: `(name, writer)` of unreadable image files, one caption each.
        missing: Names of images that captions refer to but that do not exist.
        extra_captions: More captions of every valid image.
    """
    (directory / "images").mkdir(parents=True, exist_ok=True)
    captions = {}
    for index in range(valid):
        name = f"image{index:02d}.jpg"
        write_image(directory / "images" / name, color=(20 * index, 100, 200 - 10 * index))
        captions[name] = [f"a picture number {index}", *extra_captions]
    lines = [
        f"{name}#{n}\t{text}" for name, texts in captions.items() for n, text in enumerate(texts)
    ]
    for name, writer in bad:
        writer(directory / "images" / name)
        lines.append(f"{name}#0\ta picture that is not one")
    lines += [f"{name}#0\ta picture that is not there" for name in missing]
    write_lines(directory / "captions.token.txt", lines)
    return captions


# -- checking ------------------------------------------------------------------------------
def assert_one_error_line(capsys, code, expected):
    """Exit code 2 and one `error: ...` line on stderr holding every string of `expected`."""
    error = capsys.readouterr().err
    assert code == 2, error
    assert "Traceback" not in error
    assert len(error.splitlines()) == 1 and error.startswith("error: "), error
    for part in expected:
        assert part in error, (part, error)


def assert_no_run_left(argv, tmp_path):
    """A training stopped by bad input leaves no run directory behind to mistake for one."""
    if argv[0] == "train":
        assert not (tmp_path / "run").exists(), sorted((tmp_path / "run").iterdir())


def split_counts(out, unit):
    """`{split: count}` from the recipe's "N train, M val, K test pairs" or "N train images"."""
    if unit == "pairs":
        match = re.search(r"(\d+) train, (\d+) val, (\d+) test pairs", out)
        return dict(zip(("train", "val", "test"), map(int, match.groups()), strict=True))
    return {split: int(count) for count, split in re.findall(r"(\d+) (\w+) images, ", out)}


def run_quietly(main, argv):
    """`cli.run_main(main, argv)` with stdout and stderr kept: `(code, out, err)`."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.run_main(main, argv)
    return code, out.getvalue(), err.getvalue()


# -- translation: errors -------------------------------------------------------------------
def translate_train(data, tmp_path, *flags):
    return ["train", "--data", str(data), *flags, *TRANSLATE_TINY, "--out", str(tmp_path / "run")]


def empty_tsv(tmp_path):
    data = write_lines(tmp_path / "empty.tsv", [])
    return translate_train(data, tmp_path), [f"{data}: no usable pairs: the file is empty"]


def blank_lines_tsv(tmp_path):
    data = write_lines(tmp_path / "blank.tsv", ["", "   ", "\t"])
    return translate_train(data, tmp_path), ["blank.tsv", "3 empty line (blank.tsv:1"]


def wrong_columns_tsv(tmp_path):
    data = write_lines(tmp_path / "columns.tsv", ["one column", "a\tb\tc\td", "x\ty\tnot credits"])
    return translate_train(data, tmp_path), ["3 wrong number of columns (columns.tsv:1"]


def empty_parallel_files(tmp_path):
    data = write_parallel(tmp_path / "corpus", {"train": [], "val": []})
    return (
        translate_train(data, tmp_path, *LANGUAGES),
        [f"{data}: no usable train pairs: train.en and train.de are empty"],
    )


def blank_parallel_files(tmp_path):
    data = write_parallel(tmp_path / "corpus", {"train": [("", ""), ("  ", "x")]})
    return (
        translate_train(data, tmp_path, *LANGUAGES),
        [f"{data}: no usable train pairs", "2 empty line (train.en:1, train.en:2)"],
    )


def mismatched_parallel_files(tmp_path):
    data = write_parallel(tmp_path / "corpus", {"train": valid_pairs(3)})
    write_lines(data / "train.de", ["eins", "zwei"])
    return (
        translate_train(data, tmp_path, *LANGUAGES),
        [f"{data / 'train.en'} has 3 lines", f"{data / 'train.de'} has 2"],
    )


def no_validation_pairs(tmp_path):
    data = write_parallel(tmp_path / "corpus", {"train": valid_pairs(20)})
    return (
        translate_train(data, tmp_path, *LANGUAGES),
        [f"--data {data}: no validation pairs"],
    )


def every_train_pair_too_long(tmp_path):
    long_pairs = [(LONG_LINE, "kurz"), ("short", LONG_LINE)]
    data = write_parallel(tmp_path / "corpus", {"train": long_pairs, "val": valid_pairs(2)})
    return (
        translate_train(data, tmp_path, *LANGUAGES, "--max-tokens", str(MAX_TOKENS)),
        [f"all 2 train pairs were skipped: 2 pair(s) longer than --max-tokens={MAX_TOKENS}"],
    )


def missing_data(tmp_path):
    return translate_train(tmp_path / "nowhere", tmp_path), [
        f"no such file or directory: {tmp_path}/nowhere"
    ]


def data_of_unknown_kind(tmp_path):
    data = write_lines(tmp_path / "pairs.json", ['["the cat", "die katze"]'])
    return translate_train(data, tmp_path), [f"{data} is neither a directory nor a .tsv"]


def run_without_model(command):
    def case(tmp_path):
        run = tmp_path / "run"
        (run / "logs").mkdir(parents=True)  # what an interrupted first epoch leaves
        argv = {"evaluate": [], "translate": ["the cat"], "caption": ["photo.jpg"]}[command]
        return [command, "--run", str(run), *argv], [f"--run: {run} holds no model.keras"]

    return case


def run_is_a_file(command):
    def case(tmp_path):
        run = write_lines(tmp_path / "model.keras", ["not a directory"])
        argv = {"evaluate": [], "translate": ["the cat"], "caption": ["photo.jpg"]}[command]
        return [command, "--run", str(run), *argv], [f"--run: {run} is not a directory"]

    return case


def run_missing(command):
    def case(tmp_path):
        argv = {"evaluate": [], "translate": ["the cat"], "caption": ["photo.jpg"]}[command]
        return [command, "--run", str(tmp_path / "nowhere"), *argv], ["no such directory"]

    return case


def run_directory_errors(search_command):
    """The bad `--run` cases for `evaluate` and the recipe's own search command."""
    makers = (run_without_model, run_is_a_file, run_missing)
    return [make(command) for make in makers for command in ("evaluate", search_command)]


TRANSLATE_ERRORS = [
    empty_tsv,
    blank_lines_tsv,
    wrong_columns_tsv,
    empty_parallel_files,
    blank_parallel_files,
    mismatched_parallel_files,
    no_validation_pairs,
    every_train_pair_too_long,
    missing_data,
    data_of_unknown_kind,
    *run_directory_errors("translate"),
]


def case_id(case):
    closure = case.__closure__
    return case.__qualname__.split(".")[0] + (f"-{closure[0].cell_contents}" if closure else "")


def test_bad_input_keeps_a_run_directory_it_did_not_create(tmp_path, capsys):
    argv, expected = missing_data(tmp_path)
    earlier = write_lines(tmp_path / "run" / "notes.txt", ["written before this command"])
    assert_one_error_line(capsys, cli.run_main(translate.main, argv), expected)
    assert earlier.read_text() == "written before this command\n"


# -- translation: counted skips ------------------------------------------------------------
# Each writes valid pairs among bad lines; returns (data, language flags, valid pairs,
# the skip line the report must print).
def tsv_with_blank_lines(tmp_path):
    pairs = valid_pairs(40)
    lines = [f"{english}\t{german}" for english, german in pairs]
    lines[5:5] = ["", "  \t  "]
    data = write_lines(tmp_path / "pairs.tsv", lines)
    return data, {}, pairs, "skipped 2 record(s): empty line (pairs.tsv:6, pairs.tsv:7"


def tsv_with_wrong_columns(tmp_path):
    pairs = valid_pairs(40)
    lines = [f"{english}\t{german}" for english, german in pairs]
    lines.insert(3, "no tab at all")
    lines.insert(10, "a\tb\tc\td")
    lines.append("the dog\tder hund\tnot an attribution")
    lines.append("the bird\tder vogel\tCC-BY 2.0 (France) Attribution: tatoeba.org #1")
    data = write_lines(tmp_path / "pairs.tsv", lines)
    pairs.append(("the bird", "der vogel"))  # two columns and Anki's credits: valid
    return (
        data,
        {},
        pairs,
        "skipped 3 record(s): wrong number of columns (pairs.tsv:4, pairs.tsv:11",
    )


def tsv_with_invalid_utf8(tmp_path):
    pairs = valid_pairs(40)
    lines = [f"{english}\t{german}".encode() for english, german in pairs]
    lines.insert(7, b"the \xff cat\tdie katze")
    data = write_lines(tmp_path / "pairs.tsv", lines)
    return data, {}, pairs, "skipped 1 record(s): undecodable bytes (pairs.tsv:8"


def parallel_with_invalid_utf8(tmp_path):
    splits = {"train": valid_pairs(30), "val": valid_pairs(5, 30), "test": valid_pairs(5, 35)}
    data = write_parallel(tmp_path / "corpus", splits)
    german = [line.encode() for _, line in splits["train"]]
    write_lines(data / "train.de", [*german[:4], b"die \xc3\x28 katze", *german[5:]])
    pairs = [pair for split in splits.values() for pair in split]
    del pairs[4]
    return data, LANGUAGES, pairs, "skipped 1 record(s): undecodable bytes (train.de:5"


def parallel_with_a_blank_side(tmp_path):
    splits = {"train": valid_pairs(30), "val": valid_pairs(5, 30), "test": valid_pairs(5, 35)}
    splits["val"].insert(2, ("the lone cat", ""))
    data = write_parallel(tmp_path / "corpus", splits)
    pairs = [pair for split in splits.values() for pair in split if pair[1]]
    return data, LANGUAGES, pairs, "skipped 1 record(s): empty line (val.de:3"


@pytest.mark.parametrize(
    "case",
    [
        tsv_with_blank_lines,
        tsv_with_wrong_columns,
        tsv_with_invalid_utf8,
        parallel_with_invalid_utf8,
        parallel_with_a_blank_side,
    ],
    ids=lambda case: case.__name__,
)
def test_translate_bad_records_are_skipped_counted_and_nothing_else(case, tmp_path, capsys):
    data, flags, pairs, skip_line = case(tmp_path)
    args = translate.parse(["train", "--data", str(data), *flags])
    corpus = translate.load_data(cli.config_from_args(translate.TranslateConfig, args))
    out = capsys.readouterr().out
    assert skip_line in out
    assert sum(split_counts(out, "pairs").values()) == len(pairs)
    assert sorted(corpus.train + corpus.val + corpus.test) == sorted(pairs)


# -- translation: the whole command line ---------------------------------------------------
@pytest.fixture(scope="module")
def translate_run(tmp_path_factory):
    """A tiny model trained on a corpus with every kind of skip; `(run, stdout)`."""
    directory = tmp_path_factory.mktemp("translate_bad")
    train = valid_pairs(40)
    train[10:10] = [(LONG_LINE, "lang"), ("the cat", LONG_LINE), ("", "leer"), ("x", "y")]
    val = [*valid_pairs(6, 40), (LONG_LINE, "lang")]
    data = write_parallel(
        directory / "corpus", {"train": train, "val": val, "test": valid_pairs(4, 46)}
    )
    german = [line.encode() for _, line in train]
    german[13] = b"\xff\xfe"  # the ("x", "y") pair, now undecodable
    write_lines(data / "train.de", german)
    run = directory / "run"
    argv = ["train", "--data", str(data), *LANGUAGES, "--max-tokens", str(MAX_TOKENS)]
    code, out, err = run_quietly(translate.main, [*argv, *TRANSLATE_TINY, "--out", str(run)])
    assert code == 0, err
    return run, out


def test_translate_training_counts_every_skip_and_keeps_every_valid_pair(translate_run):
    run, out = translate_run
    assert "skipped 1 record(s): empty line (train.en:13" in out
    assert "skipped 1 record(s): undecodable bytes (train.de:14" in out
    # The loader keeps the long pairs (valid text); encoding drops and counts them.
    assert split_counts(out, "pairs") == {"train": 42, "val": 7, "test": 4}
    assert f"train: skipped 2 pair(s) longer than --max-tokens={MAX_TOKENS}, kept 40" in out
    assert f"val: skipped 1 pair(s) longer than --max-tokens={MAX_TOKENS}, kept 6" in out
    assert (run / "model.keras").stat().st_size > 0


def test_translate_evaluation_scores_the_pairs_training_skipped(translate_run):
    run, _ = translate_run
    argv = ["evaluate", "--run", str(run), "--split", "val", "--beam-size", "1"]
    code, out, err = run_quietly(translate.main, argv)
    assert code == 0, err
    assert "val: skipped" not in out  # --max-tokens bounds training, not what is scored
    assert json.loads((run / "metrics.json").read_text())["sentences"] == 7
    rows = (run / "val_translations.tsv").read_text().splitlines()
    assert len(rows) == 7 and rows[-1].split("\t")[0] == LONG_LINE


def test_translate_command_truncates_a_long_input_and_counts_it(translate_run, capsys):
    run, _ = translate_run
    argv = ["translate", "--run", str(run), "--beam-size", "1", LONG_LINE, "the cat 3"]
    assert cli.run_main(translate.main, argv) == 0
    captured = capsys.readouterr()
    assert f"truncated 1 input(s) to --max-tokens={MAX_TOKENS} subwords" in captured.err
    assert len(captured.out.split("\n")) == 3  # two lines out, then the final newline


def test_translate_command_skips_an_undecodable_stdin_line_in_place(
    translate_run, capsys, monkeypatch
):
    run, _ = translate_run
    stdin = io.TextIOWrapper(io.BytesIO(b"the cat 1\nthe \xff cat\n\nthe cat 2\n"), "utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert cli.run_main(translate.main, ["translate", "--run", str(run), "--beam-size", "1"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 input line(s): not valid UTF-8 (stdin:2)" in captured.err
    lines = captured.out.split("\n")
    assert len(lines) == 5 and lines[1] == "" and lines[2] == ""  # one line out per line in


# -- captioning: errors --------------------------------------------------------------------
def caption_train(data, tmp_path):
    return ["train", "--data", str(data), *CAPTION_TINY, "--out", str(tmp_path / "run")]


def caption_missing_data(tmp_path):
    return caption_train(tmp_path / "nowhere", tmp_path), [f"{tmp_path}/nowhere does not exist"]


def empty_captions_file(tmp_path):
    write_flickr(tmp_path / "flickr", valid=0)
    captions = tmp_path / "flickr" / "captions.token.txt"
    return caption_train(tmp_path / "flickr", tmp_path), [
        f"{captions}: no usable captions (the file has no caption lines)"
    ]


def every_image_missing(tmp_path):
    write_flickr(tmp_path / "flickr", valid=0, missing=["gone1.jpg", "gone2.jpg"])
    return caption_train(tmp_path / "flickr", tmp_path), [
        "captions.token.txt: no usable captions",
        "2 missing image (captions.token.txt:1, captions.token.txt:2)",
    ]


def every_image_unreadable(tmp_path):
    write_flickr(tmp_path / "flickr", valid=0, bad=[("text.jpg", write_text_named_jpg)])
    return caption_train(tmp_path / "flickr", tmp_path), [
        "no usable train images (none of its 1 images is readable",
        f"{tmp_path / 'flickr' / 'images' / 'text.jpg'}: UnidentifiedImageError",
    ]


def too_few_images_for_validation(tmp_path):
    write_flickr(tmp_path / "flickr", valid=3)
    return caption_train(tmp_path / "flickr", tmp_path), [
        f"--data {tmp_path / 'flickr'}: no usable val images",
        "none of the 3 images",
    ]


def official_test_list_absent(tmp_path):
    """The official train and dev lists without the test one: `evaluate --split test`."""
    captions = write_flickr(tmp_path / "flickr", valid=10)
    names = sorted(captions)
    for file_name, listed in (
        ("Flickr_8k.trainImages.txt", names[2:]),
        ("Flickr_8k.devImages.txt", names[:2]),
    ):
        (tmp_path / "flickr" / file_name).write_text("\n".join(listed) + "\n")
    args = caption.parse(["train", "--data", str(tmp_path / "flickr"), "--image-size", "32"])
    config = cli.config_from_args(caption.CaptionConfig, args)
    return config, [
        f"--data {tmp_path / 'flickr'}: no test split: Flickr_8k.testImages.txt is not in "
    ]


def test_caption_missing_official_split_is_one_error_line(tmp_path, capsys):
    config, expected = official_test_list_absent(tmp_path)
    assert caption.load_splits(config, ("train", "val"))  # the lists that exist are read
    assert_one_error_line(capsys, cli.run_main(caption.load_splits, config), expected)
    # `all` evaluates without naming a split: on dev, and it says so
    splits = caption.load_splits(config, ("test",), fallback="val")
    assert list(splits) == ["val"] and len(splits["val"].captions) == 2
    assert "Flickr_8k.testImages.txt is not in" in capsys.readouterr().out


CAPTION_ERRORS = [
    caption_missing_data,
    empty_captions_file,
    every_image_missing,
    every_image_unreadable,
    too_few_images_for_validation,
    *run_directory_errors("caption"),
]


@pytest.mark.parametrize(
    "recipe, case",
    [(translate, case) for case in TRANSLATE_ERRORS] + [(caption, case) for case in CAPTION_ERRORS],
    ids=lambda value: case_id(value) if callable(value) else value.__name__.split(".")[-1],
)
def test_bad_input_is_one_error_line(recipe, case, tmp_path, capsys):
    argv, expected = case(tmp_path)
    assert_one_error_line(capsys, cli.run_main(recipe.main, argv), expected)
    assert_no_run_left(argv, tmp_path)


# -- captioning: counted skips -------------------------------------------------------------
def load_caption_splits(data, capsys):
    args = caption.parse(["train", "--data", str(data), "--image-size", "32"])
    splits = caption.load_splits(cli.config_from_args(caption.CaptionConfig, args))
    return splits, capsys.readouterr().out


@pytest.mark.parametrize("name, writer, reason", BAD_IMAGES)
def test_caption_unreadable_image_is_skipped_by_name_and_counted(
    name, writer, reason, tmp_path, capsys
):
    captions = write_flickr(tmp_path / "flickr", valid=10, bad=[(name, writer)])
    splits, out = load_caption_splits(tmp_path / "flickr", capsys)
    assert f"skipped image {tmp_path / 'flickr' / 'images' / name}: " in out and reason in out
    assert re.search(r"skipped 1 unreadable image\(s\) in (train|val|test)", out)
    assert sum(split_counts(out, "images").values()) == 10
    kept = sorted(text for split in splits.values() for texts in split.captions for text in texts)
    assert kept == sorted(text for texts in captions.values() for text in texts)


def test_caption_missing_image_is_skipped_by_line_and_counted(tmp_path, capsys):
    write_flickr(tmp_path / "flickr", valid=10, missing=["gone.jpg"])
    splits, out = load_caption_splits(tmp_path / "flickr", capsys)
    assert "skipped 1 caption record(s): missing image (captions.token.txt:11" in out
    assert sum(split_counts(out, "images").values()) == 10


def test_caption_one_pixel_image_is_kept_and_resized(tmp_path, capsys):
    """A 1 x 1 image is an image: kept, and upscaled to a flat square of its colour."""
    write_flickr(tmp_path / "flickr", valid=10)
    write_image(tmp_path / "flickr" / "images" / "dot.png", size=(1, 1), color=(200, 10, 10))
    with open(tmp_path / "flickr" / "captions.token.txt", "a", encoding="utf-8") as file:
        file.write("dot.png#0\ta single red pixel\n")
    splits, out = load_caption_splits(tmp_path / "flickr", capsys)
    assert "skipped" not in out
    assert sum(split_counts(out, "images").values()) == 11
    [dot] = [
        split.images[index]
        for split in splits.values()
        for index, texts in enumerate(split.captions)
        if texts == ["a single red pixel"]
    ]
    np.testing.assert_array_equal(dot, np.broadcast_to([200, 10, 10], (32, 32, 3)))


# -- captioning: the whole command line ----------------------------------------------------
@pytest.fixture(scope="module")
def caption_run(tmp_path_factory):
    """A tiny model trained on a Flickr8k-layout directory with every kind of bad input.

    Returns `(run, data, stdout)`.
    """
    directory = tmp_path_factory.mktemp("caption_bad")
    data = directory / "flickr"
    # Every image also has a caption over --max-caption-length and one without a word.
    extra = ["a very long caption of a picture that goes on and on", "..."]
    bad = [(param.values[0], param.values[1]) for param in BAD_IMAGES]
    write_flickr(data, valid=20, bad=bad, missing=["gone.jpg"], extra_captions=extra)
    write_image(data / "images" / "dot.png", size=(1, 1))
    with open(data / "captions.token.txt", "a", encoding="utf-8") as file:
        file.write(f"dot.png#0\ta single pixel\ndot.png#1\t{extra[0]}\ndot.png#2\t{extra[1]}\n")
    run = directory / "run"
    argv = ["train", "--data", str(data), *CAPTION_TINY, "--max-caption-length", "6"]
    code, out, err = run_quietly(caption.main, [*argv, "--out", str(run)])
    assert code == 0, err
    return run, data, out


def test_caption_training_counts_every_skip_and_keeps_every_valid_image(caption_run):
    run, data, out = caption_run
    assert "skipped 1 caption record(s): missing image (captions.token.txt:" in out
    # The same seeded split by image as the recipe's: which bad and valid images it trains on.
    corpus = load_caption_corpus(str(data), seed=0)
    bad_names = {param.values[0] for param in BAD_IMAGES}
    for split in ("train", "val"):
        names = [path.rsplit("/", 1)[-1] for path, _ in corpus.split(split)]
        unreadable = sum(name in bad_names for name in names)
        valid = len(names) - unreadable
        if unreadable:
            assert f"skipped {unreadable} unreadable image(s) in {split}" in out
        assert f"    {valid} {split} images, {3 * valid} captions" in out
        assert f"{split}: truncated {valid} caption(s) to --max-caption-length=6 words" in out
        assert f"{split}: skipped {valid} caption(s) without words" in out
    assert (run / "model.keras").stat().st_size > 0


@pytest.mark.parametrize("name, writer, reason", BAD_IMAGES)
def test_caption_command_on_a_bad_image_is_one_error_line(
    name, writer, reason, caption_run, tmp_path, capsys
):
    run, _, _ = caption_run
    path = tmp_path / name
    writer(path)
    code = cli.run_main(caption.main, ["caption", "--run", str(run), str(path)])
    assert_one_error_line(
        capsys, code, ["no readable image among the arguments", str(path), reason]
    )


def test_caption_command_skips_bad_images_and_captions_the_rest(caption_run, tmp_path, capsys):
    run, _, _ = caption_run
    good = write_image(tmp_path / "good.jpg")
    dot = write_image(tmp_path / "dot.png", size=(1, 1))
    bad = tmp_path / "text.jpg"
    write_text_named_jpg(bad)
    missing = tmp_path / "gone.jpg"
    argv = [
        "caption",
        "--run",
        str(run),
        "--beam-size",
        "1",
        str(good),
        str(bad),
        str(missing),
        str(dot),
    ]
    assert cli.run_main(caption.main, argv) == 0
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [str(good), str(dot)]
    assert f"skipped {bad}: " in captured.err and f"skipped {missing}: " in captured.err
