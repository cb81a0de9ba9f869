"""Word (.docx) -> article text: the body's paragraphs and table rows in document order (python-docx).

Page headers, footers and comments are left out, as page furniture is for a PDF. A .docx is a zip archive,
so the size of its main part is checked before it is unpacked: a few megabytes can inflate to gigabytes.

python-docx is imported on first use, so reading plain text never pays for it.
"""

from __future__ import annotations

import io
import zipfile

ZIP_MAGIC = b"PK\x03\x04"
DOCUMENT_PART = "word/document.xml"
MAX_PART_BYTES = 200_000_000  # the unpacked document.xml; a 500-page report is a few tens of MB


class DocxError(ValueError):
    """The Word file cannot be read as text: the message is one plain line for the user."""


def is_docx(data: bytes) -> bool:
    """A zip archive holding a Word document's main part (a .docx, .docm or .dotx)."""
    if not data.startswith(ZIP_MAGIC):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return DOCUMENT_PART in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def docx_text(data: bytes) -> str:
    """The text of a Word file's body, one paragraph or table row a paragraph. Raises DocxError when it is
    damaged, too large unpacked, or holds no text."""
    import docx  # reading a Word file only

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            size = archive.getinfo(DOCUMENT_PART).file_size
        if size > MAX_PART_BYTES:
            raise DocxError(f"is a Word file whose text unpacks to {size:,} bytes (the limit is "
                            f"{MAX_PART_BYTES:,}); save it as text")  # fmt: skip
        blocks = list(_blocks(docx.Document(io.BytesIO(data))))
    except DocxError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the parser on untrusted bytes is a bad input
        reason = " ".join(f"{type(err).__name__}: {err}".split())  # one line
        raise DocxError(f"cannot read this Word file ({reason})") from None
    text = "\n\n".join(block for block in blocks if block.strip())
    if not text:
        raise DocxError("is a Word file without text")
    return text


def _blocks(document):
    """Each body paragraph's text, and each table row's cells joined by " | " (a merged cell once)."""
    from docx.oxml.ns import qn
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in document.element.body.iterchildren():
        if child.tag == qn("w:p"):
            yield Paragraph(child, document).text
        elif child.tag == qn("w:tbl"):
            for row in Table(child, document).rows:
                cells = dict.fromkeys(cell.text.strip() for cell in row.cells)  # merged cells repeat
                yield " | ".join(c for c in cells if c)
