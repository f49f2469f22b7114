"""SavedModel export of a trained model, for TensorFlow Serving: raw input in, text out.

    python -m recipes.translate export --run DIR --out DIR
    python -m recipes.caption export --run DIR --out DIR

The recipe loads its run and hands this module the model, its vocabularies and its
settings; this module does not import the recipes. The SavedModel holds the model's
weights and the recipe's pipeline as TensorFlow ops, built from the very functions the
recipe runs in Python, so the two give the same output by construction:

- text: `SubwordVocabulary.encode_tensor` (`recipes.data.subword_vocabulary`'s
  `normalize_tensor`: NFC, whitespace, lowercasing; then keras-hub's
  `WordPieceTokenizer` layer itself) and `SubwordVocabulary.decode_tensor`;
- images: `recipes.data.image_files.composite_on_white` and `resize_image` after
  decoding, and `WordVocabulary.decode_tensor`;
- search: `Seq2Seq.search` (which the recipe's `Seq2Seq.generate` runs too) with the
  run's greedy or beam settings. Not the same computation, though: the recipe searches
  in batches (64 texts, 32 images; with XLA if the run was compiled with it), the
  SavedModel a request at once, so float rounding may differ and a near tie between two
  words go the other way (not seen in the tests).

Loading needs TensorFlow and TensorFlow Text, whose NFC and WordPiece ops the text
pipeline uses (`NormalizeUTF8`, `FastWordpieceTokenizeWithOffsets`; TensorFlow Serving's
binary links TensorFlow Text's ops, those of its own release), but no `multiattn`,
`recipes` or keras-hub:

    import tensorflow_text  # registers its ops: before loading
    model = tf.saved_model.load(DIR)
    model.signatures["serving_default"](texts=tf.constant(["ninety seven"]))
    # {"translation": <tf.Tensor: shape=(1,), dtype=string>}
    model.signatures["serving_default"](images=tf.constant([png_or_jpeg_bytes]))
    # {"caption": <tf.Tensor: shape=(1,), dtype=string>}

Translation is `recipes.translate.translate`: the source ids cut to `max_tokens`, the
run's `beam_size` and `length_penalty`, at most `2 * longest source + 10` tokens (the
longest source of the request, as the recipe takes the longest of its inputs); an input
without a word gives "". Where they differ: the recipe reads Python strings, the
SavedModel bytes, whose invalid UTF-8 becomes U+FFFD.

Captioning is `recipes.caption.caption` with `recipes.data.image_files.load_image`: the
recipe decodes a file with Pillow, the SavedModel with TensorFlow (JPEG with the same
libjpeg-turbo and its accurate integer DCT, PNG, GIF, BMP), and both resize with
`resize_image`, transparency composited on white with `composite_on_white`. The pixels
are the same for JPEG (RGB, grey, CMYK), PNG (RGB, grey, palette, 16 bits, with or
without transparency), opaque GIF and BMP. Where they differ: EXIF orientation (the
recipe turns the photo upright, the SavedModel takes it as stored) and transparent GIFs
(TensorFlow gives them no alpha). An image TensorFlow cannot decode fails the request,
where the recipe skips it.
"""

import os
import sys

import tensorflow as tf

from recipes import cli
from recipes.data.image_files import composite_on_white, resize_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- commands ------------------------------------------------------------------------------
def export_translation(
    out, model, source_vocabulary, target_vocabulary, max_tokens, beam_size, length_penalty
):
    """Writes a SavedModel of a translation model to `out` (checked by `check_output`).

    Args:
        out: The new directory.
        model: The `Seq2Seq` model of the run.
        source_vocabulary, target_vocabulary: Its `SubwordVocabulary`s.
        max_tokens, beam_size, length_penalty: The run's settings, as
            `recipes.translate.translate` uses them.

    Returns:
        `out`.
    """

    def translate_texts(texts):
        source = source_vocabulary.encode_tensor(texts)[:, :max_tokens]
        lengths = source.row_lengths()
        non_empty = lengths > 0
        source = tf.ragged.boolean_mask(source, non_empty)

        def search():
            # The recipe's limit, `translate.output_length`, from this request's sources.
            limit = tf.cast(cli.length_bucket(tf.reduce_max(lengths) * 2 + 10), "int32")
            tokens = search_tokens(model, source.to_tensor(), limit, beam_size, length_penalty)
            return target_vocabulary.decode_tensor(tokens)

        # Texts without a word are not searched (as in the recipe): they give "".
        found = tf.cond(tf.reduce_any(non_empty), search, lambda: tf.zeros([0], "string"))
        places = tf.cumsum(tf.cast(non_empty, "int32")) - 1
        translations = tf.where(non_empty, tf.gather(tf.concat([found, [""]], 0), places), "")
        return {"translation": translations}

    archive = _archive(model)
    archive.add_endpoint(
        "serve", translate_texts, input_signature=[tf.TensorSpec([None], tf.string, "texts")]
    )
    return _write(archive, out)


def export_captioning(
    out, model, vocabulary, image_size, max_caption_length, beam_size, length_penalty
):
    """Writes a SavedModel of a captioning model to `out` (checked by `check_output`).

    Args:
        out: The new directory.
        model: The `Seq2Seq` model of the run, with its image encoder.
        vocabulary: Its `WordVocabulary`.
        image_size, max_caption_length, beam_size, length_penalty: The run's settings,
            as `recipes.caption.caption` uses them.

    Returns:
        `out`.
    """

    def caption_images(images):
        def search():
            pixels = tf.map_fn(
                lambda data: tf.cast(decode_image(data, image_size), "float32"),
                images,
                fn_output_signature=tf.TensorSpec([image_size, image_size, 3], "float32"),
            )
            tokens = search_tokens(model, pixels, max_caption_length + 1, beam_size, length_penalty)
            return vocabulary.decode_tensor(tokens)

        # The model cannot take an empty batch.
        captions = tf.cond(tf.size(images) > 0, search, lambda: tf.zeros([0], "string"))
        return {"caption": captions}

    archive = _archive(model)
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


def _archive(model):
    import keras

    # The tokenizer needs no tracking: its WordPiece model is a constant of the graph.
    archive = keras.export.ExportArchive()
    archive.track(model)
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
        return model.search(source, GreedySearch(), max_length, return_attention=False)["tokens"]
    search = BeamSearch(beam_size=beam_size, length_penalty=length_penalty)
    return model.search(source, search, max_length, return_attention=False)["tokens"][:, 0]


# -- images --------------------------------------------------------------------------------
def decode_pixels(data):
    """Encoded image bytes -> uint8 RGB `(height, width, 3)`, as `read_pixels` decodes.

    JPEG with libjpeg-turbo's accurate integer DCT, as Pillow decodes (TensorFlow's
    default, a faster DCT, is several levels off); PNG as RGBA (its alpha channel or
    transparent colour, as Pillow reads it) composited on white by `composite_on_white`,
    as `read_pixels` does; anything else with `decode_image`.
    """
    image = tf.case(
        [
            (
                tf.io.is_jpeg(data),
                lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
            ),
            (
                tf.strings.substr(data, 0, len(PNG_SIGNATURE)) == PNG_SIGNATURE,
                lambda: composite_on_white(tf.io.decode_png(data, channels=4)),
            ),
        ],
        default=lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
        exclusive=True,
    )
    return tf.ensure_shape(image, [None, None, 3])


def decode_image(data, size):
    """Encoded image bytes -> the uint8 `(size, size, 3)` pixels `load_image` gives."""
    return resize_image(decode_pixels(data), size)
