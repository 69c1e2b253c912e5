"""The bad-input corpus (tests/corpus/): every case ends with its expected outcome, never a
traceback; errors are one line; kept + dropped + incomplete = input for every unit of every
stage run (changed units are among the kept)."""

import pytest

from detflow.core.files import write_json

from corpus import CASES, DOC
from corpus.doc_table import document
from corpus.runner import REPORTS

pytestmark = pytest.mark.corpus


def test_the_corpus_is_large_and_ids_are_unique():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case_has_its_outcome_and_accounting(case, tmp_path):
    result = case.run(tmp_path)
    if case.expected.startswith("error: "):
        assert result.outcome.startswith("error: "), result.outcome
        assert case.expected.removeprefix("error: ") in result.message, result.message
        assert "\n" not in result.message and "Traceback" not in result.message
    else:
        assert result.outcome == case.expected
    for unit, (given, kept, dropped, *incomplete) in result.ledger.items():
        partial = sum(incomplete)
        assert kept + dropped + partial == given, (
            f"{unit}: {kept} kept + {dropped} dropped + {partial} incomplete != {given} in"
        )


def test_docs_table_lists_every_case():
    assert DOC.read_text() == document(DOC.read_text()), (
        "docs/reliability.md's corpus table is stale: run `python tests/corpus/doc_table.py`"
    )


DATA_CASES = [case for case in CASES if "collect" in case.stage or case.stage == "clean"]


def _reports(case, folder) -> list[bytes]:
    """The bytes of every report (as the stages write them) of one run of ``case``."""
    REPORTS.clear()
    folder.mkdir(parents=True)
    case.run(folder)
    folder.joinpath("reports").mkdir()
    out = []
    for number, (stage, report) in enumerate(REPORTS):
        write_json(folder / "reports" / f"{number}-{stage}.json", report)
        out.append((folder / "reports" / f"{number}-{stage}.json").read_bytes())
    return out


def test_two_runs_over_the_corpus_give_byte_identical_reports(tmp_path):
    """collect → clean over every broken input of the corpus, twice, in two folders: the
    reports hold no object representations, memory addresses, absolute paths or times."""
    for case in DATA_CASES:
        first = _reports(case, tmp_path / "a" / case.id)
        second = _reports(case, tmp_path / "b" / case.id)
        assert first == second, case.id
        for text in first:
            assert b" at 0x" not in text and str(tmp_path).encode() not in text, case.id
