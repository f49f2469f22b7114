"""Every Python example in the README and in `docs/` runs, as a user would paste it.

The blocks of one page run in order in one namespace (a page's later examples use its
earlier ones), in a fresh directory. A block needing what the test suite cannot have (a
trained run on real data, an exported model) is marked on the line before its fence with
`<!-- not run: needs ... -->`, saying what it needs; nothing else is skipped.
"""

import contextlib
import importlib.util
import io
import re
from pathlib import Path

import pytest
from readme_quickstart import python_blocks as markdown_python_blocks

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(page):
    """`(line, code, reason_not_run)` of every Python block of `page`."""
    return [block[:3] for block in markdown_python_blocks(page.read_text(encoding="utf-8"))]


PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page)]


def test_pages_are_found():
    names = {page.relative_to(ROOT).as_posix() for page in PAGES_WITH_CODE}
    assert {"README.md", "docs/guides/attention-layers.md"} <= names


def test_blocks_not_run_say_what_they_need():
    for page in PAGES:
        for line, _, reason in python_blocks(page):
            if reason is not None:
                assert reason.startswith("needs "), f"{page.name}:{line}: {reason!r}"


@pytest.mark.slow  # the examples train small models: about a minute in all
@pytest.mark.parametrize(
    "page", PAGES_WITH_CODE, ids=[p.relative_to(ROOT).as_posix() for p in PAGES_WITH_CODE]
)
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs_example__"}
    for line, code, reason in python_blocks(page):
        if reason is not None:
            compile(code, f"{page}:{line}", "exec")  # still valid Python
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(code, f"{page}:{line}", "exec"), namespace)  # noqa: S102


def load_hooks():
    specification = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


def test_csv_table_renders_rows_and_aligns_numbers(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('configuration,BLEU,minutes\n"a, b",42.3,50.8\nc | d,,shared\n')
    assert load_hooks().csv_to_markdown(path).splitlines() == [
        "| configuration | BLEU | minutes |",
        "|---|---:|---|",
        "| a, b | 42.3 | 50.8 |",
        "| c \\| d |  | shared |",
    ]


def test_csv_table_with_a_short_row_names_file_and_line(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(ValueError, match=r"rows\.csv:3: 1 cells, the header has 2"):
        load_hooks().csv_to_markdown(path)


def test_every_results_file_is_shown_on_a_page():
    hooks = load_hooks()
    shown = set()
    for page in (ROOT / "docs").rglob("*.md"):
        for name in hooks.CSV_TABLE.findall(page.read_text(encoding="utf-8")):
            shown.add((page.parent / name).resolve())
    assert shown == {path.resolve() for path in (ROOT / "docs/results/data").glob("*.csv")}


def test_the_readme_links_to_files_that_exist():
    """The docs' links are checked by `mkdocs build --strict`; the README's here."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [target.split("#")[0] for target in targets if "://" not in target]
    assert len(local) > 20  # the docs pages, pictures, LICENSE, CHANGELOG.md, CITATION.cff
    missing = [target for target in local if not (ROOT / target).exists()]
    assert not missing, missing
