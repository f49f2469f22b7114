"""The README's quickstart blocks are found as `.ci/library_install_check.sh` runs them.

The check runs them in a fresh environment with the library alone; here, only how
`tests/readme_quickstart.py` reads the section (`tests/test_docs_examples.py` runs every
README block in the suite).
"""

import pytest
from readme_quickstart import README, quickstart_blocks

PAGE = """\
# Title

## Install

```python
print("install")
```

## Quickstart

Text.

```python
# A comment, not a heading
x = 1
```

### More

<!-- not run: needs a trained run -->
```python
y = x
```

```bash
echo not python
```

## Recipes

```python
print("recipes")
```
"""


def test_the_section_blocks_only_and_their_lines():
    blocks = quickstart_blocks(PAGE)
    assert blocks == [
        (14, "# A comment, not a heading\nx = 1\n", None),
        (22, "y = x\n", "needs a trained run"),
    ]
    assert PAGE.splitlines()[13] == "# A comment, not a heading"  # line 14
    assert PAGE.splitlines()[21] == "y = x"


def test_no_section_runs_nothing():
    assert quickstart_blocks(PAGE.replace("## Quickstart", "## Usage")) is None


def test_a_section_without_python_fails():
    page = "## Quickstart\n\n```bash\nmake demo\n```\n\n## Next\n\n```python\nx = 1\n```\n"
    with pytest.raises(ValueError, match="no ```python block"):
        quickstart_blocks(page)


def test_the_readme_blocks_compile():
    blocks = quickstart_blocks(README.read_text(encoding="utf-8")) or []
    for line, code, _ in blocks:
        compile(code, f"{README}:{line}", "exec")
