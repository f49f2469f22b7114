# `make demo` and `make test` work on a fresh machine with Python 3.10+ and make:
# both create .venv and install the project with its dependencies first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# The library's own tests (and its docstring examples): these run on every Keras backend.
LIBRARY_TESTS := multiattn tests/test_attention.py tests/test_decoders.py tests/test_encoders.py \
	tests/test_hard_attention.py tests/test_local_attention.py tests/test_loops.py \
	tests/test_losses.py tests/test_metrics.py tests/test_plotting.py tests/test_search.py \
	tests/test_seq2seq.py tests/test_seq2seq_ensemble.py tests/test_backends.py
# The CPU build of PyTorch (a CUDA build is several GB).
TORCH := torch==2.13.0

.PHONY: demo serve test test-fast test-backends lint docs docs-serve clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/python -m recipes.translate

# The web demo of trained runs: make serve RUNS="runs/translate_default runs/caption_default"
RUNS ?=
serve: $(INSTALLED)
	@test -n "$(RUNS)" || { echo 'usage: make serve RUNS="RUN_DIR [RUN_DIR ...]"'; exit 2; }
	$(BIN)/python -m recipes.serve $(foreach run,$(RUNS),--run $(run))

# Everything on TensorFlow, then the library on JAX (its slow tests, which compile for
# minutes on JAX, run in test-backends: the whole of make test stays within CI's time).
# Two pytest workers, a test file each at a time (pytest-xdist): most tests spend their
# time in Python on one core. The slowest tests are listed, to keep it so.
PARALLEL := -n 2 --dist loadfile
test: $(INSTALLED)
	$(BIN)/python -m pytest -q $(PARALLEL) --durations=15
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q $(PARALLEL) --durations=10 -m "not slow" $(LIBRARY_TESTS)
	$(MAKE) --no-print-directory docs
	$(MAKE) --no-print-directory test-install

# The library on its own: `pip install . jax` in a fresh virtual environment in a temporary
# directory (no TensorFlow), then on JAX the README's quickstart and a tiny Seq2Seq
# (.ci/library_install_check.sh; about 1.5 minutes, most of it installing and compiling).
.PHONY: test-install
test-install:
	PYTHON=$(PYTHON) bash .ci/library_install_check.sh

# The edit-test loop: no recipe trainings, subprocesses or convergence runs.
test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -q $(PARALLEL) -m "not slow"

# The library on TensorFlow, JAX and PyTorch (installs PyTorch first).
test-backends: $(INSTALLED)
	$(BIN)/python -m pip install --quiet $(TORCH)
	for backend in tensorflow jax torch; do \
		echo "==> library tests on $$backend"; \
		KERAS_BACKEND=$$backend $(BIN)/python -m pytest -q $(LIBRARY_TESTS) || exit 1; \
	done

# The docs site (MkDocs, Material, mkdocstrings): strict, so a broken link or a reference
# to a renamed function fails. NO_MKDOCS_2_WARNING quiets Material's banner about MkDocs 2.
docs: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-serve: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict

lint: $(INSTALLED)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs build .pytest_cache
