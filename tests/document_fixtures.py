"""PDF and Word files made in the test: no committed binary, and no PDF-writing library. ``make_pdf`` writes
one Helvetica text line per string by hand, each page's lines top to bottom; ``scanned_pdf`` has a page
and no text layer; ``make_docx`` saves what ``build`` adds to a new python-docx Document."""

import io


def _escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]]) -> bytes:
    n = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    for i, lines in enumerate(pages):
        shown = " ".join(f"({_escape(line)}) Tj T*" for line in lines)
        stream = f"BT /F1 10 Tf 13 TL 40 760 Td {shown} ET".encode("cp1252")  # WinAnsiEncoding
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 "
                       f"0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode())  # fmt: skip
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def scanned_pdf() -> bytes:
    """One blank page, as a scan with no OCR layer reads."""
    from pypdf import PdfWriter

    writer, out = PdfWriter(), io.BytesIO()
    writer.add_blank_page(612, 792)
    writer.write(out)
    return out.getvalue()


def make_docx(build) -> bytes:
    import docx

    document, out = docx.Document(), io.BytesIO()
    build(document)
    document.save(out)
    return out.getvalue()
