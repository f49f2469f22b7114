"""Runs the Python blocks of the README's `## Quickstart` section, as a user would.

Run by `.ci/library_install_check.sh` in a fresh virtual environment where only the
library is installed (not a test module: pytest imports it for doctests only):

    KERAS_BACKEND=jax python tests/readme_quickstart.py [README.md]

The blocks run in order in one namespace (a later block may use an earlier one's names),
in a temporary directory. A block marked `<!-- not run: needs ... -->` on the line before
its fence is only compiled, as in `tests/test_docs_examples.py`. A README without the
section runs nothing; a section without Python blocks is an error.
"""

import os
import pathlib
import re
import sys
import tempfile
import textwrap

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
SECTION = re.compile(r"## Quickstart\b")
HEADING = re.compile(r"#{1,2} ")  # what ends the section: its ### subsections belong to it
FENCE = re.compile(r"\s*(`{3,}|~{3,})\s*([\w+-]*)")
NOT_RUN = re.compile(r"<!-- not run: (.*?) -->")


def python_blocks(text):
    """The Python blocks of a Markdown text, with the section each stands in.

    Lines inside fenced blocks are never headings (a `# comment` in a block ends
    nothing); blocks indented in a list item are dedented.

    Args:
        text: The Markdown text.

    Returns:
        A list of `(line, code, reason_not_run, section)`: the line number of the block's
        first line of code, its code, the reason of a `<!-- not run: ... -->` marker on
        the line before its fence (or `None`), and the last heading of level one or two
        before it (its subsections belong to it), `""` before any.
    """
    lines = text.splitlines()
    blocks, section = [], ""
    fence = None  # the opening fence of the block being read
    for index, line in enumerate(lines):
        if fence is None:
            opening = FENCE.fullmatch(line)
            if opening:
                fence, language, fence_index = opening[1], opening[2].lower(), index
            elif HEADING.match(line):
                section = line
            continue
        closing = line.strip()
        if not (closing.startswith(fence) and set(closing) == {fence[0]}):
            continue
        if language in ("python", "py"):
            code = textwrap.dedent("\n".join(lines[fence_index + 1 : index]) + "\n")
            marker = NOT_RUN.fullmatch(lines[fence_index - 1].strip()) if fence_index else None
            blocks.append((fence_index + 2, code, marker[1] if marker else None, section))
        fence = None
    return blocks


def quickstart_blocks(text):
    """The Python blocks of the `## Quickstart` section of a Markdown text.

    Args:
        text: The Markdown text.

    Returns:
        `None` if there is no such section, else a list of `(line, code, reason_not_run)`
        as `python_blocks` gives them.

    Raises:
        ValueError: The section has no Python block.
    """
    if not any(SECTION.match(line) for line in text.splitlines()):
        return None
    blocks = [block[:3] for block in python_blocks(text) if SECTION.match(block[3])]
    if not blocks:
        raise ValueError("the README's '## Quickstart' section has no ```python block")
    return blocks


def main(argv):
    """Runs the quickstart blocks of the README given (or the project's).

    Args:
        argv: The command-line arguments: the README's path, or none.

    Returns:
        0; a failing block raises (its traceback names the README's line).
    """
    readme = pathlib.Path(argv[0]).resolve() if argv else README
    blocks = quickstart_blocks(readme.read_text(encoding="utf-8"))
    if blocks is None:
        print(f"{readme}: no '## Quickstart' section, nothing to run")
        return 0
    namespace = {"__name__": "__quickstart__"}
    working_directory = os.getcwd()
    with tempfile.TemporaryDirectory() as directory:
        os.chdir(directory)  # what the blocks save goes there
        try:
            for line, code, reason in blocks:
                program = compile(code, f"{readme}:{line}", "exec")
                if reason is not None:
                    print(f"==> {readme}:{line}: compiled, not run ({reason})")
                    continue
                print(f"==> {readme}:{line}", flush=True)
                exec(program, namespace)  # noqa: S102
        finally:
            os.chdir(working_directory)
    print(f"{readme}: the {len(blocks)} quickstart blocks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
