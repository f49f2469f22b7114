import json
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multiattn.special_tokens import END_ID, PAD_ID, SPECIAL_TOKENS, START_ID, UNKNOWN_ID
from recipes.data import DataError
from recipes.data.caption_corpora import (
    FLICKR8K_SPLIT_FILES,
    load_caption_corpus,
    load_tfds_coco_captions,
    read_coco,
    read_flickr8k,
)
from recipes.data.feature_cache import FeatureCache
from recipes.data.image_files import ImageError, image_key, load_image, load_images, resize_image
from recipes.data.word_vocabulary import WordVocabulary, tokenize_caption

WHITE, BLACK, RED, BLUE = (255, 255, 255), (0, 0, 0), (255, 0, 0), (0, 0, 255)
GREEN_ISH, PURPLE_ISH = (10, 200, 30), (120, 20, 160)
PALETTE = [0, 0, 0, *GREEN_ISH, *PURPLE_ISH] + [0] * (256 * 3 - 9)


def _image(mode, left, right):
    """An 8 x 8 image of `mode` whose left half is `left` and right half `right`."""
    image = Image.new(mode, (8, 8), left)
    image.paste(Image.new(mode, (4, 8), right), (4, 0))
    return image


def _palette_image(left, right, transparent=None):
    image = _image("P", left, right)
    image.putpalette(PALETTE)
    if transparent is not None:
        image.info["transparency"] = transparent
    return image


# (id, image, file suffix, expected left half, expected right half); lossless formats, so
# the colours are exact.
MODE_CASES = [
    ("RGB", _image("RGB", RED, BLUE), "png", RED, BLUE),
    ("L", _image("L", 0, 100), "png", BLACK, (100, 100, 100)),
    ("P", _palette_image(1, 2), "png", GREEN_ISH, PURPLE_ISH),
    # Index 0 is black in the palette but transparent: it shows as white.
    ("P-transparency", _palette_image(0, 1, transparent=0), "png", WHITE, GREEN_ISH),
    ("P-transparency-gif", _palette_image(0, 1, transparent=0), "gif", WHITE, GREEN_ISH),
    ("RGBA", _image("RGBA", (255, 0, 0, 0), (0, 0, 255, 128)), "png", WHITE, (127, 127, 255)),
    ("LA", _image("LA", (0, 0), (0, 128)), "png", WHITE, (127, 127, 127)),
    ("CMYK", _image("CMYK", (0, 255, 255, 0), (0, 0, 0, 255)), "tif", RED, BLACK),
    # 16-bit: 65535 is white and 32896 mid grey (high byte 128), not both clipped to 255.
    ("I;16", _image("I;16", 65535, 32896), "png", WHITE, (128, 128, 128)),
    ("I", _image("I", 65535, 32896), "tif", WHITE, (128, 128, 128)),
    ("1", _image("1", 0, 1), "png", BLACK, WHITE),
]


@pytest.mark.parametrize(
    "image, suffix, left, right", [case[1:] for case in MODE_CASES], ids=[c[0] for c in MODE_CASES]
)
def test_load_image_converts_every_mode_to_rgb(tmp_path, image, suffix, left, right):
    path = tmp_path / f"image.{suffix}"
    image.save(path)
    pixels = load_image(path, 8)
    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
    np.testing.assert_allclose(pixels[:, :4].reshape(-1, 3), [left] * 32, atol=1)
    np.testing.assert_allclose(pixels[:, 4:].reshape(-1, 3), [right] * 32, atol=1)


def _quadrant_colours(pixels):
    """Which quadrants are red: `[[top-left, top-right], [bottom-left, bottom-right]]`."""
    half = pixels.shape[0] // 2
    quadrants = pixels.reshape(2, half, 2, half, 3).mean(axis=(1, 3))
    return (quadrants[..., 0] > 128).tolist()


@pytest.mark.parametrize(
    "orientation, red_quadrant",
    [(1, (0, 0)), (3, (1, 1)), (6, (0, 1)), (8, (1, 0))],
)
def test_load_image_applies_exif_orientation(tmp_path, orientation, red_quadrant):
    # Stored pixels: red top-left quadrant, blue elsewhere; wide, so a rotation is visible
    # in the stored size too. The EXIF tag says how a viewer turns it: 3 is 180 degrees,
    # 6 is 90 degrees clockwise, 8 counter-clockwise.
    stored = np.zeros((32, 64, 3), dtype=np.uint8)
    stored[...] = BLUE
    stored[:16, :32] = RED
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    expected = [[False, False], [False, False]]
    expected[red_quadrant[0]][red_quadrant[1]] = True
    assert _quadrant_colours(load_image(path, 32)) == expected


@pytest.mark.parametrize("width, height", [(1, 1), (3, 7), (300, 200)])
def test_load_image_resizes_any_size_to_a_square(tmp_path, width, height):
    path = tmp_path / "image.png"
    Image.new("RGB", (width, height), (12, 34, 56)).save(path)
    pixels = load_image(path, 16)
    assert pixels.shape == (16, 16, 3)
    assert np.all(pixels == (12, 34, 56))


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((5, 9, 3), (10, 20, 30), dtype=np.uint8), (10, 20, 30)),
        (np.full((5, 9, 3), (10.4, 300.0, -5.0), dtype=np.float32), (10, 255, 0)),
        (np.full((5, 9), 32896, dtype=np.uint16), (128, 128, 128)),
        (np.full((5, 9, 1), 7, dtype=np.uint8), (7, 7, 7)),
        (np.full((5, 9, 4), (0, 0, 255, 0), dtype=np.uint8), WHITE),
    ],
    ids=["uint8-rgb", "float-rgb", "uint16-grey", "one-channel", "transparent-rgba"],
)
def test_load_image_accepts_arrays(array, expected):
    pixels = load_image(array, 4)
    assert pixels.shape == (4, 4, 3)
    assert np.all(pixels == expected)


def _write_truncated_jpeg(path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "name, make",
    [
        ("zero.jpg", lambda path: path.write_bytes(b"")),
        ("text.jpg", lambda path: path.write_text("not an image\n")),
        ("truncated.jpg", _write_truncated_jpeg),
        ("missing.jpg", lambda path: None),
        ("directory.jpg", lambda path: path.mkdir()),
    ],
)
def test_load_image_raises_image_error_naming_the_file(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    with pytest.raises(ImageError, match=name) as raised:
        load_image(path, 8)
    assert isinstance(raised.value, ValueError)
    assert raised.value.path == str(path) and raised.value.reason


def test_load_image_decodes_a_large_jpeg_at_full_size(tmp_path):
    # No reduced-scale decoding (Pillow's `draft`): the full decode, resized by
    # `resize_image`, as the exported model computes it.
    path = tmp_path / "large.jpg"
    large = Image.new("RGB", (1200, 900), RED)
    large.paste(Image.new("RGB", (600, 900), BLUE), (600, 0))
    large.save(path)
    with Image.open(path) as image:
        full = np.asarray(image.convert("RGB"))
    pixels = load_image(path, 64)
    np.testing.assert_array_equal(pixels, resize_image(full, 64).numpy())
    np.testing.assert_allclose(pixels[:, :28].reshape(-1, 3), [RED] * 64 * 28, atol=12)
    np.testing.assert_allclose(pixels[:, 36:].reshape(-1, 3), [BLUE] * 64 * 28, atol=12)


def test_resize_image_is_antialiased_and_rounded():
    # A 1-pixel checkerboard shrunk by 4 averages to grey (no aliasing); a flat colour
    # stays exact; values are rounded to uint8.
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype("uint8")
    board = np.repeat(board[..., None], 3, axis=-1)
    shrunk = resize_image(board, 16).numpy()
    assert shrunk.dtype == np.uint8 and shrunk.shape == (16, 16, 3)
    assert np.abs(shrunk[2:-2, 2:-2].astype(int) - 128).max() <= 1
    flat = np.full((7, 5, 3), (10, 200, 30), dtype="uint8")
    assert (resize_image(flat, 12).numpy() == (10, 200, 30)).all()


@pytest.mark.parametrize("limit, loads", [(64 * 64 // 2 + 1, True), (64 * 64 // 2 - 1, False)])
def test_load_image_keeps_the_decompression_bomb_limit(tmp_path, monkeypatch, limit, loads):
    # Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that: the warning is
    # silenced (the image is loaded as asked), the refusal becomes an ImageError.
    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64), RED).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if loads:
            assert np.all(load_image(path, 8) == RED)
        else:
            with pytest.raises(ImageError, match="big.png.*MAX_IMAGE_PIXELS"):
                load_image(path, 8)


def test_load_images_skips_and_reports_bad_files(tmp_path, capsys):
    paths = []
    for index, colour in enumerate([RED, None, BLUE, None]):
        paths.append(tmp_path / f"{index}.png")
        if colour is not None:
            Image.new("RGB", (5, 5), colour).save(paths[-1])
    paths[1].write_bytes(b"")
    images, kept_indices, skipped = load_images(paths, 4)
    assert images.shape == (2, 4, 4, 3)
    assert np.all(images[0] == RED) and np.all(images[1] == BLUE)
    assert kept_indices == [0, 2]
    assert [path for path, _ in skipped] == [str(paths[1]), str(paths[3])]
    assert "UnidentifiedImageError" in skipped[0][1] and "FileNotFoundError" in skipped[1][1]
    assert capsys.readouterr() == ("", "")


def test_image_key_follows_the_content(tmp_path):
    path = tmp_path / "image.png"
    Image.new("RGB", (4, 4), RED).save(path)
    first = image_key(path)
    assert image_key(str(path)) == first
    Image.new("RGB", (5, 5), RED).save(path)
    assert image_key(path) != first
    array = np.zeros((4, 4, 3), dtype=np.uint8)
    assert image_key(array) == image_key(array.copy())
    assert image_key(array) != image_key(array + 1)
    assert image_key(array) != image_key(array.reshape(4, 12))


# Caption corpora ---------------------------------------------------------------------------

NUM_IMAGES = 20


@pytest.fixture
def flickr_directory(tmp_path):
    """A Flickr8k-layout directory with 20 images, 2 captions each, and bad lines."""
    images = tmp_path / "images"
    images.mkdir()
    lines = []
    for index in range(NUM_IMAGES):
        Image.new("RGB", (4, 4), (index, 0, 0)).save(images / f"image{index:02d}.jpg")
        lines += [f"image{index:02d}.jpg#0\tcaption zero of {index} .", f"image{index:02d}.jpg#1"]
        # A space instead of the tab (in the original Flickr8k file too) is accepted.
        lines[-1] += f" caption one of {index} ."
    bad_lines = {
        3: b"this line has neither a tab nor an image number",
        8: b"image03.jpg\tno caption number",
        12: b"gone.jpg#0\ta caption of an image that is not there",
        20: b"gone.jpg#1\tanother one",
        25: b"image04.jpg#2\t   ",
        30: b"image05.jpg#2\t\xff\xfe not utf-8",
        33: b"",  # a blank line is not a record
    }
    raw = [line.encode() for line in lines]
    for number, line in sorted(bad_lines.items()):
        raw.insert(number - 1, line)
    (tmp_path / "captions.token.txt").write_bytes(b"\n".join(raw) + b"\n")
    return tmp_path


def _all_records(corpus):
    return [
        (image, caption)
        for split in (corpus.train, corpus.val, corpus.test)
        for image, captions in split
        for caption in captions
    ]


def test_read_flickr8k_counts_every_skipped_line(flickr_directory):
    corpus = read_flickr8k(flickr_directory)
    assert corpus.skipped == {
        "malformed line": 2,
        "missing image": 2,
        "empty caption": 1,
        "undecodable line": 1,
    }
    assert corpus.skipped_examples == {
        "malformed line": ["captions.token.txt:3", "captions.token.txt:8"],
        "missing image": ["captions.token.txt:12", "captions.token.txt:20"],
        "empty caption": ["captions.token.txt:25"],
        "undecodable line": ["captions.token.txt:30"],
    }
    assert "missing image" in corpus.summary()


def test_read_flickr8k_keeps_every_valid_caption(flickr_directory):
    records = _all_records(read_flickr8k(flickr_directory))
    expected = [
        (
            str(flickr_directory / "images" / f"image{index:02d}.jpg"),
            f"caption {which} of {index} .",
        )
        for index in range(NUM_IMAGES)
        for which in ("zero", "one")
    ]
    assert sorted(records) == sorted(expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_read_flickr8k_splits_by_image_deterministically(flickr_directory, seed):
    corpus = read_flickr8k(flickr_directory, seed=seed, val_fraction=0.2, test_fraction=0.1)
    splits = [[image for image, _ in split] for split in (corpus.train, corpus.val, corpus.test)]
    assert [len(images) for images in splits] == [14, 4, 2]
    assert len(set().union(*splits)) == NUM_IMAGES  # disjoint: each image in one split
    assert all(len(captions) == 2 for _, captions in corpus.train + corpus.val + corpus.test)
    again = read_flickr8k(flickr_directory, seed=seed, val_fraction=0.2, test_fraction=0.1)
    assert again == corpus
    other = read_flickr8k(flickr_directory, seed=seed + 10, val_fraction=0.2, test_fraction=0.1)
    assert other.test != corpus.test


def test_read_flickr8k_split_file_gives_the_test_split(flickr_directory, tmp_path):
    split_file = tmp_path / "test_images.txt"
    split_file.write_text("image07.jpg\nimage02.jpg\n\nnot_captioned.jpg\n")
    corpus = read_flickr8k(flickr_directory, split_file=split_file, val_fraction=0.25)
    assert [image.rsplit("/", 1)[1] for image, _ in corpus.test] == ["image02.jpg", "image07.jpg"]
    assert len(corpus.val) == 5 and len(corpus.train) == 13
    assert corpus.skipped["split file image without captions"] == 1
    assert corpus.skipped_examples["split file image without captions"] == ["test_images.txt:4"]


def write_split_lists(directory, lists):
    for split, names in lists.items():
        (directory / FLICKR8K_SPLIT_FILES[split]).write_text("".join(f"{n}\n" for n in names))


def test_read_flickr8k_uses_the_official_split_lists(flickr_directory):
    names = [f"image{index:02d}.jpg" for index in range(NUM_IMAGES)]
    lists = {"train": names[5:] + ["uncaptioned.jpg"], "val": names[2:4], "test": names[:2]}
    write_split_lists(flickr_directory, lists)
    corpus = read_flickr8k(flickr_directory, seed=3, val_fraction=0.5)  # neither is used
    for split, listed in lists.items():
        got = [image.rsplit("/", 1)[1] for image, _ in corpus.split(split)]
        assert got == sorted(name for name in listed if name != "uncaptioned.jpg")
    assert corpus.skipped["split file image without captions"] == 1
    assert corpus.skipped_examples["split file image without captions"] == [
        "Flickr_8k.trainImages.txt:16"
    ]
    # image04.jpg is in no list: counted, not lost silently
    assert corpus.skipped["image in no split file"] == 1
    assert corpus.skipped_examples["image in no split file"] == ["image04.jpg"]
    assert corpus.missing_splits == {}


def test_read_flickr8k_missing_official_list_is_an_error_when_asked_for(flickr_directory):
    names = [f"image{index:02d}.jpg" for index in range(NUM_IMAGES)]
    write_split_lists(flickr_directory, {"train": names[4:], "val": names[:4]})
    corpus = read_flickr8k(flickr_directory)
    assert len(corpus.split("train")) == 16 and len(corpus.split("val")) == 4
    assert corpus.test == [] and "image in no split file" not in corpus.skipped
    with pytest.raises(DataError, match="no test split: Flickr_8k.testImages.txt is not in"):
        corpus.split("test")


def test_read_flickr8k_image_in_two_lists_is_an_error(flickr_directory):
    write_split_lists(flickr_directory, {"train": ["image01.jpg"], "val": ["image01.jpg"]})
    with pytest.raises(DataError, match="image01.jpg is in two split lists"):
        read_flickr8k(flickr_directory)


SHARED_FLICKR8K = Path(__file__).parents[2] / "shared/data/flickr8k"


@pytest.mark.skipif(not SHARED_FLICKR8K.is_dir(), reason="no shared Flickr8k copy")
def test_read_flickr8k_on_the_shared_copy():
    """The official train and dev lists; the test list is withheld."""
    corpus = read_flickr8k(SHARED_FLICKR8K)
    assert corpus.skipped == {}
    assert [len(corpus.train), len(corpus.val)] == [5827, 964]
    assert len(_all_records(corpus)) == 33955
    with pytest.raises(DataError, match="no test split"):
        corpus.split("test")
    images, kept_indices, skipped = load_images([image for image, _ in corpus.val[:8]], 32)
    assert images.shape == (8, 32, 32, 3) and kept_indices == list(range(8)) and skipped == []


def test_read_coco(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (4, 4)).save(images / name)
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg"},
            {"id": 2, "file_name": "b.jpg"},
            {"id": 3, "file_name": "c.jpg"},  # no caption
            {"id": 4, "file_name": "gone.jpg"},  # no file
            {"id": 1, "file_name": "again.jpg"},  # duplicate id
            {"file_name": "no_id.jpg"},
        ],
        "annotations": [
            {"image_id": 1, "caption": "A dog runs."},
            {"image_id": 2, "caption": "A cat sits."},
            {"image_id": 1, "caption": "The dog plays. "},
            {"image_id": 4, "caption": "Lost."},
            {"image_id": 4, "caption": "Lost again."},
            {"image_id": 9, "caption": "Who?"},
            {"image_id": 2, "caption": " "},
            {"image_id": 2},
        ],
    }
    captions_json = tmp_path / "captions.json"
    captions_json.write_text(json.dumps(data))
    corpus = read_coco(captions_json, images, val_fraction=0.0, test_fraction=0.5)
    assert sorted(_all_records(corpus)) == [
        (str(images / "a.jpg"), "A dog runs."),
        (str(images / "a.jpg"), "The dog plays."),
        (str(images / "b.jpg"), "A cat sits."),
    ]
    assert len(corpus.test) == 1 and len(corpus.train) == 1 and corpus.val == []
    assert corpus.skipped == {
        "duplicate image id": 1,
        "malformed image entry": 1,
        "unknown image id": 1,
        "empty caption": 1,
        "malformed annotation": 1,
        "image without captions": 1,
        "missing image": 2,
    }
    assert corpus.skipped_examples["unknown image id"] == ["captions.json:annotations[5]"]


def test_load_caption_corpus_dispatches(flickr_directory, tmp_path):
    assert len(_all_records(load_caption_corpus(str(flickr_directory)))) == 2 * NUM_IMAGES
    captions_json = tmp_path / "coco.json"
    captions_json.write_text(json.dumps({"images": [], "annotations": []}))
    corpus = load_caption_corpus(f"coco:{captions_json},{flickr_directory / 'images'}")
    assert _all_records(corpus) == [] and corpus.skipped == {}


@pytest.mark.parametrize(
    "data, named",
    [
        ("nowhere", "nowhere"),
        ("coco:nowhere.json,{tmp}", "nowhere.json"),
        ("coco:{tmp}/captions.token.txt,{tmp}/no_images", "no_images"),
        ("coco:only_one_part.json", "coco:CAPTIONS.json,IMAGE_DIR"),
        ("tfds:flickr8k", "tfds:coco_captions"),
        ("{tmp}/captions.token.txt", "not a directory"),
    ],
)
def test_load_caption_corpus_rejects_what_it_cannot_read(flickr_directory, data, named):
    with pytest.raises(DataError, match=named):
        load_caption_corpus(data.format(tmp=flickr_directory))


@pytest.fixture
def no_network(monkeypatch):
    """Refuses every connection, and fails the test if one was tried."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield
    assert attempts == []


@pytest.mark.parametrize("include_restval, num_train", [(True, 6), (False, 3)])
def test_tfds_coco_captions_offline_with_mock_data(no_network, include_restval, num_train):
    tfds = pytest.importorskip("tensorflow_datasets")
    # tfds has no metadata files for coco_captions here: the mock reads the features
    # from the builder code (USE_CODE) and returns the same fake examples for any split.
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        corpus = load_caption_corpus(
            "tfds:coco_captions", image_size=16, include_restval=include_restval
        )
        unresized = load_tfds_coco_captions(max_images_per_split=2)
    assert [len(corpus.train), len(corpus.val), len(corpus.test)] == [num_train, 3, 3]
    for image, captions in corpus.train + corpus.val + corpus.test:
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8
        assert captions and all(isinstance(c, str) and c.strip() for c in captions)
    assert len(unresized.val) == 2
    assert unresized.val[0][0].ndim == 3 and unresized.val[0][0].shape[-1] == 3
    # The in-memory images go through load_image like files do.
    assert load_image(unresized.val[0][0], 8).shape == (8, 8, 3)


def test_tfds_coco_captions_not_prepared_is_a_data_error(no_network, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DataError, match="download=True"):
        load_tfds_coco_captions(data_dir=str(tmp_path))


# Words -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, words",
    [
        ("A child in a pink dress .", ["a", "child", "in", "a", "pink", "dress"]),
        ("Two dogs, playing!", ["two", "dogs", "playing"]),
        ("a man 's hat", ["a", "man", "s", "hat"]),
        ("a man's hat", ["a", "man", "s", "hat"]),
        ("3 kids on a see-saw", ["3", "kids", "on", "a", "see", "saw"]),
        ("Déjà vu_here", ["déjà", "vu", "here"]),
        (" ... ", []),
    ],
)
def test_tokenize_caption(text, words):
    assert tokenize_caption(text) == words


def _vocabulary():
    captions = ["a dog runs", "a dog sits", "a cat runs", "one bird"]
    return WordVocabulary.build([tokenize_caption(c) for c in captions], min_count=2)


def test_vocabulary_ids_order_and_unknown_words():
    vocabulary = _vocabulary()
    assert list(SPECIAL_TOKENS) == ["[PAD]", "[START]", "[END]", "[UNK]"]
    assert (PAD_ID, START_ID, END_ID, UNKNOWN_ID) == (0, 1, 2, 3)
    # Most frequent first, ties alphabetical; words seen once are unknown.
    assert vocabulary.words == [*SPECIAL_TOKENS, "a", "dog", "runs"]
    assert len(vocabulary) == 7
    assert vocabulary.encode(["a", "cat", "runs"]) == [4, UNKNOWN_ID, 6]
    capped = WordVocabulary.build([["a", "a", "b"]], max_size=5)
    assert capped.words == [*SPECIAL_TOKENS, "a"]


@pytest.mark.parametrize(
    "ids, words",
    [
        ([4, 5, 6], ["a", "dog", "runs"]),
        ([START_ID, 4, 5, END_ID, 6, PAD_ID], ["a", "dog"]),  # stops at the end token
        ([4, UNKNOWN_ID, PAD_ID, PAD_ID], ["a", "[UNK]"]),
        ([END_ID, 4], []),
    ],
)
def test_vocabulary_decode(ids, words):
    assert _vocabulary().decode(ids) == words
    assert _vocabulary().decode(np.array(ids, dtype=np.int32)) == words


def test_vocabulary_decode_tensor_joins_the_decoded_words():
    vocabulary = _vocabulary()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(vocabulary), (200, 6)).astype("int32")  # many special ids
    captions = [text.decode() for text in vocabulary.decode_tensor(ids).numpy()]
    assert captions == [" ".join(vocabulary.decode(row)) for row in ids]
    assert {"", "a dog"} < set(captions)


def test_vocabulary_save_load_round_trip(tmp_path):
    vocabulary = _vocabulary()
    path = tmp_path / "vocabulary.txt"
    vocabulary.save(path)
    assert path.read_text().splitlines() == vocabulary.words
    loaded = WordVocabulary.load(path)
    assert loaded.words == vocabulary.words
    tokens = ["a", "dog", "flies"]
    assert loaded.decode(loaded.encode(tokens)) == ["a", "dog", "[UNK]"]


@pytest.mark.parametrize("content", ["a\nb\n", "[PAD]\n[START]\n[END]\n[UNK]\na\na\n"])
def test_vocabulary_load_rejects_other_files(tmp_path, content):
    path = tmp_path / "vocabulary.txt"
    path.write_text(content)
    with pytest.raises(DataError, match="vocabulary.txt"):
        WordVocabulary.load(path)


@pytest.mark.parametrize(
    "max_words, target_in, target_out",
    [
        (None, [[1, 4, 5, 6], [1, 4, 3, 0]], [[4, 5, 6, 2], [4, 3, 2, 0]]),
        (2, [[1, 4, 5], [1, 4, 3]], [[4, 5, 2], [4, 3, 2]]),
    ],
)
def test_encode_targets_follows_the_seq2seq_convention(max_words, target_in, target_out):
    inputs, outputs = _vocabulary().encode_targets([["a", "dog", "runs"], ["a", "fox"]], max_words)
    np.testing.assert_array_equal(inputs, target_in)
    np.testing.assert_array_equal(outputs, target_out)
    assert inputs.dtype == outputs.dtype == np.int32


# Feature cache -----------------------------------------------------------------------------


class _CountingEncoder:
    """Fake image loading and feature computation that count their calls."""

    def __init__(self):
        self.loaded, self.computed = [], 0

    def images(self, indices):
        self.loaded += list(indices)
        return np.stack([np.full((4, 4, 3), index, dtype=np.float32) for index in indices])

    def compute(self, images):
        self.computed += 1
        # A (regions, channels) grid per image that depends on the image.
        return images.reshape(len(images), 16, 3) / 7.0 + np.arange(3, dtype=np.float32)


KEYS = [f"image{index}.jpg" for index in range(5)]


def test_feature_cache_second_call_does_not_compute(tmp_path):
    encoder = _CountingEncoder()
    cache = FeatureCache(tmp_path, "small-cnn-v1", image_size=4)
    first = cache.get_or_compute(KEYS, encoder.images, encoder.compute, batch_size=2)
    assert first.shape == (5, 16, 3) and first.dtype == np.float16
    assert encoder.computed == 3 and encoder.loaded == [0, 1, 2, 3, 4]
    second = cache.get_or_compute(KEYS, encoder.images, encoder.compute)
    assert encoder.computed == 3 and encoder.loaded == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(first, second)
    # The stored values are the computed ones, in float16.
    expected = encoder.compute(encoder.images(range(5))).astype(np.float16)
    np.testing.assert_array_equal(first, expected)
    # Only new keys are computed.
    encoder.loaded = []
    cache.get_or_compute(["new.jpg", *KEYS], encoder.images, encoder.compute)
    assert encoder.loaded == [0]


@pytest.mark.parametrize(
    "encoder_key, image_size, misses",
    [("small-cnn-v1", 4, False), ("small-cnn-v2", 4, True), ("small-cnn-v1", 8, True)],
)
def test_feature_cache_is_keyed_by_encoder_and_image_size(
    tmp_path, encoder_key, image_size, misses
):
    encoder = _CountingEncoder()
    FeatureCache(tmp_path, "small-cnn-v1", 4).get_or_compute(KEYS, encoder.images, encoder.compute)
    encoder.computed = 0
    cache = FeatureCache(tmp_path, encoder_key, image_size)
    cache.get_or_compute(KEYS, encoder.images, encoder.compute)
    assert encoder.computed == (1 if misses else 0)


def test_feature_cache_recomputes_a_damaged_file(tmp_path):
    encoder = _CountingEncoder()
    cache = FeatureCache(tmp_path, "small-cnn-v1", 4)
    first = cache.get_or_compute(KEYS, encoder.images, encoder.compute)
    path = cache.path(KEYS[2])
    path.write_bytes(path.read_bytes()[:20])
    encoder.loaded = []
    again = cache.get_or_compute(KEYS, encoder.images, encoder.compute)
    assert encoder.loaded == [2]
    np.testing.assert_array_equal(first, again)
    # float16 on disk: 16 x 3 values of 2 bytes plus the .npy header.
    assert path.stat().st_size <= 16 * 3 * 2 + 128
    assert not list(tmp_path.rglob("*.tmp"))


def test_feature_cache_refuses_features_beyond_float16(tmp_path):
    cache = FeatureCache(tmp_path, "huge", 4)
    with pytest.raises(ValueError, match="float16"):
        cache.get_or_compute(["a"], lambda i: np.zeros((1, 4)), lambda x: x + 1e6)


def test_feature_cache_reads_a_float32_file_as_float16_and_halves_it(tmp_path):
    encoder = _CountingEncoder()
    cache = FeatureCache(tmp_path, "small-cnn-v1", 4)
    computed = encoder.compute(encoder.images(range(5)))  # float32
    for key, features in zip(KEYS, computed, strict=True):  # as a float32 cache holds them
        path = cache.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, features)
    encoder.computed = 0
    features = cache.get_or_compute(KEYS, encoder.images, encoder.compute)
    assert encoder.computed == 0 and features.dtype == np.float16
    np.testing.assert_array_equal(features, computed.astype(np.float16))
    # Written again in float16: 16 x 3 values of 2 bytes plus the .npy header.
    assert np.load(cache.path(KEYS[0])).dtype == np.float16
    assert cache.path(KEYS[0]).stat().st_size <= 16 * 3 * 2 + 128
