"""Image files to pixels: loading, decoding and resizing, with `ImageError` for failures.

`load_image` / `load_images` turn any image file Pillow reads (or an array) into a
square uint8 RGB array, with EXIF orientation applied and odd modes converted properly
(`read_pixels`, transparency composited on white by `composite_on_white`), resized by
`resize_image` (TensorFlow ops that the exported SavedModel runs too); unreadable files
raise `ImageError` (or are listed as skipped, never silently). `image_key` names an
image for the feature cache, and `PIXELS_VERSION` is the version of the pixels.
"""

import hashlib
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

# Part of the feature cache's keys (`recipes.caption.grid_features`): the version of the
# pixels `load_image` gives, so that features of older pixels are not reused.
PIXELS_VERSION = "tf-resize-1"
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageError(ValueError):
    """An image that cannot be loaded; `path` and `reason` say which and why."""

    def __init__(self, path, reason):
        super().__init__(f"Cannot load image {path}: {reason}")
        self.path = path
        self.reason = reason


def _describe_source(source):
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    if _is_file_object(source):  # an upload held in memory: its name if it has one
        return str(getattr(source, "name", None) or "<file object>")
    return os.fspath(source)


def _is_file_object(source):
    return hasattr(source, "read") and hasattr(source, "seek")


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
        if _is_file_object(path):
            path.seek(0, os.SEEK_END)
            return path.tell() == 0
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
        source: A file path, a binary file object (e.g. `io.BytesIO` of an upload),
            or a pixel array (`(H, W)`, `(H, W, 1)`, `(H, W, 3)` or
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
