"""Word input: the body's paragraphs and table rows in order, without page headers and footers; a plain
error for damaged, empty or over-large files, and other zip archives still refused."""

from __future__ import annotations

import io
import zipfile

import pytest

from disarm_tagger import office, text
from document_fixtures import make_docx


def _report(document):
    document.sections[0].header.paragraphs[0].text = "CONFIDENTIAL - running header"
    document.sections[0].footer.paragraphs[0].text = "Page footer"
    document.add_heading("Findings", level=1)
    document.add_paragraph("The network ran forty pages that posted the same stories every morning.")
    table = document.add_table(rows=2, cols=2)
    for row, (a, b) in zip(table.rows, [("Platform", "Accounts"), ("Facebook", "312")]):
        row.cells[0].text, row.cells[1].text = a, b
    document.add_paragraph("")
    document.add_paragraph("The platform removed the network on 4 May.")


def test_paragraphs_and_table_rows_come_in_order_without_headers_and_footers():
    assert text.decode_bytes(make_docx(_report)).split("\n\n") == [
        "Findings", "The network ran forty pages that posted the same stories every morning.",
        "Platform | Accounts", "Facebook | 312", "The platform removed the network on 4 May."]  # fmt: skip


def test_a_docx_file_is_split_into_its_sentences(tmp_path):
    path = tmp_path / "report.docx"
    path.write_bytes(make_docx(_report))
    sentences = [s.text for s in text.prepare(text.read_path(path)).sentences]
    assert "The platform removed the network on 4 May." in sentences
    assert not [s for s in sentences if "CONFIDENTIAL" in s or "footer" in s]


def _zip(parts: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in parts.items():
            archive.writestr(name, body)
    return out.getvalue()


@pytest.mark.parametrize(("data", "message"), [
    (make_docx(lambda d: d.add_paragraph("  ")), "input: is a Word file without text"),
    (_zip({"word/document.xml": b"<not xml"}), "input: cannot read this Word file"),
    (make_docx(_report)[:-40], "input: looks like a zip archive"),  # cut off: no longer opens as a .docx
    (_zip({"mimetype": b"application/epub+zip"}), "input: looks like a zip archive (e.g. .epub or .xlsx)"),
])  # fmt: skip
def test_unreadable_word_files_and_other_archives_are_input_errors(data, message):
    with pytest.raises(text.InputError) as caught:
        text.decode_bytes(data)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_document_that_unpacks_past_the_limit_is_refused_before_it_is_parsed(monkeypatch):
    monkeypatch.setattr(office, "MAX_PART_BYTES", 1000)
    big = make_docx(lambda d: d.add_paragraph("word " * 1000))
    with pytest.raises(text.InputError, match=r"^input: is a Word file whose text unpacks to [\d,]+ bytes"):
        text.decode_bytes(big)


def test_a_word_file_whose_text_is_over_the_size_limit_is_refused():
    paragraph = "The platform removed the network on 4 May. " * 50
    big = make_docx(lambda d: [d.add_paragraph(paragraph) for _ in range(100)])
    assert len(big) < 100_000  # the file is under the limit; the text it unpacks to (215,000 bytes) is not
    with pytest.raises(text.InputError, match=r"^input: its text is over the 100,000-byte limit"):
        text.decode_bytes(big, max_bytes=100_000)
