"""SavedModel export of a run, for TensorFlow Serving: raw input in, text out.

    python -m recipes.translate export --run DIR --out DIR
    python -m recipes.caption export --run DIR --out DIR

The SavedModel holds the model's weights and the whole pipeline of the recipe's own
command as TensorFlow ops. Loading needs TensorFlow and TensorFlow Text, whose NFC and
WordPiece ops the text pipeline uses (TensorFlow Serving's stock binary links them), but
no `multiattn`, `recipes` or keras-hub:

    import tensorflow_text  # registers its ops: before loading
    model = tf.saved_model.load(DIR)
    model.signatures["serving_default"](texts=tf.constant(["ninety seven"]))
    # {"translation": <tf.Tensor: shape=(1,), dtype=string>}
    model.signatures["serving_default"](images=tf.constant([png_or_jpeg_bytes]))
    # {"caption": <tf.Tensor: shape=(1,), dtype=string>}

Translation runs the functions `recipes.translate.translate` runs:
`SubwordVocabulary.encode_tensor` (`recipes.data.text.normalize_tensor`, then keras-hub's
`WordPieceTokenizer` layer itself) and `SubwordVocabulary.decode_tensor`; the source ids
cut to `max_tokens`, greedy or beam search with the run's `beam_size` and
`length_penalty` and at most `2 * longest source + 10` tokens (the longest source of the
request, as the recipe takes the longest of its inputs); an input without a word gives
"". Where they differ: the recipe reads Python strings, the SavedModel bytes, whose
invalid UTF-8 becomes U+FFFD.

Captioning does what `recipes.caption.caption` does with `recipes.data.images.load_image`:
JPEG (decoded at 1/2, 1/4 or 1/8 scale exactly as Pillow's `draft` picks), PNG, GIF or
BMP; grey, grey+alpha, RGB and RGBA (transparency composited on white), 16-bit grey
scaled as Pillow does; Pillow's antialiased bilinear resize to the run's `image_size`
(its box reduction of images more than 6 times too big included, two passes each
rounded to 8 bits). Pixels agree with `load_image` to within one level of 255 (Pillow
computes in fixed point), so a near tie between two words may go the other way. Not
done: EXIF orientation (a rotated photo is captioned as stored), GIF transparency; CMYK
JPEGs are converted as TensorFlow does, and 16-bit colour PNGs are rounded where Pillow
truncates. An image TensorFlow cannot decode fails the request, where the recipe skips
it.
"""

import os
import sys

import tensorflow as tf

from recipes import cli
from recipes.data.text import kept_tokens


# -- commands ------------------------------------------------------------------------------
def export_translation(
    out, model, source_vocabulary, target_vocabulary, max_tokens, beam_size, length_penalty
):
    """Writes a SavedModel of a translation model to `out` (checked by `check_output`).

    The recipe loads its run and hands over what the served pipeline needs: the model,
    its two `SubwordVocabulary`s and the settings of `recipes.translate.translate`.
    Returns `out`.
    """

    def translate_texts(texts):
        source = source_vocabulary.encode_tensor(texts)[:, :max_tokens]
        lengths = source.row_lengths()
        non_empty = lengths > 0
        source = tf.ragged.boolean_mask(source, non_empty)

        def search():
            # The recipe's limit, `translate.output_length`, from this request's sources.
            limit = tf.cast(tf.reduce_max(lengths) * 2 + 10, "int32")
            tokens = search_tokens(model, source.to_tensor(), limit, beam_size, length_penalty)
            return target_vocabulary.decode_tensor(tokens)

        # Texts without a word are not searched (as in the recipe): they give "".
        found = tf.cond(tf.reduce_any(non_empty), search, lambda: tf.zeros([0], "string"))
        places = tf.cumsum(tf.cast(non_empty, "int32")) - 1
        translations = tf.where(non_empty, tf.gather(tf.concat([found, [""]], 0), places), "")
        return {"translation": translations}

    archive = _archive(model, [])
    archive.add_endpoint(
        "serve", translate_texts, input_signature=[tf.TensorSpec([None], tf.string, "texts")]
    )
    return _write(archive, out)


def export_captioning(
    out, model, vocabulary, image_size, max_caption_length, beam_size, length_penalty
):
    """Writes a SavedModel of a captioning model to `out` (checked by `check_output`).

    The recipe loads its run and hands over the model, its `WordVocabulary` and the
    settings of `recipes.caption.caption`. Returns `out`.
    """
    size = image_size

    def caption_images(images):
        def search():
            pixels = tf.map_fn(
                lambda data: decode_image(data, size),
                images,
                fn_output_signature=tf.TensorSpec([size, size, 3], "float32"),
            )
            tokens = search_tokens(model, pixels, max_caption_length + 1, beam_size, length_penalty)
            return join_words(tokens, vocabulary.words)

        # The model cannot take an empty batch.
        captions = tf.cond(tf.size(images) > 0, search, lambda: tf.zeros([0], "string"))
        return {"caption": captions}

    archive = _archive(model, [])
    archive.add_endpoint(
        "serve", caption_images, input_signature=[tf.TensorSpec([None], tf.string, "images")]
    )
    return _write(archive, out)


def check_output(out):
    """Checks that `out` can take a SavedModel: a new directory or an empty one."""
    if out is None:
        raise cli.UsageError("--out DIR is required (where to write the SavedModel)")
    if os.path.exists(out) and not os.path.isdir(out):
        raise cli.UsageError(f"--out: {out} exists and is not a directory")
    if os.path.isdir(out) and os.listdir(out):
        raise cli.UsageError(f"--out: {out} exists and is not empty (give a new directory)")
    existing = os.path.abspath(out)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise cli.UsageError(f"--out: cannot write to {out} ({existing} is not writable)")


def _archive(model, tables):
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    for table in tables:
        archive.track(table)
    return archive


def _write(archive, out):
    archive.write_out(out, verbose=False)
    print(f"SavedModel: {out}")
    sys.stdout.flush()
    return out


# -- search --------------------------------------------------------------------------------
def search_tokens(model, source, max_length, beam_size, length_penalty=0.0):
    """Tokens of the best hypothesis `(batch, max_length)`, as the recipes search."""
    from multiattn import BeamSearch, GreedySearch

    if beam_size <= 1:
        return model.search(source, GreedySearch(), max_length)["tokens"]
    search = BeamSearch(beam_size=beam_size, length_penalty=length_penalty)
    return model.search(source, search, max_length)["tokens"][:, 0]


# -- text ----------------------------------------------------------------------------------
def join_words(tokens, words):
    """`" ".join(WordVocabulary.decode(ids))` in TensorFlow ops, for a batch."""
    strings = tf.gather(tf.constant(words), tokens)
    kept = kept_tokens(tokens)
    after_kept = tf.cumsum(tf.cast(kept, "int32"), axis=1, exclusive=True) > 0
    separator = tf.where(after_kept, " ", "")
    return tf.strings.reduce_join(tf.where(kept, separator + strings, ""), axis=1)


# -- images --------------------------------------------------------------------------------
def decode_image(data, size):
    """`load_image(path, size)` in TensorFlow ops: encoded bytes -> float32 `(size, size, 3)`.

    Values are 0-255 integers, as the recipe's uint8 pixels cast to float32.
    """
    png = tf.equal(tf.strings.substr(data, 0, 8), b"\x89PNG\r\n\x1a\n")
    image = tf.case(
        [
            (tf.io.is_jpeg(data), lambda: _decode_jpeg(data, size)),
            # 16 bits, so that 16-bit grey scales as Pillow's (65535 is 255).
            (
                png,
                lambda: tf.floor(
                    tf.cast(tf.io.decode_png(data, dtype="uint16"), "float32") / 257 + 0.5
                ),
            ),
        ],
        default=lambda: tf.cast(tf.io.decode_image(data, expand_animations=False), "float32"),
        exclusive=True,
    )
    image = _to_rgb(image)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    # Pillow first box-reduces by the integer factor `int(side / size / 3)` (if above 1).
    factor_y = tf.maximum(height // (3 * size), 1)
    factor_x = tf.maximum(width // (3 * size), 1)
    image = _reduce(image, factor_y, factor_x)
    # ... then resamples the box (0, 0, width / factor, height / factor) of the result.
    image = _resample(image, 1, width, factor_x, size)
    image = _resample(image, 0, height, factor_y, size)
    return image


def _decode_jpeg(data, size):
    # Pillow's `draft`: the largest of 8, 4, 2 and 1 that keeps both sides >= size.
    shape = tf.io.extract_jpeg_shape(data)
    scale = tf.minimum(shape[0] // size, shape[1] // size)
    branch = tf.reduce_sum(tf.cast(scale >= tf.constant([2, 4, 8]), "int32"))
    image = tf.switch_case(
        branch,
        [
            lambda ratio=ratio: tf.io.decode_jpeg(
                data, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE"
            )
            for ratio in (1, 2, 4, 8)
        ],
    )
    return tf.cast(image, "float32")


def _to_rgb(image):
    """Grey, grey+alpha, RGB or RGBA 0-255 floats -> RGB, transparency on white."""
    channels = tf.shape(image)[-1]
    colour = tf.cond(
        channels >= 3, lambda: image[..., :3], lambda: tf.tile(image[..., :1], [1, 1, 3])
    )
    has_alpha = tf.equal(channels % 2, 0)
    alpha = tf.where(has_alpha, image[..., -1:], 255.0)
    # Pillow's `alpha_composite` over white, rounded half up to 8 bits.
    blended = (colour * alpha + 255.0 * (255.0 - alpha)) / 255.0
    return tf.floor(blended + 0.5)


def _reduce(image, factor_y, factor_x):
    """Pillow's `reduce`: the mean of each factor x factor block (fewer at the edges)."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    padded_height = -(-height // factor_y) * factor_y
    padded_width = -(-width // factor_x) * factor_x
    padding = [[0, padded_height - height], [0, padded_width - width], [0, 0]]

    def block_sums(values):
        values = tf.pad(values, padding)
        values = tf.reshape(
            values, [padded_height // factor_y, factor_y, padded_width // factor_x, factor_x, -1]
        )
        return tf.reduce_sum(values, axis=[1, 3])

    sums = block_sums(image)
    counts = block_sums(tf.ones_like(image[..., :1]))
    return tf.floor(sums / counts + 0.5)


def _resample(image, axis, original, factor, size):
    """One antialiased bilinear pass of Pillow along `axis`, rounded to 8 bits.

    The source box spans `original / factor` pixels of `image` (less than its size
    after a reduction with a partial last block).
    """
    span = tf.cast(original, "float32") / tf.cast(factor, "float32")
    scale = tf.where(tf.range(2) == axis, tf.cast(size, "float32") / span, tf.ones([2], "float32"))
    shape = tf.shape(image)[:2]
    output_shape = tf.where(tf.range(2) == axis, size, shape)
    resized = tf.raw_ops.ScaleAndTranslate(
        images=image[None],
        size=output_shape,
        scale=scale,
        translation=tf.zeros([2]),
        kernel_type="triangle",
        antialias=True,
    )[0]
    return tf.clip_by_value(tf.floor(resized + 0.5), 0.0, 255.0)
