import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if os.environ["KERAS_BACKEND"] == "tensorflow":
    # TensorFlow imported as the recipes import it: without its C++ loading notices,
    # which no TF_CPP_MIN_LOG_LEVEL hides, in every worker's output.
    from recipes import tensorflow_logs  # noqa: E402, F401
else:  # Keras may still import TensorFlow (for its seeds): fewer lines, at least
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

if keras.config.backend() == "torch":
    import torch

    _tensor_to_array = torch.Tensor.__array__

    def _detached_array(tensor, *args, **kwargs):
        """NumPy reads layer outputs as TensorFlow's and JAX's tensors allow, in tests alone.

        On PyTorch an output of trainable weights requires grad, and `np.asarray` of it
        raises; the tests compare such outputs with NumPy references everywhere.
        """
        return _tensor_to_array(tensor.detach(), *args, **kwargs)

    torch.Tensor.__array__ = _detached_array


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts in float32 with a fixed seed, whatever the previous one set."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(autouse=True, scope="session")
def _temporary_files_in_pytest_directory(tmp_path_factory):
    """What libraries leave in the temporary directory goes to pytest's, which pytest prunes.

    TensorFlow Datasets makes a `tmp*tfds` directory for every dataset it mocks and
    TensorFlow's autograph a file for every function it converts; neither is removed,
    and CI reruns the suite on the same machine. Subprocesses inherit `TMPDIR`.
    """
    directory = str(tmp_path_factory.mktemp("tempfile"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", directory)
        patch.setenv("TMPDIR", directory)
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# Modules whose tests train through the recipes, in process or in a subprocess: all slow.
SLOW_MODULES = {
    "test_bad_input.py",
    "test_benchmarks.py",
    "test_caption_recipe.py",
    "test_export.py",
    "test_faults.py",
    "test_layer_demo.py",
    "test_runtime.py",
    "test_serve.py",
    "test_serve_page.py",
    "test_translate_recipe.py",
}


# Fixtures that train a model first: every test that takes one is slow.
SLOW_FIXTURES = {"trained"}


def pytest_collection_modifyitems(config, items):
    """`make test-fast` deselects the `slow` tests: the modules and fixtures above, the
    docstring examples that build whole `Seq2Seq` models, and tests marked so."""
    for item in items:
        uses_slow_fixture = SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
        seq2seq_example = item.path.name == "seq2seq.py"  # doctests of multiattn/seq2seq.py
        if item.path.name in SLOW_MODULES or uses_slow_fixture or seq2seq_example:
            item.add_marker(pytest.mark.slow)


# -- the web demo (tests/test_serve.py, tests/test_serve_page.py) --------------------------
# Small limits, so that the tests can go over them with small requests.
SERVE_LIMITS = {
    "max_text_characters": 200,
    "max_image_megabytes": 0.05,
    "max_image_megapixels": 0.05,
    "max_beam_size": 6,
}


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory):
    """Two tiny runs for the server, trained once for both test files: a translation run
    and a captioning run with hard attention."""
    from recipe_flags import CAPTION, SCENES, TRANSLATE

    from recipes import caption, translate

    root = tmp_path_factory.mktemp("serve")
    runs = {"translate": root / "numbers", "caption": root / "scenes"}
    # Five epochs: fewer leave the model ending every translation at once, and the
    # tests need translations with words to align.
    translate_flags = [*TRANSLATE, "--num-train", "100", "--epochs", "5"]
    command = ["train", *translate_flags, "--out", str(runs["translate"])]
    assert translate.main(command) == 0
    command = ["train", *CAPTION, *SCENES, "--hard-attention", "--out", str(runs["caption"])]
    assert caption.main(command) == 0
    return runs


@pytest.fixture(scope="session")
def served(serve_runs):
    """The server of `serve_runs` on 127.0.0.1, an ephemeral port: `(url, runs, config)`."""
    pytest.importorskip("uvicorn", reason="the web demo needs the serve extra: .[serve]")
    from recipes import serve

    config = serve.ServeConfig(port=0, **SERVE_LIMITS)
    runs = serve.load_runs([str(serve_runs["translate"]), str(serve_runs["caption"])])
    with serve.BackgroundServer(serve.create_app(runs, config)) as server:
        yield server.url, runs, config
