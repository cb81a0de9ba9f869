"""PDF -> article text: the text layer of every page (pypdf), with the page furniture taken out and the
printed lines joined back into paragraphs, so that sentences split as they would in the original.

Threat-intelligence and research reports mostly come as PDFs. A PDF has no paragraphs, only lines placed
on a page: a sentence runs over several lines, a word may be hyphenated across two, and every page repeats
a running header, a footer and a page number. Left as they are, each line would become a sentence of its
own and the running header a sentence on every page.

pypdf is imported on first use, so reading plain text never pays for it.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from collections import Counter

PDF_MAGIC = b"%PDF-"
_PAGE_NUMBER = re.compile(r"(?i)^\W*(page\s*)?\d{1,4}(\s*(/|of)\s*\d{1,4})?\W*$")
_END = re.compile(r"[.!?:;…][\"'”’)\]]*$")  # a line that ends a sentence
_HYPHENATED = re.compile(r"([^\W\d_]+)-$")  # a word cut at the end of a line ("disinfor-")
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
_BULLET = re.compile(r"^([•▪●◦■–—*-]|\d{1,2}[.)]|[a-z][.)])\s")
_DIGITS = re.compile(r"\d+")
_DROPPED = re.compile("[\u00ad\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # soft hyphens, control characters
_LIGATURES = re.compile("[\ufb00-\ufb06]")  # ﬁ ﬂ ﬀ ...: one glyph in the PDF, two letters in the text
EDGE = 2  # running headers and footers are among a page's first and last two lines
REPEATED_SHARE = 0.5  # a short line on more than this share of the pages (3 or more) is a running header
SHORT_LINE = 0.6  # a line under this share of a full line's length can end a paragraph (_paragraphs)


class PdfError(ValueError):
    """The PDF cannot be read as text: the message is one plain line for the user."""


def pdf_text(data: bytes, *, max_chars: int | None = None) -> str:
    """The article text of a PDF's text layer, paragraphs separated by blank lines. Raises PdfError when it
    is encrypted, unreadable, has no text layer (a scan), or holds more than ``max_chars`` characters of
    text: reading stops at the page that passes the limit, so a book-length PDF costs seconds, not minutes."""
    from pypdf import PdfReader  # reading a PDF only

    # pypdf logs each repair it makes to a damaged file; on stderr they would break into batch's progress bar
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise PdfError("is an encrypted PDF (remove the password, or save the article as text)")
        pages, total = [], 0
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            total += len(pages[-1])
            if max_chars is not None and total > max_chars:
                raise PdfError(f"holds more than {max_chars:,} characters of text (--max-bytes); split it")
    except PdfError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the parser on untrusted bytes is a bad input
        reason = " ".join(f"{type(err).__name__}: {err}".split())  # one line
        raise PdfError(f"cannot read this PDF ({reason})") from None
    lines = [[_clean(line) for line in page.splitlines()] for page in pages]
    text = _paragraphs([line for page in _without_furniture(lines) for line in page])  # across pages too
    if not text.strip():
        raise PdfError("is a PDF without a text layer (a scan?); run OCR on it first, or save it as text")
    return text


def _clean(line: str) -> str:
    """Soft hyphens and control characters out (a broken font map can yield NULs), ligatures spelled out,
    runs of spaces made one.

    >>> _clean("e\\ufb03cient  disinfor\\u00admation\\x00")
    'efficient disinformation'
    """
    line = _LIGATURES.sub(lambda m: unicodedata.normalize("NFKC", m.group()), _DROPPED.sub("", line))
    return " ".join(line.split())


def _without_furniture(pages: list[list[str]]) -> list[list[str]]:
    """Drop the running headers and footers: among the first and last EDGE lines of each page, page numbers,
    and the short lines found there on most pages. Numbers do not count, so "report.pdf 1/3" and
    "report.pdf 2/3" are one footer. The body is never touched: a line repeated in it is content.

    >>> _without_furniture([["Report X", "Bots posted.", "x.html 1/3"],
    ...                     ["Report X", "They left.", "x.html 2/3"], ["Report X", "Done.", "Page 3 of 3"]])
    [['Bots posted.'], ['They left.'], ['Done.']]
    """
    def key(line: str) -> str:
        return _DIGITS.sub("#", line)

    def edges(page: list[str]) -> list[tuple[bool, str]]:
        """(among the first or last EDGE lines?, line) for each line of the page."""
        return [(i < EDGE or i >= len(page) - EDGE, line) for i, line in enumerate(page)]

    pages = [edges([line for line in page if line]) for page in pages]
    counts = Counter(k for page in pages
                     for k in {key(line) for edge, line in page if edge and len(line) <= 80})  # fmt: skip
    repeated = {k for k, n in counts.items() if n > REPEATED_SHARE * len(pages)} if len(pages) >= 3 else set()

    def furniture(line: str) -> bool:
        return key(line) in repeated or bool(_PAGE_NUMBER.match(line))

    return [[line for edge, line in page if not (edge and furniture(line))] for page in pages]


def _paragraphs(lines: list[str]) -> str:
    """Printed lines joined into paragraphs. A line starts a new paragraph when it starts a bullet, or when
    the line before stopped well short of a full line (the longest but a tenth) and either ended a sentence
    (a paragraph's last line) or is followed by a capital (a heading).

    >>> print(_paragraphs(["Findings", "The network ran forty pages that posted the same",
    ...                    "stories. Its disinfor-", "mation reached many.",
    ...                    "A new paragraph starts here and runs", "on."]))
    Findings
    <BLANKLINE>
    The network ran forty pages that posted the same stories. Its disinformation reached many.
    <BLANKLINE>
    A new paragraph starts here and runs on.
    """
    if not lines:
        return ""
    lengths = sorted(len(line) for line in lines)
    width = lengths[int(0.9 * (len(lengths) - 1))]
    out, words = [lines[0]], {w.lower() for line in lines for w in _WORD.findall(line)}
    for prev, line in zip(lines, lines[1:]):
        short = len(prev) < SHORT_LINE * width
        if _BULLET.match(line) or (short and (_END.search(prev) or not line[:1].islower())):
            out.append("\n\n" + line)
        elif (cut := _HYPHENATED.search(prev)) and line[:1].islower():
            if not _keeps_hyphen(cut.group(1), _WORD.match(line).group(), words):
                out[-1] = out[-1][:-1]  # "disinfor-" + "mation"
            out.append(line)
        else:
            out.append(" " + line)
    return "".join(out)


def _keeps_hyphen(head: str, tail: str, words: set[str]) -> bool:
    """Whether a word broken as "head-" / "tail" at a line end is a hyphenated word ("pro-government",
    "AI-generated") rather than one word cut in two: it is when the hyphenated form occurs elsewhere in the
    text and the joined one does not, or when the head ends with a capital.

    >>> _keeps_hyphen("disinfor", "mation", set()), _keeps_hyphen("AI", "generated", set())
    (False, True)
    >>> _keeps_hyphen("pro", "government", {"pro-government"})
    True
    """
    joined, hyphenated = f"{head}{tail}".lower(), f"{head}-{tail}".lower()
    return head[-1].isupper() or (hyphenated in words and joined not in words)
