"""The bottleneck, reproduced: BLEU by source length with and without attention.

    python -m benchmarks.length_curve                 # generated number phrases, 5 models
    python -m benchmarks.length_curve --data ../shared/data/multi30k/tok \\
        --source-lang de --target-lang en --epochs 10 --units 256 --split val
    python -m benchmarks.length_curve --quick         # tiny, for the tests

Bahdanau et al. (2014, figure 2): an encoder-decoder that squeezes the source into one
fixed vector degrades as sentences get longer; with attention it does not. This trains,
with the same data, size and budget (epochs), five translation models with the
translation recipe (`recipes.translate`):

- `none`: no attention (the decoder starts from the encoder's final state);
- `none-reversed`: the same, reading the source reversed (Sutskever et al. 2014);
- `bahdanau`: additive attention in the Bahdanau order (attend with s_{i-1});
- `luong-general`: Luong's general score in the Luong order;
- `key-value`: projected keys and values, scaled dot product, in the Luong order;

decodes the test split (`--split val` where the data has none) with beam search, and
writes BLEU per source-length bucket as a picture (one curve per model), a markdown
table and JSON into `--out`. Every other flag is a flag of `python -m recipes.translate
train` and applies to all five models.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from recipes import cli, translate  # noqa: E402

# name -> the flags that differ between the models
MODELS = {
    "none": {"attention": "none"},
    "none-reversed": {"attention": "none", "reverse_source": True},
    "bahdanau": {"attention": "bahdanau", "attention_order": "bahdanau"},
    "luong-general": {"attention": "luong-general", "attention_order": "luong"},
    "key-value": {"attention": "key-value", "attention_order": "luong"},
}
# The same budget for every model; 6 epochs of 20,000 pairs keep the five models
# within 30 minutes on a 2-core CPU.
DEFAULTS = {"epochs": 6, "patience": 6, "num_train": 20000}
QUICK = {
    "epochs": 1,
    "num_train": 200,
    "num_val": 40,
    "num_test": 40,
    "units": 16,
    "embedding_dim": 8,
    "vocabulary_size": 200,
    "batch_size": 32,
    "beam_size": 2,
}


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.length_curve", description=__doc__.splitlines()[0]
    )
    cli.add_config_flags(parser, translate.TranslateConfig)
    parser.add_argument("--models", default=",".join(MODELS), help="a comma-separated subset")
    parser.add_argument("--quick", action="store_true", help="tiny models, for the tests")
    parser.add_argument(
        "--split",
        default="test",
        choices=("test", "val"),
        help="the split decoded (val: for data whose test split is withheld)",
    )
    parser.add_argument("--out", default=os.path.join("runs", "benchmarks", "length_curve"))
    args = parser.parse_args(argv)
    args.models = [name for name in args.models.split(",") if name]
    unknown = [name for name in args.models if name not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)} (known: {', '.join(MODELS)})")
    return args


def base_config(args):
    """The shared settings: the benchmark's defaults, then the flags given."""
    defaults = {**DEFAULTS, **(QUICK if args.quick else {})}
    base = dataclasses.replace(translate.TranslateConfig(), **defaults)
    return cli.config_from_args(translate.TranslateConfig, args, base)


def markdown(report):
    buckets = []
    for result in report["models"].values():
        for bucket in result["bleu_by_length"]:
            if bucket["bucket"] not in buckets:
                buckets.append(bucket["bucket"])
    config = report["config"]
    lines = [
        "# BLEU by source length",
        "",
        f"Data: {config['data'] or 'generated number phrases'}; {config['units']} units, "
        f"embedding {config['embedding_dim']}, {config['epochs']} epochs, batch "
        f"{config['batch_size']}, beam {config['beam_size']}; {report['split']} split. Command: "
        f"`{report['command']}` ({report['minutes']} minutes).",
        "",
        "| model | BLEU | " + " | ".join(f"{bucket} words" for bucket in buckets) + " |",
        "|---|---:|" + "---:|" * len(buckets),
    ]
    for name, result in report["models"].items():
        by_bucket = {bucket["bucket"]: bucket["bleu"] for bucket in result["bleu_by_length"]}
        cells = [f"{by_bucket[bucket]:.1f}" if bucket in by_bucket else "" for bucket in buckets]
        lines.append(f"| {name} | {result['bleu']:.1f} | " + " | ".join(cells) + " |")
    counts = {}
    for result in report["models"].values():
        for bucket in result["bleu_by_length"]:
            counts[bucket["bucket"]] = bucket["count"]
    lines += ["", "Sentences per bucket: " + ", ".join(f"{b}: {n}" for b, n in counts.items())]
    return "\n".join(lines) + "\n"


def main(argv=None):
    from multiattn.plotting import plot_lines

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    config = base_config(args)
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    results = {}
    for number, name in enumerate(args.models, 1):
        cli.stage(f"model {number}/{len(args.models)}: {name}")
        model_config = dataclasses.replace(config, **MODELS[name])
        run = os.path.join(args.out, name)
        os.makedirs(run, exist_ok=True)
        model_started = time.time()
        translate.train(model_config, run)
        values = translate.evaluate(run, split=args.split)
        results[name] = {
            "bleu": values["bleu"],
            "bleu_by_length": values["bleu_by_length"],
            "train_seconds": cli.read_json(os.path.join(run, "metrics.json"))["train_seconds"],
            "seconds": round(time.time() - model_started, 1),
        }
    report = {
        "command": " ".join(["python -m benchmarks.length_curve", *argv]),
        "minutes": round((time.time() - started) / 60, 1),
        "split": args.split,
        "config": dataclasses.asdict(config),
        "models": results,
    }
    json_path = os.path.join(args.out, "length_curve.json")
    with open(json_path, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)  # in the order the models ran
    table = markdown(report)
    markdown_path = os.path.join(args.out, "length_curve.md")
    with open(markdown_path, "w", encoding="utf-8") as file:
        file.write(table)
    plot_path = plot_lines(
        {
            name: (
                [bucket["bucket"] for bucket in result["bleu_by_length"]],
                [bucket["bleu"] for bucket in result["bleu_by_length"]],
            )
            for name, result in results.items()
        },
        os.path.join(args.out, "length_curve.png"),
        xlabel="source length (words)",
        ylabel=f"BLEU ({args.split})",
        title="BLEU by source length",
    )
    print(table)
    print(f"picture: {plot_path}\ntable: {markdown_path}\njson: {json_path}")
    print(f"took {report['minutes']} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main, None))
