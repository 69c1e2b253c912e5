"""The bad-input corpus: scraped, exported and half-broken inputs, each generated here into a
temporary folder (no binary blobs in the repository) and run through the library function
its stage calls.

A case names its stage, what it feeds and the expected outcome, in one vocabulary:
``kept``; ``changed: <kind>`` (repaired or converted, kept); ``dropped: <reason>`` (the
reason code the stage report lists); ``error: <text>`` (a DetflowError, one line, whose
message holds ``<text>``: the file or key, the problem and the fix). Its runner returns what
happened and the input accounting: per unit (images, boxes, members), how many went in, how
many were kept and how many were dropped; kept + dropped must equal the input.

Specs: ``cases_images``, ``cases_formats``, ``cases_labels`` (label files as tools write
them, incomplete images, difficult/crowd boxes), ``cases_config``; runner: ``runner``; the table in
docs/reliability.md: ``doc_table`` (``python tests/corpus/doc_table.py`` rewrites it,
``test_corpus`` checks that it is current).
"""

from corpus import cases_config, cases_formats, cases_images, cases_labels
from corpus.runner import DOC, Case, Result

CASES = [
    *cases_images.CASES,
    *cases_formats.CASES,
    *cases_labels.CASES,
    *cases_config.CASES,
]  # the table's order

__all__ = ["CASES", "DOC", "Case", "Result"]
