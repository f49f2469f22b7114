"""The web demo's latency: requests timed end to end over HTTP, after a warm-up.

    python -m benchmarks.serve_latency --run runs/multi30k --run runs/flickr8k \\
        --image ../shared/data/flickr8k/Flicker8k_Dataset/1000268201_693b08cb0e.jpg
    python -m benchmarks.serve_latency --run RUN --requests 5     # a quick look

Starts `recipes.serve` on 127.0.0.1 (a free port) with the runs given, as `python -m
recipes.serve` would, and for each run posts the same request `--requests` times, one
after the other, with `urllib` as a script would: `POST /api/translate` with a sentence of
`--words` words at beam `--beam-size`, and `POST /api/caption` with `--image` at the same
beam. The first `--warmup` requests of each are not timed (they compile the generate
function of their length bucket and beam size). It prints, and writes as JSON to `--out`,
the median (p50), p90 and mean latency in milliseconds of each endpoint.
"""

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
import uuid

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from recipes import cli  # noqa: E402  (also quiets TensorFlow's loading lines)

# A sentence of the Multi30k kind, cut or repeated to `--words` words.
SENTENCE = (
    "a man in a blue shirt is standing on a ladder cleaning windows while two women in "
    "red dresses walk past the old stone building on a sunny afternoon"
)


def text_of(words, text=SENTENCE):
    """`text` cut, or repeated, to `words` words."""
    pool = text.split()
    return " ".join(pool[index % len(pool)] for index in range(words))


def post(url, body, content_type):
    request = urllib.request.Request(url, body, {"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=600) as response:
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {answer}")
        return answer


def translate_request(base, run, text, beam_size):
    body = json.dumps({"text": text, "beam_size": beam_size, "run": run}).encode()
    return lambda: post(base + "api/translate", body, "application/json")


def caption_request(base, run, image_path, beam_size):
    with open(image_path, "rb") as file:
        content = file.read()
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (("run", run), ("beam_size", str(beam_size))):
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"{head}{value}\r\n".encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        f'filename="{os.path.basename(image_path)}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    return lambda: post(base + "api/caption", body, content_type)


def timed(send, requests, warmup):
    """Milliseconds of `requests` calls of `send`, after `warmup` untimed ones."""
    for _ in range(warmup):
        send()
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        send()
        times.append(1000 * (time.perf_counter() - started))
    return times


def summary(times):
    ordered = sorted(times)
    return {
        "requests": len(times),
        "p50_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
    }


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serve_latency", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--run", action="append", required=True, help="a run to serve")
    parser.add_argument("--image", help="the image /api/caption is sent (for caption runs)")
    parser.add_argument("--words", type=int, default=20, help="words of the sentence")
    parser.add_argument(
        "--text", default=SENTENCE, help="the words the sentence is cut from or repeats"
    )
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests first")
    parser.add_argument("--out", help="a JSON file for the figures")
    return parser.parse_args(argv)


def main(argv=None):
    from recipes import serve

    args = parse(argv)
    if args.requests < 1 or args.warmup < 0 or args.words < 1 or args.beam_size < 1:
        raise cli.UsageError("--requests, --words and --beam-size must be 1 or more")
    for directory in args.run:
        serve.run_kind(directory)
    cli.stage(f"loading {len(args.run)} run(s)")
    runs = serve.load_runs(args.run)
    results = {}
    with serve.BackgroundServer(serve.create_app(runs, serve.ServeConfig(port=0))) as server:
        for name, run in runs.items():
            if run.kind == "translate":
                send = translate_request(
                    server.url, name, text_of(args.words, args.text), args.beam_size
                )
                label = f"POST /api/translate ({args.words} words, beam {args.beam_size})"
            else:
                if not args.image:
                    raise cli.UsageError(f"--image: needed for the caption run {name}")
                send = caption_request(server.url, name, args.image, args.beam_size)
                label = f"POST /api/caption (beam {args.beam_size})"
            cli.stage(f"{name}: {args.warmup} warm-up and {args.requests} timed requests")
            results[name] = {"endpoint": label, **summary(timed(send, args.requests, args.warmup))}
            figures = results[name]
            print(
                f"    {label}: p50 {figures['p50_ms']} ms, p90 {figures['p90_ms']} ms, "
                f"mean {figures['mean_ms']} ms",
                flush=True,
            )
    if args.out:
        cli.write_json(args.out, results)
        print(f"figures: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main, None))
