"""Real images and their captions: loading, caption corpora, a word vocabulary, a feature cache.

- `load_image` / `load_images`: any image file Pillow reads (or an array) to a square
  uint8 RGB array, with EXIF orientation applied and odd modes converted properly
  (`read_pixels`), resized by `resize_image` (TensorFlow ops that the exported
  SavedModel runs too); unreadable files raise `ImageError` (or are listed as skipped,
  never silently).
- `read_flickr8k`, `read_coco`, `load_tfds_coco_captions`, `load_caption_corpus`:
  captions grouped by image and split by image into train, val and test, in a
  `CaptionCorpus` that also counts every record it had to skip, and why.
- `tokenize_caption`, `WordVocabulary`: words and ids, with ids 0-3 the padding, start,
  end and unknown tokens that `multiattn.Seq2Seq` expects.
- `FeatureCache`: grid features of a frozen backbone, computed once and kept on disk.
"""

import collections
import dataclasses
import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from multiattn.special_tokens import END_ID, PAD_ID, SPECIAL_TOKENS, START_ID, UNKNOWN_ID
from recipes.data import SPLITS, DataError
from recipes.data.skips import SkipCounter

MAX_SKIPPED_EXAMPLES = 5
FLICKR8K_CAPTIONS = "captions.token.txt"
FLICKR8K_IMAGES = "images"
# The split lists of the original `Flickr8k_text` download, one image name per line.
FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
# Part of the feature cache's keys (`recipes.caption.grid_features`): the version of the
# pixels `load_image` gives, so that features of older pixels are not reused.
PIXELS_VERSION = "tf-resize-1"
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# "IMAGE#N<TAB>caption"; the original Flickr8k.token.txt has a few lines with spaces
# instead of the tab, which are accepted too.
_FLICKR8K_LINE = re.compile(r"(?P<image>[^\t#]+)#(?P<number>\d+)(?:[\t ]+(?P<caption>.*))?")
# Runs of letters and digits (any script); "_" is a word character but not a letter.
_WORD = re.compile(r"[^\W_]+")


class ImageError(ValueError):
    """An image that cannot be loaded; `path` and `reason` say which and why."""

    def __init__(self, path, reason):
        super().__init__(f"Cannot load image {path}: {reason}")
        self.path = path
        self.reason = reason


# Images ------------------------------------------------------------------------------------


def _describe_source(source):
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    return os.fspath(source)


def _sixteen_bit_to_rgb(image):
    # 16-bit grey ("I;16*", and "I" as 16-bit PNG and TIFF files decode) keeps its high
    # byte, so that 65535 becomes 255 (converting with Pillow would clip everything above
    # 255): as Pillow reads 16-bit colour, and as TensorFlow decodes any 16-bit PNG.
    values = np.clip(np.asarray(image), 0, 65535).astype(np.uint16) >> 8
    return Image.fromarray(values.astype(np.uint8), "L").convert("RGB")


def _to_rgb(image):
    """Converts a Pillow image of any mode to RGB; transparency is composited on white."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    if image.mode == "F":
        values = np.clip(np.asarray(image), 0, 255)
        return Image.fromarray(np.round(values).astype(np.uint8), "L").convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        # A transparent pixel's own colour is arbitrary (often black): show the white
        # a viewer would.
        rgba = np.asarray(image.convert("RGBA"))
        return Image.fromarray(composite_on_white(rgba).numpy(), "RGB")
    return image.convert("RGB")


def composite_on_white(pixels):
    """RGBA over white, in TensorFlow ops: uint8 `(height, width, 4)` -> RGB `(..., 3)`.

    Each colour becomes `(colour * alpha + 255 * (255 - alpha)) / 255`, rounded half up
    in integers (opaque pixels keep their colour exactly). `read_pixels` runs this
    function on transparent images, and so does the exported SavedModel on every PNG.
    """
    import tensorflow as tf

    pixels = tf.cast(pixels, "int32")
    colour, alpha = pixels[..., :3], pixels[..., 3:]
    blended = (colour * alpha + 255 * (255 - alpha) + 127) // 255
    return tf.cast(blended, "uint8")


def _array_to_image(array):
    """A Pillow image of a `(H, W)`, `(H, W, 1)`, `(H, W, 3)` or `(H, W, 4)` pixel array.

    uint8 is taken as is, uint16 as 16-bit (65535 is white), floats as 0-255 values
    (clipped), bool as black and white.
    """
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = np.round(array / 257.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = np.round(np.clip(np.nan_to_num(array), 0, 255)).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array))


def _is_empty_file(path):
    try:
        return os.path.getsize(path) == 0
    except OSError:  # missing or unreadable: Pillow's own error says which
        return False


def _open_file(path):
    with Image.open(path) as image:
        # At full size: no `draft` (a JPEG decoded at a reduced scale in its DCT), so that
        # the pixels are those TensorFlow's decoder gives the exported model.
        image.load()
        # A copy (rotated or not) that outlives the file.
        return ImageOps.exif_transpose(image)


def resize_image(pixels, size):
    """The resize of every image a captioning model sees, in TensorFlow ops.

    Antialiased bilinear (`tf.image.resize`), rounded half to even to uint8. `load_image`
    runs this function, and so does the exported SavedModel (`recipes.export`) after
    decoding: the same pixels reach the model.

    Args:
        pixels: uint8 RGB `(height, width, 3)`, an array or a tensor.
        size: Side of the result in pixels.

    Returns:
        A uint8 tensor `(size, size, 3)`.
    """
    import tensorflow as tf  # imported here: reading captions and files does without it

    resized = tf.image.resize(pixels, [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), "uint8")


def read_pixels(source):
    """An image at full size as a `(height, width, 3)` uint8 RGB array (see `load_image`).

    Raises:
        ImageError: As `load_image`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if isinstance(source, np.ndarray):
                image = _array_to_image(source)
            else:
                image = _open_file(source)
            return np.asarray(_to_rgb(image), dtype=np.uint8)
    except Image.DecompressionBombError as error:
        raise ImageError(
            _describe_source(source),
            f"{error} Raise PIL.Image.MAX_IMAGE_PIXELS to load it.",
        ) from error
    # Pillow's decoders raise many exception types on corrupt data (OSError,
    # SyntaxError, struct.error, ...): all of them mean "this image cannot be used".
    except Exception as error:
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if not isinstance(source, np.ndarray) and _is_empty_file(source):
            reason += " (an empty file: 0 bytes)"  # Pillow only says it cannot identify it
        raise ImageError(_describe_source(source), reason) from error


def load_image(source, size):
    """Loads an image as a `(size, size, 3)` uint8 RGB array.

    The image is rotated/flipped as its EXIF orientation tag says, converted to RGB
    (grey, palette, CMYK and 1-bit images as Pillow does; transparent and
    semi-transparent pixels composited on white; 16-bit images scaled so that 65535 is
    255, keeping the high byte), and resized to `size` x `size` by `resize_image`
    (antialiased bilinear, in TensorFlow ops the exported SavedModel runs too). The
    aspect ratio is not kept, as is usual for captioning (the shared Flickr8k copy is
    already squashed to 224 x 224). Tiny images, down to 1 x 1, are valid images and are
    upscaled like any other (a 1 x 1 image gives a flat colour); they are not skipped.

    Very large images are decoded at full size (as TensorFlow decodes them for the
    exported model) and only then resized. Pillow's decompression-bomb protection is
    kept: an image of more than `2 * PIL.Image.MAX_IMAGE_PIXELS` pixels (about 179
    million by default) raises `ImageError`; raise `PIL.Image.MAX_IMAGE_PIXELS` (or set
    it to None) to accept bigger images. Pillow's warning for images between one and two
    times the limit is silenced: such images are loaded as asked.

    Args:
        source: A file path, or a pixel array (`(H, W)`, `(H, W, 1)`, `(H, W, 3)` or
            `(H, W, 4)`; uint8, uint16 (16-bit), float (0-255) or bool), as datasets
            like `tfds` `coco_captions` give.
        size: Side of the output image in pixels.

    Returns:
        A uint8 array `(size, size, 3)`.

    Raises:
        ImageError: The file is missing, empty, not an image, truncated or corrupt, too
            large, or the array is not an image. The message names the file.
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return resize_image(read_pixels(source), size).numpy()


def load_images(sources, size):
    """Loads many images with `load_image`, skipping (and listing) the ones that fail.

    Args:
        sources: File paths or pixel arrays.
        size: Side of the output images.

    Returns:
        `(images, kept_indices, skipped)`: a uint8 array `(n, size, size, 3)` of the
        images that loaded, their indices in `sources`, and `(path, reason)` for each
        source that did not (arrays are described by their shape and type). Nothing is
        printed: report `skipped` yourself.
    """
    images = np.zeros((len(sources), int(size), int(size), 3), dtype=np.uint8)
    kept_indices, skipped = [], []
    for index, source in enumerate(sources):
        try:
            images[len(kept_indices)] = load_image(source, size)
        except ImageError as error:
            skipped.append((error.path, error.reason))
        else:
            kept_indices.append(index)
    return images[: len(kept_indices)], kept_indices, skipped


def image_key(source):
    """A string that identifies an image's content, for `FeatureCache`.

    A file is identified by its absolute path, size and modification time (so an
    edited file misses the cache); an array by a hash of its pixels.
    """
    if isinstance(source, np.ndarray):
        digest = hashlib.blake2b(np.ascontiguousarray(source).tobytes(), digest_size=16)
        digest.update(repr((source.shape, source.dtype.str)).encode())
        return f"array:{digest.hexdigest()}"
    path = os.path.abspath(os.fspath(source))
    try:
        status = os.stat(path)
    except OSError as error:
        raise ImageError(path, f"{type(error).__name__}: {error}") from error
    return f"file:{path}:{status.st_size}:{status.st_mtime_ns}"


# Caption corpora ---------------------------------------------------------------------------


@dataclasses.dataclass
class CaptionCorpus(SkipCounter):
    """Captions grouped by image and split by image.

    Attributes:
        train, val, test: Lists of `(image, captions)`: `image` is a file path (str)
            or, for datasets that hold images in memory, a uint8 array `(H, W, 3)`;
            `captions` is a list of strings. All captions of an image are in the same
            split.
        skipped: `{reason: count}` of the records (caption lines, annotations,
            images) that were left out.
        skipped_examples: `{reason: [location, ...]}`, the first few
            (`MAX_SKIPPED_EXAMPLES`) locations per reason, such as
            `"captions.token.txt:17"`.
    """

    train: list = dataclasses.field(default_factory=list)
    val: list = dataclasses.field(default_factory=list)
    test: list = dataclasses.field(default_factory=list)
    skipped: dict = dataclasses.field(default_factory=dict)
    skipped_examples: dict = dataclasses.field(default_factory=dict)
    missing_splits: dict = dataclasses.field(default_factory=dict)

    locations_per_reason = MAX_SKIPPED_EXAMPLES  # a class attribute, not a field

    def split(self, name):
        """The records of split `name` (`"train"`, `"val"` or `"test"`).

        Raises:
            DataError: The corpus has fixed splits and not this one (its reason is in
                `missing_splits`), so an empty list would hide a missing file.
        """
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLITS}")
        if name in self.missing_splits:
            raise DataError(f"no {name} split: {self.missing_splits[name]}")
        return getattr(self, name)

    def summary(self):
        """One line per split and per skip reason, for a log."""
        lines = [
            f"{name}: {len(records)} images, "
            f"{sum(len(captions) for _, captions in records)} captions"
            for name, records in zip(SPLITS, (self.train, self.val, self.test), strict=True)
        ]
        for reason, count in sorted(self.skipped.items()):
            examples = ", ".join(self.skipped_examples.get(reason, []))
            lines.append(f"skipped {count} ({reason}), e.g. {examples}")
        return "\n".join(lines)


def _check_fractions(val_fraction, test_fraction):
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            "val_fraction and test_fraction must be non-negative and sum to less than 1; "
            f"got {val_fraction} and {test_fraction}"
        )


def _round_half_up(value):
    return math.floor(value + 0.5)


def _split_by_image(records, corpus, seed, val_fraction, test_fraction, test_images=None):
    """Fills `corpus.train/val/test` from `{image name: (image, captions)}`.

    Without `test_images`, a seeded permutation of the sorted image names gives the
    test images (`test_fraction` of all images, rounded), then the validation images
    (`val_fraction` of all), then the training images. With `test_images`, those are
    the test split and the validation images are drawn from the rest. Each split is
    sorted by image name.
    """
    names = sorted(records)
    if test_images is None:
        permuted = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
        num_test = _round_half_up(test_fraction * len(names))
        test, rest = permuted[:num_test], permuted[num_test:]
    else:
        test = [name for name in names if name in test_images]
        rest = [name for name in names if name not in test_images]
        rest = [rest[i] for i in np.random.default_rng(seed).permutation(len(rest))]
    num_val = _round_half_up(val_fraction * len(names))
    splits = {"test": test, "val": rest[:num_val], "train": rest[num_val:]}
    for split, split_names in splits.items():
        setattr(corpus, split, [records[name] for name in sorted(split_names)])
    return corpus


def _read_lines(path):
    """Yields `(line number, text)` of a UTF-8 text file; undecodable lines give None."""
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield number, None


def _read_split_file(split_file):
    """`{image name: line number}` of a split list (one name per line, blanks ignored)."""
    if not os.path.isfile(split_file):
        raise DataError(f"Split file not found: {split_file}")
    names = {}
    for number, line in _read_lines(split_file):
        if line is not None and line.strip():
            names.setdefault(line.strip(), number)
    return names


def read_flickr8k(
    directory,
    split_file=None,
    seed=0,
    val_fraction=0.1,
    test_fraction=0.1,
    captions_file=FLICKR8K_CAPTIONS,
    image_directory=FLICKR8K_IMAGES,
):
    """Reads a Flickr8k-layout directory: `images/*.jpg` and `captions.token.txt`.

    Each caption line is `IMAGE#N<TAB>caption` (N is the caption number; spaces instead
    of the tab are accepted, as a few lines of the original file have them). Blank lines
    are ignored. These lines are skipped and counted: `"malformed line"` (no
    `IMAGE#N`), `"undecodable line"` (not UTF-8), `"empty caption"`, and
    `"missing image"` (no such file in `images/`).

    The split is by image, so all captions of an image are in one split:
    - when the directory holds any of the official split lists
      (`Flickr_8k.trainImages.txt`, `Flickr_8k.devImages.txt`,
      `Flickr_8k.testImages.txt`, as in the original `Flickr8k_text` download), they
      are the train, val and test splits; a list that is absent makes its split
      missing (`CaptionCorpus.split` raises `DataError` for it, and
      `missing_splits` says why), captioned images in no list are counted as
      `"image in no split file"`, and `seed`, the fractions and `split_file` are not
      used;
    - otherwise, without `split_file`, a seeded permutation of the images:
      `test_fraction` of them are the test split, `val_fraction` the validation
      split, the rest train;
    - with `split_file`, a text file with one image name per line (like Flickr8k's
      `Flickr_8k.testImages.txt`), those images are the test split, `val_fraction` of
      all images are drawn from the others for validation, and `test_fraction` is not
      used.
    Names in a split list with no valid caption are counted as
    `"split file image without captions"`.

    Returns:
        A `CaptionCorpus` whose images are file paths.

    Raises:
        DataError: The directory, caption file, image directory or split file is missing,
            no caption line is usable, or an image is in two official split lists.
    """
    directory = Path(directory)
    official = {
        split: directory / name
        for split, name in FLICKR8K_SPLIT_FILES.items()
        if (directory / name).is_file()
    }
    if not official:
        _check_fractions(val_fraction, 0.0 if split_file else test_fraction)
    captions_path, images_path = directory / captions_file, directory / image_directory
    for path in (directory, captions_path, images_path):
        if not path.exists():
            raise DataError(f"Flickr8k data not found: {path} does not exist")
    # One directory listing instead of a file-system call per caption line.
    image_names = set(os.listdir(images_path))
    corpus = CaptionCorpus()
    records = {}
    for number, line in _read_lines(captions_path):
        location = f"{captions_path.name}:{number}"
        if line is None:
            corpus.skip("undecodable line", location)
            continue
        if not line.strip():
            continue
        match = _FLICKR8K_LINE.fullmatch(line.strip())
        if match is None:
            corpus.skip("malformed line", location)
            continue
        name, caption = match["image"].strip(), (match["caption"] or "").strip()
        if not caption:
            corpus.skip("empty caption", location)
        elif name not in image_names and not (images_path / name).is_file():
            corpus.skip("missing image", location)
        else:
            records.setdefault(name, (str(images_path / name), []))[1].append(caption)
    if not records:
        # Every line that is not blank gives a record or a skip.
        reason = corpus.skipped_summary() if corpus.skipped else "the file has no caption lines"
        raise DataError(f"{captions_path}: no usable captions ({reason})")
    if official:
        return _split_by_lists(records, corpus, official, directory)
    test_images = None
    if split_file is not None:
        listed = _read_split_file(split_file)
        test_images = set(listed)
        _count_uncaptioned(listed, records, corpus, split_file)
    return _split_by_image(records, corpus, seed, val_fraction, test_fraction, test_images)


def _count_uncaptioned(listed, records, corpus, split_file):
    for name, number in listed.items():
        if name not in records:
            corpus.skip("split file image without captions", f"{Path(split_file).name}:{number}")


def _split_by_lists(records, corpus, split_files, directory):
    """Fills `corpus` from `{split: list file}`; each split sorted by image name."""
    owner = {}
    for split, path in split_files.items():
        listed = _read_split_file(path)
        _count_uncaptioned(listed, records, corpus, path)
        for name in listed:
            if name in owner:
                raise DataError(
                    f"{name} is in two split lists: {split_files[owner[name]].name} and {path.name}"
                )
            owner[name] = split
        setattr(corpus, split, [records[name] for name in sorted(listed) if name in records])
    for split in SPLITS:
        if split not in split_files:
            corpus.missing_splits[split] = f"{FLICKR8K_SPLIT_FILES[split]} is not in {directory}"
    for name in sorted(records):
        if name not in owner:
            corpus.skip("image in no split file", name)
    return corpus


def read_coco(captions_json, image_dir, seed=0, val_fraction=0.1, test_fraction=0.1):
    """Reads COCO caption annotations (`captions_train2017.json` and the like).

    The file holds `{"images": [{"id", "file_name", ...}], "annotations":
    [{"image_id", "caption", ...}]}`; image files are `image_dir/file_name`. Skipped and
    counted: `"malformed image entry"` and `"malformed annotation"` (missing fields),
    `"duplicate image id"`, `"unknown image id"`, `"empty caption"`, `"missing image"`
    (one per caption of an image whose file is not there) and `"image without
    captions"`. The split is a seeded split by image, as in `read_flickr8k`.

    Returns:
        A `CaptionCorpus` whose images are file paths.

    Raises:
        DataError: The file or directory is missing, or the file is not COCO JSON.
    """
    _check_fractions(val_fraction, test_fraction)
    captions_json, image_dir = Path(captions_json), Path(image_dir)
    for path in (captions_json, image_dir):
        if not path.exists():
            raise DataError(f"COCO data not found: {path} does not exist")
    try:
        with open(captions_json, encoding="utf-8") as file:
            data = json.load(file)
        images, annotations = data["images"], data["annotations"]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{captions_json} is not COCO caption JSON: {error!r}") from error
    corpus = CaptionCorpus()
    name = captions_json.name
    file_names = {}
    for index, entry in enumerate(images):
        location = f"{name}:images[{index}]"
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            corpus.skip("malformed image entry", location)
        elif entry["id"] in file_names:
            corpus.skip("duplicate image id", location)
        else:
            file_names[entry["id"]] = str(entry["file_name"])
    captions = collections.defaultdict(list)
    for index, annotation in enumerate(annotations):
        location = f"{name}:annotations[{index}]"
        if not isinstance(annotation, dict) or not {"image_id", "caption"} <= annotation.keys():
            corpus.skip("malformed annotation", location)
        elif annotation["image_id"] not in file_names:
            corpus.skip("unknown image id", location)
        elif not str(annotation["caption"]).strip():
            corpus.skip("empty caption", location)
        else:
            captions[annotation["image_id"]].append(str(annotation["caption"]).strip())
    records = {}
    for image_id, file_name in file_names.items():
        location = f"{name}:image id {image_id}"
        if not captions[image_id]:
            corpus.skip("image without captions", location)
        elif not (image_dir / file_name).is_file():
            for _ in captions[image_id]:
                corpus.skip("missing image", location)
        else:
            records[file_name] = (str(image_dir / file_name), captions[image_id])
    return _split_by_image(records, corpus, seed, val_fraction, test_fraction)


def load_tfds_coco_captions(
    data_dir=None, image_size=None, max_images_per_split=None, include_restval=True, download=False
):
    """Loads `tfds` `coco_captions` (COCO 2014 with Karpathy and Li's splits).

    The images come as arrays, not paths: the corpus holds uint8 arrays `(H, W, 3)`
    (`load_image` takes them like files). COCO is big (about 123,000 images, 38 GB to
    download and prepare): `image_size` resizes every image while reading to keep memory
    in check (123,000 images at 224 px are about 18 GB), and `max_images_per_split`
    reads only the first images of each split.

    The splits are tfds's: train (plus restval, the rest of COCO 2014 val, with
    `include_restval`), val and test (5,000 images each). Images without a caption and
    empty captions are skipped and counted.

    Tests run offline under `tfds.testing.mock_data`: it replaces the reading of
    prepared data by random examples with the dataset's features, the same for every
    split. The pip package of tfds ships no metadata files, so the features come from
    the `coco_captions` builder code (`MockPolicy.USE_CODE`, which the default `AUTO`
    falls back to); with `download=False` nothing is fetched.

    Args:
        data_dir: tfds data directory (None: tfds's default, `~/tensorflow_datasets`).
        image_size: Resize images to `image_size` x `image_size` while reading (with
            `load_image`); None keeps them as they are.
        max_images_per_split: Read at most this many images per tfds split.
        include_restval: Add the restval split to train (the usual practice).
        download: Let tfds download and prepare the dataset if it is not there. Off
            by default: it is a 38 GB download.

    Returns:
        A `CaptionCorpus` whose images are arrays.

    Raises:
        DataError: The dataset is not prepared in `data_dir` and `download` is False.
    """
    import tensorflow_datasets as tfds  # A slow import, needed only here.

    tfds_splits = {"train": ["train", "restval"] if include_restval else ["train"]}
    tfds_splits.update(val=["val"], test=["test"])
    corpus = CaptionCorpus()
    for split, names in tfds_splits.items():
        records = []
        for name in names:
            try:
                dataset = tfds.load(
                    "coco_captions", split=name, data_dir=data_dir, download=download
                )
            except (AssertionError, tfds.core.DatasetNotFoundError) as error:
                raise DataError(
                    f"tfds coco_captions is not prepared in {data_dir or 'the tfds data dir'}"
                    f" ({error}); pass download=True to download and prepare it"
                ) from error
            if max_images_per_split is not None:
                dataset = dataset.take(max_images_per_split)
            for example in tfds.as_numpy(dataset):
                location = f"tfds coco_captions/{name}:{example['image/filename'].decode('utf-8')}"
                captions = []
                for text in example["captions"]["text"]:
                    caption = text.decode("utf-8").strip()
                    if caption:
                        captions.append(caption)
                    else:
                        corpus.skip("empty caption", location)
                if not captions:
                    corpus.skip("image without captions", location)
                    continue
                image = example["image"]
                if image_size is not None:
                    image = load_image(image, image_size)
                records.append((image, captions))
        setattr(corpus, split, records)
    return corpus


def load_caption_corpus(data, seed=0, **options):
    """Reads captioned images from a description of where they are.

    Args:
        data: One of
            - `"coco:CAPTIONS.json,IMAGE_DIR"`: COCO caption annotations (`read_coco`);
            - `"tfds:coco_captions"`: the tfds dataset (`load_tfds_coco_captions`; its
              splits are fixed, `seed` is not used);
            - a directory: the Flickr8k layout (`read_flickr8k`).
        seed: Seed of the split by image.
        **options: Passed to the reader (e.g. `val_fraction`, `split_file`,
            `image_size`).

    Returns:
        A `CaptionCorpus`.

    Raises:
        DataError: A path does not exist, or `data` is none of the above.
    """
    data = os.fspath(data)
    if data.startswith("coco:"):
        parts = data[len("coco:") :].split(",")
        if len(parts) != 2:
            raise DataError(f"Expected 'coco:CAPTIONS.json,IMAGE_DIR', got {data!r}")
        for path in parts:
            if not os.path.exists(path):
                raise DataError(f"COCO data not found: {path} does not exist")
        return read_coco(parts[0], parts[1], seed=seed, **options)
    if data.startswith("tfds:"):
        name = data[len("tfds:") :]
        if name != "coco_captions":
            raise DataError(f"Only tfds:coco_captions is supported, got {data!r}")
        return load_tfds_coco_captions(**options)
    if not os.path.exists(data):
        raise DataError(f"Caption data not found: {data} does not exist")
    if not os.path.isdir(data):
        raise DataError(
            f"{data} is not a directory: expected a Flickr8k-layout directory "
            f"('{FLICKR8K_IMAGES}/' and '{FLICKR8K_CAPTIONS}'), 'coco:CAPTIONS.json,IMAGE_DIR' "
            "or 'tfds:coco_captions'"
        )
    return read_flickr8k(data, seed=seed, **options)


# Words -------------------------------------------------------------------------------------


def tokenize_caption(text):
    """Lowercase words of a caption: runs of letters and digits, punctuation dropped.

    An apostrophe splits a word ("don't" gives "don", "t"), so Flickr8k's pre-tokenized
    "man 's" and a plain "man's" give the same words.

    >>> tokenize_caption("A dog's ball, 2 cats & a Café.")
    ['a', 'dog', 's', 'ball', '2', 'cats', 'a', 'café']
    """
    return _WORD.findall(text.lower())


class WordVocabulary:
    """Words and their ids; ids 0-3 are `[PAD]`, `[START]`, `[END]` and `[UNK]`.

    Build it from training captions with `build`; save it with `save` next to a model
    and load it back with `load` (a plain text file, one word per line, line `i` is id
    `i`).

    Example:

    >>> vocabulary = WordVocabulary.build([["a", "dog"], ["a", "cat"]], min_count=2)
    >>> len(vocabulary), vocabulary.encode(["a", "dog"])
    (5, [4, 3])
    >>> vocabulary.decode([1, 4, 3, 2, 0, 0])
    ['a', '[UNK]']
    """

    def __init__(self, words):
        words = list(words)
        if tuple(words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"A vocabulary starts with {SPECIAL_TOKENS}, got {words[:4]}")
        for word in words:
            # The file format is one word per line.
            if not word or word != word.strip() or any(char.isspace() for char in word):
                raise ValueError(f"Words must be non-empty without whitespace, got {word!r}")
        if len(set(words)) != len(words):
            raise ValueError("Words of a vocabulary must be unique")
        self.words = words
        self.ids = {word: index for index, word in enumerate(words)}

    @classmethod
    def build(cls, token_lists, min_count=1, max_size=None):
        """A vocabulary of the words seen at least `min_count` times.

        Words are ordered by decreasing count, then alphabetically, so the same
        captions always give the same ids. `max_size` caps the size, the four special
        tokens included; rarer words are dropped (they encode to `[UNK]`).
        """
        counts = collections.Counter(token for tokens in token_lists for token in tokens)
        kept = [
            word
            for word, count in counts.items()
            if count >= min_count and word not in SPECIAL_TOKENS
        ]
        kept.sort(key=lambda word: (-counts[word], word))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIAL_TOKENS))]
        return cls([*SPECIAL_TOKENS, *kept])

    def __len__(self):
        return len(self.words)

    def encode(self, tokens):
        """Ids of `tokens`; unknown words give `UNKNOWN_ID`. No start or end is added."""
        return [self.ids.get(token, UNKNOWN_ID) for token in tokens]

    def decode_tensor(self, ids):
        """The captions of int ids `(batch, length)` in TensorFlow ops, strings `(batch,)`:
        the words of `decode` joined by single spaces.

        The recipe's captions come from this function, and so do the exported
        SavedModel's (`recipes.export`).
        """
        import tensorflow as tf

        from recipes.data.text import kept_tokens  # the same special ids

        words = tf.gather(tf.constant(self.words), ids)
        kept = kept_tokens(ids)
        after_kept = tf.cumsum(tf.cast(kept, "int32"), axis=1, exclusive=True) > 0
        separators = tf.where(after_kept, " ", "")
        return tf.strings.reduce_join(tf.where(kept, separators + words, ""), axis=1)

    def decode(self, ids):
        """Words of `ids` up to the first end token; padding and start are left out."""
        words = []
        for token_id in ids:
            token_id = int(token_id)
            if token_id == END_ID:
                break
            if token_id not in (PAD_ID, START_ID):
                words.append(self.words[token_id])
        return words

    def encode_targets(self, token_lists, max_words=None):
        """Decoder inputs and targets for `Seq2Seq.fit`.

        Args:
            token_lists: The captions, each a list of words.
            max_words: Longer captions are cut to this many words; None means the
                longest caption's length.

        Returns:
            `(target_in, target_out)`, int32 arrays `(len(token_lists), max_words + 1)`:
            `[START] + ids` and `ids + [END]`, padded with `PAD_ID`.
        """
        if max_words is None:
            max_words = max((len(tokens) for tokens in token_lists), default=0)
        target_in = np.full((len(token_lists), max_words + 1), PAD_ID, dtype=np.int32)
        target_out = np.full_like(target_in, PAD_ID)
        for row, tokens in enumerate(token_lists):
            ids = self.encode(tokens[:max_words])
            target_in[row, : len(ids) + 1] = [START_ID, *ids]
            target_out[row, : len(ids) + 1] = [*ids, END_ID]
        return target_in, target_out

    def save(self, path):
        Path(path).write_text("".join(f"{word}\n" for word in self.words), encoding="utf-8")

    @classmethod
    def load(cls, path):
        if not os.path.isfile(path):
            raise DataError(f"Vocabulary file not found: {path}")
        words = Path(path).read_text(encoding="utf-8").splitlines()
        try:
            return cls(words)
        except ValueError as error:
            raise DataError(f"{path} is not a vocabulary file: {error}") from error


# Feature cache -----------------------------------------------------------------------------


class FeatureCache:
    """Features of a frozen image encoder, computed once per image and kept on disk.

    Each image's features (e.g. the `(H * W, C)` grid of a frozen `ImageGridEncoder`)
    are stored as one float16 `.npy` file under `directory`, named by a hash of
    `(encoder_key, image_size, image key)`; files are spread over 256 subdirectories.
    4,000 Flickr8k images with a 7 x 7 x 256 grid take about 100 MB. A different
    encoder (or weights, or image size) needs a different `encoder_key`: describe
    everything that changes the features in it, e.g. `"mobilenet-0.25-imagenet"`.

    Files are written atomically (a killed run leaves no half-written file), and a file
    that cannot be read is computed again.

    Args:
        directory: Where the files are kept (created if needed).
        encoder_key: A string naming the encoder and its weights.
        image_size: Side of the images the encoder sees (part of the hash).
    """

    def __init__(self, directory, encoder_key, image_size=None):
        self.directory = Path(directory)
        self.encoder_key = str(encoder_key)
        self.image_size = image_size

    def path(self, key):
        """The file that holds the features of the image with key `key`."""
        identity = json.dumps([self.encoder_key, self.image_size, str(key)])
        digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()
        return self.directory / digest[:2] / f"{digest}.npy"

    def _read(self, path):
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None  # Missing or damaged: computed again.

    def _write(self, path, features):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as file:
            np.save(file, features)
        os.replace(temporary, path)

    def get_or_compute(self, keys, images_fn, compute_fn, batch_size=256):
        """Returns the features of the images `keys` name, computing the missing ones.

        Args:
            keys: One string per image (see `image_key`), e.g. its file path.
            images_fn: `images_fn(indices)` returns the images `keys[i]` for the list
                of `indices` (one image per index; drop unreadable images from `keys`
                first, see `load_images`). Called only for images not in the cache.
            compute_fn: `compute_fn(images)` returns their features, an array
                `(len(images), ...)`, e.g. `encoder.predict`.
            batch_size: Missing images are loaded and computed this many at a time.

        Returns:
            A float16 array `(len(keys), ...)`. Features are always returned as stored
            (rounded to float16), so a first and a later call give identical arrays.

        Raises:
            ValueError: `images_fn` or `compute_fn` returned the wrong number of items,
                or features too large for float16.
        """
        paths = [self.path(key) for key in keys]
        features = [self._read(path) for path in paths]
        missing = [index for index, item in enumerate(features) if item is None]
        for start in range(0, len(missing), batch_size):
            indices = missing[start : start + batch_size]
            images = images_fn(indices)
            if len(images) != len(indices):
                raise ValueError(f"images_fn returned {len(images)} images for {len(indices)}")
            computed = np.asarray(compute_fn(images))
            if len(computed) != len(indices):
                raise ValueError(f"compute_fn returned {len(computed)} items for {len(indices)}")
            with np.errstate(over="ignore"):  # Checked just below, with a clearer message.
                stored = computed.astype(np.float16)
            if np.isinf(stored).any() and not np.isinf(computed).any():
                raise ValueError("Features exceed the float16 range (65504); scale them first")
            for index, item in zip(indices, stored, strict=True):
                self._write(paths[index], item)
                features[index] = item
        if not features:
            return np.zeros((0,), dtype=np.float16)
        return np.stack(features)
