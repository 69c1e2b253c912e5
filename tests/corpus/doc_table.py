"""The corpus table in docs/reliability.md, generated from the case specs.

``python tests/corpus/doc_table.py`` rewrites it; tests/corpus/test_corpus.py checks that it is
current.
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: tests/ holds corpus

from corpus import CASES, DOC  # noqa: E402

# --- the table in docs/reliability.md -----------------------------------------------------

BEGIN, END = "<!-- corpus table: begin -->", "<!-- corpus table: end -->"


def table() -> str:
    rows = ["| case | stage | input | expected outcome |", "|---|---|---|---|"]
    for item in CASES:
        given = item.given.replace("|", "\\|")
        rows.append(f"| `{item.id}` | {item.stage} | {given} | {item.expected} |")
    return "\n".join(rows)


def document(text: str) -> str:
    """``text`` (docs/reliability.md) with the table between the markers regenerated."""
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{BEGIN}\n{table()}\n{END}", text)


if __name__ == "__main__":
    DOC.write_text(document(DOC.read_text()))
    print(f"{DOC}: {len(CASES)} cases")
