"""`FeatureCache`: features of a frozen image encoder, computed once and kept on disk."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np


class FeatureCache:
    """Features of a frozen image encoder, computed once per image and kept on disk.

    Each image's features (e.g. the `(H * W, C)` grid of a frozen `ImageGridEncoder`)
    are stored as one float16 `.npy` file under `directory`, named by a hash of
    `(encoder_key, image_size, image key)`; files are spread over 256 subdirectories.
    float16 halves float32's disk and memory: a file holds a 128-byte header and 2
    bytes per value, 125.6 kB for a 7 x 7 x 1280 grid (MobileNetV2's last layer at
    224 px), 225.9 kB for 14 x 14 x 576 (its `block_13_expand_relu`): 126 and 226 MB
    per thousand images, on disk and (without the header) in memory. A file stored in
    another float type (float32) is read as float16 and written again so. A different
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
            features = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None  # Missing or damaged: computed again.
        if features.dtype != np.float16:  # a float32 cache: kept, at half the size
            converted = self._to_float16(features)
            if converted is None:
                return None  # beyond float16: computed again, and refused with the reason
            self._write(path, converted)
            return converted
        return features

    @staticmethod
    def _to_float16(features):
        """`features` in float16, or None when a finite value is beyond its range."""
        with np.errstate(over="ignore"):
            stored = features.astype(np.float16)
        if np.isinf(stored).any() and not np.isinf(features).any():
            return None
        return stored

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
            stored = self._to_float16(computed)
            if stored is None:
                raise ValueError("Features exceed the float16 range (65504); scale them first")
            for index, item in zip(indices, stored, strict=True):
                self._write(paths[index], item)
                features[index] = item
        if not features:
            return np.zeros((0,), dtype=np.float16)
        return np.stack(features)
