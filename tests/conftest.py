import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
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
