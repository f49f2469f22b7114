"""Captioning in the Show, Attend and Tell style: CNN grid regions + attentional decoder.

    python -m recipes.caption                         # train on generated scenes, then evaluate
    python -m recipes.caption train [--data D] [--backbone NAME --weights W] ...
    python -m recipes.caption evaluate --run DIR [--beam-size N] [--split test]
    python -m recipes.caption evaluate --run DIR --run DIR2 ...  # an ensemble, in DIR/ensemble/
    python -m recipes.caption caption --run DIR [--beam-size N] [--length-penalty A]
        [--attention-png DIR] IMAGE ...
    python -m recipes.caption export --run DIR --out DIR     # SavedModel: image bytes in, text out

`--data`: none (generated scenes of coloured shapes), a Flickr8k directory
(`DIR/images/*.jpg`, `DIR/captions.token.txt`), `coco:CAPTIONS.json,IMAGE_DIR`, or
`tfds:coco_captions`. A frozen pretrained backbone's grid features are computed once
and cached in the run directory; training then runs the decoder alone.
"""

import dataclasses
import os
import sys
import time

import numpy as np

from multiattn.attention import NAMES as ATTENTIONS
from multiattn.encoders.image_grid_encoder import BACKBONES
from multiattn.special_tokens import END_ID, START_ID
from recipes import cli, runtime, self_critical
from recipes.data import SPLITS

MONITORS = ("val_loss", "val_bleu4", "val_cider")


@dataclasses.dataclass(frozen=True)
class CaptionConfig(
    runtime.RuntimeConfig,
    cli.HardAttentionConfig,
    cli.ScheduleConfig,
    self_critical.SelfCriticalConfig,
):
    """Settings of a captioning run; every field is a `--field-name` flag."""

    data: str | None = dataclasses.field(
        default=None,
        metadata={"help": "Flickr8k DIR, coco:JSON,IMAGE_DIR, tfds:coco_captions; none: scenes"},
    )
    image_size: int = 64
    backbone: str = dataclasses.field(default="small_cnn", metadata={"choices": BACKBONES})
    weights: str | None = dataclasses.field(
        default=None, metadata={"help": "imagenet, a weights file, or none"}
    )
    alpha: float | None = dataclasses.field(
        default=None, metadata={"help": "MobileNet width multiplier (0.25 for the shared file)"}
    )
    feature_layer: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "take the grid from this backbone layer, not the last one "
            "(block_13_expand_relu: MobileNetV2's 14x14 grid at 224 px; none: the last)"
        },
    )
    fine_tune: bool = dataclasses.field(
        default=False, metadata={"help": "train the whole backbone (no feature cache)"}
    )
    fine_tune_from: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "first backbone layer to fine-tune (conv_dw_12: MobileNet's last two "
            "blocks); the layers before it stay frozen and their output is cached"
        },
    )
    init_from: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "start from the trained model of this run (its vocabulary and "
            "weights), e.g. to fine-tune it with --fine-tune-from at a low learning rate"
        },
    )
    coordinates: bool = dataclasses.field(
        default=True, metadata={"help": "append each region's row and column to its features"}
    )
    attention: str = dataclasses.field(default="bahdanau", metadata={"choices": ATTENTIONS})
    # Luong order: the word at step i is read off the context attended with s_i, so the
    # attention of a step shows the object its word names (localization 0.92 against
    # 0.65 for the Bahdanau order, which attends with s_{i-1} and looks ahead).
    attention_order: str = dataclasses.field(
        default="luong", metadata={"choices": ("bahdanau", "luong")}
    )
    attention_penalty: float = dataclasses.field(
        default=0.0, metadata={"help": "doubly stochastic penalty lambda (the paper's is 1)"}
    )
    input_feeding: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "Luong order: feed the previous attentional state to the LSTM; "
            "--no-input-feeding runs the decoder's LSTM over the whole caption at once "
            "(the fast path, cuDNN's kernel on a GPU)"
        },
    )
    use_gate: bool = True
    memory_units: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": "embed every region with relu(W x + b) of this size before the decoder "
            "reads it (none: the grid features as they are)"
        },
    )
    memory_dropout: float = dataclasses.field(
        default=0.0,
        metadata={"help": "dropout on the (embedded) regions the decoder reads, in training"},
    )
    flip: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "train on mirrored images too: each caption sees either at random "
            "('left' and 'right' swapped for the mirror)"
        },
    )
    embedding_dim: int = 64
    tie_embeddings: bool = cli.tie_embeddings_field()
    units: int = 128
    layers: int = dataclasses.field(
        default=1,
        metadata={"help": "stacked LSTM layers in the decoder (attention reads the top one)"},
    )
    dropout: float = 0.1
    learning_rate: float = 3e-3
    label_smoothing: float = 0.0
    epochs: int = 15
    batch_size: int = 32
    patience: int = 3
    monitor: str = dataclasses.field(
        default="val_loss",
        metadata={
            "choices": MONITORS,
            "help": "checkpoint choice and early stopping: val loss, or the val BLEU-4 / "
            "CIDEr-D of greedy captions after every epoch",
        },
    )
    seed: int = 0
    beam_size: int = 3
    length_penalty: float = dataclasses.field(
        default=0.0, metadata={"help": "beam search's GNMT alpha (0: none)"}
    )
    min_count: int = dataclasses.field(default=1, metadata={"help": "rarer words become [UNK]"})
    max_caption_length: int = 24
    num_train: int = dataclasses.field(default=3000, metadata={"help": "generated scenes"})
    num_val: int = 300
    num_test: int = 300


# -- data ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Split:
    """One split: images (or their cached grid features), captions, and what to score."""

    images: np.ndarray  # (n, size, size, 3) uint8
    captions: list  # one list of reference strings per image
    scenes: list | None = None  # generated scenes, for attention localization
    names: list | None = None  # each image's file, as the corpus names it


def load_splits(config, splits=SPLITS, fallback=None):
    """`{split: Split}`; a fixed split that is absent is an error, or gives `fallback`.

    `fallback` serves the default evaluation of `all`: a Flickr8k directory with the
    official train and dev lists and no test list is evaluated on dev, and says so.
    """
    if config.data is None:
        from recipes.data.scenes import scene_splits

        cli.stage(
            f"generating scenes: {config.num_train} train, {config.num_val} val, "
            f"{config.num_test} test ({config.image_size}x{config.image_size})"
        )
        scenes = scene_splits(
            config.num_train, config.num_val, config.num_test, config.image_size, config.seed
        )
        return {
            split: Split(
                images=np.stack([scene.image for scene in scenes[split]]),
                captions=[[scene.caption] for scene in scenes[split]],
                scenes=scenes[split],
            )
            for split in splits
        }
    from recipes.data import DataError
    from recipes.data.caption_corpora import load_caption_corpus
    from recipes.data.image_files import load_images

    cli.stage(f"loading captions: {config.data}")
    corpus = load_caption_corpus(config.data, seed=config.seed)
    cli.report_skips(corpus, kind="caption record")
    result = {}
    for split in splits:
        try:
            entries = corpus.split(split)
        except DataError as error:  # a fixed split whose list is absent
            if fallback is None:
                raise cli.UsageError(f"--data {config.data}: {error}") from None
            cli.stage(f"{error}: using the {fallback} split instead")
            split, entries = fallback, corpus.split(fallback)
        cli.stage(f"loading {len(entries)} {split} images at {config.image_size}px")
        images, kept, skipped = load_images([image for image, _ in entries], config.image_size)
        for path, reason in skipped[:5]:
            print(f"    skipped image {path}: {reason}")
        if skipped:
            print(f"    skipped {len(skipped)} unreadable image(s) in {split}")
        captions = [entries[index][1] for index in kept]
        print(f"    {len(kept)} {split} images, {sum(map(len, captions))} captions", flush=True)
        if not kept:  # an empty split would fail deep inside tf.data or Keras
            if entries:
                path, reason = skipped[0]
                why = f"none of its {len(entries)} images is readable, e.g. {path}: {reason}"
            else:
                total = sum(len(getattr(corpus, name)) for name in SPLITS)
                why = f"the split by image gave it none of the {total} images"
            raise cli.UsageError(f"--data {config.data}: no usable {split} images ({why})")
        names = [str(entries[index][0]) for index in kept]
        result[split] = Split(images=images, captions=captions, names=names)
    return result


def caption_targets(vocabulary, split, max_length, name="train"):
    """One training pair per reference caption: image indices, `target_in`, `target_out`.

    Captions without a word are skipped and longer ones cut to `max_length` words;
    both are counted on stdout.
    """
    from recipes.data.word_vocabulary import tokenize_caption

    image_indices, token_lists = [], []
    without_words = 0
    for image_index, references in enumerate(split.captions):
        for caption in references:
            tokens = tokenize_caption(caption)
            if tokens:
                image_indices.append(image_index)
                token_lists.append(tokens)
            else:
                without_words += 1
    if without_words:
        print(f"    {name}: skipped {without_words} caption(s) without words")
    truncated = sum(len(tokens) > max_length for tokens in token_lists)
    if truncated:
        print(
            f"    {name}: truncated {truncated} caption(s) to "
            f"--max-caption-length={max_length} words"
        )
    if not token_lists:
        raise cli.UsageError(f"no {name} caption has a word to learn")
    target_in, target_out = vocabulary.encode_targets(token_lists, max_length)
    return np.array(image_indices, dtype="int64"), target_in, target_out


def scoring_references(captions):
    """References as the COCO caption evaluation scores them: lowercase words, no punctuation.

    The words the model learns and writes (`tokenize_caption`), so that "A dog ." and
    the generated "a dog" agree, as they do in the COCO tool that Show, Attend and Tell
    and later papers report (its PTB tokenizer lowercases and drops punctuation).
    """
    from recipes.data.word_vocabulary import tokenize_caption

    return [
        [" ".join(tokenize_caption(caption)) for caption in references] for references in captions
    ]


def mirrored_word_ids(vocabulary):
    """Id `i` -> the id of its word in a mirrored image's caption ('left' <-> 'right')."""
    ids = np.arange(len(vocabulary), dtype="int32")
    left, right = (vocabulary.ids.get(word) for word in ("left", "right"))
    if left is not None and right is not None:
        ids[left], ids[right] = right, left
    return ids


def decode_captions(vocabulary, token_rows):
    """The caption of each row of ids (`WordVocabulary.decode_tensor`, as exported)."""
    token_rows = np.asarray(token_rows, dtype="int32")
    if not len(token_rows):
        return []
    return [text.decode("utf-8") for text in vocabulary.decode_tensor(token_rows).numpy()]


# -- model ---------------------------------------------------------------------------------
def check_fine_tuning(config):
    """One-line errors for the fine-tuning flags."""
    if config.fine_tune_from is not None:
        if config.weights in (None, "none"):
            raise cli.UsageError("--fine-tune-from needs pretrained --weights")
        if config.fine_tune:
            raise cli.UsageError("--fine-tune trains the whole backbone; drop --fine-tune-from")


def make_encoder(config, from_frozen_features=False):
    """The image encoder; `from_frozen_features`: its twin that takes cached features."""
    from multiattn import ImageGridEncoder

    weights = None if config.weights in (None, "none") else config.weights
    check_fine_tuning(config)
    if config.fine_tune_from is not None:
        trainable_backbone = None
    else:
        trainable_backbone = config.fine_tune if weights is not None else None
    return ImageGridEncoder(
        config.backbone,
        weights=weights,
        trainable_backbone=trainable_backbone,
        alpha=config.alpha,
        coordinates=config.coordinates,
        fine_tune_from=config.fine_tune_from,
        from_frozen_features=from_frozen_features,
        feature_layer=config.feature_layer,
        **({"filters": (32, 64, 128)} if config.backbone == "small_cnn" else {}),
    )


def check_backbone_layers(config):
    """One-line errors for `--feature-layer` and `--fine-tune-from` names, before any
    image is read: the backbone's architecture is built (without weights) to check them.

    It runs TensorFlow ops: call it after `runtime.start_training`, not in `check_config`.
    """
    if config.feature_layer is None and config.fine_tune_from is None:
        return
    from multiattn import ImageGridEncoder

    try:
        encoder = ImageGridEncoder(
            config.backbone,
            alpha=config.alpha,
            feature_layer=config.feature_layer,
            fine_tune_from=config.fine_tune_from,
        )
        encoder.build((None, None, None, 3))
    except ValueError as error:
        message = str(error)
        for argument in ("feature_layer", "fine_tune_from"):  # as the flags are named
            message = message.replace(f"{argument}=", f"--{argument.replace('_', '-')} ")
        raise cli.UsageError(message) from None


def uses_feature_cache(config):
    """A pretrained backbone frozen (wholly or up to `--fine-tune-from`): its output is
    computed once and cached; training runs the rest."""
    return config.weights not in (None, "none") and not config.fine_tune


def build_model(config, encoder, vocabulary_size, compile_model=True):
    from multiattn import AttentionDecoder, Seq2Seq

    attention, hard_attention_weights = cli.attention_settings(config, config.units)
    decoder = AttentionDecoder(
        vocabulary_size,
        config.embedding_dim,
        config.units,
        attention=attention,
        attention_order=config.attention_order,
        input_feeding=config.input_feeding,
        num_layers=config.layers,
        dropout=config.dropout,
        use_gate=config.use_gate,
        tie_embeddings=config.tie_embeddings,
        memory_units=config.memory_units,
        memory_dropout=config.memory_dropout,
        seed=config.seed,
    )
    model = Seq2Seq(
        encoder,
        decoder,
        start_id=START_ID,
        end_id=END_ID,
        attention_penalty=config.attention_penalty,
        label_smoothing=config.label_smoothing,
        **hard_attention_weights,
    )
    if compile_model:
        # Under mixed_float16, Keras wraps the optimizer in a LossScaleOptimizer here.
        model.compile(
            cli.make_optimizer(config.learning_rate, config.ema_decay),
            jit_compile=config.jit_compile,
        )
    return model


def grid_features(encoder, images, cache_directory, batch_size=64):
    """The frozen backbone's regions for `images`, cached on disk between runs."""
    from recipes.data.feature_cache import FeatureCache
    from recipes.data.image_files import PIXELS_VERSION, image_key

    key = (
        f"{encoder.backbone}-{encoder.backbone_weights}-{encoder.alpha}-"
        f"{encoder.coordinates}-{images.shape[1]}-{PIXELS_VERSION}"
    )
    if encoder.feature_layer is not None:  # old runs' keys stay those of the last layer
        key += f"-at-{encoder.feature_layer}"
    if encoder.fine_tune_from is not None:  # the frozen layers' output, before the rest
        key += f"-before-{encoder.fine_tune_from}"
    cache = FeatureCache(cache_directory, key)

    def compute(batch):
        batch = np.asarray(batch, dtype="float32")
        if encoder.fine_tune_from is not None:
            return np.asarray(encoder.frozen_features(batch))
        return np.asarray(encoder(batch, training=False))

    keys = [image_key(image) for image in images]  # by content: equal images share features
    return cache.get_or_compute(keys, lambda indices: images[indices], compute, batch_size)


# -- commands ------------------------------------------------------------------------------
def check_config(config):
    """One-line errors for the flags of a training config, before anything runs."""
    cli.check_schedule(config)
    cli.check_attention(config)
    check_fine_tuning(config)
    self_critical.check_flags(config)
    if config.memory_units is not None and config.memory_units < 1:
        raise cli.UsageError(f"--memory-units {config.memory_units}: must be 1 or more")
    if not 0 <= config.memory_dropout < 1:
        raise cli.UsageError(f"--memory-dropout {config.memory_dropout}: must be in [0, 1)")


def train(config, run):
    import keras

    from recipes.data.word_vocabulary import WordVocabulary, tokenize_caption

    check_config(config)
    # First: a multi-worker strategy, or a CPU split into devices, precedes any TF op.
    strategy, run = runtime.start_training(config, run)  # only the chief writes the run
    check_backbone_layers(config)  # before the images load, which may take minutes
    keras.utils.set_random_seed(config.seed)
    started = time.time()
    data = load_splits(config, ("train", "val"))
    vocabulary_path = os.path.join(run, "vocabulary.txt")
    initial = None if config.init_from is None else initial_run(config)
    if initial is not None:
        vocabulary = initial[1]  # the words its decoder knows
    else:
        vocabulary = WordVocabulary.build(
            [tokenize_caption(c) for refs in data["train"].captions for c in refs],
            config.min_count,
        )
    vocabulary.save(vocabulary_path)
    cli.save_config(config, os.path.join(run, "config.json"))
    print(f"    {len(vocabulary)} words in the vocabulary")

    encoder = make_encoder(config)
    inputs = {}
    for split in ("train", "val"):
        inputs[split] = caption_targets(vocabulary, data[split], config.max_caption_length, split)

    images = {split: data[split].images for split in ("train", "val")}
    if config.flip:  # image i + n is the mirror of image i
        images["train"] = np.concatenate([images["train"], images["train"][:, :, ::-1]])
    if uses_feature_cache(config):
        cli.stage("computing the frozen backbone's grid features (cached)")
        encoder.build((None, config.image_size, config.image_size, 3))
        sources = {
            split: grid_features(encoder, images[split], os.path.join(run, "features"))
            for split in ("train", "val")
        }
        # With --fine-tune-from: the tuned layers on the cached features (their twin in
        # training loads the same pretrained weights when it is built).
        training_encoder = (
            keras.layers.Identity()
            if config.fine_tune_from is None
            else make_encoder(config, from_frozen_features=True)
        )
    else:
        sources = images
        training_encoder = encoder

    with strategy.scope():
        model = build_model(config, training_encoder, len(vocabulary))
        # Built before fit: BackupAndRestore needs the weights to restore into.
        model.build(((None, *sources["train"].shape[1:]), (None, None)))
        if initial is not None:  # a resumed training's backup then restores over these
            start_from(model, initial[0], config.init_from)

    def dataset(split, shuffle):
        import tensorflow as tf

        image_indices, target_in, target_out = inputs[split]
        # A tensor made here is captured by reference; a NumPy array would be copied
        # into the graph of the map function.
        source = tf.constant(sources[split])  # uint8 pixels or float16 features
        # Cast batch by batch, to what the model computes in (float32, or bfloat16 /
        # float16 with --mixed-precision): cached features stay float16 in memory.
        source_dtype = model.compute_dtype
        mirror_words = tf.constant(mirrored_word_ids(vocabulary), dtype=target_in.dtype)

        def gather(index, t_in, t_out):
            if config.flip and split == "train":
                mirrored = tf.random.uniform(tf.shape(index), seed=config.seed) < 0.5
                index = tf.where(mirrored, index + len(data[split].images), index)
                t_in, t_out = (
                    tf.where(mirrored[:, None], tf.gather(mirror_words, ids), ids)
                    for ids in (t_in, t_out)
                )
            return (tf.cast(tf.gather(source, index), source_dtype), t_in), t_out

        data_set = tf.data.Dataset.from_tensor_slices((image_indices, target_in, target_out))
        if shuffle:
            data_set = data_set.shuffle(len(image_indices), seed=config.seed)
        data_set = data_set.batch(config.batch_size).map(
            gather, num_parallel_calls=tf.data.AUTOTUNE
        )
        return runtime.shard_by_data(data_set.prefetch(tf.data.AUTOTUNE))

    scorer = None
    if config.monitor != "val_loss":
        scorer = caption_scorer(model, sources["val"], data["val"].captions, vocabulary, config)
    cli.stage(
        f"training: {config.backbone} backbone, {config.attention} attention, "
        f"{config.epochs} epochs at most ({runtime.describe(strategy, config)})"
    )
    if config.self_critical_epochs and self_critical.cross_entropy_finished(run):
        cli.stage("cross-entropy training finished earlier; self-critical training goes on")
    else:
        with runtime.fitting(model, strategy):
            history = model.fit(
                dataset("train", True),
                validation_data=dataset("val", False),
                epochs=config.epochs,
                callbacks=cli.recipe_callbacks(run, config, scorer),
                verbose=cli.fit_verbosity(),
                shuffle=False,  # the dataset shuffles itself
            )
        cli.record_training(run, history, started)  # first: a NaN loss may have saved no model
        cli.average_after_training(run, model, config, dataset("val", False), scorer)
    if config.self_critical_epochs:
        self_critical_training(
            config, run, model, sources["train"], data["train"], vocabulary, scorer
        )
    if uses_feature_cache(config):
        # The saved model takes images: the trained decoder behind the frozen backbone.
        best = cli.load_model(os.path.join(run, "model.keras"))
        # Saved uncompiled: the decoder-only model's optimizer state does not fit it.
        full = build_model(config, encoder, len(vocabulary), compile_model=False)
        full(
            (
                np.zeros((1, config.image_size, config.image_size, 3), "float32"),
                np.ones((1, 2), "int32"),
            )
        )
        full.decoder.set_weights(best.decoder.get_weights())
        if config.fine_tune_from is not None:
            full.encoder.set_weights(best.encoder.get_weights())
        cli.save_model(full, os.path.join(run, "model.keras"))
    return run


def self_critical_training(config, run, model, sources, data, vocabulary, scorer):
    """`--self-critical-epochs`: REINFORCE on the CIDEr-D of sampled captions."""
    from multiattn import metrics

    def restore_best(model):
        # The whole image model when an earlier process finished the run.
        start_from(model, cli.load_model(os.path.join(run, "model.keras")), run)

    # The reward's document frequencies are those of the training captions; mirrored
    # images (--flip) are left out, their references would need mirroring.
    cider = metrics.CiderD(scoring_references(data.captions))
    self_critical.train_after_cross_entropy(
        config,
        run,
        model,
        restore_best,
        lambda items: sources[items].astype("float32"),
        len(data.captions),
        lambda tokens, items: cider.scores(decode_captions(vocabulary, tokens), items),
        scorer,
        "CIDEr-D",
        max_length=config.max_caption_length + 1,
    )


def initial_run(config):
    """`(model, vocabulary)` of the finished run `--init-from` names."""
    try:
        initial_config, model, vocabulary = load_run(config.init_from)
    except cli.UsageError as error:
        raise cli.UsageError(str(error).replace("--run", "--init-from", 1)) from None
    tuned = getattr(model.encoder, "fine_tune_from", None)
    if tuned is not None and config.fine_tune_from != tuned:
        raise cli.UsageError(
            f"--init-from: {config.init_from} fine-tuned its backbone from {tuned}; "
            f"pass --fine-tune-from {tuned} to keep those layers"
        )
    for field in ("backbone", "alpha", "feature_layer", "image_size", "coordinates"):
        if getattr(initial_config, field) != getattr(config, field):
            raise cli.UsageError(
                f"--init-from: {config.init_from} was trained with --{field.replace('_', '-')}"
                f"={getattr(initial_config, field)}, not {getattr(config, field)}"
            )
    return model, vocabulary


def start_from(model, initial, initial_run_path):
    """Copies the trained decoder and image encoder of `initial` into `model`."""
    parts = [("decoder", "decoder", " (train with its --units, --embedding-dim, --attention)")]
    if model.encoder.weights:  # not the identity on cached features of a frozen backbone
        # A twin on cached features (--fine-tune-from) has the image encoder's weights,
        # in the same order.
        parts.append(("encoder", "image encoder", ""))
    for attribute, name, hint in parts:
        try:
            getattr(model, attribute).set_weights(getattr(initial, attribute).get_weights())
        except ValueError as error:
            raise cli.UsageError(
                f"--init-from: the {name} of {initial_run_path} does not fit this one{hint}: "
                f"{str(error).splitlines()[0]}"
            ) from None


def caption_scorer(model, sources, captions, vocabulary, config):
    """A callback that puts the val BLEU-4 and CIDEr-D of greedy captions in each epoch's logs."""

    from multiattn import metrics

    sources = np.asarray(sources, dtype="float32")
    references = scoring_references(captions)

    def score(logs, label):
        result = generate_captions(model, sources, config, beam_size=1, return_attention=False)
        hypotheses = decode_captions(vocabulary, result["tokens"])
        logs["val_bleu4"] = metrics.corpus_bleu(hypotheses, references)
        logs["val_cider"] = metrics.cider(hypotheses, references)
        print(
            f"    {label}: val greedy BLEU-4 {logs['val_bleu4']:.2f}, "
            f"CIDEr-D {logs['val_cider']:.3f}",
            flush=True,
        )

    return cli.scorer_callback(score)


def load_run(run):
    """`(config, model, vocabulary)` of a run, or of an ensemble of runs.

    `run` is a directory, or a list of them: with two or more, the model is a
    `Seq2SeqEnsemble` of their models (each encodes the images with its own encoder),
    and the config is the first run's. They must share the vocabulary and image size.
    """
    runs = cli.run_list(run)
    loaded = [_load_one_run(directory) for directory in runs]
    config, model, vocabulary = loaded[0]
    for directory, (other_config, _, other_vocabulary) in zip(runs[1:], loaded[1:], strict=True):
        for what, differs in (
            ("vocabulary", other_vocabulary.words != vocabulary.words),
            ("--image-size", other_config.image_size != config.image_size),
        ):
            if differs:
                raise cli.UsageError(
                    f"--run {directory}: its {what} differs from that of --run {runs[0]}; "
                    "an ensemble's models must share their vocabulary and image size"
                )
    if len(loaded) > 1:
        model = runtime.ensemble([entry[1] for entry in loaded], config)
    return config, model, vocabulary


def _load_one_run(run):
    import keras

    from recipes.data.word_vocabulary import WordVocabulary

    model_path = cli.require_run(run)
    config = cli.load_config(CaptionConfig, os.path.join(run, "config.json"))
    vocabulary = WordVocabulary.load(os.path.join(run, "vocabulary.txt"))
    model = cli.load_model(model_path)  # safe mode: never unpickles
    if uses_feature_cache(config) and (
        isinstance(model.encoder, keras.layers.Identity)
        or getattr(model.encoder, "from_frozen_features", False)
    ):
        # The checkpoint of a training that was stopped: the image model is
        # assembled only when training ends.
        raise cli.UsageError(
            f"--run: {run} holds the decoder of an unfinished training (it reads cached "
            "features, not images); run the same train command again to finish it"
        )
    runtime.apply_to_loaded_model(model, config)  # the run's precision and XLA setting
    return config, model, vocabulary


def generate_captions(
    model, images, config, beam_size, length_penalty=None, nbest=False, return_attention=True
):
    """Greedy (beam_size 1) or beam search of `images` (see `cli.decode`)."""
    length_penalty = config.length_penalty if length_penalty is None else length_penalty
    max_length = config.max_caption_length + 1
    return cli.decode(
        model, images, beam_size, max_length, length_penalty, 32, nbest, return_attention
    )


def evaluate(run, split=None, beam_size=None, pictures=4, length_penalty=None):
    """Scores a run on `split`; by default the test split, or val where data has none."""
    from multiattn import metrics

    config, model, vocabulary = load_run(run)
    runs, run = cli.run_list(run), cli.output_directory(run)
    beam_size = config.beam_size if beam_size is None else beam_size
    length_penalty = config.length_penalty if length_penalty is None else length_penalty
    requested = ("test",) if split is None else (split,)
    [(split, data)] = load_splits(config, requested, "val" if split is None else None).items()
    cli.stage(f"captioning {len(data.images)} {split} images (beam {beam_size})")
    started = time.time()
    result = generate_captions(
        model, data.images.astype("float32"), config, beam_size, length_penalty
    )
    hypotheses = decode_captions(vocabulary, result["tokens"])
    seconds = time.time() - started
    references = scoring_references(data.captions)
    values = cli.read_json(os.path.join(run, "metrics.json"))
    values.update(
        {
            f"bleu{n}": metrics.corpus_bleu(hypotheses, references, max_ngram_order=n)
            for n in range(1, 5)
        }
    )
    values.update(
        {
            "split": split,
            "beam_size": beam_size,
            "length_penalty": length_penalty,
            "cider": metrics.cider(hypotheses, references),
            "images": len(hypotheses),
            "decode_seconds": round(seconds, 1),
        }
    )
    if len(runs) > 1:
        values["ensemble"] = runs
    encoder = getattr(model, "models", [model])[0].encoder  # an ensemble's: the first model's
    grid = encoder.grid_shape((config.image_size, config.image_size))
    if data.scenes is not None:
        from recipes.data.scenes import attention_localization

        values["exact_match"] = float(
            np.mean(
                [
                    hypothesis == refs[0]
                    for hypothesis, refs in zip(hypotheses, references, strict=True)
                ]
            )
        )
        words = [hypothesis.split() for hypothesis in hypotheses]
        values["attention_localization"] = attention_localization(
            [result["attention"][i][: len(words[i])] for i in range(len(words))],
            data.scenes,
            grid,
            config.image_size,
            generated_words=words,
        )
    metrics_path = cli.write_json(os.path.join(run, "metrics.json"), values)
    names = data.names or [f"{split}_{index}" for index in range(len(hypotheses))]
    captions_path = cli.write_rows(
        os.path.join(run, f"{split}_captions.tsv"), zip(names, hypotheses, strict=True)
    )
    paths = save_attention_pictures(data, result, hypotheses, grid, run, split, pictures)
    summary = ", ".join(f"BLEU-{n} {values[f'bleu{n}']:.1f}" for n in range(1, 5))
    print(f"{summary}, CIDEr {values['cider']:.3f} on {len(hypotheses)} {split} images")
    if "exact_match" in values:
        print(
            f"exact match {values['exact_match']:.3f}, attention localization "
            f"{values['attention_localization']:.3f}"
        )
    print(f"metrics: {metrics_path}\ncaptions: {captions_path}")
    for path in paths:
        print(f"attention: {path}")
    return values


def save_attention_picture(image, attention, hypothesis, grid, path):
    """One panel per generated word (and the end token) with its attention on the image."""
    from multiattn.plotting import plot_image_attention

    return plot_image_attention(image, attention, grid, hypothesis.split() + ["<end>"], path)


def save_attention_pictures(data, result, hypotheses, grid, run, split, count):
    return [
        save_attention_picture(
            data.images[index],
            result["attention"][index],
            hypotheses[index],
            grid,
            os.path.join(run, "attention", f"{split}_{index}.png"),
        )
        for index in range(min(count, len(hypotheses)))
    ]


def caption(run, images, beam_size=None, attention_png=None, length_penalty=None):
    """Prints the caption of each image file; beam size and length penalty are the run's
    unless given, as in `evaluate`, so that both give the same caption."""
    from recipes.data.image_files import load_images

    config, model, vocabulary = load_run(run)
    beam_size = config.beam_size if beam_size is None else beam_size
    pixels, kept, skipped = load_images(images, config.image_size)
    if not kept:  # one line that says why, not a skip line and then an error
        reasons = "; ".join(f"{path}: {reason}" for path, reason in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise cli.UsageError(f"no readable image among the arguments: {reasons}{more}")
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    result = generate_captions(model, pixels.astype("float32"), config, beam_size, length_penalty)
    hypotheses = decode_captions(vocabulary, result["tokens"])
    for index, text in zip(kept, hypotheses, strict=True):
        print(f"{images[index]}\t{text}")
    if attention_png:
        grid = model.encoder.grid_shape((config.image_size, config.image_size))
        for row, index in enumerate(kept):
            name = os.path.splitext(os.path.basename(images[index]))[0]
            path = save_attention_picture(
                pixels[row],
                result["attention"][row],
                hypotheses[row],
                grid,
                os.path.join(attention_png, f"{name}.png"),
            )
            print(f"attention: {path}", file=sys.stderr)
    return hypotheses


# -- command line --------------------------------------------------------------------------
def parse(argv):
    parser, commands, argv = cli.recipe_parser(
        "python -m recipes.caption", __doc__.splitlines()[0], CaptionConfig, argv, ensembles=True
    )
    caption_parser = commands.add_parser("caption", help="caption image files")
    caption_parser.add_argument("--run", required=True)
    caption_parser.add_argument("--beam-size", type=int)
    caption_parser.add_argument(
        "--length-penalty", type=float, help="beam search's GNMT alpha (default: the run's)"
    )
    caption_parser.add_argument("--attention-png", help="directory for attention pictures")
    caption_parser.add_argument("images", nargs="+", metavar="IMAGE")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else list(argv))
    if args.command in ("train", "all"):
        return cli.run_training_command(
            args, CaptionConfig, "caption", train, runtime.on_chief_only(evaluate), check_config
        )
    if args.command == "evaluate":
        evaluate(args.run, args.split, args.beam_size, length_penalty=args.length_penalty)
        return 0
    if args.command == "export":
        from recipes import export

        export.check_output(args.out)  # before the run is loaded: a quick error
        config, model, vocabulary = load_run(args.run)
        export.export_captioning(
            args.out,
            model,
            vocabulary,
            image_size=config.image_size,
            max_caption_length=config.max_caption_length,
            beam_size=config.beam_size,
            length_penalty=config.length_penalty,
        )
        return 0
    caption(args.run, args.images, args.beam_size, args.attention_png, args.length_penalty)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main, None))
