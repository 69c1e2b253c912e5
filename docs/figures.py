"""The figures README.md and docs/*.md quote, filled in from the files they name.

A quoted figure is a marker (an HTML comment: invisible on GitHub) and the number after it:

    deployed at <!-- fig reports/optimize/benchmark.json openvino_int8.latency_ms_p50 .1f -->13.3 ms

- ``FILE``: a JSON file, relative to the repository: a committed report (``reports/…``) or
  ``bench/results.json`` (bench figures, each entry with its command and machine);
- ``KEY``: a dot-separated path into it (list items by index: ``map50_ci.0``), or ``A/B``:
  the ratio of two paths, or of a path and a number (``cost.params/1e6``); a leading ``-``
  negates it (``-openvino_int8.map_drop``: a loss of points shown as a change);
- ``FORMAT`` (optional, default ``g``): a Python format spec for the number.

A marker right after a backtick (in a code span, as this syntax is shown in prose) is text.

    make docs                          # python docs/figures.py: rewrite every figure
    python docs/figures.py --check     # list the stale ones (file:line), exit 1 if any

``tests/test_doc_figures.py`` runs the check: a figure edited by hand, or a report
regenerated without ``make docs``, fails it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(
    r"(?<!`)<!-- fig (?P<file>\S+) (?P<key>\S+)(?: (?P<format>\S+))? -->"
    r"(?P<value>[+\-−]?\d+(?:\.\d+)?)?"
)


@dataclass(frozen=True)
class Figure:
    """One marker of a page: where it is, what it names, what it shows and should show."""

    page: str
    line: int
    file: str
    key: str
    quoted: str | None
    expected: str

    def __str__(self) -> str:
        return (
            f"{self.page}:{self.line}: {self.file} {self.key} is {self.expected}, "
            f"the page quotes {self.quoted}; run make docs"
        )


def pages(repo: Path = REPO) -> list[Path]:
    """README.md and every docs/*.md."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def lookup(data, path: str, where: str) -> float:
    """The number at dot-separated ``path`` in ``data`` (a number literal is itself)."""
    try:
        return float(path)
    except ValueError:
        pass
    value = data
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise ValueError(f"{where}: no key {path!r} (stops at {part!r}); fix the marker")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: {path!r} is {value!r}, not a number; fix the marker")
    return float(value)


def render(match: re.Match, where: str, repo: Path, cache: dict) -> str:
    """The text the marker's number should read, from the file it names."""
    name = match["file"]
    if name not in cache:
        path = repo / name
        if not path.is_file():
            raise ValueError(f"{where}: {name} does not exist; fix the marker or make repro")
        cache[name] = json.loads(path.read_text(encoding="utf-8"))
    key = match["key"]
    numerator, _, denominator = key.removeprefix("-").partition("/")
    value = lookup(cache[name], numerator, where)
    if denominator:
        value /= lookup(cache[name], denominator, where)
    value = (-value if key.startswith("-") else value) or 0.0  # no "−0.00"
    fmt = match["format"] or "g"
    return format(round(value) if fmt.endswith("d") else value, fmt).replace("-", "−")


def figures(text: str, page: str, repo: Path = REPO, cache: dict | None = None) -> list[Figure]:
    """Every marker of ``text`` (the page ``page``) with its quoted and expected figure."""
    cache = {} if cache is None else cache
    found = []
    for match in MARKER.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        expected = render(match, f"{page}:{line}", repo, cache)
        found.append(Figure(page, line, match["file"], match["key"], match["value"], expected))
    return found


def stale(text: str, page: str, repo: Path = REPO) -> list[Figure]:
    """The figures of ``text`` that differ from their files."""
    return [f for f in figures(text, page, repo) if f.quoted != f.expected]


def filled(text: str, page: str, repo: Path = REPO) -> str:
    """``text`` with every marker's number rewritten from its file."""
    cache: dict = {}

    def fill(match: re.Match) -> str:
        line = text.count("\n", 0, match.start()) + 1
        fmt = f" {match['format']}" if match["format"] else ""
        value = render(match, f"{page}:{line}", repo, cache)
        return f"<!-- fig {match['file']} {match['key']}{fmt} -->{value}"

    return MARKER.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list stale figures, change none")
    args = parser.parse_args(argv)
    problems, count = [], 0
    for path in pages():
        text, page = path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix()
        count += len(figures(text, page))
        if args.check:
            problems += stale(text, page)
        elif (new := filled(text, page)) != text:
            path.write_text(new, encoding="utf-8")
            print(f"{page}: figures updated")
    for problem in problems:
        print(problem)
    print(f"{count} figures in {len(pages())} pages, {len(problems)} stale")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
