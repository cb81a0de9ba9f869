"""The review page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; nothing is
downloaded): the whole review flow on the bundled example, and a hostile article that must stay text.

No skip: without the browser these tests fail (.ci/run installs it with apt-get).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from playwright.sync_api import expect, sync_playwright

from disarm_tagger import corpus
from disarm_tagger.serve import create_app
from disarm_tagger.text import extract_text
from document_fixtures import make_pdf
from serve_fixtures import EXAMPLE, live_server, make_data, make_tagger
from test_tagger import TECHNIQUES

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
TIMEOUT_MS = 20_000

XSS_ARTICLE = """---
title: <img src=x onerror="window.pwned='title'">Hostile title
---
Operators ran a channel on a messaging app <script>window.pwned='script'; alert('script')</script> to spread posts.
A website with a domain hosted <img src=x onerror="window.pwned='img'; alert('img')"> the articles.
Readers paid with card payments, <a href="javascript:window.pwned='link'">click to unlock</a> the posts.
<iframe src="javascript:alert('iframe')"></iframe> Members chatted in a private messaging channel.
Fake faces <svg onload="alert('svg')"></svg> were synthesised with neural networks for profile photos.
The group registered a domain <body onload="alert('body')"> for the campaign.
<img src=x onerror="alert('line')"> Readers were told to share the posts.
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does this)")
    expect.set_options(timeout=TIMEOUT_MS)

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True, args=FLAGS,
            accept_downloads=True)  # fmt: skip
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture()
def server(tmp_path):
    data = make_data(tmp_path / "training_data")
    with live_server(create_app(make_tagger(), model="models/fake", data=data)) as url:
        yield url, data


def _open(browser, url):
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.goto(url + "/")
    expect(page.locator("#model")).to_have_text("model: models/fake")  # (wait_for_function would need eval: CSP)
    return page, problems


def _suggest(page, raw: str, top_k: int) -> None:
    page.fill("#top-k", str(top_k))
    page.fill("#raw", raw)
    page.click("#suggest")
    page.wait_for_selector("#suggestions li")


def test_review_flow_on_the_bundled_example(browser, server):
    url, data = server
    page, problems = _open(browser, url)
    _suggest(page, EXAMPLE.read_text(encoding="utf-8"), top_k=4)
    items = page.locator("#suggestions li")
    assert items.count() == 4
    ids = [items.nth(i).get_attribute("data-id") for i in range(4)]
    assert page.locator("#title").inner_text().startswith("Invented example")
    threshold = float(re.search(r"threshold \((\d\.\d\d)\)", page.locator("#legend").inner_text()).group(1))
    for score in page.locator(".score").all_inner_texts():  # "0.31 ✓" as in the CLI's table
        assert re.fullmatch(r"[01]\.\d\d( ✓)?", score) and score.endswith("✓") == (float(score[:4]) >= threshold)

    marks = page.locator("#text mark")  # evidence highlighted in the article text
    assert marks.count() > 0
    assert marks.first.get_attribute("title").startswith("Evidence for:\nT")  # hover: what it supports
    items.nth(2).click()  # a suggestion's evidence is marked and scrolled to
    current = page.locator("#text mark.current")
    assert current.count() > 0 and "2" in current.first.get_attribute("data-owners").split()
    assert current.first.is_visible()

    for key in "kaka":  # keyboard: up to the second suggestion, accept; up to the first, accept
        page.keyboard.press(key)
    items.nth(3).locator("button.reject").click()  # and reject one with the mouse
    decisions = [{"accepted", "rejected"} & set((items.nth(i).get_attribute("class") or "").split()) for i in range(4)]
    assert decisions == [{"accepted"}, {"accepted"}, set(), {"rejected"}]

    extra = next(t for t in TECHNIQUES if t.id not in ids)  # add a technique the model did not suggest
    page.fill("#add-q", extra.name.split()[0].lower())
    page.locator("#add-results li", has_text=extra.id).locator("button").click()
    assert page.locator(f"#added li[data-id='{extra.id}']").count() == 1

    page.fill("#annotator", "ana")
    page.fill("#note", "reviewed in the browser")
    page.click("#save")
    expect(page.locator("#status")).to_contain_text("Saved: ")
    (record,) = [json.loads(line) for line in (data / corpus.ANNOTATIONS).read_text().splitlines()]
    assert record["labels"] == sorted({ids[0], ids[1], extra.id})
    assert record["annotator"] == "ana" and record["note"] == "reviewed in the browser"
    assert record["incident_name"].startswith("Invented example")

    with page.expect_download() as download:
        page.click("[data-export=stix]")
    import stix2

    bundle = stix2.parse(Path(download.value.path()).read_text(encoding="utf-8"), allow_custom=True)
    (report,) = [o for o in bundle.objects if o.type == "report"]
    patterns = {o.id: o.x_mitre_id for o in bundle.objects if o.type == "attack-pattern"}
    assert sorted(patterns[ref] for ref in report.object_refs) == record["labels"]
    assert report.name.startswith("Invented example")
    assert problems == []


def test_a_pdf_upload_is_reviewed_and_saved_as_its_text(browser, server, tmp_path):
    url, data = server
    page, problems = _open(browser, url)
    report = tmp_path / "report.pdf"
    report.write_bytes(make_pdf([["Operators ran a channel on a messaging app. A website with",
                                  "a domain hosted the articles."]]))  # fmt: skip
    page.set_input_files("#file", str(report))
    page.fill("#top-k", "2")
    page.click("#suggest")
    page.wait_for_selector("#suggestions li")
    text = "Operators ran a channel on a messaging app. A website with a domain hosted the articles."
    assert page.locator("#text").text_content() == text  # the printed lines joined, as the server read them
    assert page.locator("#text mark").count() > 0
    first = page.locator("#suggestions li").first
    first.locator("button.accept").click()
    page.click("#save")
    expect(page.locator("#status")).to_contain_text("Saved: ")
    (record,) = [json.loads(line) for line in (data / corpus.ANNOTATIONS).read_text().splitlines()]
    assert record["labels"] == [first.get_attribute("data-id")] and record["text"] == text
    assert problems == []


def test_hostile_article_is_rendered_as_text(browser, server):
    url, _data = server
    page, problems = _open(browser, url)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _suggest(page, XSS_ARTICLE, top_k=1)  # one suggestion: hostile sentences inside and outside highlights
    page.wait_for_timeout(500)  # time for an injected image to fail and fire onerror, had there been one
    assert page.evaluate("window.pwned") is None and dialogs == []
    assert page.locator("#title, #text, #suggestions").locator("script, img, a, iframe, svg, body").count() == 0
    text = page.locator("#text")
    assert text.locator("script, img, a, iframe").count() == 0  # no element was made from the article
    shown = text.text_content()
    assert shown == extract_text(XSS_ARTICLE)[1]  # exactly the article text, markup and all, as text
    assert "<script>window.pwned='script'; alert('script')</script>" in shown
    assert '<img src=x onerror="window.pwned=\'img\'; alert(\'img\')">' in shown
    assert page.locator("#title").inner_text().startswith("<img src=x onerror=")
    marked = "".join(text.locator("mark").all_text_contents())
    assert "<" in marked and "<" in shown.replace(marked, "")  # hostile text both highlighted and not
    page.locator("#suggestions li").first.click()
    page.keyboard.press("a")
    page.wait_for_timeout(200)
    assert page.evaluate("window.pwned") is None and dialogs == []
    assert problems == []


def test_api_docs_render_from_this_server_under_the_csp(browser, server):
    url, _data = server
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("request", lambda req: None if req.url.startswith((url, "data:")) else problems.append(req.url))
    page.goto(url + "/docs")
    expect(page.locator(".opblock")).to_have_count(5)  # every endpoint; nothing fetched from elsewhere
    assert problems == []


def test_the_page_asks_for_the_token_of_a_guarded_server(browser, tmp_path):
    data = make_data(tmp_path / "training_data")
    with live_server(create_app(make_tagger(), model="models/fake", data=data, token="s3cret")) as url:
        page = browser.new_page()
        page.goto(url + "/")
        expect(page.locator("#auth")).to_be_visible()
        expect(page.locator("#status")).to_contain_text("access token")
        page.fill("#token", "wrong")
        page.click("#auth button")
        expect(page.locator("#auth")).to_be_visible()
        page.fill("#token", "s3cret")
        page.click("#auth button")
        expect(page.locator("#model")).to_have_text("model: models/fake")
        expect(page.locator("#auth")).to_be_hidden()
        _suggest(page, EXAMPLE.read_text(encoding="utf-8"), top_k=3)  # API calls carry the token
        assert page.locator("#suggestions li").count() == 3
