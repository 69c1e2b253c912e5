"""Every figure README.md and docs/*.md quote through a ``docs/figures.py`` marker equals the
committed report (or bench/results.json entry) it names; ``make docs`` rewrites them."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from test_docs import REPO, pages

SPEC = importlib.util.spec_from_file_location("doc_figures", REPO / "docs" / "figures.py")
figures = sys.modules.setdefault("doc_figures", importlib.util.module_from_spec(SPEC))
SPEC.loader.exec_module(figures)

BENCH = "reports/optimize/benchmark.json"


@pytest.mark.parametrize("path", pages(), ids=lambda p: p.name)
def test_quoted_figures_equal_their_reports(path):
    text = path.read_text(encoding="utf-8")
    page = path.relative_to(REPO).as_posix()
    assert [str(f) for f in figures.stale(text, page)] == []


def test_the_readme_quotes_its_headline_figures_through_markers():
    found = figures.figures((REPO / "README.md").read_text(encoding="utf-8"), "README.md")
    keys = {(f.file, f.key) for f in found}
    report = json.loads((REPO / BENCH).read_text(encoding="utf-8"))
    for variant in ("openvino_int8", "ort_fp32", "openvino_bf16", "openvino_fp32"):
        if report[variant].get("latency_ms_p50") is not None:  # bf16 skipped without bf16
            assert (BENCH, f"{variant}.latency_ms_p50") in keys
    assert ("reports/evaluate/metrics.json", "map50") in keys
    assert ("bench/results.json", "thermal_seeds.test_map50.mean") in keys


def test_a_figure_edited_by_hand_fails_and_make_docs_restores_it():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    marker = f"<!-- fig {BENCH} openvino_int8.latency_ms_p50 .1f -->"
    start = text.index(marker) + len(marker)
    quoted = text[start:].split(" ")[0]
    edited = text[:start] + "17.7" + text[start + len(quoted) :]
    assert quoted != "17.7"
    (problem,) = figures.stale(edited, "README.md")
    assert problem.quoted == "17.7" and problem.expected == quoted
    assert str(problem).startswith(f"README.md:{text.count(chr(10), 0, start) + 1}: {BENCH}")
    assert figures.filled(edited, "README.md") == text


def test_formats_ratios_and_signs(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"a": {"ms": 31.08, "n": [3415464]}, "b": 13.26}))
    page = (
        "<!-- fig r.json a.ms .1f -->0 ms, <!-- fig r.json a.ms/b .2f -->0×, "
        "<!-- fig r.json a.n.0/1e6 .1f -->0 M, <!-- fig r.json -b +.1f -->0, "
        "<!-- fig r.json b d -->0"
    )
    out = figures.filled(page, "p.md", tmp_path)
    assert out.split("-->")[1:] == [
        "31.1 ms, <!-- fig r.json a.ms/b .2f ",
        "2.34×, <!-- fig r.json a.n.0/1e6 .1f ",
        "3.4 M, <!-- fig r.json -b +.1f ",
        "−13.3, <!-- fig r.json b d ",
        "13",
    ]
    assert figures.stale(out, "p.md", tmp_path) == []
    assert figures.figures("`<!-- fig gone.json x -->`: the syntax", "p.md", tmp_path) == []


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("<!-- fig r.json a.missing -->1", r"p.md:1: no key 'a.missing' \(stops at 'missing'\)"),
        ("<!-- fig r.json a -->1", "p.md:1: 'a' is {'ms': 1}, not a number"),
        ("<!-- fig gone.json a -->1", "p.md:1: gone.json does not exist"),
    ],
)
def test_a_broken_marker_is_a_one_line_error(tmp_path, marker, message):
    (tmp_path / "r.json").write_text(json.dumps({"a": {"ms": 1}}))
    with pytest.raises(ValueError, match=message):
        figures.stale(marker, "p.md", tmp_path)
