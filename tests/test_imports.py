"""No module of `multiattn` or `recipes` imports another in a cycle.

Imports inside functions count too: a cycle that only closes at call time still ties
the modules together (and once hid `recipes.export` importing the recipes back).
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("multiattn", "recipes")


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
