"""The CLI through typer's CliRunner: input as a path, from stdin and as HTML; formats; exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import FakeEmbedder
from document_fixtures import make_pdf, scanned_pdf
from disarm_tagger import persist
from disarm_tagger.cli import app
from disarm_tagger.tagger import Tagger
from test_tagger import TECHNIQUES, _examples

ARTICLE = "Operators ran a messaging channel.\nSubscribers paid with card payments to unlock the posts.\n"


@pytest.fixture()
def model_dir(tmp_path):
    folder = tmp_path / "model"
    persist.save(Tagger(FakeEmbedder()).fit(_examples(), TECHNIQUES), folder)
    return folder


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_suggest_path_json_contract(model_dir, tmp_path):
    article = tmp_path / "a.txt"
    article.write_text(ARTICLE)
    out = _json(CliRunner().invoke(app, ["suggest", str(article), "--model", str(model_dir), "-f", "json",
                                         "--top-k", "3"]))  # fmt: skip
    assert set(out) >= {"input", "model", "suggestions"}
    assert out["input"] == str(article) and out["model"] == str(model_dir)
    assert len(out["suggestions"]) == 3
    first = out["suggestions"][0]
    assert set(first) == {"rank", "technique_id", "name", "tactic_id", "tactic", "score", "evidence"}
    assert first["rank"] == 1 and 0.0 <= first["score"] <= 1.0
    for ev in first["evidence"]:
        assert set(ev) == {"text", "start", "end"} and ev["text"] in ARTICLE


def test_suggest_stdin(model_dir):
    out = _json(CliRunner().invoke(app, ["suggest", "-", "--model", str(model_dir), "-f", "json"], input=ARTICLE))
    assert out["input"] == "stdin"
    assert {s["technique_id"] for s in out["suggestions"][:2]} == {"T0001", "T0004"}


def test_suggest_reads_a_pdf_and_says_what_is_wrong_with_a_scan(model_dir, tmp_path):
    good, scan = tmp_path / "report.pdf", tmp_path / "scan.pdf"
    pages = [["Operators ran a messaging", "channel."],
             ["Subscribers paid with card payments", "to unlock the posts."]]
    good.write_bytes(make_pdf(pages))
    scan.write_bytes(scanned_pdf())
    def tags(out):  # offsets differ: the PDF's text puts a blank line between its paragraphs
        return [(s["technique_id"], s["score"], [e["text"] for e in s["evidence"]])
                for s in out["suggestions"]]  # fmt: skip

    out = _json(CliRunner().invoke(app, ["suggest", str(good), "--model", str(model_dir), "-f", "json"]))
    assert out["input"] == str(good) and tags(out) == tags(_json(CliRunner().invoke(
        app, ["suggest", "-", "--model", str(model_dir), "-f", "json"], input=ARTICLE)))  # fmt: skip
    refused = CliRunner().invoke(app, ["suggest", str(scan), "--model", str(model_dir)])
    assert refused.exit_code == 1 and "scan.pdf: is a PDF without a text layer (a scan?)" in refused.stderr


def test_suggest_html_page_drops_navigation(model_dir, tmp_path):
    page = tmp_path / "a.html"
    page.write_text("<html><head><title>T</title><script>var x=1;</script></head><body><nav><ul><li>"
                    "<a href='/'>Home</a></li><li><a href='/about'>About us</a></li></ul></nav><article><p>"
                    "Operators ran a messaging channel.</p><p>Subscribers paid with card payments.</p></article>"
                    "<footer>Copyright</footer></body></html>")  # fmt: skip
    out = _json(CliRunner().invoke(app, ["suggest", str(page), "--model", str(model_dir), "-f", "json"]))
    evidence = " ".join(e["text"] for s in out["suggestions"] for e in s["evidence"])
    assert "messaging channel" in evidence
    assert "Home" not in evidence and "Copyright" not in evidence and "var x" not in evidence


def test_suggest_table_and_markdown(model_dir, tmp_path):
    article = tmp_path / "a.md"
    article.write_text("---\ntitle: x\n---\n" + ARTICLE)
    table = CliRunner().invoke(app, ["suggest", str(article), "--model", str(model_dir)])
    assert table.exit_code == 0 and "T0001" in table.stdout and "Chat Platform" in table.stdout
    md = CliRunner().invoke(app, ["suggest", str(article), "--model", str(model_dir), "-f", "markdown"])
    assert md.exit_code == 0 and "| 1 | T0" in md.stdout


def test_suggest_missing_file_is_one_line_error(model_dir, tmp_path):
    result = CliRunner().invoke(app, ["suggest", str(tmp_path / "nope.txt"), "--model", str(model_dir)])
    assert result.exit_code == 1
    assert "error:" in result.stderr and "Traceback" not in result.output


def test_suggest_missing_model_exits_3(tmp_path):
    article = tmp_path / "a.txt"
    article.write_text(ARTICLE)
    result = CliRunner().invoke(app, ["suggest", str(article), "--model", str(tmp_path / "none")])
    assert result.exit_code == 3 and "no such model folder" in result.stderr


def test_train_writes_a_loadable_model(tmp_path):
    from disarm_tagger import corpus

    data = tmp_path / "td"
    data.mkdir()
    corpus.write_jsonl(data / corpus.TECHNIQUES, TECHNIQUES)
    corpus.write_jsonl(data / corpus.EXAMPLES, _examples())
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "m"), "--backend", "fake"])
    assert result.exit_code == 0, result.output
    assert "inner LOIO CV" in result.stdout
    meta = persist.read_meta(tmp_path / "m")
    assert meta["provenance"]["counts"]["examples"] == len(_examples())
    assert persist.load(tmp_path / "m", embedder=FakeEmbedder()).classes_ == tuple(sorted(t.id for t in TECHNIQUES))


def test_help_teaches():
    result = CliRunner().invoke(app, ["suggest", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    text = " ".join(result.stdout.split())
    assert result.exit_code == 0 and "--top-k" in text and "standard input" in text
