"""Caption corpora: captions grouped by image and split by image into train, val and test.

`read_flickr8k`, `read_coco` and `load_tfds_coco_captions` read the three supported
corpora, and `load_caption_corpus` picks one from a `--data` description. Each returns a
`CaptionCorpus` that also counts every record it had to skip, and why. The split is by
image (all captions of an image in one split): Flickr8k's own split lists when the
directory has them, otherwise a seeded permutation or a list of test images.
"""

import collections
import dataclasses
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from recipes.data import SPLITS, DataError
from recipes.data.image_files import load_image
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
# "IMAGE#N<TAB>caption"; the original Flickr8k.token.txt has a few lines with spaces
# instead of the tab, which are accepted too.
_FLICKR8K_LINE = re.compile(r"(?P<image>[^\t#]+)#(?P<number>\d+)(?:[\t ]+(?P<caption>.*))?")


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
