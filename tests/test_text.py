"""Tests for disarm_tagger.text: decoding, extraction, sentences, chunks (all fixtures written here)."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disarm_tagger import text as T
from disarm_tagger.text import Document, InputError, Span

HTML_PAGE = """<!DOCTYPE html>
<html><head><title>Example Daily &ndash; Bot farm story</title>
<style>body { color: red }</style><script>var tracker = "SCRIPTCONTENT";</script></head>
<body>
<header><div class="site-menu"><a href="/">Homepage</a> | <a href="/world">Worldwide</a></div></header>
<nav><ul><li><a href="/politics">Politicsnav</a></li><li><a href="/sport">Sportsnav</a></li></ul></nav>
<article>
  <h1>Bot farm pushed fake reviews</h1>
  <p>Investigators found a network of automated accounts that posted identical praise
     for a candidate across three platforms.</p>
  <p>The accounts were created in the same week &amp; used stolen profile photos.
     Researchers called it a caf&eacute; of sockpuppets&#8212;cheap and loud.</p>
  <p>Most accounts were suspended after the report was published.</p>
</article>
<aside class="sidebar"><p>Advertisement: buy ACMEWIDGETS today and save money on everything.</p></aside>
<footer><p>Copyright FOOTERTEXT Example Daily. All rights reserved.</p></footer>
<script>console.log("MORESCRIPT")</script>
</body></html>
"""

NAV_ONLY_PAGES = [
    '<html><body><nav><a href="/">Home</a> <a href="/x">About</a></nav>'
    "<script>var x = 1;</script><footer>(c) 2024 Example</footer></body></html>",
    '<html><head><title>Example</title></head><body><div class="menu"><a href="/">Home</a> | '
    '<a href="/a">About us</a></div><div><ul><li><a>Politics</a></li><li><a>Sport</a></li></ul></div>'
    "</body></html>",
]

JEKYLL_POST = """---
layout: post
title: >
  Sockpuppets flood a city forum
description: >
  A summary that must not appear in the text.
date: 1600000000.0
---
<div><ul class="summary-list">
<li>Dozens of new accounts posted the same complaint within an hour.</li>
<li>Moderators traced them to one marketing firm &#8212; which denied it.</li>
</ul>
<p class="ad ad-wrapper"></p>
<p>The forum's moderators said the accounts used recycled avatars.</p>
<p>They removed 42 accounts &amp; locked the thread.</p>
</div>
"""

JAPANESE = "ボットが偽のニュースを広めた。多くの人がそれを共有した。\n政府は調査を始めた。"
RUSSIAN = ("Боты распространяли ложные новости. Многие люди поделились ими.\n"
           "Правительство начало расследование.")


def assert_offsets(doc: Document) -> None:
    for span in doc.sentences + doc.units:
        assert doc.text[span.start:span.end] == span.text
        assert span.text and span.text == span.text.strip()


def units_of(span: Span, units: tuple[Span, ...] | list[Span]) -> list[Span]:
    return [u for u in units if span.start <= u.start and u.end <= span.end]


# ------------------------------------------------------------------ decode_bytes / read_path
@pytest.mark.parametrize(
    "data",
    [
        codecs.BOM_UTF8 + "Café news.".encode(),
        "Café news.".encode(),
        codecs.BOM_UTF16_LE + "Café news.".encode("utf-16-le"),
        codecs.BOM_UTF16_BE + "Café news.".encode("utf-16-be"),
        codecs.BOM_UTF32_LE + "Café news.".encode("utf-32-le"),
    ],
)
def test_decode_bytes_encodings(data):
    assert T.decode_bytes(data) == "Café news."


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"abc\xff def", "not valid UTF-8 at byte 3"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "PNG"),
        (b"%PDF-1.7 ...", "PDF"),
        (b"PK\x03\x04rest", "zip"),
        (b"\x1f\x8b\x08rest", "gzip"),
        (b"hello\x00world", "NUL"),
        (b"", "empty"),
        (b" \n\t \r\n", "whitespace"),
        (codecs.BOM_UTF8, "empty"),
    ],
)
def test_decode_bytes_refuses(data, message):
    with pytest.raises(InputError, match=message) as info:
        T.decode_bytes(data, source="in.txt")
    assert str(info.value).startswith("in.txt: ") and "\n" not in str(info.value)


def test_decode_bytes_too_large():
    with pytest.raises(InputError, match=r"input: 11 bytes is over the 10-byte limit \(--max-bytes\)"):
        T.decode_bytes(b"x" * 11, max_bytes=10)
    assert T.decode_bytes(b"x" * 10, max_bytes=10) == "x" * 10


def test_read_path(tmp_path):
    good = tmp_path / "a.md"
    good.write_bytes(codecs.BOM_UTF8 + b"Some text.")
    assert T.read_path(good) == "Some text."
    with pytest.raises(InputError, match="no such file"):
        T.read_path(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="is a directory"):
        T.read_path(tmp_path)
    with pytest.raises(InputError, match=r"13 bytes is over the 5-byte limit"):
        T.read_path(good, max_bytes=5)
    binary = tmp_path / "img.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InputError, match="PNG"):
        T.read_path(binary)


# ------------------------------------------------------------------ extract_text
def test_html_page_keeps_article_drops_boilerplate():
    title, text = T.extract_text(HTML_PAGE)
    assert "Bot farm story" in title
    assert "Investigators found a network of automated accounts" in text
    assert "used stolen profile photos" in text
    assert "Most accounts were suspended after the report was published." in text
    for junk in ("Homepage", "Worldwide", "Politicsnav", "Sportsnav", "SCRIPTCONTENT", "MORESCRIPT",
                 "ACMEWIDGETS", "FOOTERTEXT", "color: red"):
        assert junk not in text
    assert "same week & used" in text and "café of sockpuppets—cheap" in text  # entities decoded
    assert "&amp;" not in text and "<" not in text
    paragraphs = text.splitlines()  # paragraph breaks survive, HTML line wrapping does not
    assert any(p.startswith("Investigators found") and p.endswith("three platforms.") for p in paragraphs)
    assert any(p.startswith("Most accounts") for p in paragraphs)


def test_inline_links_and_page_wide_forms_are_kept():
    page = ('<html><body><form id="aspnetForm"><div class="content"><p>Officials said <span><a href="/r">the '
            'report</a></span> was accurate.</p><p>They published <a href="/d">the data</a> on Monday.</p>'
            "</div></form></body></html>")
    _, text = T.extract_text(page)
    assert text.splitlines() == [
        "Officials said the report was accurate.", "They published the data on Monday."]


@pytest.mark.parametrize("page", NAV_ONLY_PAGES)
def test_nav_only_html_raises(page):
    with pytest.raises(InputError, match="no article text found"):
        T.extract_text(page)


def test_front_matter_then_html_fragment():
    title, text = T.extract_text(JEKYLL_POST)
    assert title == "Sockpuppets flood a city forum"
    assert "layout" not in text and "summary that must not appear" not in text and "---" not in text
    lines = text.splitlines()
    assert "Dozens of new accounts posted the same complaint within an hour." in lines
    assert "Moderators traced them to one marketing firm — which denied it." in lines
    assert "The forum's moderators said the accounts used recycled avatars." in lines
    assert "They removed 42 accounts & locked the thread." in lines


def test_fragment_fallback_when_trafilatura_finds_nothing(monkeypatch):
    import trafilatura

    monkeypatch.setattr(trafilatura, "extract", lambda *args, **kwargs: None)
    _, text = T.extract_text("<div><h2>Head&amp;line</h2><ul><li>One</li><li>Two<br>Three</li></ul>"
                             "<p>Para\n  graph.</p><script>hidden()</script></div>")
    assert text.splitlines() == ["Head&line", "One", "Two", "Three", "Para graph."]


@pytest.mark.parametrize(
    ("front", "title"),
    [
        ("title: Plain title\n", "Plain title"),
        ("title: 'Quoted: title'\n", "Quoted: title"),
        ("title: >\n  Folded\n  over lines\nother: x\n", "Folded over lines"),
        ("other: x\n", ""),
    ],
)
def test_front_matter_titles(front, title):
    got_title, text = T.extract_text(f"---\n{front}---\nBody text here.\n")
    assert (got_title, text) == (title, "Body text here.")


def test_markdown_is_lightly_stripped():
    raw = ("# A heading\n\nSome **bold** and *italic* words with a [link](https://example.com)\n"
           "wrapped onto a second line.![chart](chart.png)\n\n- first item\n- second item\n\n> quoted line\n")
    title, text = T.extract_text(raw)
    assert title == ""
    assert text.splitlines() == [
        "A heading", "",
        "Some bold and italic words with a link wrapped onto a second line.", "",
        "first item", "second item", "",
        "quoted line",
    ]


@pytest.mark.parametrize(
    ("raw", "lines"),
    [
        ("<!-- draft -->\n# Heading\n\nPara one.\n\nPara two.",
         ["Heading", "", "Para one.", "", "Para two."]),
        ("<!-- saved from url=x -->\n<html><body><p>Para one.</p><p>Para two.</p></body></html>",
         ["Para one.", "Para two."]),
    ],
)
def test_leading_html_comment_does_not_decide_the_format(raw, lines):
    assert T.extract_text(raw)[1].splitlines() == lines


def test_plain_text_kept_and_paragraphs_survive():
    _, text = T.extract_text("First paragraph here.\r\n\r\n\r\nSecond   paragraph, snake_case_name.\n")
    assert text == "First paragraph here.\n\nSecond paragraph, snake_case_name."


# ------------------------------------------------------------------ sentences and units
def test_sentences_have_exact_offsets_and_respect_lines():
    text = "Bots posted first.  People shared it!\n\nA line without a stop\nLast one? Yes."
    sentences = T.split_sentences(text)
    assert [s.text for s in sentences] == [
        "Bots posted first.", "People shared it!", "A line without a stop", "Last one?", "Yes."]
    assert all(text[s.start:s.end] == s.text for s in sentences)


def test_long_text_units_are_its_sentences_without_truncation():
    sentences = [f"Account number {i} reposted the same claim about the election at {i} o'clock."
                 for i in range(300)]
    raw = "\n\n".join(" ".join(sentences[i:i + 10]) for i in range(0, 300, 10))
    doc = T.prepare(raw, max_tokens=120)
    assert_offsets(doc)
    assert len(doc.sentences) == 300
    assert doc.units == doc.sentences  # every sentence fits: units are the sentences themselves
    assert " ".join(u.text for u in doc.units).split() == doc.text.split()  # nothing dropped


def test_only_the_over_long_sentence_is_cut():
    long = " ".join(f"word{i}" for i in range(60)) + "."
    text = f"Short one. {long} Short two."
    doc = T.segment(text, max_tokens=30)
    assert_offsets(doc)
    short_one, middle, short_two = doc.sentences
    assert doc.units[0] == short_one and doc.units[-1] == short_two
    pieces = units_of(middle, doc.units)
    assert len(pieces) >= 3 and all(T.estimate_tokens(u.text) <= 30 for u in pieces)
    assert len(doc.units) == len(pieces) + 2
    assert " ".join(u.text for u in pieces).split() == middle.text.split()


def test_giant_sentence_is_split():
    words = [f"word{i}" for i in range(3000)]
    text = " ".join(words)
    sentences = T.split_sentences(text)
    assert len(sentences) > 1 and all(len(s.text) <= T.MAX_SENTENCE_CHARS for s in sentences)
    assert " ".join(s.text for s in sentences).split() == words
    units = T.units(sentences, text, max_tokens=50)
    assert all(T.estimate_tokens(u.text) <= 50 for u in units)
    assert " ".join(u.text for u in units).split() == words


@pytest.mark.parametrize("letter", ["あ", "한"])  # one token per kana, three per Hangul syllable
def test_word_without_spaces_is_cut(letter):
    text = letter * 700
    units = T.units(T.split_sentences(text), text, max_tokens=100)
    assert len(units) >= 7 and all(T.estimate_tokens(u.text) <= 100 for u in units)
    assert "".join(u.text for u in units) == text


@pytest.mark.parametrize(
    ("sentence", "minilm_tokens"),  # word pieces counted once with the packaged MiniLM tokenizer
    [
        ("Investigators found a network of automated accounts that posted identical praise "
         "for a candidate.", 15),
        ("Боты распространяли ложные новости. Многие люди поделились ими.", 54),
        ("ボットが偽のニュースを広めた。多くの人がそれを共有した。", 28),
        ("봇이 가짜 뉴스를 퍼뜨렸다. 정부는 조사를 시작했다.", 28),
        ("机器人传播了关于选举的虚假新闻。", 16),
        ("Les comptes ont été créés la même semaine à Besançon.", 21),
        ("See https://example.com/reports/2024/coordinated-inauthentic-behaviour?id=42 for details.", 29),
    ],
)
def test_estimate_is_conservative_but_not_wasteful(sentence, minilm_tokens):
    assert minilm_tokens <= T.estimate_tokens(sentence) <= 2 * minilm_tokens


def test_units_rejects_bad_limit():
    with pytest.raises(ValueError):
        T.units([], "", max_tokens=0)


# ------------------------------------------------------------------ language and prepare
@pytest.mark.parametrize(("raw", "code", "n_sentences"), [(JAPANESE, "ja", 3), (RUSSIAN, "ru", 3)])
def test_non_english_warns_but_still_splits(raw, code, n_sentences):
    doc = T.prepare(raw)
    assert_offsets(doc)
    assert doc.warnings == (f"text looks non-English ({code}); the model is English-only, suggestions are best "
                            "effort",)
    assert len(doc.sentences) == n_sentences


def test_language_hint():
    assert T.detect_language_hint("Bots spread false stories about the vote.") is None
    assert T.detect_language_hint("机器人传播了关于选举的虚假新闻。") == "zh"
    assert T.detect_language_hint("봇이 가짜 뉴스를 퍼뜨렸다.") == "ko"
    assert T.detect_language_hint("نشرت الروبوتات أخبارا كاذبة.") == "ar"
    assert T.detect_language_hint("12345 !!!") is None


def _hint_letter_by_letter(text: str, sample: int = 5_000) -> str | None:
    """The language hint as first written: every letter's script looked up, Latin ones included."""
    import unicodedata
    from collections import Counter

    letters = [c for c in text if c.isalpha()][:sample]
    scripts = Counter(unicodedata.name(c, "UNKNOWN").split()[0] for c in letters)
    if not letters or scripts["LATIN"] * 2 >= len(letters):
        return None
    if sum(scripts[k] for k in T._KANA) * 10 >= len(letters):
        return "ja"
    script = max((k for k in scripts if k != "LATIN"), key=scripts.__getitem__)
    return T._SCRIPT_CODES.get(script, script.lower())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["Bots lie. ", "Élection volée ", "Боты лгут. ", "选举 ", "ひらがな ", "ＡＢＣ ",
                                 "ﾊﾝｶｸ ", "x", "ß", "1 ", "² ½ ", "Ωμέγα "]), max_size=12),
       st.integers(1, 40))  # fmt: skip
def test_language_hint_agrees_with_a_letter_by_letter_count(pieces, sample):
    text = "".join(pieces)
    assert T.detect_language_hint(text, sample=sample) == _hint_letter_by_letter(text, sample)


def test_prepare_html_document():
    doc = T.prepare(JEKYLL_POST)
    assert_offsets(doc)
    assert doc.title == "Sockpuppets flood a city forum" and doc.warnings == ()
    assert [s.text for s in doc.sentences][-1] == "They removed 42 accounts & locked the thread."
    assert all(units_of(s, doc.units) for s in doc.sentences)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_prepare_offsets_property(raw):
    try:
        doc = T.prepare(raw, max_tokens=20)
    except InputError:
        return
    assert_offsets(doc)
    visible = [i for i, ch in enumerate(doc.text) if not ch.isspace()]
    assert [i for u in doc.units for i in range(u.start, u.end) if not doc.text[i].isspace()] == visible
    assert all(T.estimate_tokens(u.text) <= 20 for u in doc.units)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab .!?\n\t。é한"), max_size=300), st.integers(3, 30))
def test_sentences_and_units_cover_every_character(text, max_tokens):
    sentences = T.split_sentences(text)
    units = T.units(sentences, text, max_tokens=max_tokens)
    assert all(text[s.start:s.end] == s.text for s in sentences + units)
    assert all(a.end <= b.start for a, b in zip(sentences, sentences[1:]))
    visible = [i for i, ch in enumerate(text) if not ch.isspace()]
    assert [i for s in sentences for i in range(s.start, s.end) if not text[i].isspace()] == visible
    assert [i for u in units for i in range(u.start, u.end) if not text[i].isspace()] == visible
    assert all(T.estimate_tokens(u.text) <= max_tokens for u in units)
