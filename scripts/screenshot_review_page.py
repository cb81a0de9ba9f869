"""Screenshot of the review page on the bundled example with the committed model (docs/review-page.png).

    python scripts/screenshot_review_page.py [--out docs/review-page.png]

Starts `disarm-tagger serve` on 127.0.0.1 (a free port, a scratch copy of training_data so nothing is
saved into the repository), drives Debian's /usr/bin/chromium headless with Playwright, reviews the
example (two accepted, one rejected, one added, the first suggestion's evidence marked) and stops the
server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from disarm_tagger.serve import loadtest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "src" / "disarm_tagger" / "data" / "example_article.md"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "review-page.png")
    args = parser.parse_args()
    args.out = args.out.resolve()
    os.chdir(REPO)  # the page shows the model folder as given: models/default
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "training_data"
        data.mkdir()
        for name in ("techniques.jsonl", "examples.jsonl"):
            shutil.copy(REPO / "training_data" / name, data / name)
        proc, url = loadtest.start_server(["--model", "models/default", "--data", str(data)],
                                          log=Path(tmp) / "serve.log")  # fmt: skip
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch_persistent_context(
                    str(Path(tmp) / "profile"), executable_path="/usr/bin/chromium", headless=True, args=FLAGS,
                    viewport={"width": 1400, "height": 900})  # fmt: skip
                page = browser.new_page()
                page.goto(url + "/")
                page.fill("#top-k", "8")
                page.fill("#raw", EXAMPLE.read_text(encoding="utf-8"))
                page.click("#suggest")
                expect(page.locator("#suggestions li")).to_have_count(8, timeout=60_000)
                page.locator("#suggestions li").first.click()
                for key in "ajaj":  # accept the first two, then select the third
                    page.keyboard.press(key)
                page.locator("#suggestions li").nth(5).locator("button.reject").click()
                page.fill("#add-q", "crowdfunding")
                page.locator("#add-results li button").first.click(timeout=10_000)
                page.locator("#suggestions li").first.click()
                page.fill("#annotator", "ana")
                page.locator("#raw").evaluate("box => { box.scrollTop = 0; }")
                page.evaluate("window.scrollTo(0, 0)")
                page.wait_for_timeout(800)  # the smooth scroll to the evidence
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=True)
                browser.close()
        finally:
            loadtest.stop_server(proc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
