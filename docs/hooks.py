"""MkDocs hooks: the README's figures and the results tables kept as data files.

- The figures live in the top-level `assets/` (the README shows them too); they are
  added to the site as `assets/NAME.png`, so pages link them as `../assets/NAME.png`.
- A line `<!-- csv-table: data/NAME.csv -->` in a page is replaced by that CSV file
  (relative to the page) as a Markdown table: the rows stay data, the page shows them.
"""

import csv
import re
from pathlib import Path

from mkdocs.structure.files import File

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CSV_TABLE = re.compile(r"^<!-- csv-table: (\S+) -->$", re.M)


def on_files(files, config):
    for figure in sorted((PROJECT_ROOT / "assets").glob("*.png")):
        files.append(
            File(
                f"assets/{figure.name}",
                src_dir=str(PROJECT_ROOT),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files


def csv_to_markdown(path):
    """The CSV file at `path` as a Markdown table; its first row is the header.

    Cells that look like numbers are right-aligned columns; `|` in a cell is escaped.
    """
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    if not rows:
        raise ValueError(f"{path}: empty CSV file, no header row")
    header, body = rows[0], rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}:{number}: {len(row)} cells, the header has {len(header)}")

    def numeric(column):
        cells = [row[column] for row in body if row[column]]
        return bool(cells) and all(re.fullmatch(r"[-+]?[\d.,]+%?", cell) for cell in cells)

    def line(cells):
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    rule = ["---:" if numeric(column) else "---" for column in range(len(header))]
    return "\n".join([line(header), "|" + "|".join(rule) + "|", *map(line, body)])


def on_page_markdown(markdown, page, config, files):
    page_directory = Path(config["docs_dir"]) / Path(page.file.src_uri).parent
    return CSV_TABLE.sub(lambda match: csv_to_markdown(page_directory / match[1]), markdown)
