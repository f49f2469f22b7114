#!/usr/bin/env bash
# The library installs and runs on its own: `pip install <project> jax` in a fresh virtual
# environment (no TensorFlow, none of the extras), then on JAX the README's quickstart
# blocks and a tiny Seq2Seq fit/generate/save/load (tests/library_only_example.py).
# Usage: .ci/library_install_check.sh   (PYTHON=python3.12 to choose the interpreter)
set -euo pipefail
project="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
workspace="$(mktemp -d)"
trap 'rm -rf "$workspace"' EXIT

# Install from a copy of the source tree: pip builds in the tree it is given, and
# setuptools' build/ there can keep modules deleted from the source.
mkdir "$workspace/source"
tar -C "$project" -cf - --exclude=./.git --exclude=./.venv --exclude=./build \
    --exclude='*.egg-info' --exclude=./runs --exclude=./assets --exclude='__pycache__' \
    --exclude=./.pytest_cache --exclude=./.ruff_cache . | tar -C "$workspace/source" -xf -

echo "==> a fresh virtual environment: pip install <project> jax"
"$python" -m venv "$workspace/venv"
venv_python="$workspace/venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv_python" -m pip install --quiet "$workspace/source" jax
"$venv_python" -m pip check

# Everything below runs outside the source tree, so Python imports the installed package.
cd "$workspace"
for module in tensorflow matplotlib sacrebleu PIL keras_hub; do
    if "$venv_python" -c "import $module" 2>/dev/null; then
        echo "error: '$module' is installed with the library alone (pip install <project> jax)" >&2
        exit 1
    fi
done
export KERAS_BACKEND=jax
"$venv_python" -c "
import multiattn
assert '/site-packages/' in multiattn.__file__, multiattn.__file__  # not the source tree
print('import multiattn:', multiattn.__version__, 'from', multiattn.__file__)
"

echo "==> the README's quickstart, on JAX"
"$venv_python" "$project/tests/readme_quickstart.py" "$project/README.md"

echo "==> a tiny Seq2Seq on JAX: fit, greedy and beam search, .keras round trip"
"$venv_python" "$project/tests/library_only_example.py"

echo "==> the library installs and runs without TensorFlow"
