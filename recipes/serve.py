"""A local web demo of trained runs: translations and captions with their attention.

    python -m recipes.serve --run DIR [--run DIR ...] [--host 127.0.0.1] [--port 8000]

Each `--run` is a run directory of `recipes.translate` or `recipes.caption` (the kind is
read from its config.json). The server answers on one page, `GET /` (the files of
`recipes/static/`: nothing is fetched from the internet), and on the JSON API that the
page uses:

    GET  /api/runs        the runs served (name, kind, config) and the request limits
    POST /api/translate   {"text": "...", "beam_size": 4, "run": NAME}   (run: optional)
    POST /api/caption     multipart/form-data: the file `image`; `beam_size`, `run` optional

Bad input is answered with a 4xx status and `{"error": "..."}`. Model calls are
serialized (one at a time, under a lock, in worker threads): requests arrive concurrently
and the event loop keeps answering while a model runs.
"""

import asyncio
import dataclasses
import io
import json
import os
import socket
import sys
import threading
import time

import numpy as np

from recipes import cli

STATIC_DIRECTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
KINDS = ("translate", "caption")
TRANSLATE_FIELDS = ("text", "beam_size", "run")
CAPTION_FIELDS = ("image", "beam_size", "run")
# Room for the multipart headers around an image, and for a JSON body around its text.
MULTIPART_OVERHEAD_BYTES = 16 * 1024
JSON_OVERHEAD_BYTES = 4 * 1024


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Settings of the server; every field is a `--field-name` flag."""

    host: str = dataclasses.field(
        default="127.0.0.1", metadata={"help": "address to bind (0.0.0.0: every interface)"}
    )
    port: int = dataclasses.field(default=8000, metadata={"help": "0: any free port"})
    max_text_characters: int = dataclasses.field(
        default=1000, metadata={"help": "longest text /api/translate accepts"}
    )
    max_image_megabytes: float = dataclasses.field(
        default=10.0, metadata={"help": "largest image file /api/caption accepts"}
    )
    max_image_megapixels: float = dataclasses.field(
        default=40.0, metadata={"help": "largest image (width x height) /api/caption decodes"}
    )
    max_beam_size: int = dataclasses.field(default=16, metadata={"help": "largest beam_size"})

    @property
    def max_image_bytes(self):
        return int(self.max_image_megabytes * 1_000_000)

    def limits(self):
        """The request limits, as `GET /api/runs` states them."""
        return {
            "max_text_characters": self.max_text_characters,
            "max_image_bytes": self.max_image_bytes,
            "max_image_pixels": int(self.max_image_megapixels * 1_000_000),
            "max_beam_size": self.max_beam_size,
        }


class RequestError(Exception):
    """Bad input in a request: answered with `status` and `{"error": message}`."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# One model call at a time, whichever run: TensorFlow already uses every core for one call,
# and a model's compiled generate function is kept per search settings, not per thread.
MODEL_LOCK = threading.Lock()


def rounded(values, digits=6):
    """Nested lists of floats for JSON, rounded: weights need no more than 6 digits."""
    return np.round(np.asarray(values, dtype="float64"), digits).tolist()


# -- runs ----------------------------------------------------------------------------------
def run_kind(directory):
    """The kind of a run, "translate" or "caption", as its config.json says."""
    cli.require_run(directory)
    values = cli.read_json(os.path.join(directory, "config.json"))
    if not values:
        raise cli.UsageError(f"--run: {directory} holds no config.json")
    if "image_size" in values:
        return "caption"
    if "vocabulary_size" in values:
        return "translate"
    raise cli.UsageError(
        f"--run: {directory}: its config.json is neither a translation nor a captioning run's"
    )


def nbest_list(texts, scores):
    """The n-best list of an answer, best first."""
    return [
        {"text": text, "score": round(float(score), 6)}
        for text, score in zip(texts, scores, strict=True)
    ]


class ServedRun:
    """What every served run has: a name, a directory, a config and `describe()`."""

    kind = None

    def describe(self):
        """The run as `GET /api/runs` lists it."""
        return {
            "name": self.name,
            "kind": self.kind,
            "directory": self.directory,
            "config": dataclasses.asdict(self.config),
            "beam_size": self.config.beam_size,
            **self.details(),
        }

    def details(self):
        """What `describe()` says about this kind of run."""
        return {}


class TranslationRun(ServedRun):
    """A translation run: the text -> translation, n-best list and alignment."""

    kind = "translate"

    def __init__(self, name, directory):
        from recipes import translate

        self.name, self.directory = name, directory
        loaded = translate.load_run(directory)
        self.config, self.model, self.source_vocabulary, self.target_vocabulary = loaded

    def details(self):
        return {"has_attention": self.config.attention != "none"}

    def answer(self, text, beam_size):
        """What `POST /api/translate` returns; the translation is the CLI's, same beam."""
        from recipes import translate

        ids = self.source_vocabulary.encode([text])[0]
        if not ids:
            raise RequestError(400, "text: nothing to translate (no word in it)")
        # As `translate --run`: a longer input is cut to the length the model trained on.
        truncated = len(ids) > self.config.max_tokens
        ids = ids[: self.config.max_tokens]
        with MODEL_LOCK:
            result = translate.translate_ids(
                self.model,
                [ids],
                beam_size,
                translate.output_length([ids]),
                self.config.length_penalty,
                nbest=True,
                source_length=cli.length_bucket(len(ids)),
            )
        texts = self.target_vocabulary.decode(result["tokens"][0].tolist())
        length = int(result["lengths"][0, 0])
        attention = []
        if "attention" in result:
            attention = rounded(result["attention"][0, 0, :length, : len(ids)])
        return {
            "run": self.name,
            "translation": texts[0],
            "source_tokens": self.source_vocabulary.tokens(ids),
            "target_tokens": self.target_vocabulary.tokens(result["tokens"][0, 0, :length]),
            "attention": attention,
            "nbest": nbest_list(texts, result["scores"][0]),
            "beam_size": beam_size,
            "truncated": truncated,
        }


class CaptionRun(ServedRun):
    """A captioning run: an image file -> caption, n-best list and attention per word."""

    kind = "caption"

    def __init__(self, name, directory):
        from recipes import caption

        self.name, self.directory = name, directory
        self.config, self.model, self.vocabulary = caption.load_run(directory)
        size = self.config.image_size
        self.grid = [int(side) for side in self.model.encoder.grid_shape((size, size))]

    def details(self):
        return {"grid": self.grid, "hard_attention": self.config.hard_attention}

    def answer(self, image_file, beam_size):
        """What `POST /api/caption` returns: one attention row (over the grid) per word."""
        from recipes import caption
        from recipes.data.image_files import load_image

        pixels = load_image(image_file, self.config.image_size)
        with MODEL_LOCK:
            result = caption.generate_captions(
                self.model, pixels[None].astype("float32"), self.config, beam_size, nbest=True
            )
        texts = caption.decode_captions(self.vocabulary, result["tokens"][0])
        # One row per word and one for the end token, as the recipe's pictures show.
        length = int(result["lengths"][0, 0])
        words = texts[0].split()
        tokens = (words + ["<end>"])[:length]
        attention = result["attention"][0, 0, : len(tokens)]
        answer = {
            "run": self.name,
            "caption": texts[0],
            "tokens": tokens,
            "attention": rounded(attention),
            "grid": self.grid,
            "nbest": nbest_list(texts, result["scores"][0]),
            "beam_size": beam_size,
            "hard_attention": self.config.hard_attention,
        }
        if self.config.hard_attention:
            # The region a hard-attention model attends to most surely at each word (it
            # samples one region per word in training; at inference it uses the expectation).
            answer["hard"] = [int(index) for index in np.argmax(attention, axis=-1)]
        return answer


def load_runs(directories):
    """`{name: TranslationRun | CaptionRun}` in the order given; names are the directories'
    base names (a repeated one gets `-2`, `-3`, ...)."""
    runs = {}
    for directory in directories:
        kind = run_kind(directory)
        base = os.path.basename(os.path.normpath(directory)) or "run"
        name, number = base, 1
        while name in runs:
            number += 1
            name = f"{base}-{number}"
        cli.stage(f"loading the {kind} run {directory} as {name!r}")
        runs[name] = (TranslationRun if kind == "translate" else CaptionRun)(name, directory)
    return runs


# -- requests ------------------------------------------------------------------------------
async def read_body(request, limit, message):
    """The request body, or a 413 with `message` as soon as it is longer than `limit` bytes
    (before reading it, when its Content-Length says so)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise RequestError(413, message)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, message)
        chunks.append(chunk)
    return b"".join(chunks)


def choose_run(runs, kind, name):
    """The run named `name` (any of `kind` when None); 404 or 400 when there is none."""
    if name is None:
        for run in runs.values():
            if run.kind == kind:
                return run
        raise RequestError(404, f"run: no {kind} run is served (see GET /api/runs)")
    if not isinstance(name, str):
        raise RequestError(400, "run: must be a string, the name of a run (GET /api/runs)")
    if name not in runs:
        served = ", ".join(sorted(runs))
        raise RequestError(404, f"run: no run named {name!r} is served (served: {served})")
    if runs[name].kind != kind:
        other = "/api/translate" if runs[name].kind == "translate" else "/api/caption"
        raise RequestError(400, f"run: {name!r} is a {runs[name].kind} run; use {other}")
    return runs[name]


def parse_beam_size(value, default, limit, form=False):
    """`beam_size` from JSON (an int) or, with `form`, a form field (its digits); `default`
    when absent."""
    if value is None or (form and value == ""):
        return default
    if form and isinstance(value, str):
        if not value.strip().isdigit():
            raise RequestError(400, f"beam_size: {value!r} is not a whole number")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(400, f"beam_size: must be a whole number, got {value!r}")
    if not 1 <= value <= limit:
        raise RequestError(400, f"beam_size: {value} is outside 1..{limit}")
    return value


def check_fields(names, allowed):
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise RequestError(
            400, f"{unknown[0]}: unknown field (the fields are {', '.join(allowed)})"
        )


def error_response(status, message):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def create_app(runs, config=None):
    """The Starlette application serving `runs` (as `load_runs` gives them)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    config = config or ServeConfig()

    async def index(request):
        return FileResponse(os.path.join(STATIC_DIRECTORY, "index.html"))

    async def list_runs(request):
        return JSONResponse(
            {"runs": [run.describe() for run in runs.values()], "limits": config.limits()}
        )

    async def translate_endpoint(request):
        limit = config.max_text_characters * 4 + JSON_OVERHEAD_BYTES  # 4 bytes per UTF-8 char
        body = await read_body(
            request,
            limit,
            f"text: the request is over {limit} bytes; texts are limited to "
            f"{config.max_text_characters} characters",
        )
        try:
            values = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestError(400, f"body: not JSON ({error})") from None
        if not isinstance(values, dict):
            raise RequestError(400, 'body: must be a JSON object, e.g. {"text": "..."}')
        check_fields(values, TRANSLATE_FIELDS)
        run = choose_run(runs, "translate", values.get("run"))
        text = values.get("text")
        if text is None:
            raise RequestError(400, "text: missing (the text to translate)")
        if not isinstance(text, str):
            raise RequestError(400, "text: must be a string")
        if not text.strip():
            raise RequestError(400, "text: empty")
        if len(text) > config.max_text_characters:
            raise RequestError(
                400,
                f"text: {len(text)} characters, over the limit of {config.max_text_characters}",
            )
        beam_size = parse_beam_size(
            values.get("beam_size"), run.config.beam_size, config.max_beam_size
        )
        return JSONResponse(await run_in_threadpool(run.answer, text, beam_size))

    async def caption_endpoint(request):
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise RequestError(
                415, "image: send multipart/form-data with the image as the file field `image`"
            )
        body = await read_body(
            request,
            config.max_image_bytes + MULTIPART_OVERHEAD_BYTES,
            f"image: the request is over the limit of {config.max_image_bytes} bytes for an image",
        )

        async def replay():  # the body, read once under the limit, for the form parser
            return {"type": "http.request", "body": body, "more_body": False}

        async with Request(request.scope, replay).form(max_files=1, max_fields=8) as form:
            check_fields(form.keys(), CAPTION_FIELDS)
            run = choose_run(runs, "caption", form.get("run") or None)
            beam_size = parse_beam_size(
                form.get("beam_size"), run.config.beam_size, config.max_beam_size, form=True
            )
            upload = form.get("image")
            if upload is None:
                raise RequestError(400, "image: missing (a file field named `image`)")
            if isinstance(upload, str):
                raise RequestError(400, "image: must be a file, not a text field")
            data = await upload.read()
            name = upload.filename or "image"
        if not data:
            raise RequestError(400, f"image: {name} is empty (0 bytes)")
        if len(data) > config.max_image_bytes:
            raise RequestError(
                413, f"image: {len(data)} bytes, over the limit of {config.max_image_bytes}"
            )
        image_file = io.BytesIO(data)
        image_file.name = name
        check_image(image_file, config)
        return JSONResponse(await run_in_threadpool(run.answer, image_file, beam_size))

    async def request_error(request, error):
        return error_response(error.status, error.message)

    async def http_error(request, error):
        message = error.detail
        if error.status_code == 404:
            message = f"{request.url.path}: not found (the API: GET /api/runs)"
        elif error.status_code == 405:
            allowed = error.headers.get("Allow", "") if error.headers else ""
            message = f"{request.method} {request.url.path}: method not allowed (use {allowed})"
        elif error.status_code == 400 and request.url.path == "/api/caption":
            message = f"image: bad multipart/form-data ({error.detail})"
        return error_response(error.status_code, message)

    async def image_error(request, error):
        return error_response(415, f"image: not an image we can read ({error.reason})")

    async def unexpected_error(request, error):
        # One line in the server's log and in the answer, never a traceback.
        print(f"error: {request.method} {request.url.path}: {error!r}", file=sys.stderr)
        return error_response(500, f"internal error: {type(error).__name__}")

    from recipes.data.image_files import ImageError

    return Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/api/runs", list_runs, methods=["GET"]),
            Route("/api/translate", translate_endpoint, methods=["POST"]),
            Route("/api/caption", caption_endpoint, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC_DIRECTORY), name="static"),
        ],
        exception_handlers={
            RequestError: request_error,
            HTTPException: http_error,
            ImageError: image_error,
            Exception: unexpected_error,
        },
    )


def check_image(image_file, config):
    """415 for a file Pillow cannot identify, 413 for one over the pixel limit.

    Only the header is read: an image is refused before it is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_file) as image:
            width, height = image.size
    except UnidentifiedImageError:
        raise RequestError(
            415, f"image: {image_file.name} is not an image (no image format recognised)"
        ) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise RequestError(
            415, f"image: {image_file.name} is not an image we can read ({error})"
        ) from None
    finally:
        image_file.seek(0)
    limit = config.limits()["max_image_pixels"]
    if width * height > limit:
        raise RequestError(413, f"image: {width}x{height} pixels, over the limit of {limit} pixels")


# -- the server ----------------------------------------------------------------------------
def bind(host, port):
    """A listening socket; a one-line error when the address cannot be had."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError as error:
        raise cli.UsageError(
            f"--host {host} --port {port}: cannot listen there ({error})"
        ) from None
    return listener


def make_server(app):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))


def address(listener):
    host, port = listener.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


class BackgroundServer:
    """The app served on a socket from a thread (for tests and scripts); a context manager.

    `url` is its address, e.g. `http://127.0.0.1:41234/`.
    """

    def __init__(self, app, host="127.0.0.1", port=0):
        self.listener = bind(host, port)
        self.url = address(self.listener)
        self.server = make_server(app)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.listener]}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.listener.close()


def parse(argv):
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m recipes.serve", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        help="a run directory of recipes.translate or recipes.caption; more than once: all",
    )
    cli.add_config_flags(parser, ServeConfig)
    return parser.parse_args(argv)


def check_config(config):
    for name in ("max_text_characters", "max_image_megabytes", "max_image_megapixels"):
        if not getattr(config, name) > 0:
            raise cli.UsageError(f"--{name.replace('_', '-')} {getattr(config, name)}: must be > 0")
    if config.max_beam_size < 1:
        raise cli.UsageError(f"--max-beam-size {config.max_beam_size}: must be 1 or more")
    if not 0 <= config.port <= 65535:
        raise cli.UsageError(f"--port {config.port}: must be in 0..65535")


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else list(argv))
    config = cli.config_from_args(ServeConfig, args)
    check_config(config)
    for directory in args.run:  # every run checked before any is loaded: a quick error
        run_kind(directory)
    listener = bind(config.host, config.port)
    runs = load_runs(args.run)
    server = make_server(create_app(runs, config))
    print(f"serving {len(runs)} run(s) at {address(listener)} (Ctrl-C stops)", flush=True)
    try:
        server.run(sockets=[listener])
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main, None))
