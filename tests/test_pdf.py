"""PDF input: the text layer read back into paragraphs, page furniture dropped, and a plain error for
encrypted, broken or text-less PDFs. The PDFs are written by hand (document_fixtures) or by pypdf."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader, PdfWriter

from disarm_tagger import pdf, text
from document_fixtures import make_pdf, scanned_pdf

HEADER = "Influence operations quarterly - Q3"
PAGES = [
    [HEADER, "Summary",
     "The network ran forty pages that posted the same pro-government",
     "stories every morning, on every platform it could reach. Disinfor-",
     "mation reached two million people.",
     "Most accounts used stolen photographs as their profile pictures",
     "Page 1 of 3"],
    [HEADER, "and posted within seconds of each other, in the small hours of the",
     "night.",
     "• Accounts: 312",
     "2"],
    [HEADER, "The platform removed the network on 4 May.", "3"],
]


def test_the_text_layer_comes_back_as_paragraphs_without_page_furniture():
    assert pdf.pdf_text(make_pdf(PAGES)).split("\n\n") == [
        "Summary",  # a heading
        "The network ran forty pages that posted the same pro-government stories every morning, on every "
        "platform it could reach. Disinformation reached two million people.",
        "Most accounts used stolen photographs as their profile pictures and posted within seconds of each "
        "other, in the small hours of the night.",  # over a page break: one sentence still
        "• Accounts: 312",
        "The platform removed the network on 4 May.",
    ]  # no running header, no page numbers


def test_a_pdf_file_is_decoded_to_its_text_and_split_into_its_sentences(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(make_pdf(PAGES))
    sentences = [s.text for s in text.prepare(text.read_path(path)).sentences]
    assert "Disinformation reached two million people." in sentences
    assert "The platform removed the network on 4 May." in sentences
    assert not [s for s in sentences if HEADER in s or s.startswith("Page")]


def _encrypted(data: bytes, password: str) -> bytes:
    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(data)).pages:
        writer.add_page(page)
    writer.encrypt(password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_pdf_encrypted_with_an_empty_password_is_read():
    assert "4 May" in pdf.pdf_text(_encrypted(make_pdf(PAGES), password=""))


@pytest.mark.parametrize(("data", "message"), [
    (b"%PDF-1.7\n...", "input: cannot read this PDF"),
    (make_pdf(PAGES)[:300], "input: cannot read this PDF"),  # cut off
    (_encrypted(make_pdf(PAGES), password="secret"), "input: is an encrypted PDF"),
    (scanned_pdf(), "input: is a PDF without a text layer (a scan?); run OCR"),
])  # fmt: skip
def test_unreadable_pdfs_are_input_errors_with_the_reason(data, message):
    with pytest.raises(text.InputError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)").replace(
            "?", r"\?")):  # fmt: skip
        text.decode_bytes(data)



def test_a_pdf_whose_text_passes_the_size_limit_is_refused_before_its_last_pages_are_read(monkeypatch):
    from pypdf import PageObject

    line = "The platform removed the network on 4 May. " * 2  # 86 characters, 60 lines a page
    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(make_pdf([[line] * 60] * 10))).pages:
        writer.add_page(page).compress_content_streams()  # compressed: the text outgrows the file
    out = io.BytesIO()
    writer.write(out)
    assert len(out.getvalue()) < 10_000 < len(line) * 600
    read, extract = [], PageObject.extract_text
    monkeypatch.setattr(PageObject, "extract_text",
                        lambda self, *a, **k: read.append(1) or extract(self, *a, **k))  # fmt: skip
    with pytest.raises(text.InputError, match=r"^input: holds more than 10,000 characters of text"):
        text.decode_bytes(out.getvalue(), max_bytes=10_000)
    assert len(read) == 2  # about 5,100 characters a page: reading stops at the second
