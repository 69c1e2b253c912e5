"""The README stays a short read, and every page and link of the docs resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_README_LINES = 300

# [text](target) and ![alt](target); the target stops at whitespace or ")" (an optional
# "title" after it is ignored). Links inside code (fenced blocks, `spans`) are not links.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+).*?\1", re.DOTALL)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """``text``'s lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation dropped except
    ``-`` and ``_``, each space a ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in ``path``; repeated headings get ``-1``, ``-2``… as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """Every link target in ``path``'s prose (outside code); link text may wrap lines."""
    targets = []
    prose = "\n".join(prose_lines(path.read_text(encoding="utf-8")))
    for paragraph in re.split(r"\n\s*\n", prose):
        targets += LINK.findall(CODE_SPAN.sub("", paragraph))
    return targets


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE))


def dead_links(path: Path) -> list[str]:
    """``path``'s relative links whose file, or whose ``#anchor`` in it, does not exist."""
    dead = []
    for target in links(path):
        if is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            dead.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            dead.append(f"{target} (no heading #{anchor} in {linked.name})")
    return dead


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Several processes or GPUs (DDP)", "several-processes-or-gpus-ddp"),
        ("What `clean` guarantees", "what-clean-guarantees"),
        ("Options (`train.*`)", "options-train"),
        (
            "Optimize: PyTorch eager vs ORT FP32 vs INT8 (issue #9)",
            "optimize-pytorch-eager-vs-ort-fp32-vs-int8-issue-9",
        ),
        ("Stage or command → the module to open", "stage-or-command--the-module-to-open"),
        (
            "Training throughput: detflow vs torchvision's tutorial loop",
            "training-throughput-detflow-vs-torchvisions-tutorial-loop",
        ),
        ("snake_case and hyphen-ated", "snake_case-and-hyphen-ated"),
    ],
)
def test_slug_matches_github_anchors(heading, expected):
    assert slug(heading) == expected


def test_a_dead_link_or_anchor_is_caught(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## A section: here\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Local one\n\n"
        "[ok](other.md) [ok](other.md#a-section-here) [ok](#local-one) [ext](https://x.org/#y)\n"
        "[dead](missing.md) [dead](other.md#nope) [dead](#nowhere) [a wrapped\n"
        "dead link](other.md#a-section)\n"
        "`[code](not-a-link.md)`\n\n```\n[fenced](not-a-link-either.md)\n```\n"
    )
    assert dead_links(page) == [
        "missing.md (no such file)",
        "other.md#nope (no heading #nope in other.md)",
        "#nowhere (no heading #nowhere in page.md)",
        "other.md#a-section (no heading #a-section in other.md)",
    ]


def test_readme_is_a_short_read():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (≤ {MAX_README_LINES})"
    )


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        (REPO / target.partition("#")[0]).resolve()
        for target in links(README)
        if not is_external(target) and target.partition("#")[0]
    }
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    assert not dead_links(page), f"{page.relative_to(REPO)}: dead links {dead_links(page)}"
