"""The bad-input corpus (tests/corpus/): every case ends with its expected outcome, never a
traceback; errors are one line; kept + dropped + incomplete = input for every unit of every
stage run (changed units are among the kept)."""

import pytest

from corpus import CASES, DOC
from corpus.doc_table import document

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
