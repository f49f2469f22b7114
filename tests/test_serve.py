"""The web demo's JSON API over real HTTP: answers, bad input, concurrency, the command.

The server (`served` in conftest.py) runs in a thread on 127.0.0.1 with two tiny runs
trained for the session; requests go through `urllib`, as a script's would.
"""

import concurrent.futures
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

from recipes import caption, cli, serve, translate

pytestmark = pytest.mark.slow

TEXT = "ninety seven"
BEAM = 2


def request(url, data=None, headers=None, method=None, timeout=120):
    """`(status, parsed JSON body)` of one HTTP request; 4xx/5xx answers too."""
    outgoing = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(outgoing, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        assert error.headers.get_content_type() == "application/json", body[:200]
        return error.code, json.loads(body)


def post_json(url, values):
    return request(
        url + "api/translate",
        json.dumps(values).encode(),
        {"Content-Type": "application/json"},
    )


def multipart(fields):
    """A multipart/form-data body: `fields` maps a name to a str or `(filename, bytes)`."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, content = value
            head = (
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            )
        else:
            head, content = f'Content-Disposition: form-data; name="{name}"\r\n\r\n', value.encode()
        parts.append(f"--{boundary}\r\n{head}".encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post_form(url, fields):
    body, headers = multipart(fields)
    return request(url + "api/caption", body, headers)


def png_bytes(pixels):
    output = io.BytesIO()
    Image.fromarray(pixels).save(output, format="PNG")
    return output.getvalue()


@pytest.fixture(scope="module")
def scene_png():
    """A small picture: a red square on grey, as a PNG file's bytes."""
    pixels = np.full((48, 48, 3), 128, "uint8")
    pixels[8:24, 20:36] = (220, 30, 30)
    return png_bytes(pixels)


def check_rows_sum_to_one(attention, rows, columns):
    weights = np.asarray(attention, dtype="float64")
    assert weights.shape == (rows, columns)
    assert np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-4)


def test_runs_lists_both_kinds_with_their_config(served, serve_runs):
    url, _, config = served
    status, answer = request(url + "api/runs")
    assert status == 200
    kinds = {run["name"]: run["kind"] for run in answer["runs"]}
    assert kinds == {"numbers": "translate", "scenes": "caption"}
    for run in answer["runs"]:
        saved = json.loads((serve_runs[run["kind"]] / "config.json").read_text())
        assert run["config"] == saved
    scenes = next(run for run in answer["runs"] if run["kind"] == "caption")
    assert scenes["hard_attention"] is True and len(scenes["grid"]) == 2
    assert answer["limits"]["max_text_characters"] == config.max_text_characters
    assert answer["limits"]["max_image_bytes"] == config.max_image_bytes


def test_translation_is_the_command_lines_with_its_alignment(served, serve_runs, capsys):
    url, runs, _ = served
    status, answer = post_json(url, {"text": TEXT, "beam_size": BEAM})
    assert status == 200, answer
    run = str(serve_runs["translate"])
    assert translate.main(["translate", "--run", run, "--beam-size", str(BEAM), TEXT]) == 0
    assert answer["translation"] == capsys.readouterr().out.rstrip("\n")
    vocabulary = runs["numbers"].source_vocabulary
    assert answer["source_tokens"] == vocabulary.tokens(vocabulary.encode([TEXT])[0])
    check_rows_sum_to_one(
        answer["attention"], len(answer["target_tokens"]), len(answer["source_tokens"])
    )
    # The n-best list: the beam's hypotheses, best first, the first the translation.
    assert len(answer["nbest"]) == BEAM
    assert answer["nbest"][0]["text"] == answer["translation"]
    scores = [hypothesis["score"] for hypothesis in answer["nbest"]]
    assert scores == sorted(scores, reverse=True)
    assert answer["beam_size"] == BEAM and answer["truncated"] is False


def test_caption_is_the_command_lines_with_attention_over_the_grid(
    served, serve_runs, scene_png, tmp_path, capsys
):
    url, runs, _ = served
    status, answer = post_form(url, {"image": ("scene.png", scene_png)})
    assert status == 200, answer
    path = tmp_path / "scene.png"
    path.write_bytes(scene_png)
    assert caption.main(["caption", "--run", str(serve_runs["caption"]), str(path)]) == 0
    assert f"{path}\t{answer['caption']}" == capsys.readouterr().out.rstrip("\n")
    run = runs["scenes"]
    rows, columns = answer["grid"]
    size = run.config.image_size
    assert [rows, columns] == list(run.model.encoder.grid_shape((size, size)))
    assert answer["tokens"][: len(answer["caption"].split())] == answer["caption"].split()
    check_rows_sum_to_one(answer["attention"], len(answer["tokens"]), rows * columns)
    assert len(answer["nbest"]) == run.config.beam_size
    assert answer["nbest"][0]["text"] == answer["caption"]
    # Hard attention: the region of most attention at every word.
    assert answer["hard"] == np.argmax(answer["attention"], axis=-1).tolist()


def test_beam_size_one_is_greedy_with_one_hypothesis(served, scene_png):
    url, _, _ = served
    status, answer = post_form(url, {"image": ("scene.png", scene_png), "beam_size": "1"})
    assert status == 200, answer
    assert len(answer["nbest"]) == 1 and answer["nbest"][0]["text"] == answer["caption"]


@pytest.mark.skipif(
    __import__("keras").config.backend() == "torch",
    reason="PyTorch decodes eagerly: nothing is traced",
)
def test_requests_of_every_length_compile_once_per_bucket_and_beam(served):
    url, runs, _ = served
    run = runs["numbers"]
    model = run.model
    traced = []
    search = model.search

    def counting_search(*args, **kwargs):  # runs once per trace of a generate function
        traced.append(args[2] if len(args) > 2 else kwargs.get("max_length"))
        return search(*args, **kwargs)

    model.search = counting_search
    try:
        words = TEXT.split()
        buckets = set()
        for count in range(1, 21):
            text = " ".join(words[index % len(words)] for index in range(count))
            beam_size = 1 + count % 2
            status, answer = post_json(url, {"text": text, "beam_size": beam_size})
            assert status == 200, answer
            ids = run.source_vocabulary.encode([text])[0][: run.config.max_tokens]
            buckets.add((beam_size, cli.length_bucket(len(ids)), translate.output_length([ids])))
    finally:
        del model.search
    # 20 lengths, two beam sizes: a trace per (beam size, source bucket, output bucket)
    # at most, where a function per request would trace 20 times.
    assert 0 < len(traced) <= len(buckets) < 20


def test_the_latency_benchmark_times_both_endpoints(serve_runs, scene_png, tmp_path, capsys):
    from benchmarks import serve_latency

    image, out = tmp_path / "scene.png", tmp_path / "latency.json"
    image.write_bytes(scene_png)
    runs = ["--run", str(serve_runs["translate"]), "--run", str(serve_runs["caption"])]
    settings = ["--requests", "3", "--warmup", "1", "--beam-size", "2", "--words", "5"]
    argv = [*runs, *settings, "--text", TEXT, "--image", str(image), "--out", str(out)]
    assert serve_latency.main(argv) == 0

    results = json.loads(out.read_text())
    assert set(results) == {"numbers", "scenes"}
    printed = capsys.readouterr().out
    for figures in results.values():
        assert figures["requests"] == 3
        assert 0 < figures["p50_ms"] <= figures["p90_ms"]
        assert f"p50 {figures['p50_ms']} ms" in printed
    assert results["numbers"]["endpoint"] == "POST /api/translate (5 words, beam 2)"
    assert results["scenes"]["endpoint"] == "POST /api/caption (beam 2)"


def noise_png(side):
    return png_bytes(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype="uint8"))


def bad_requests(url, config):
    """`(label, send, status, word the error names)`: every bad input the API refuses."""
    too_long = "seven " * (config.max_text_characters // 6 + 1)
    big_file = noise_png(160)  # random pixels barely compress: over the byte limit
    assert len(big_file) > config.max_image_bytes
    blank = np.zeros((300, 300, 3), "uint8")  # a small file of too many pixels
    assert 300 * 300 > config.limits()["max_image_pixels"]
    small = noise_png(16)
    return [
        ("empty text", lambda: post_json(url, {"text": "   "}), 400, "text"),
        ("missing text", lambda: post_json(url, {"beam_size": 2}), 400, "text"),
        ("text not a string", lambda: post_json(url, {"text": 7}), 400, "text"),
        ("text over the limit", lambda: post_json(url, {"text": too_long}), 400, "text"),
        ("wrong field", lambda: post_json(url, {"text": TEXT, "beam": 2}), 400, "beam"),
        ("beam size 0", lambda: post_json(url, {"text": TEXT, "beam_size": 0}), 400, "beam_size"),
        ("beam size text", lambda: post_json(url, {"text": TEXT, "beam_size": "4"}), 400, "beam"),
        ("beam over max", lambda: post_json(url, {"text": TEXT, "beam_size": 99}), 400, "beam"),
        ("no such run", lambda: post_json(url, {"text": TEXT, "run": "nope"}), 404, "run"),
        (
            "run of the other kind",
            lambda: post_json(url, {"text": TEXT, "run": "scenes"}),
            400,
            "run",
        ),
        ("body not JSON", lambda: request(url + "api/translate", b"{text"), 400, "body"),
        ("body a list", lambda: request(url + "api/translate", b"[1, 2]"), 400, "body"),
        (
            "body over the limit",
            lambda: request(
                url + "api/translate",
                b" " * (serve.JSON_OVERHEAD_BYTES + 4 * config.max_text_characters + 1),
            ),
            413,
            "text",
        ),
        ("GET translate", lambda: request(url + "api/translate"), 405, "method"),
        ("POST runs", lambda: request(url + "api/runs", b"", method="POST"), 405, "method"),
        ("unknown path", lambda: request(url + "api/nothing"), 404, "not found"),
        (
            "not an image",
            lambda: post_form(url, {"image": ("a.png", b"not a picture")}),
            415,
            "image",
        ),
        ("empty image", lambda: post_form(url, {"image": ("a.png", b"")}), 400, "image"),
        (
            "image over the size",
            lambda: post_form(url, {"image": ("a.png", big_file)}),
            413,
            "image",
        ),
        (
            "image over the pixels",
            lambda: post_form(url, {"image": ("a.png", png_bytes(blank))}),
            413,
            "image",
        ),
        ("no image field", lambda: post_form(url, {"picture": ("a.png", small)}), 400, "picture"),
        ("image not a file", lambda: post_form(url, {"image": "hello"}), 400, "image"),
        ("missing image", lambda: post_form(url, {"beam_size": "2"}), 400, "image"),
        (
            "caption beam not a number",
            lambda: post_form(url, {"image": ("a.png", small), "beam_size": "x"}),
            400,
            "beam_size",
        ),
        (
            "caption no such run",
            lambda: post_form(url, {"image": ("a.png", small), "run": "x"}),
            404,
            "run",
        ),
        (
            "caption not multipart",
            lambda: request(url + "api/caption", small, {"Content-Type": "image/png"}),
            415,
            "image",
        ),
        (
            "broken multipart",
            lambda: request(
                url + "api/caption",
                b"--x\r\nnonsense",
                {"Content-Type": "multipart/form-data; boundary=x"},
            ),
            400,
            "image",
        ),
    ]


def test_every_bad_input_is_a_4xx_json_error_and_the_server_goes_on(served):
    url, _, config = served
    for label, send, status, word in bad_requests(url, config):
        code, answer = send()
        assert code == status, (label, answer)
        assert set(answer) == {"error"}, label
        assert word in answer["error"] and "Traceback" not in answer["error"], (label, answer)
        assert "\n" not in answer["error"], label
    status, answer = post_json(url, {"text": TEXT, "beam_size": BEAM})  # still serving
    assert status == 200 and answer["translation"]


def test_a_burst_of_concurrent_requests_is_served(served, scene_png):
    url, _, _ = served
    expected_text = post_json(url, {"text": TEXT, "beam_size": BEAM})[1]["translation"]
    expected_caption = post_form(url, {"image": ("scene.png", scene_png)})[1]["caption"]

    def one(number):
        if number % 3 == 2:
            status, answer = post_form(url, {"image": ("scene.png", scene_png)})
            return status, answer.get("caption") == expected_caption
        if number % 3 == 1:
            status, answer = request(url + "api/runs")
            return status, len(answer["runs"]) == 2
        status, answer = post_json(url, {"text": TEXT, "beam_size": BEAM})
        return status, answer.get("translation") == expected_text

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(one, range(24)))
    assert results == [(200, True)] * 24


def test_the_page_and_its_files_are_served(served):
    url, _, _ = served
    with urllib.request.urlopen(url, timeout=30) as response:
        page = response.read().decode()
        assert response.headers.get_content_type() == "text/html"
    assert "/static/app.js" in page and "/static/style.css" in page
    # Nothing from the internet: every script and stylesheet is the server's own.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    for name in ("app.js", "style.css"):
        with urllib.request.urlopen(url + "static/" + name, timeout=30) as response:
            assert response.status == 200 and len(response.read()) > 100


# -- a keras.applications backbone, cut at a layer ----------------------------------------
def mobilenet_v2_weights(path, image_size):
    """Writes the weights of a random MobileNetV2 (alpha 0.35) to `path`.

    Its BatchNorm statistics are those of one batch of noise, as pretraining would set
    them: with their initial values, random layers shrink the features to 1e-6 at
    `block_13_expand_relu`, and every image would get the same caption.
    """
    import keras

    backbone = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, weights=None, input_shape=(image_size, image_size, 3)
    )
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    noise = np.random.default_rng(0).uniform(-1, 1, (8, image_size, image_size, 3))
    backbone(noise.astype("float32"), training=True)
    backbone.save_weights(path)
    return path


def test_a_mobilenet_v2_grid_from_a_feature_layer_is_exported_and_served(tmp_path):
    """A tiny MobileNetV2 (alpha 0.35, random weights), frozen, its grid taken from
    `block_13_expand_relu`: the SavedModel and /api/caption give `caption --run`'s captions."""
    pytest.importorskip("uvicorn", reason="the web demo needs the serve extra: .[serve]")
    from recipe_flags import CAPTION
    from test_export import serve as run_saved_model

    from recipes.data.scenes import make_scenes

    run, out = tmp_path / "run", tmp_path / "saved_model"
    weights = mobilenet_v2_weights(tmp_path / "mobilenet_v2.weights.h5", 32)
    flags = [*CAPTION, "--num-train", "32", "--num-val", "8", "--num-test", "4"]
    flags += ["--backbone", "mobilenet_v2", "--alpha", "0.35", "--weights", str(weights)]
    flags += ["--feature-layer", "block_13_expand_relu"]  # a 2 x 2 grid at 32 px, not 1 x 1
    # Weights kept near their random start: captions that depend on the image.
    flags += ["--learning-rate", "1e-5"]
    assert caption.main(["train", *flags, "--out", str(run)]) == 0
    assert caption.main(["export", "--run", str(run), "--out", str(out)]) == 0
    paths = []
    for index, scene in enumerate(make_scenes(6, 48, seed=5)):
        paths.append(str(tmp_path / f"scene{index}.png"))
        Image.fromarray(scene.image).save(paths[-1])
    expected = caption.caption(str(run), paths)
    assert len(set(expected)) > 1  # the comparison means something
    assert run_saved_model(out, tmp_path, images=paths) == {"caption": expected}

    runs = serve.load_runs([str(run)])
    with serve.BackgroundServer(serve.create_app(runs)) as server:
        for path, text in zip(paths, expected, strict=True):
            with open(path, "rb") as file:
                status, answer = post_form(server.url, {"image": ("scene.png", file.read())})
            assert status == 200, answer
            assert answer["caption"] == text and answer["grid"] == [2, 2]
            check_rows_sum_to_one(answer["attention"], len(answer["tokens"]), 4)


# -- the command ---------------------------------------------------------------------------
def run_serve(argv, capsys):
    code = cli.run_main(serve.main, argv)
    return code, capsys.readouterr().err.strip()


def test_command_line_errors_are_one_line(serve_runs, tmp_path, capsys):
    code, error = run_serve(["--run", str(tmp_path / "missing")], capsys)
    assert code == 2 and error == f"error: --run: no such directory: {tmp_path / 'missing'}"
    (tmp_path / "empty").mkdir()
    code, error = run_serve(["--run", str(tmp_path / "empty")], capsys)
    assert code == 2 and "holds no model.keras" in error and "\n" not in error
    code, error = run_serve(["--run", str(serve_runs["translate"]), "--max-beam-size", "0"], capsys)
    assert code == 2 and "--max-beam-size" in error and "\n" not in error
    taken = serve.bind("127.0.0.1", 0)  # a port in use
    try:
        port = str(taken.getsockname()[1])
        code, error = run_serve(["--run", str(serve_runs["translate"]), "--port", port], capsys)
    finally:
        taken.close()
    assert code == 2 and "cannot listen" in error and "\n" not in error
    with pytest.raises(SystemExit):  # argparse: --run is required
        serve.main([])


def test_python_m_recipes_serve_prints_its_address_and_answers(serve_runs):
    """The command itself: it binds 127.0.0.1, prints the address, and answers."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "recipes.serve", "--run", str(serve_runs["translate"])]
        + ["--run", str(serve_runs["caption"]), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        address = None
        for line in process.stdout:
            match = re.search(r"serving 2 run\(s\) at (http://127\.0\.0\.1:\d+/)", line)
            if match:
                address = match.group(1)
                break
        assert address, "the server printed no address"
        status, answer = post_json(address, {"text": TEXT, "beam_size": BEAM})
        assert status == 200 and answer["translation"]
        print(f"first answer {time.monotonic() - started:.1f} s after the start")
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        process.wait(timeout=30)
    assert process.returncode == 0  # a clean stop
