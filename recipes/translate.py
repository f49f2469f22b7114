"""Translation: BiLSTM encoder + attentional LSTM decoder, beam search, BLEU, alignments.

    python -m recipes.translate                      # train on generated data, then evaluate
    python -m recipes.translate train [--data D] [--attention NAME] [--epochs N] ...
    python -m recipes.translate evaluate --run DIR [--beam-size N] [--split test]
    python -m recipes.translate translate --run DIR [--beam-size N] [--attention-png F] [TEXT ...]
    python -m recipes.translate evaluate --run DIR --run DIR2 ...   # an ensemble of runs
    python -m recipes.translate export --run DIR --out DIR   # a SavedModel: text in, text out

Every run writes one directory (`runs/translate/<timestamp>/` or `--out DIR`) holding
`model.keras`, the vocabularies, `config.json`, `metrics.json`, TensorBoard logs and
the pictures; the other commands take it as `--run DIR`. An ensemble's evaluation is
written to `DIR/ensemble/`.
"""

import dataclasses
import math
import os
import sys
import time

import numpy as np

from multiattn.attention import LOCAL_MODES
from multiattn.attention import NAMES as ATTENTION_NAMES
from multiattn.special_tokens import END_ID, START_ID
from recipes import cli, runtime, self_critical

ATTENTIONS = (*ATTENTION_NAMES, "none")  # "none": the plain decoder, without attention


@dataclasses.dataclass(frozen=True)
class TranslateConfig(
    runtime.RuntimeConfig,
    cli.HardAttentionConfig,
    cli.ScheduleConfig,
    self_critical.SelfCriticalConfig,
):
    """Settings of a translation run; every field is a `--field-name` flag."""

    data: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "DIR (DIR/{train,val,test}.LANG[.gz]), FILE.tsv, tfds:NAME; "
            "none: generated number phrases"
        },
    )
    source_lang: str | None = dataclasses.field(default=None, metadata={"help": "e.g. de"})
    target_lang: str | None = dataclasses.field(default=None, metadata={"help": "e.g. en"})
    vocabulary_size: int = dataclasses.field(default=8000, metadata={"help": "subwords per side"})
    joint_vocabulary: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "one vocabulary of --vocabulary-size subwords, learned on both languages "
            "and used on both sides"
        },
    )
    lowercase: bool = False
    max_tokens: int = dataclasses.field(
        default=80, metadata={"help": "longer sentences (subword tokens) are skipped, counted"}
    )
    # The default is the fast path (Luong order without input feeding: the whole target
    # runs through the LSTM at once); `--attention bahdanau --attention-order bahdanau`
    # is Bahdanau et al.'s model.
    attention: str = dataclasses.field(default="luong-general", metadata={"choices": ATTENTIONS})
    attention_order: str = dataclasses.field(
        default="luong", metadata={"choices": ("bahdanau", "luong")}
    )
    input_feeding: bool = False
    attention_window: int = dataclasses.field(
        default=0,
        metadata={
            "help": "local attention (Luong et al. 2015, 3.2): attend to the source "
            "tokens within this distance of the aligned position (0: to all of them)"
        },
    )
    local: str = dataclasses.field(
        default="predictive",
        metadata={
            "choices": LOCAL_MODES,
            "help": "local attention's aligned position: predicted from the decoder "
            "state (local-p) or the target step (monotonic, local-m)",
        },
    )
    reverse_source: bool = False
    embedding_dim: int = 64
    tie_embeddings: bool = cli.tie_embeddings_field()
    units: int = 128
    layers: int = 1
    dropout: float = 0.1
    learning_rate: float = 3e-3
    label_smoothing: float = 0.0
    epochs: int = 8
    batch_size: int = 64
    patience: int = dataclasses.field(default=3, metadata={"help": "early stopping epochs"})
    monitor: str = dataclasses.field(
        default="val_loss",
        metadata={
            "choices": ("val_loss", "val_bleu"),
            "help": "checkpoint choice and early stopping: val loss, or the BLEU of the "
            "val translations after every epoch",
        },
    )
    monitor_beam_size: int = dataclasses.field(
        default=1, metadata={"help": "--monitor val_bleu: beam size of those translations"}
    )
    seed: int = 0
    beam_size: int = 4
    length_penalty: float = 0.6
    num_train: int = dataclasses.field(
        default=20000, metadata={"help": "sentences of generated training data"}
    )
    num_val: int = dataclasses.field(default=1000, metadata={"help": "generated val sentences"})
    num_test: int = dataclasses.field(default=1000, metadata={"help": "generated test sentences"})


# -- data ----------------------------------------------------------------------------------
def load_data(config):
    from recipes.data.parallel_corpora import load_corpus

    cli.stage(f"loading data: {config.data or 'generated number phrases (English -> German)'}")
    corpus = load_corpus(
        config.data,
        source_lang=config.source_lang,
        target_lang=config.target_lang,
        seed=config.seed,
        **(
            {"num_train": config.num_train, "num_val": config.num_val, "num_test": config.num_test}
            if config.data is None
            else {}
        ),
    )
    cli.report_skips(corpus)
    print(
        f"    {len(corpus.train)} train, {len(corpus.val)} val, {len(corpus.test)} test pairs",
        flush=True,
    )
    return corpus


def encode_pairs(pairs, source_vocabulary, target_vocabulary, max_tokens, split):
    """Ids of both sides; empty pairs, and those longer than `max_tokens` (unless it is
    `None`, as in evaluation, which scores every sentence), are dropped and counted."""
    source_ids = source_vocabulary.encode([source for source, _ in pairs])
    target_ids = target_vocabulary.encode([target for _, target in pairs])
    lengths = [(len(source_ids[i]), len(target_ids[i])) for i in range(len(pairs))]
    empty = [i for i, (source, target) in enumerate(lengths) if not (source and target)]
    limit = math.inf if max_tokens is None else max_tokens
    long = [i for i, (source, target) in enumerate(lengths) if max(source, target) > limit]
    dropped = set(empty) | set(long)
    kept = [index for index in range(len(pairs)) if index not in dropped]
    reasons = []
    if long:
        reasons.append(f"{len(long)} pair(s) longer than --max-tokens={max_tokens}")
    if empty:
        reasons.append(f"{len(empty)} pair(s) with an empty side")
    skipped = " and ".join(reasons)
    if reasons:
        print(f"    {split}: skipped {skipped}, kept {len(kept)}")
    if pairs and not kept:  # an empty split would fail deep inside tf.data or Keras
        raise cli.UsageError(f"all {len(pairs)} {split} pairs were skipped: {skipped}")
    return (
        [source_ids[i] for i in kept],
        [target_ids[i] for i in kept],
        [pairs[i] for i in kept],
    )


def vocabulary_paths(run):
    return os.path.join(run, "source_vocabulary.txt"), os.path.join(run, "target_vocabulary.txt")


# -- model ---------------------------------------------------------------------------------
def build_model(config, source_vocabulary_size, target_vocabulary_size):
    from multiattn import AttentionDecoder, BiLSTMEncoder, PlainDecoder, Seq2Seq

    encoder = BiLSTMEncoder(
        source_vocabulary_size,
        config.embedding_dim,
        config.units,
        num_layers=config.layers,
        dropout=config.dropout,
        seed=config.seed,
    )
    hard_attention_weights = {}
    if config.attention == "none":
        cli.check_attention(config)
        decoder = PlainDecoder(
            target_vocabulary_size,
            config.embedding_dim,
            config.units,
            num_layers=config.layers,
            dropout=config.dropout,
            tie_embeddings=config.tie_embeddings,
            seed=config.seed,
        )
    else:
        attention, hard_attention_weights = cli.attention_settings(config, config.units)
        decoder = AttentionDecoder(
            target_vocabulary_size,
            config.embedding_dim,
            config.units,
            attention=attention,
            attention_order=config.attention_order,
            input_feeding=config.input_feeding,
            num_layers=config.layers,
            dropout=config.dropout,
            tie_embeddings=config.tie_embeddings,
            seed=config.seed,
        )
    model = Seq2Seq(
        encoder,
        decoder,
        start_id=START_ID,
        end_id=END_ID,
        reverse_source=config.reverse_source,
        label_smoothing=config.label_smoothing,
        **hard_attention_weights,
    )
    # Under mixed_float16, Keras wraps the optimizer in a LossScaleOptimizer here.
    model.compile(
        cli.make_optimizer(config.learning_rate, config.ema_decay), jit_compile=config.jit_compile
    )
    return model


# -- commands ------------------------------------------------------------------------------
def check_config(config):
    """One-line errors for the flags of a training config, before anything runs."""
    cli.check_schedule(config)
    cli.check_attention(config)
    self_critical.check_flags(config)


def train(config, run):
    import keras

    from recipes.data.batching import make_dataset
    from recipes.data.subword_vocabulary import SubwordVocabulary

    check_config(config)
    # First: a multi-worker strategy, or a CPU split into devices, precedes any TF op.
    strategy, run = runtime.start_training(config, run)  # only the chief writes the run
    keras.utils.set_random_seed(config.seed)
    started = time.time()
    corpus = load_data(config)
    if not corpus.val:
        raise cli.UsageError(
            f"--data {config.data}: no validation pairs (early stopping needs some)"
        )
    source_path, target_path = vocabulary_paths(run)
    if os.path.isfile(source_path) and os.path.isfile(target_path):
        cli.stage("reusing the vocabularies of the interrupted run")
        source_vocabulary = SubwordVocabulary.load(source_path)
        target_vocabulary = SubwordVocabulary.load(target_path)
    elif config.joint_vocabulary:
        cli.stage(f"learning a joint subword vocabulary ({config.vocabulary_size})")
        texts = [source for source, _ in corpus.train] + [target for _, target in corpus.train]
        source_vocabulary = target_vocabulary = SubwordVocabulary.build(
            texts, config.vocabulary_size, config.lowercase
        )
        source_vocabulary.save(source_path)
        target_vocabulary.save(target_path)
    else:
        cli.stage(f"learning subword vocabularies ({config.vocabulary_size} per side)")
        source_vocabulary = SubwordVocabulary.build(
            [source for source, _ in corpus.train], config.vocabulary_size, config.lowercase
        )
        target_vocabulary = SubwordVocabulary.build(
            [target for _, target in corpus.train], config.vocabulary_size, config.lowercase
        )
        source_vocabulary.save(source_path)
        target_vocabulary.save(target_path)
    print(f"    {len(source_vocabulary)} source and {len(target_vocabulary)} target subwords")
    cli.save_config(config, os.path.join(run, "config.json"))

    train_source, train_target, train_pairs = encode_pairs(
        corpus.train, source_vocabulary, target_vocabulary, config.max_tokens, "train"
    )
    val_source, val_target, val_pairs = encode_pairs(
        corpus.val, source_vocabulary, target_vocabulary, config.max_tokens, "val"
    )
    train_data = runtime.shard_by_data(
        make_dataset(train_source, train_target, config.batch_size, shuffle=True, seed=config.seed)
    )
    val_data = runtime.shard_by_data(make_dataset(val_source, val_target, config.batch_size))
    if config.jit_compile:  # a few batch shapes, so a few XLA compilations
        train_data = runtime.pad_for_xla(train_data, config.batch_size)
        val_data = runtime.pad_for_xla(val_data, config.batch_size)

    with strategy.scope():
        model = build_model(config, len(source_vocabulary), len(target_vocabulary))
        # Built before fit: BackupAndRestore needs the weights to restore into.
        model.build(((None, None), (None, None)))
    scorer = None
    if config.monitor != "val_loss":
        scorer = bleu_scorer(model, val_source, val_pairs, target_vocabulary, config)
    cli.stage(
        f"training: {config.attention} attention, {config.units} units, "
        f"{config.epochs} epochs at most ({runtime.describe(strategy, config)})"
    )
    if config.self_critical_epochs and self_critical.cross_entropy_finished(run):
        cli.stage("cross-entropy training finished earlier; self-critical training goes on")
    else:
        with runtime.fitting(model, strategy):
            history = model.fit(
                train_data,
                validation_data=val_data,
                epochs=config.epochs,
                callbacks=cli.recipe_callbacks(run, config, scorer),
                verbose=cli.fit_verbosity(),
                shuffle=False,  # the dataset shuffles itself
            )
        cli.record_training(run, history, started)
        cli.average_after_training(run, model, config, val_data, scorer)
    if config.self_critical_epochs:
        self_critical_training(
            config, run, model, train_source, train_pairs, target_vocabulary, scorer
        )
    return run


def self_critical_training(config, run, model, source_ids, pairs, target_vocabulary, scorer):
    """`--self-critical-epochs`: REINFORCE on the sentence BLEU of sampled translations."""
    from sacrebleu.metrics import BLEU

    from recipes.data.batching import pad_batch

    def restore_best(model):
        model.set_weights(cli.load_model(os.path.join(run, "model.keras")).get_weights())

    # Sentence BLEU with sacreBLEU's defaults for single sentences (orders that have no
    # match in a short sentence do not zero it), on the detokenised text as evaluated.
    bleu = BLEU(effective_order=True)
    references = [target for _, target in pairs]

    def reward(tokens, items):
        hypotheses = target_vocabulary.decode(np.asarray(tokens).tolist())
        return [
            bleu.sentence_score(hypothesis, [references[item]]).score / 100
            for hypothesis, item in zip(hypotheses, items, strict=True)
        ]

    self_critical.train_after_cross_entropy(
        config,
        run,
        model,
        restore_best,
        lambda items: pad_batch([source_ids[item] for item in items]),
        len(source_ids),
        reward,
        scorer,
        "sentence BLEU",
        max_length=config.max_tokens + 1,
    )


def bleu_scorer(model, source_ids, pairs, target_vocabulary, config):
    """A callback that puts the BLEU of the val translations in each epoch's logs."""

    from multiattn import metrics

    references = [target for _, target in pairs]
    max_length = output_length(source_ids)
    search = "greedy" if config.monitor_beam_size <= 1 else f"beam {config.monitor_beam_size}"

    def score(logs, label):
        result = translate_ids(
            model,
            source_ids,
            config.monitor_beam_size,
            max_length,
            config.length_penalty,
            return_attention=False,
        )
        hypotheses = target_vocabulary.decode(result["tokens"].tolist())
        # Tokenized like the references, on purpose (see `evaluate`).
        logs["val_bleu"] = metrics.corpus_bleu(hypotheses, references, warn_if_tokenized=False)
        print(f"    {label}: val BLEU {logs['val_bleu']:.2f} ({search})", flush=True)

    return cli.scorer_callback(score)


def load_run(run):
    """`(config, model, source_vocabulary, target_vocabulary)` of a run, or of an ensemble.

    `run` is a directory, or a list of them: with two or more, the model is a
    `Seq2SeqEnsemble` of their models, and the config is the first run's. They must
    have the same vocabularies.
    """
    from recipes.data.subword_vocabulary import SubwordVocabulary

    runs = cli.run_list(run)
    loaded = []
    for directory in runs:
        model_path = cli.require_run(directory)
        config = cli.load_config(TranslateConfig, os.path.join(directory, "config.json"))
        source_path, target_path = vocabulary_paths(directory)
        source_vocabulary = SubwordVocabulary.load(source_path)
        target_vocabulary = SubwordVocabulary.load(target_path)
        if loaded:  # the first run's vocabularies
            for side, vocabulary, first in (
                ("source", source_vocabulary, loaded[0][2]),
                ("target", target_vocabulary, loaded[0][3]),
            ):
                if (vocabulary.token_list, vocabulary.lowercase) != (
                    first.token_list,
                    first.lowercase,
                ):
                    raise cli.UsageError(
                        f"--run {directory}: its {side} vocabulary differs from that of "
                        f"--run {runs[0]}; an ensemble's models must share their vocabularies"
                    )
        model = cli.load_model(model_path)  # safe mode: never unpickles
        runtime.apply_to_loaded_model(model, config)  # the run's precision and XLA setting
        loaded.append((config, model, source_vocabulary, target_vocabulary))
    if len(loaded) == 1:
        return loaded[0]
    config, _, source_vocabulary, target_vocabulary = loaded[0]
    model = runtime.ensemble([entry[1] for entry in loaded], config)
    return config, model, source_vocabulary, target_vocabulary


def translate_ids(
    model,
    source_ids,
    beam_size,
    max_length,
    length_penalty,
    batch_size=64,
    nbest=False,
    source_length=None,
    return_attention=True,
):
    """Greedy (beam_size 1) or beam search of `source_ids` (see `cli.decode`), padded to
    the longest or to `source_length`."""
    from recipes.data.batching import pad_batch

    source = pad_batch(source_ids, source_length)
    return cli.decode(
        model, source, beam_size, max_length, length_penalty, batch_size, nbest, return_attention
    )


def output_length(source_ids):
    """Most tokens generated for `source_ids`: twice the longest and 10, rounded up to a
    bucket so that a few compiled generate functions serve every length (the web demo)."""
    return cli.length_bucket(max((len(ids) for ids in source_ids), default=1) * 2 + 10)


def evaluate(run, split="test", beam_size=None, examples=4, length_penalty=None):
    from multiattn import metrics
    from multiattn.plotting import plot_lines

    config, model, source_vocabulary, target_vocabulary = load_run(run)
    runs, run = cli.run_list(run), cli.output_directory(run)
    beam_size = config.beam_size if beam_size is None else beam_size
    length_penalty = config.length_penalty if length_penalty is None else length_penalty
    corpus = load_data(config)
    pairs = getattr(corpus, split)
    if not pairs:
        raise cli.UsageError(f"--split {split}: the data has no {split} pairs")
    # Every sentence is scored: --max-tokens bounds the training pairs only.
    source_ids, _, pairs = encode_pairs(pairs, source_vocabulary, target_vocabulary, None, split)
    references = [target for _, target in pairs]
    max_length = output_length(source_ids)
    scores = {}
    for name, size in (("greedy", 1), ("beam", beam_size)):
        cli.stage(f"decoding {len(pairs)} {split} sentences, {name} search (beam {size})")
        started = time.time()
        result = translate_ids(model, source_ids, size, max_length, length_penalty)
        hypotheses = target_vocabulary.decode(result["tokens"].tolist())
        scores[name] = (result, hypotheses, time.time() - started)
    result, hypotheses, seconds = scores["beam"]
    source_lengths = [len(source.split()) for source, _ in pairs]
    # The translations are scored in the form of their references, tokenized when the
    # data is (Multi30k's files): sacreBLEU's advice to detokenize them does not apply.
    by_length = metrics.bleu_by_length(
        hypotheses, references, source_lengths, warn_if_tokenized=False
    )
    metrics_path = os.path.join(run, "metrics.json")
    values = cli.read_json(metrics_path)
    if len(runs) > 1:
        values["ensemble"] = runs
    values.update(
        {
            "split": split,
            "beam_size": beam_size,
            "bleu": metrics.corpus_bleu(hypotheses, references, warn_if_tokenized=False),
            "bleu_greedy": metrics.corpus_bleu(
                scores["greedy"][1], references, warn_if_tokenized=False
            ),
            "chrf": metrics.corpus_chrf(hypotheses, references),
            "bleu_by_length": by_length,
            "sentences": len(pairs),
            "decode_seconds_beam": round(seconds, 1),
            "decode_seconds_greedy": round(scores["greedy"][2], 1),
        }
    )
    metrics_path = cli.write_json(metrics_path, values)
    translations_path = cli.write_rows(
        os.path.join(run, f"{split}_translations.tsv"),
        [
            (source, reference, hypothesis)
            for (source, reference), hypothesis in zip(pairs, hypotheses, strict=True)
        ],
    )
    plot_path = plot_lines(
        {
            f"{config.attention} (beam {beam_size})": (
                [bucket["bucket"] for bucket in by_length],
                [bucket["bleu"] for bucket in by_length],
            )
        },
        os.path.join(run, "bleu_by_length.png"),
        xlabel="source length (words)",
        ylabel="BLEU",
        title=f"BLEU by source length ({split})",
    )
    pictures = []
    if "attention" in result:
        chosen = np.argsort(source_lengths)[:: max(1, len(pairs) // examples)][:examples]
        for number, index in enumerate(chosen):
            pictures.append(
                save_alignment(
                    result,
                    index,
                    source_ids[index],
                    source_vocabulary,
                    target_vocabulary,
                    os.path.join(run, "alignments", f"{split}_{number}.png"),
                )
            )
    print(
        f"BLEU {values['bleu']:.2f} (beam {beam_size}), BLEU {values['bleu_greedy']:.2f} "
        f"(greedy), chrF {values['chrf']:.2f} on {len(pairs)} {split} sentences"
    )
    for bucket in by_length:
        print(
            f"    source length {bucket['bucket']:>6}: BLEU {bucket['bleu']:6.2f} "
            f"({bucket['count']} sentences)"
        )
    print(f"metrics: {metrics_path}\ntranslations (beam): {translations_path}")
    print(f"BLEU by length: {plot_path}")
    for path in pictures:
        print(f"alignment: {path}")
    return values


def save_alignment(result, index, source_ids, source_vocabulary, target_vocabulary, path):
    from multiattn.plotting import plot_alignment

    length = int(result["lengths"][index])
    target_tokens = target_vocabulary.tokens(result["tokens"][index][:length].tolist())
    source_tokens = source_vocabulary.tokens(list(source_ids))
    return plot_alignment(result["attention"][index], source_tokens, target_tokens, path)


def stdin_lines():
    """The lines of stdin; a line that is not UTF-8 becomes "" and is counted on stderr.

    One bad line must not stop the others: its output line is empty, in its place.
    """
    if not hasattr(sys.stdin, "buffer"):  # an already decoded text stream (as in tests)
        return [line.rstrip("\n") for line in sys.stdin]
    lines, bad = [], []
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            lines.append(raw.rstrip(b"\r\n").decode("utf-8"))
        except UnicodeDecodeError:
            lines.append("")
            bad.append(f"stdin:{number}")
    if bad:
        print(
            f"skipped {len(bad)} input line(s): not valid UTF-8 ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); their output lines are empty",
            file=sys.stderr,
        )
    return lines


def translate(run, texts, beam_size=None, attention_png=None, batch_size=64):
    config, model, source_vocabulary, target_vocabulary = load_run(run)
    beam_size = config.beam_size if beam_size is None else beam_size
    texts = texts or stdin_lines()
    outputs = [""] * len(texts)
    all_ids = source_vocabulary.encode(texts)
    # A text without a word is not searched: its output is "" (as in the export).
    non_empty = [index for index, ids in enumerate(all_ids) if ids]
    if non_empty:
        source_ids = [all_ids[index] for index in non_empty]
        truncated = sum(len(ids) > config.max_tokens for ids in source_ids)
        if truncated:
            print(
                f"truncated {truncated} input(s) to --max-tokens={config.max_tokens} subwords",
                file=sys.stderr,
            )
        source_ids = [ids[: config.max_tokens] for ids in source_ids]
        result = translate_ids(
            model,
            source_ids,
            beam_size,
            output_length(source_ids),
            config.length_penalty,
            batch_size,
            return_attention=bool(attention_png),
        )
        for index, text in zip(
            non_empty, target_vocabulary.decode(result["tokens"].tolist()), strict=True
        ):
            outputs[index] = text
        if attention_png and "attention" in result:
            print(
                "alignment: "
                + save_alignment(
                    result, 0, source_ids[0], source_vocabulary, target_vocabulary, attention_png
                ),
                file=sys.stderr,
            )
    for text in outputs:
        print(text, flush=False)
    sys.stdout.flush()
    return outputs


# -- command line --------------------------------------------------------------------------
def parse(argv):
    parser, commands, argv = cli.recipe_parser(
        "python -m recipes.translate",
        __doc__.splitlines()[0],
        TranslateConfig,
        argv,
        ensembles=True,
    )
    translate_parser = commands.add_parser("translate", help="translate TEXT or stdin lines")
    translate_parser.add_argument(
        "--run", required=True, action="append", help="twice or more: an ensemble"
    )
    translate_parser.add_argument("--beam-size", type=int)
    translate_parser.add_argument("--attention-png", help="alignment picture of the first text")
    translate_parser.add_argument("texts", nargs="*", metavar="TEXT")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else list(argv))
    if args.command in ("train", "all"):
        return cli.run_training_command(
            args,
            TranslateConfig,
            "translate",
            train,
            runtime.on_chief_only(evaluate),
            check_config,
        )
    if args.command == "evaluate":
        evaluate(args.run, args.split, args.beam_size, length_penalty=args.length_penalty)
        return 0
    if args.command == "export":
        from recipes import export

        export.check_output(args.out)  # before the run is loaded: a quick error
        config, model, source_vocabulary, target_vocabulary = load_run(args.run)
        export.export_translation(
            args.out,
            model,
            source_vocabulary,
            target_vocabulary,
            max_tokens=config.max_tokens,
            beam_size=config.beam_size,
            length_penalty=config.length_penalty,
        )
        return 0
    translate(args.run, args.texts, args.beam_size, args.attention_png)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main, None))
