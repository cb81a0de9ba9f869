"""Article text: decode bytes, extract the main text, split sentences, cut units the encoder can read.

The only module that imports spaCy (lazily, on the first call to ``split_sentences``).
Every ``Span`` holds exact character offsets into ``Document.text``.
"""

from __future__ import annotations

import codecs
import copy
import functools
import html
import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from . import office, pdf

DEFAULT_MAX_BYTES = 20_000_000
MAX_UNITS = 20_000  # sentences in one input (a book): scoring holds about 90 kB per sentence, so 2 GB
MAX_SENTENCE_CHARS = 2_000
_SPACY_PIECE_CHARS = 100_000  # well under spaCy's nlp.max_length
NO_TEXT = "no article text found (the page may hold only navigation or scripts)"


class InputError(ValueError):
    """Input that cannot be tagged: the message is one plain line for the user."""


@dataclass(frozen=True)
class Span:
    """A sentence or a unit: ``text == Document.text[start:end]``."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    """Clean article text, its sentences and the units the tagger embeds (offsets refer to ``text``)."""

    text: str
    sentences: tuple[Span, ...]
    units: tuple[Span, ...]  # sentences, an over-long one cut at word boundaries into pieces that fit
    title: str = ""
    warnings: tuple[str, ...] = ()


# ---------------------------------------------------------------- bytes -> str
_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"PK\x03\x04", "a zip archive (e.g. .epub or .xlsx)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office file"),
    (b"\x7fELF", "a program"),
)
_BOMS = (  # UTF-32 first: its little-endian BOM starts with the UTF-16 one
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)


def _too_large(source: str, size: str, max_bytes: int) -> InputError:
    return InputError(f"{source}: {size} bytes is over the {max_bytes:,}-byte limit (--max-bytes)")


def decode_bytes(data: bytes, *, source: str = "input", max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Decode UTF-8 (BOM optional) or BOM-marked UTF-16/32, or read the text of a PDF (pdf.py) or a Word
    file (office.py); refuse other binary, oversized or empty input.

    >>> decode_bytes("café".encode("utf-16"))
    'café'
    >>> decode_bytes(b"caf\\xe9")
    Traceback (most recent call last):
    ...
    disarm_tagger.text.InputError: input: not valid UTF-8 at byte 3 (save the file as UTF-8)
    """
    if len(data) > max_bytes:
        raise _too_large(source, f"{len(data):,}", max_bytes)
    if data.startswith(pdf.PDF_MAGIC) or office.is_docx(data):
        return _document_text(data, source=source, max_bytes=max_bytes)
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise InputError(f"{source}: looks like {what}, not text")
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), None)
    if encoding is None and b"\x00" in data:
        raise InputError(f"{source}: contains NUL bytes at byte {data.index(0):,} (looks binary, not text)")
    try:
        text = data.decode(encoding or "utf-8")
    except UnicodeDecodeError as err:
        name = (encoding or "utf-8").removesuffix("-sig").upper()
        reason = f"not valid {name} at byte {err.start:,} (save the file as UTF-8)"
        raise InputError(f"{source}: {reason}") from None
    if "\x00" in text:
        raise InputError(f"{source}: contains NUL characters (looks binary, not text)")
    if not text.strip():
        raise InputError(f"{source}: is empty" if not text else f"{source}: holds only whitespace")
    return text


def _document_text(data: bytes, *, source: str, max_bytes: int) -> str:
    """The text a PDF or Word file holds (never empty), capped at ``max_bytes`` like any input: compressed
    text can outgrow its file."""
    try:
        if data.startswith(pdf.PDF_MAGIC):
            text = pdf.pdf_text(data, max_chars=max_bytes)
        else:
            text = office.docx_text(data)
    except (pdf.PdfError, office.DocxError) as err:
        raise InputError(f"{source}: {err}") from None
    if len(text.encode("utf-8")) > max_bytes:
        raise InputError(f"{source}: its text is over the {max_bytes:,}-byte limit (--max-bytes); split it")
    return text


def read_path(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Read and decode a file, checking its size before reading it."""
    path = Path(path)
    try:
        if path.is_dir():
            raise InputError(f"{path}: is a directory, not a file")
        size = path.stat().st_size
        if size > max_bytes:
            raise _too_large(str(path), f"{size:,}", max_bytes)
        with path.open("rb") as handle:  # bounded read: pipes and devices report size 0
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read it ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise _too_large(str(path), f"more than {max_bytes:,}", max_bytes)
    return decode_bytes(data, source=str(path), max_bytes=max_bytes)


# ---------------------------------------------------------------- str -> article text
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)^(?:---|\.\.\.)[ \t]*$\n?", re.S | re.M)
_HTML_START = re.compile(  # a tag first, after any comments
    r"\A\s*(?:<!--.*?-->\s*)*<(?:!doctype|\?xml|html\b|[a-z][a-z0-9]*\b[^<>]*>)", re.I | re.S)
_BLOCK_TAGS = frozenset(
    "address article blockquote br dd div dl dt figcaption h1 h2 h3 h4 h5 h6 header hr li main ol p pre "
    "section table td th tr ul".split()
)
_NAV_WORDS = r"(^|[ _-])(nav|navbar|menu|breadcrumbs?|sidebar|footer|cookies?)($|[ _-])"
_BOILERPLATE = (
    "//head|//nav|//aside|//footer|//script|//style|//noscript|//template|//iframe|//svg|//button"
    "|//header[not(ancestor::article or ancestor::main)]"
    "|//*[@role='navigation' or @role='banner' or @role='contentinfo' or @role='complementary']"
    "|//*[not(self::html or self::body or self::article or self::main)]"
    f"[re:test(concat(@class, ' ', @id), '{_NAV_WORDS}', 'i')]"
)
_MARKDOWN = (  # (pattern, replacement), applied in order
    (re.compile(r"<!--.*?-->", re.S), ""),  # HTML comments
    (re.compile(r"^[ \t]*(```|~~~).*$", re.M), ""),  # code fences
    (re.compile(r"!\[[^\]]*\]\([^)]*\)"), ""),  # images
    (re.compile(r"\[([^\]]+)\]\([^)]*\)|\[([^\]]+)\]\[[^\]]*\]"), r"\1\2"),  # links
    (re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.*?)[ \t#]*$", re.M), "\n\\1\n"),  # ATX headings
    (re.compile(r"^[ \t]*([-*_=])(?:[ \t]*\1){2,}[ \t]*$", re.M), ""),  # rules, setext underlines
    (re.compile(r"(?<=\S)[ \t]*\n(?=[ \t]*(?![-*+>|]|\d+[.)][ \t])\S)"), " "),  # join soft-wrapped lines
    (re.compile(r"^[ \t]*(?:>[ \t]?)+|^[ \t]*(?:[-*+]|\d+[.)])[ \t]+", re.M), ""),  # quotes, list markers
    (re.compile(r"(\*\*|__|~~)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # strong, strikethrough
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])"), r"\1"),  # emphasis
    (re.compile(r"(?<!\w)_(?=\S)([^_\n]+?)(?<=\S)_(?!\w)"), r"\1"),
    (re.compile(r"`([^`\n]*)`"), r"\1"),  # inline code
)


def _front_matter_title(block: str) -> str:
    """The ``title:`` of a YAML front matter block, including ``title: >`` with indented lines."""
    lines = block.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"title[ \t]*:(.*)$", line)
        if not match:
            continue
        value = match.group(1).strip()
        value = "" if value[:1] in (">", "|") else value.strip("'\"")
        for following in lines[i + 1:]:
            if following.strip() and not following[:1].isspace():
                break
            value += " " + following.strip()
        return " ".join(value.split())
    return ""


def _html_to_text(markup: str) -> tuple[str, str]:
    """(page title, main text) of an HTML page or fragment, boilerplate removed before trafilatura."""
    import lxml.etree
    import lxml.html
    import trafilatura

    markup = re.sub(r"\A\s*<\?xml[^>]*>", "", markup)  # lxml refuses str input with an encoding declaration
    try:
        tree = lxml.html.document_fromstring(markup)
    except (lxml.etree.ParserError, ValueError):
        raise InputError(NO_TEXT) from None
    title = " ".join((tree.findtext(".//title") or "").split())
    for element in tree.xpath(_BOILERPLATE, namespaces={"re": "http://exslt.org/regular-expressions"}):
        if element.getparent() is not None:
            element.drop_tree()
    for element in list(tree.iter("ul", "ol", "li", "div", "p", "section", "table")):
        words = "".join(element.text_content().split())
        links = "".join("".join(a.text_content().split()) for a in element.iter("a"))
        if words and len(links) >= len(words) and element.getparent() is not None:
            element.drop_tree()  # only link text inside: a menu or a list of related stories
    text = trafilatura.extract(
        copy.deepcopy(tree), include_comments=False, favor_recall=True, output_format="txt"
    )
    if text:
        return title, re.sub(r"^- ", "", text, flags=re.M)  # trafilatura's list-item markers
    return title, _strip_tags(tree)


def _strip_tags(tree) -> str:
    """Visible text with block elements and ``<br>`` as line breaks (fallback when trafilatura finds none)."""
    import lxml.etree

    parts: list[str] = []
    for event, element in lxml.etree.iterwalk(tree, events=("start", "end")):
        tag = element.tag if isinstance(element.tag, str) else ""
        if tag in _BLOCK_TAGS:
            parts.append("\n")
        text = element.text if event == "start" else element.tail
        if text and (tag or event == "end"):
            parts.append(re.sub(r"\s+", " ", text))
    return "\n".join(line for line in "".join(parts).splitlines() if line.strip())


def _strip_markdown(text: str) -> str:
    """Light markdown clean-up: headings, emphasis, links, images, list markers; soft wraps joined.

    >>> _strip_markdown("# Title\\nSome *emphasis* and a [link](http://x).\\nsame paragraph")
    '\\nTitle\\n\\nSome emphasis and a link. same paragraph'
    """
    for pattern, replacement in _MARKDOWN:
        text = pattern.sub(replacement, text)
    return html.unescape(text)


def _tidy(text: str) -> str:
    """One space between words, lines stripped, at most one blank line between paragraphs."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def extract_text(raw: str) -> tuple[str, str]:
    """(title, article text) from plain text, markdown or HTML, with optional YAML front matter.

    >>> extract_text("---\\ntitle: >\\n  Bots at work\\n---\\n<p>One &amp; two.</p><p>Three.</p>")
    ('Bots at work', 'One & two.\\nThree.')
    """
    text = raw.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    title = ""
    front = _FRONT_MATTER.match(text)
    if front:
        title, text = _front_matter_title(front.group(1)), text[front.end():]
    if _HTML_START.match(text):
        page_title, text = _html_to_text(text)
        title = title or page_title
    else:
        text = _strip_markdown(text)
    text = _tidy(text)
    if not text:
        raise InputError(NO_TEXT)
    return title, text


# ---------------------------------------------------------------- sentences and units
_WORD = re.compile(r"\S+")
_ESTIMATE_PIECES = re.compile(r"([A-Za-z0-9_]+)|(\w)|\S")  # ASCII words, other letters, marks
_Item = tuple[int, int, int]  # (start, end, tokens) of a sentence or word to pack
_CJK_SENTENCE = re.compile(r"[^\n。！？]*[。！？]+[」』）\"]*|[^\n。！？]+")


def _import_spacy():
    """spaCy's thinc imports torch (seconds) only to offer GPU layers; a sentencizer needs none of it.
    Unless torch is already loaded, hide it while spaCy imports, then let it import normally later."""
    import sys

    if "torch" in sys.modules:
        import spacy

        return spacy
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
    try:
        import spacy
    finally:
        del sys.modules["torch"]
    return spacy


_NLP_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _build_nlp():
    spacy = _import_spacy()

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


def _nlp():
    with _NLP_LOCK:  # built once even when warm_up's thread is still building it
        return _build_nlp()


def warm_up() -> threading.Thread:
    """Build the sentencizer in a background thread: importing spaCy takes about a second of pure Python,
    which overlaps with what a caller does meanwhile outside the interpreter lock (reading a model's arrays,
    starting the ONNX session). The first split_sentences then finds it ready."""
    thread = threading.Thread(target=_nlp, name="spacy-warm-up", daemon=True)
    thread.start()
    return thread


def _trimmed(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(text[start:end], start, end) if start < end else None


def _cut(text: str, start: int, end: int, limit: int) -> list[Span]:
    """text[start:end] as trimmed spans of at most ``limit`` characters, cut at whitespace when possible."""
    spans: list[Span] = []
    while (span := _trimmed(text, start, end)) is not None:
        start = span.start
        if span.end - start <= limit:
            return spans + [span]
        cut = start + limit
        for gap in re.finditer(r"\s", text[start + 1:start + limit + 1]):
            cut = start + 1 + gap.start()
        spans.append(_trimmed(text, start, cut))
        start = cut
    return spans


def split_sentences(text: str) -> list[Span]:
    """Sentences with exact offsets: lines first, then spaCy's sentencizer inside each line.

    >>> [s.text for s in split_sentences("Bots posted. People shared!\\nNew paragraph")]
    ['Bots posted.', 'People shared!', 'New paragraph']
    """
    units = [
        piece
        for line in re.finditer(r"[^\n]+", text)
        for part in _CJK_SENTENCE.finditer(text, line.start(), line.end())
        for piece in _cut(text, part.start(), part.end(), _SPACY_PIECE_CHARS)
    ]
    sentences: list[Span] = []
    for unit, doc in zip(units, _nlp().pipe(unit.text for unit in units)):
        for sent in doc.sents:
            start, end = unit.start + sent.start_char, unit.start + sent.end_char
            sentences.extend(_cut(text, start, end, MAX_SENTENCE_CHARS))
    return sentences


def estimate_tokens(text: str) -> int:
    """A cheap, conservative stand-in for a word-piece count (MiniLM reads at most 256).

    ASCII words weigh 1.3 (1.3 more per 10 characters beyond the first), other letters one per decomposed
    character (CJK, Hangul jamo, scripts an English vocabulary splits finely), punctuation one per mark.
    The count never grows when text is cut in two, so packed pieces stay within a limit.

    >>> estimate_tokens("Bots flooded the channel, again.")
    9
    """
    words, other = 0.0, 0
    for ascii_word, letter in _ESTIMATE_PIECES.findall(text):
        if ascii_word:
            words += 1.3 * (1 + (len(ascii_word) - 1) // 10)
        else:
            other += len(unicodedata.normalize("NFD", letter)) if letter else 1
    return math.ceil(words) + other


def _atoms(text: str, span: Span, max_tokens: int, count: Callable[[str], int]) -> Iterator[_Item]:
    """(start, end, tokens) of each word in span; a word over the limit is cut into slices that fit.

    Only a single character that alone counts more than max_tokens can exceed the limit.
    """
    for word in _WORD.finditer(text, span.start, span.end):
        start, tokens = word.start(), count(word.group())
        while tokens > max_tokens:
            size = min(max_tokens, word.end() - start)
            while size > 1 and (tokens := count(text[start:start + size])) > max_tokens:
                size = max(1, min(size - 1, size * max_tokens // tokens))
            yield start, start + size, count(text[start:start + size])
            start, tokens = start + size, count(text[start + size:word.end()])
        if start < word.end():
            yield start, word.end(), tokens


def _pack(text: str, items: Iterable[_Item], max_tokens: int) -> list[Span]:
    """Greedily join consecutive (start, end, tokens) items into spans of at most max_tokens."""
    spans: list[Span] = []
    start, end, used = None, 0, 0
    for item_start, item_end, tokens in items:
        if start is not None and used + tokens > max_tokens:
            spans.append(Span(text[start:end], start, end))
            start = None
        if start is None:
            start, used = item_start, 0
        end, used = item_end, used + tokens
    if start is not None:
        spans.append(Span(text[start:end], start, end))
    return spans


MAX_UNIT_TOKENS = 200  # MiniLM reads at most 256 word pieces; estimate_tokens errs on the high side


def units(sentences: Sequence[Span], text: str, *, max_tokens: int = MAX_UNIT_TOKENS,
          count_tokens: Callable[[str], int] | None = None) -> list[Span]:  # fmt: skip
    """The units the tagger embeds: each sentence that fits ``max_tokens`` as it is, and each one that does
    not cut at word boundaries into consecutive pieces that fit. Nothing is dropped.

    >>> text = "One two. Three four five six seven."
    >>> [u.text for u in units(split_sentences(text), text, max_tokens=3, count_tokens=lambda s: len(s.split()))]
    ['One two.', 'Three four five', 'six seven.']
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    count = count_tokens or estimate_tokens
    out: list[Span] = []
    for sentence in sentences:
        if count(sentence.text) <= max_tokens:
            out.append(sentence)
        else:
            out += _pack(text, _atoms(text, sentence, max_tokens, count), max_tokens)
    return out


# ---------------------------------------------------------------- language hint and the pipeline
_SCRIPT_CODES = {"CJK": "zh", "HANGUL": "ko", "CYRILLIC": "ru", "ARABIC": "ar", "GREEK": "el", "HEBREW": "he",
                 "DEVANAGARI": "hi", "THAI": "th"}
_KANA = ("HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "HALFWIDTH")


def detect_language_hint(text: str, *, sample: int = 5_000) -> str | None:
    """A language code when most letters are in one non-Latin script, else None (a hint for a warning).

    >>> detect_language_hint("Боты распространяли ложные новости."), detect_language_hint("Bots lie.")
    ('ru', None)
    """
    letters = "".join(islice(filter(str.isalpha, text), sample))
    if not letters or len(letters.encode("ascii", "ignore")) * 2 >= len(letters):
        return None  # ASCII letters are Latin ones: the per-letter look-up below would say the same
    scripts = Counter(unicodedata.name(c, "UNKNOWN").split()[0] for c in letters)
    if scripts["LATIN"] * 2 >= len(letters):
        return None
    if sum(scripts[k] for k in _KANA) * 10 >= len(letters):  # Japanese mixes kana with kanji
        return "ja"
    script = max((s for s in scripts if s != "LATIN"), key=scripts.__getitem__)
    return _SCRIPT_CODES.get(script, script.lower())


def segment(text: str, *, title: str = "", max_tokens: int = MAX_UNIT_TOKENS) -> Document:
    """Clean text -> Document: sentences, units and a warning when the text looks non-English. Training
    passages and articles both go through here, so the tagger sees them cut the same way."""
    sentences = split_sentences(text)
    language = detect_language_hint(text)
    warnings = (f"text looks non-English ({language}); the model is English-only, suggestions are best "
                "effort",) if language else ()  # fmt: skip
    return Document(text, tuple(sentences), tuple(units(sentences, text, max_tokens=max_tokens)), title, warnings)


def prepare(raw: str, *, max_tokens: int = MAX_UNIT_TOKENS) -> Document:
    """Raw input (plain text, markdown with front matter, or HTML) -> Document. Raises InputError, also for
    a text of more than MAX_UNITS sentences, whose scoring would hold more than about 2 GB.
    The one path from an input to what the tagger scores: suggest, batch, bench, annotate and serve."""
    title, text = extract_text(raw)
    doc = segment(text, title=title, max_tokens=max_tokens)
    if len(doc.units) > MAX_UNITS:
        raise InputError(f"too long to tag as one document: {len(doc.units):,} sentences (the limit is "
                         f"{MAX_UNITS:,}); split it into parts and tag each")  # fmt: skip
    return doc
