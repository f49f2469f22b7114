"""How the modules import: no cycles, and the library without the recipes' dependencies.

No module of `multiattn` or `recipes` imports another in a cycle. Imports inside
functions count too: a cycle that only closes at call time still ties the modules
together (and once hid `recipes.export` importing the recipes back).

`multiattn` installs with Keras and NumPy alone (`pip install multiattn`): importing it on
JAX loads none of the recipes' packages (TensorFlow, matplotlib, sacreBLEU, Pillow, ...),
and the two modules that use some of them import them when called, with an error naming
the extra to install when they are missing. `.ci/library_install_check.sh` checks the same
in a fresh virtual environment without them; these tests check it on every `make test`.
"""

import ast
import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("multiattn", "recipes")
# Top-level packages of the extras (`multiattn[recipes]` and the other backends), which
# the library must not import.
EXTRAS_PACKAGES = (
    "tensorflow",
    "tensorflow_text",
    "tensorflow_datasets",
    "tensorboard",
    "keras_hub",
    "matplotlib",
    "PIL",
    "sacrebleu",
    "torch",
)


def module_files(root, packages):
    """`{module name: file}` of every `.py` file of `packages` under `root`."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_modules(name, path, modules):
    """The modules of `modules` that the module `name` (at `path`) imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # Relative: from the package (a package's own name is its package).
                package = name.split(".")
                package = package if is_package else package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            # `from package import module` imports the module; other names, the package.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # `import a.b.c` runs `a.b.c`; the nearest known module is the one meant.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_cycles(root, packages):
    """Each cycle of imports among the modules of `packages`, as a list of names."""
    modules = module_files(root, packages)
    graph = {name: sorted(imported_modules(name, path, modules)) for name, path in modules.items()}
    cycles, finished = [], set()

    def visit(name, path):
        if name in path:
            cycles.append(path[path.index(name) :] + [name])
            return
        if name in finished:
            return
        for target in graph[name]:
            visit(target, [*path, name])
        finished.add(name)

    for name in sorted(graph):
        visit(name, [])
    return cycles


def test_no_import_cycles():
    cycles = import_cycles(ROOT, PACKAGES)
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_a_cycle_is_found(tmp_path):
    """The check itself: a cycle closed by an import inside a function is reported."""
    package = tmp_path / "house"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from house.sub import b\n")
    (package / "sub" / "b.py").write_text("from . import c\n")
    (package / "sub" / "c.py").write_text("def late():\n    from ..a import thing\n")
    (package / "d.py").write_text("import house.a\nfrom house.sub import c\n")  # in no cycle
    cycles = import_cycles(tmp_path, ["house"])
    assert cycles == [["house.a", "house.sub.b", "house.sub.c", "house.a"]]


def run_on_jax(code):
    """Runs `code` in a fresh Python on Keras' JAX backend; returns its standard output."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("needs JAX (in the dev extra: .[dev])")
    environment = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_multiattn_loads_none_of_the_extras():
    """What `import multiattn` adds to `sys.modules` beyond Keras' own imports.

    Keras itself imports matplotlib and Pillow when they are installed (as in `.[dev]`),
    so the modules are compared with those present after `import keras`.
    """
    output = run_on_jax(
        f"""
        import sys

        import keras

        before = set(sys.modules)
        import multiattn
        import multiattn.metrics
        import multiattn.plotting

        extras = {EXTRAS_PACKAGES!r}
        added = set(sys.modules) - before
        print(sorted(name for name in added if name.partition(".")[0] in extras))
        """
    )
    assert output.strip() == "[]"


def test_multiattn_works_with_the_extras_missing():
    """Every module of `multiattn` imports, and a model builds, with the extras' packages
    unimportable; `metrics` and `plotting` then name the extra to install."""
    output = run_on_jax(
        f"""
        import importlib
        import pkgutil
        import sys

        extras = {EXTRAS_PACKAGES!r}


        class Missing:
            # Makes the extras' packages unimportable, as if they were not installed.
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in extras:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None


        sys.meta_path.insert(0, Missing())
        import numpy as np

        import multiattn
        from multiattn import metrics, plotting

        for module in pkgutil.walk_packages(multiattn.__path__, "multiattn."):
            importlib.import_module(module.name)
        model = multiattn.Seq2Seq(
            multiattn.BiLSTMEncoder(8, 4, 4), multiattn.AttentionDecoder(8, 4, 4), 1, 2
        )
        result = model.generate(np.array([[3, 4, 5]]), search="greedy", max_length=3)
        assert result["tokens"].shape == (1, 3), result["tokens"].shape
        assert metrics.cider(["a dog runs", "two men"], ["a dog runs", "two men sit"]) > 0
        for function, arguments in [
            (metrics.corpus_bleu, (["a"], ["a"])),
            (metrics.corpus_chrf, (["a"], ["a"])),
            (plotting.plot_lines, ({{"a": ([1], [1])}}, "unused.png", "x", "y")),
        ]:
            try:
                function(*arguments)
            except ImportError as error:
                print(error)
        """
    )
    messages = output.strip().splitlines()
    assert len(messages) == 3, output
    assert all("pip install 'multiattn[recipes]'" in message for message in messages), output
    assert messages[2].startswith("multiattn.plotting needs matplotlib"), output
