"""Bounded fuzzing: the DISARM page parser, the text cleaner and the PDF and Word readers raise nothing but
their documented errors."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disarm_tagger import disarm, text
from fixture_disarm import write_checkout
from document_fixtures import make_docx, make_pdf

# fragments that make pages interesting: tags, ids, table pipes, italics of every kind
PIECES = ["<i>", "</i>", "<I>", "</I>", "<br>", "<br />", "|", "_\"", "\"_", "T0086.002", "T0097:109", "T00145.006",
          "(T0151.004: Chat Platform)", "[...]", "&amp;", "&#8212;", "\n", "| [T0086.002 X](x.md) | ", "**Summary**:",
          "# Incident I00001: x\n", "<script>", "</p>", "<p>", "---\n", "title: >\n  x\n"]  # fmt: skip
messy = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=30)), max_size=40).map("".join)
BOUNDED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@BOUNDED
@given(cell=messy)
def test_split_passage_and_clean_text_never_fail(cell):
    quote, comment = disarm.split_passage(cell)
    assert isinstance(quote, str) and isinstance(comment, str)
    cleaned = disarm.clean_text(quote)
    assert not re.search(r"<br\s*/?>", cleaned, re.I)  # no line-break tag is left (an unclosed "<br" is text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.sampled_from(["T0086.002", "T0151.004", "T0148.004"]), messy), max_size=4),
       page_tail=messy)  # fmt: skip
def test_incident_import_never_fails_and_never_leaks_ids(tmp_path_factory, rows, page_tail):
    root = write_checkout(tmp_path_factory.mktemp("d"), incidents=[("I00950", "Fuzzed", rows)])
    page = root / "generated_pages" / "incidents" / "I00950.md"
    page.write_text(page.read_text() + page_tail, encoding="utf-8")
    try:
        examples, _report = disarm.read_examples(root, disarm.read_framework(root).techniques)
    except disarm.DisarmFormatError:
        return
    for ex in examples:
        assert not disarm.ID_PATTERN.search(ex.text)


@BOUNDED
@given(raw=messy)
def test_extract_text_raises_only_input_error(raw):
    try:
        title, body = text.extract_text(raw)
    except text.InputError:
        return
    assert body.strip()


@BOUNDED
@given(data=st.binary(max_size=300))
def test_decode_bytes_raises_only_input_error(data):
    try:
        out = text.decode_bytes(data, max_bytes=1000)
    except text.InputError as exc:
        assert "\n" not in str(exc)  # one line for the user
        return
    assert isinstance(out, str) and out.strip()



LINES = ["Operators ran a channel (a messaging app) that posted", "every hour."]
DOCUMENTS = [make_pdf([LINES, ["Page two.", "2"]]), make_docx(lambda d: d.add_paragraph(" ".join(LINES)))]


@BOUNDED
@given(which=st.sampled_from([0, 1]), edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                               st.integers(0, 255)), max_size=8),
       cut=st.floats(0, 1))  # fmt: skip
def test_a_damaged_pdf_or_word_file_raises_only_input_error(which, edits, cut):
    data = bytearray(DOCUMENTS[which])
    for at, value in edits:
        data[int(at * len(data))] = value
    try:
        out = text.decode_bytes(bytes(data[: max(6, int(cut * len(data)))]))
    except text.InputError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(out, str) and out.strip()
