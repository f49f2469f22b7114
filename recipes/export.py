"""SavedModel export of a run, for TensorFlow Serving: raw input in, text out.

    python -m recipes.translate export --run DIR --out DIR
    python -m recipes.caption export --run DIR --out DIR

The SavedModel holds the model's weights and the whole pipeline of the recipe's own
command as core TensorFlow ops, so it loads with TensorFlow alone (no Keras, no
`multiattn`, no `recipes`, no TensorFlow Text: TensorFlow Serving's stock binary runs it):

    model = tf.saved_model.load(DIR)
    model.signatures["serving_default"](texts=tf.constant(["ninety seven"]))
    # {"translation": <tf.Tensor: shape=(1,), dtype=string>}
    model.signatures["serving_default"](images=tf.constant([png_or_jpeg_bytes]))
    # {"caption": <tf.Tensor: shape=(1,), dtype=string>}

Translation does what `recipes.translate.translate` does: Unicode NFC, whitespace runs
to one space, lowercasing if the run's vocabulary lowercases, WordPiece with the run's
source vocabulary, truncation to `max_tokens`, greedy or beam search with the run's
`beam_size` and `length_penalty` and at most `2 * longest source + 10` tokens (the
longest source of the request, as the recipe takes the longest of its inputs), the
target vocabulary's detokenization; an input without a word gives "". Known
differences: lowercasing is TensorFlow's (ICU), whose Unicode version lags Python's (41
recent characters, e.g. U+2C2F, are lowercased by Python only); invalid UTF-8 becomes
U+FFFD.

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
import unicodedata

import tensorflow as tf

from recipes import cli
from recipes.data.text import END_ID, PAD_ID, START_ID, UNKNOWN_ID  # as in data/images.py

# Characters Python's `str.split()` splits on; all are below U+3001.
WHITESPACE = "".join(chr(code) for code in range(0x3001) if chr(code).isspace())
UNICODE_SIZE = 0x110000
# `keras_hub`'s WordPiece (`tf_text.FastWordpieceTokenizer`) maps longer words to [UNK].
MAX_BYTES_PER_WORD = 100
SUFFIX = "##"


# -- commands ------------------------------------------------------------------------------
def export_translation(
    out, model, source_vocabulary, target_vocabulary, max_tokens, beam_size, length_penalty
):
    """Writes a SavedModel of a translation model to `out` (checked by `check_output`).

    The recipe loads its run and hands over what the served pipeline needs: the model,
    its two `SubwordVocabulary`s and the settings of `recipes.translate.translate`.
    Returns `out`.
    """
    normalizer = TextNormalizer(lowercase=source_vocabulary.lowercase)
    encoder = WordPieceEncoder(source_vocabulary.token_list)

    def translate_texts(texts):
        words = tf.strings.split(normalizer(texts))
        source = encoder(words)[:, :max_tokens]
        lengths = source.row_lengths()
        non_empty = lengths > 0
        source = tf.ragged.boolean_mask(source, non_empty)

        def search():
            # The recipe's limit, `translate.output_length`, from this request's sources.
            limit = tf.cast(tf.reduce_max(lengths) * 2 + 10, "int32")
            tokens = search_tokens(model, source.to_tensor(), limit, beam_size, length_penalty)
            return detokenize_word_pieces(tokens, target_vocabulary.token_list)

        # Texts without a word are not searched (as in the recipe): they give "".
        found = tf.cond(tf.reduce_any(non_empty), search, lambda: tf.zeros([0], "string"))
        places = tf.cumsum(tf.cast(non_empty, "int32")) - 1
        translations = tf.where(non_empty, tf.gather(tf.concat([found, [""]], 0), places), "")
        return {"translation": translations}

    archive = _archive(model, [*normalizer.tables, encoder.table])
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
class TextNormalizer:
    """`SubwordVocabulary.normalize` in core TensorFlow ops: NFC, spaces, lowercasing.

    Unicode NFC is the standard algorithm on code points: full canonical decomposition,
    canonical reordering of combining marks, canonical composition, with Python's
    `unicodedata` tables (its Unicode version, so the result is Python's). Then every
    run of the characters `str.split` splits on becomes one space, the ends are
    stripped, and the text is lowercased if asked.

    Call: a 1-D string tensor (UTF-8; invalid bytes become U+FFFD) -> the normalised
    strings.
    """

    def __init__(self, lowercase=False):
        self.lowercase = lowercase
        starts, lengths, values, combining = [], [], [], {}
        decomposed_codes = []
        for code in range(UNICODE_SIZE):
            character = chr(code)
            if unicodedata.combining(character):
                combining[code] = unicodedata.combining(character)
            decomposition = unicodedata.normalize("NFD", character)
            if decomposition != character:
                decomposed_codes.append(code)
                starts.append(len(values))
                lengths.append(len(decomposition))
                values.extend(ord(part) for part in decomposition)
        self.decomposition_values = tf.constant(values, "int32")
        self.decomposition_starts = tf.constant(starts, "int32")
        self.decomposition_lengths = tf.constant(lengths, "int32")
        self.decomposition_table = _int_table(decomposed_codes, range(len(decomposed_codes)))
        self.combining_table = _int_table(list(combining), list(combining.values()), default=0)
        pairs = _composition_pairs()
        self.composition_table = _int_table(
            [first * UNICODE_SIZE + second for first, second in pairs], list(pairs.values())
        )
        escaped = "".join(f"\\x{{{ord(character):x}}}" for character in WHITESPACE)
        self.whitespace_pattern = f"[{escaped}]+"

    @property
    def tables(self):
        return [self.decomposition_table, self.combining_table, self.composition_table]

    def __call__(self, texts):
        codes = tf.strings.unicode_decode(texts, "UTF-8", errors="replace")
        codes = self.compose(self.reorder(self.decompose(codes)))
        texts = tf.strings.unicode_encode(codes, "UTF-8")
        texts = tf.strings.regex_replace(texts, self.whitespace_pattern, " ")
        texts = tf.strings.strip(texts)
        if self.lowercase:
            texts = _lower(texts)
        return texts

    def decompose(self, codes):
        """Full canonical decomposition of every code point (ragged `(batch, None)`)."""
        flat = codes.flat_values
        index = self.decomposition_table.lookup(tf.cast(flat, "int64"))
        decomposed = index >= 0
        index = tf.cast(tf.maximum(index, 0), "int32")
        # A code point without a decomposition reads itself, from after the table.
        table_size = tf.size(self.decomposition_values)
        positions = tf.range(tf.size(flat), dtype="int32")
        starts = tf.where(
            decomposed, tf.gather(self.decomposition_starts, index), table_size + positions
        )
        lengths = tf.where(decomposed, tf.gather(self.decomposition_lengths, index), 1)
        sources = tf.ragged.range(starts, starts + lengths).flat_values
        values = tf.gather(tf.concat([self.decomposition_values, flat], 0), sources)
        per_text = tf.reduce_sum(codes.with_flat_values(lengths), axis=1)
        return tf.RaggedTensor.from_row_lengths(values, tf.cast(per_text, "int64"))

    def reorder(self, codes):
        """Canonical ordering: each run of combining marks sorted by combining class."""
        flat = codes.flat_values
        classes = self.combining_table.lookup(tf.cast(flat, "int64"))
        positions = tf.range(tf.size(flat, out_type=tf.int64))
        text_starts = positions == tf.gather(codes.row_starts(), codes.value_rowids())
        run_starts = (classes == 0) | text_starts
        runs = tf.cumsum(tf.cast(run_starts, "int64"))
        order = tf.argsort(runs * 256 + classes, stable=True)
        return codes.with_flat_values(tf.gather(flat, order))

    def compose(self, codes):
        """Canonical composition (the standard algorithm: a mark composes with the last
        starter unless a kept mark of the same or a higher class, or any kept
        character when the mark is itself a starter, stands between them)."""
        dense = codes.to_tensor(-1)
        classes = tf.cast(self.combining_table.lookup(tf.cast(dense, "int64")), "int32")
        lengths = tf.cast(codes.row_lengths(), "int32")
        batch, width = tf.shape(dense)[0], tf.shape(dense)[1]
        rows = tf.range(batch)

        def body(column, output, output_lengths, starter, last_class):
            code, code_class = dense[:, column], classes[:, column]
            valid = column < lengths
            starter_code = tf.gather_nd(output, tf.stack([rows, tf.maximum(starter, 0)], 1))
            key = tf.cast(starter_code, "int64") * UNICODE_SIZE + tf.cast(code, "int64")
            composite = tf.cast(self.composition_table.lookup(key), "int32")
            # `last_class` is -1 when nothing was kept after the starter.
            composes = valid & (starter >= 0) & (last_class < code_class) & (composite >= 0)
            appends = valid & ~composes
            position = tf.where(composes, starter, output_lengths)
            value = tf.where(composes, composite, code)
            output = tf.tensor_scatter_nd_update(
                output,
                tf.stack([rows, position], 1),
                tf.where(valid, value, tf.gather_nd(output, tf.stack([rows, position], 1))),
            )
            is_starter = appends & (code_class == 0)
            starter = tf.where(is_starter, output_lengths, starter)
            last_class = tf.where(appends, tf.where(is_starter, -1, code_class), last_class)
            output_lengths += tf.cast(appends, "int32")
            return column + 1, output, output_lengths, starter, last_class

        _, output, output_lengths, _, _ = tf.while_loop(
            lambda column, *_: column < width,
            body,
            (
                tf.constant(0),
                tf.zeros([batch, width + 1], "int32"),  # + 1: room for invalid rows' writes
                tf.zeros([batch], "int32"),
                -tf.ones([batch], "int32"),
                -tf.ones([batch], "int32"),
            ),
        )
        return tf.RaggedTensor.from_tensor(output, lengths=output_lengths)


def _composition_pairs():
    """`{(first, second): composite}` of the canonical compositions NFC makes."""
    pairs = {}
    for code in range(UNICODE_SIZE):
        character = chr(code)
        if unicodedata.normalize("NFC", character) != character:
            continue  # excluded from composition, or a singleton
        decomposition = unicodedata.decomposition(character).split()
        if len(decomposition) == 2 and not decomposition[0].startswith("<"):
            pairs[int(decomposition[0], 16), int(decomposition[1], 16)] = code
    # Hangul syllables compose algorithmically: L + V -> LV, LV + T -> LVT.
    for code in range(0xAC00, 0xAC00 + 11172):
        index = code - 0xAC00
        if index % 28:
            pairs[code - index % 28, 0x11A7 + index % 28] = code
        else:
            pairs[0x1100 + index // 588, 0x1161 + index % 588 // 28] = code
    return pairs


def _int_table(keys, values, default=-1):
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(keys), "int64"), tf.constant(list(values), "int64")
        ),
        default_value=default,
    )


def _lower(texts):
    # `tf.strings.lower` ends a string at its first NUL: lowercase the parts between.
    # (A NUL separator of `reduce_join` is lost on ragged input: the NULs are values here.)
    parts = tf.strings.split(texts, "\x00")
    positions = tf.range(tf.size(parts.flat_values, out_type=tf.int64))
    last = positions + 1 == tf.gather(parts.row_limits(), parts.value_rowids())
    lowered = tf.strings.lower(parts.flat_values, encoding="utf-8") + tf.where(last, "", "\x00")
    return tf.strings.reduce_join(parts.with_flat_values(lowered), axis=-1)


class WordPieceEncoder:
    """The WordPiece of `SubwordVocabulary.encode` in core TensorFlow ops.

    Greedy longest match first, as `keras_hub`'s `WordPieceTokenizer`: the longest
    vocabulary token that starts the word, then the longest `##` token that starts the
    rest, and so on; a word with a part no token matches, or longer than 100 bytes, is
    `[UNK]` as a whole.

    Call: ragged words `(batch, None)` -> ragged int ids `(batch, None)`.
    """

    def __init__(self, tokens):
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(tokens)), tf.range(len(tokens), dtype="int64")
            ),
            default_value=-1,
        )
        # No piece is longer than the longest token: the only lengths worth looking up.
        self.longest = max(len(token.removeprefix(SUFFIX)) for token in tokens)

    def __call__(self, words):
        pieces = self.encode_words(words.flat_values)
        return tf.RaggedTensor.from_row_splits(pieces, words.row_splits).merge_dims(1, 2)

    def encode_words(self, words):
        """Ids of each word of a 1-D string tensor: ragged `(words, None)`."""
        lengths = tf.strings.length(words, unit="UTF8_CHAR")
        too_long = tf.strings.length(words) > MAX_BYTES_PER_WORD
        count = tf.size(words)
        width = tf.reduce_max(tf.concat([tf.where(too_long, 0, lengths), [0]], 0))
        candidates = tf.range(tf.minimum(width, self.longest), 0, -1)  # longest first

        def body(step, start, done, unknown, pieces):
            # The words still being cut, each with every candidate piece length.
            rows = tf.cast(tf.where(~done)[:, 0], "int32")
            word_starts = tf.gather(start, rows)
            shape = [tf.size(rows), tf.size(candidates)]
            piece_lengths = tf.broadcast_to(candidates[None, :], shape)
            substrings = tf.strings.substr(
                tf.broadcast_to(tf.gather(words, rows)[:, None], shape),
                tf.broadcast_to(word_starts[:, None], shape),
                piece_lengths,
                unit="UTF8_CHAR",
            )
            substrings = tf.where(word_starts[:, None] > 0, SUFFIX + substrings, substrings)
            ids = tf.cast(self.table.lookup(substrings), "int32")
            fits = piece_lengths <= (tf.gather(lengths, rows) - word_starts)[:, None]
            matches = fits & (ids >= 0)
            found = tf.reduce_any(matches, axis=1)
            choice = tf.argmax(tf.cast(matches, "int32"), axis=1, output_type="int32")
            pieces = tf.tensor_scatter_nd_update(
                pieces,
                tf.stack([rows, tf.fill(tf.shape(rows), step)], 1),
                tf.where(found, tf.gather(ids, choice, batch_dims=1), -1),
            )
            advance = tf.where(found, tf.gather(candidates, choice), 0)
            start = tf.tensor_scatter_nd_add(start, rows[:, None], advance)
            unknown = tf.tensor_scatter_nd_update(unknown, rows[:, None], ~found)
            return step + 1, start, unknown | (start >= lengths), unknown, pieces

        _, _, _, unknown, pieces = tf.while_loop(
            lambda step, start, done, *_: tf.reduce_any(~done),
            body,
            (
                tf.constant(0),
                tf.zeros([count], "int32"),
                too_long | (lengths == 0),
                too_long,
                -tf.ones([count, width], "int32"),
            ),
        )
        # One more column: all words may be over-long, leaving `width` 0.
        pieces = tf.concat([pieces, -tf.ones([count, 1], "int32")], 1)
        first_column = tf.range(width + 1)[None, :] == 0
        pieces = tf.where(unknown[:, None], tf.where(first_column, UNKNOWN_ID, -1), pieces)
        return tf.ragged.boolean_mask(pieces, pieces >= 0)


def detokenize_word_pieces(tokens, token_list):
    """`SubwordVocabulary.decode` in TensorFlow ops: int ids `(batch, length)` -> strings."""
    strings = tf.gather(tf.constant(token_list), tokens)
    kept = _kept_tokens(tokens)
    after_kept = tf.cumsum(tf.cast(kept, "int32"), axis=1, exclusive=True) > 0
    is_suffix = tf.strings.substr(strings, 0, len(SUFFIX)) == SUFFIX
    text = tf.strings.regex_replace(strings, "^##", "")
    separator = tf.where(after_kept & ~is_suffix, " ", "")
    return tf.strings.reduce_join(tf.where(kept, separator + text, ""), axis=1)


def join_words(tokens, words):
    """`" ".join(WordVocabulary.decode(ids))` in TensorFlow ops, for a batch."""
    strings = tf.gather(tf.constant(words), tokens)
    kept = _kept_tokens(tokens)
    after_kept = tf.cumsum(tf.cast(kept, "int32"), axis=1, exclusive=True) > 0
    separator = tf.where(after_kept, " ", "")
    return tf.strings.reduce_join(tf.where(kept, separator + strings, ""), axis=1)


def _kept_tokens(tokens):
    """True on the tokens before the first end token that are not padding or start."""
    before_end = tf.cumsum(tf.cast(tokens == END_ID, "int32"), axis=1) == 0
    return before_end & (tokens != PAD_ID) & (tokens != START_ID)


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
