"""The REST API through FastAPI's TestClient and a real uvicorn on 127.0.0.1: the JSON contract, errors,
auth, the size limit, micro-batching and concurrent annotation writes. Fake embedder only."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import FakeEmbedder
from document_fixtures import make_docx, make_pdf
from disarm_tagger import corpus, formats, render
from disarm_tagger.cli import app as cli_app
from disarm_tagger.serve import create_app
from disarm_tagger.serve.app import STATIC
from serve_fixtures import EXAMPLE, http, live_server, make_data, make_tagger

TEXT = "Operators ran a channel on a messaging app. A website with a domain hosted the articles."


@pytest.fixture(scope="module")
def tagger():
    return make_tagger()


@pytest.fixture()
def data(tmp_path):
    return make_data(tmp_path / "training_data")


@pytest.fixture()
def client(tagger, data):
    with TestClient(create_app(tagger, model="models/fake", data=data)) as c:
        yield c


def _annotations(data) -> list[dict]:
    path = data / corpus.ANNOTATIONS
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


# ------------------------------------------------------------------------------------------ contract
def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok", "model": "models/fake"}


def test_suggest_returns_exactly_the_cli_json_object(client, tagger):
    raw = EXAMPLE.read_text(encoding="utf-8")
    article = tagger.suggest_article(raw, top_k=4, min_score=0.01)
    cli_doc = json.loads(render.to_json("", "models/fake", article.suggestions, article.warnings))  # what -f json prints
    got = client.post("/api/suggest", json={"text": raw, "top_k": 4, "min_score": 0.01})
    assert got.status_code == 200 and got.json() == cli_doc
    assert got.json()["suggestions"] and set(got.json()) == {"input", "model", "suggestions"}

    upload = client.post("/api/suggest", files={"file": ("example_article.md", raw.encode())}, data={"top_k": "4",
                         "min_score": "0.01"})  # fmt: skip
    assert upload.status_code == 200 and upload.json() == cli_doc | {"input": "example_article.md"}


def test_include_text_adds_the_article_text_the_offsets_refer_to(client, tagger):
    raw = EXAMPLE.read_text(encoding="utf-8")
    doc = client.post("/api/suggest?include_text=true", json={"text": raw}).json()
    assert doc["title"].startswith("Invented example") and doc["threshold"] == tagger.threshold_
    for s in doc["suggestions"]:
        for e in s["evidence"]:
            assert doc["text"][e["start"]:e["end"]] == e["text"]


def test_uploads_are_decoded_like_files_and_named_by_their_base_name_only(client):
    utf16 = client.post("/api/suggest", files={"file": ("../../etc/notes.txt", TEXT.encode("utf-16"))})
    assert utf16.status_code == 200 and utf16.json()["input"] == "notes.txt"
    assert utf16.json()["suggestions"][0]["technique_id"] in {"T0001", "T0002"}
    windows = client.post("/api/suggest", files={"file": ("C:\\Users\\ana\\report.md", TEXT.encode())})
    assert windows.json()["input"] == "report.md"


@pytest.mark.parametrize(("filename", "content"), [
    # two printed lines that must become one paragraph again
    ("report.pdf", make_pdf([["Operators ran a channel on a messaging app. A website with",
                              "a domain hosted the articles."]])),
    ("memo.docx", make_docx(lambda memo: memo.add_paragraph(TEXT))),
])  # fmt: skip
def test_pdf_and_word_uploads_are_read_as_their_text(client, filename, content):
    got = client.post("/api/suggest?include_text=true", files={"file": (filename, content)})
    assert got.status_code == 200 and got.json()["input"] == filename
    assert got.json()["text"] == TEXT
    typed = client.post("/api/suggest?include_text=true", json={"text": TEXT, "source": "x"})
    assert got.json() | {"input": "x"} == typed.json()


@pytest.mark.parametrize(("kwargs", "status", "message"), [
    ({"json": {"text": "  \n "}}, 400, "text is empty"),
    ({"json": {}}, 422, "text: Field required"),
    ({"json": {"text": TEXT, "top_k": 0}}, 422, "top_k"),
    ({"json": ["not", "an", "object"]}, 400, "JSON object"),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": TEXT.encode(), "headers": {"content-type": "text/plain"}}, 415, "application/json"),
    ({"content": b'{"text": "bots \\ud800 posted"}', "headers": {"content-type": "application/json"}}, 400,
     "unpaired surrogate at character 5"),
    ({"files": {"file": ("a.txt", b"caf\xe9 au lait")}}, 400, "not valid UTF-8 at byte 3"),
    ({"files": {"file": ("a.pdf", b"%PDF-1.7 ...")}}, 400, "a.pdf: cannot read this PDF"),
    ({"files": {"file": ("a.html", b"<html><nav><a href='/'>Home</a></nav></html>")}}, 400, "no article text"),
])  # fmt: skip
def test_bad_input_is_a_4xx_with_an_error_message(client, kwargs, status, message):
    got = client.post("/api/suggest", **kwargs)
    assert got.status_code == status and message in got.json()["error"], got.json()
    assert set(got.json()) == {"error"}


def test_a_crash_is_a_500_without_traceback(data):
    class Broken:
        techniques_, threshold_ = [], 0.5

        def suggest_articles(self, raws, **_):
            if raws != ["Warm-up."]:
                raise RuntimeError("secret internal detail")
            return [None]

    with TestClient(create_app(Broken(), model="m", data=data), raise_server_exceptions=False) as c:
        got = c.post("/api/suggest", json={"text": TEXT})
    assert got.status_code == 500 and got.json() == {"error": "internal error (logged by the server)"}
    assert "secret" not in got.text and "Traceback" not in got.text
    assert c.get("/no/such/page").json() == {"error": "Not Found"}


def test_technique_picker_matches_ids_and_names(client):
    by_id = client.get("/api/techniques", params={"q": "t0003"}).json()
    assert [t["id"] for t in by_id["techniques"]] == ["T0003", "T0003.001", "T0003.002"]  # exact id first
    by_name = client.get("/api/techniques", params={"q": "deepfake VIDEO"}).json()
    assert [t["id"] for t in by_name["techniques"]] == ["T0003.002"]
    assert by_name["techniques"][0] == {"id": "T0003.002", "name": "Develop Deepfake Video", "tactic_id": "TA06",
                                        "tactic": "Content"}  # fmt: skip
    everything = client.get("/api/techniques", params={"limit": 2}).json()
    assert everything["total"] == 6 and len(everything["techniques"]) == 2
    assert client.get("/api/techniques", params={"limit": 0}).status_code == 422


# ------------------------------------------------------------------------------------------ annotations
def test_annotation_writes_the_cli_record_then_replaces_it(client, data):
    first = client.post("/api/annotations", json={"text": TEXT, "labels": ["t0001", "T0002"], "annotator": "ana",
                                                  "note": "checked"})  # fmt: skip
    assert first.status_code == 201
    assert _annotations(data) == [first.json()]
    assert first.json()["labels"] == ["T0001", "T0002"] and first.json()["origin"] == "local"
    assert first.json()["annotator"] == "ana" and first.json()["note"] == "checked"

    upload = client.post("/api/annotations", files={"file": ("a.md", TEXT.encode())},
                         data={"labels": "T0002,T0004", "annotator": "bo"})  # fmt: skip
    assert upload.status_code == 200  # same text: its labels replaced
    assert _annotations(data) == [upload.json()] and upload.json()["source"] == "a.md"
    assert upload.json()["labels"] == ["T0002", "T0004"]


@pytest.mark.parametrize(("payload", "status", "message"), [
    ({"text": TEXT, "labels": ["T0001", "T9999"]}, 400, "unknown technique id(s): T9999"),
    ({"text": TEXT, "labels": []}, 400, "no labels"),
    ({"text": "", "labels": ["T0001"]}, 400, "text is empty"),
    ({"labels": ["T0001"]}, 422, "text: Field required"),
])  # fmt: skip
def test_annotation_errors_write_nothing(client, data, payload, status, message):
    got = client.post("/api/annotations", json=payload)
    assert got.status_code == status and message in got.json()["error"]
    assert _annotations(data) == []


def test_annotations_without_a_training_data_folder_are_refused_cleanly(tagger, tmp_path):
    with TestClient(create_app(tagger, model="m", data=tmp_path / "missing")) as c:
        got = c.post("/api/annotations", json={"text": TEXT, "labels": ["T0001"]})
    assert got.status_code == 503 and "not available" in got.json()["error"]


def test_concurrent_annotation_requests_lose_no_update(tagger, data):
    """12 requests at once on a real server, 6 replacing earlier labels and 6 new: all 12 land."""
    from disarm_tagger import annotate

    old = [f"Operators posted item number {i} on a messaging channel." for i in range(6)]
    new = [f"A website hosted article number {i} for the campaign." for i in range(6)]
    for text in old:
        annotate.annotate(text, "T0001", data=data)
    jobs = [(t, ["T0001", "T0004"]) for t in old] + [(t, ["T0002"]) for t in new]
    start = threading.Barrier(len(jobs))
    with live_server(create_app(tagger, model="m", data=data)) as url:

        def post(job):
            start.wait(timeout=30)
            return http("POST", f"{url}/api/annotations", {"text": job[0], "labels": job[1]})[0]

        with ThreadPoolExecutor(len(jobs)) as pool:
            codes = list(pool.map(post, jobs))
    assert sorted(codes) == [200] * 6 + [201] * 6
    assert {r["text"]: r["labels"] for r in _annotations(data)} == dict(jobs) and len(_annotations(data)) == 12


# ------------------------------------------------------------------------------------------ exports
def _review(doc: dict) -> dict:
    picked = doc["suggestions"][:2]
    return {"text": doc["text"], "title": doc["title"], "techniques": [
        {"technique_id": s["technique_id"], "score": s["score"], "evidence": s["evidence"]} for s in picked]}


def test_exports_are_the_cli_documents_of_the_reviewed_set(client, tagger):
    raw = EXAMPLE.read_text(encoding="utf-8")
    doc = client.post("/api/suggest?include_text=true", json={"text": raw}).json()
    article = tagger.suggest_article(raw)
    reviewed = type(article)(article.title, article.text, (), article.suggestions[:2])
    by_id = {t.id: t for t in tagger.techniques_}
    layer = client.post("/api/export/navigator", json=_review(doc))
    assert layer.status_code == 200
    assert layer.json() == formats.export_article("navigator", reviewed, by_id, source="", model="models/fake")
    for fmt in ("stix", "misp"):  # these carry the time of export: compare their deterministic ids
        got = client.post(f"/api/export/{fmt}", json=_review(doc)).json()
        want = formats.export_article(fmt, reviewed, by_id, source="", model="models/fake")
        ids = (lambda d: [o["id"] for o in d["objects"]]) if fmt == "stix" else (
            lambda d: [d["Event"]["uuid"], *(a["uuid"] for a in d["Event"]["Attribute"])])
        assert ids(got) == ids(want)


def test_stix_export_parses_and_an_added_technique_has_no_model_score(client):
    import stix2

    body = {"text": TEXT, "source": "https://example.org/a", "techniques": [{"technique_id": "T0004"}]}
    bundle = stix2.parse(client.post("/api/export/stix", json=body).json(), allow_custom=True)
    (note,) = [o for o in bundle.objects if o.type == "note"]
    assert note.confidence == 100 and "T0004" in note.abstract


@pytest.mark.parametrize(("path", "payload", "status", "message"), [
    ("/api/export/stix", {"text": TEXT, "techniques": [{"technique_id": "T9999"}]}, 400, "T9999"),
    ("/api/export/stix", {"text": " ", "techniques": []}, 400, "text or a title"),
    ("/api/export/xml", {"text": TEXT, "techniques": []}, 422, "'stix', 'navigator' or 'misp'"),
    ("/api/export/misp", {"text": TEXT}, 422, "techniques: Field required"),
    ("/api/export/misp", b'{"title": "\\ud800", "techniques": []}', 400, "unpaired surrogate"),
])  # fmt: skip
def test_export_errors(client, path, payload, status, message):
    got = client.post(path, content=payload, headers={"content-type": "application/json"}) if isinstance(
        payload, bytes) else client.post(path, json=payload)
    assert got.status_code == status and message in got.json()["error"]


# ------------------------------------------------------------------------------------------ security
def test_token_guards_every_api_call_but_not_the_page(tagger, data):
    with TestClient(create_app(tagger, model="m", data=data, token="s3cret")) as c:
        for method, path in (("GET", "/healthz"), ("POST", "/api/suggest"), ("GET", "/api/techniques"),
                             ("POST", "/api/annotations"), ("POST", "/api/export/stix")):  # fmt: skip
            refused = c.request(method, path, json={"text": TEXT})
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            wrong = c.request(method, path, json={"text": TEXT}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        ok = c.post("/api/suggest", json={"text": TEXT}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["suggestions"]
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
        schema = c.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}


def test_cross_origin_posts_and_foreign_host_headers_are_refused(tagger, data):
    app = create_app(tagger, model="m", data=data, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        evil = c.post("/api/annotations", json={"text": TEXT, "labels": ["T0001"]},
                      headers={"Origin": "https://evil.example"})  # fmt: skip
        assert evil.status_code == 403 and "cross-origin" in evil.json()["error"]
        same = c.post("/api/suggest", json={"text": TEXT}, headers={"Origin": "http://127.0.0.1:8000"})
        assert same.status_code == 200
        rebound = c.get("/healthz", headers={"Host": "attacker.example"})  # DNS rebinding
        assert rebound.status_code == 400
    assert _annotations(data) == []


def test_csp_forbids_inline_script_and_the_page_has_none(client):
    for path in ("/", "/healthz", "/static/app.js", "/docs", "/no/such"):
        csp = client.get(path).headers["content-security-policy"]
        script = re.search(r"script-src ([^;]*)", csp).group(1)
        assert script == "'self'", csp
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    for name in ("index.html", "docs.html"):
        html = (STATIC / name).read_text(encoding="utf-8")
        assert all(tag.group(1).strip() == "" for tag in re.finditer(r"<script\b[^>]*>(.*?)</script>", html, re.S))
        assert not re.search(r"\son[a-z]+\s*=", html) and "javascript:" not in html
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from another origin
    js = (STATIC / "app.js").read_text(encoding="utf-8")
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", js)


def test_docs_are_served_from_this_server(client):
    assert client.get("/docs").status_code == 200
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert "/api/suggest" in client.get("/openapi.json").json()["paths"]


# ------------------------------------------------------------------------------------------ size limit
def test_oversized_bodies_are_413(tagger, data):
    with TestClient(create_app(tagger, model="m", data=data, max_bytes=1_000)) as c:
        big = "word " * 300  # 1,500 bytes: over the text limit, under the body limit
        assert c.post("/api/suggest", json={"text": big}).status_code == 413
        upload = c.post("/api/suggest", files={"file": ("a.txt", big.encode())})
        assert upload.status_code == 413 and "a.txt" in upload.json()["error"]
        huge = c.post("/api/suggest", content=b"x" * 200_000, headers={"content-type": "application/json"})
        assert huge.status_code == 413 and "limit" in huge.json()["error"]


def _raw_request(url: str, head: bytes, body_parts=(), timeout: float = 10.0) -> bytes:
    """Send a request line and headers (and some body parts) on a socket, leave it open, read the reply."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply


def test_413_comes_before_the_body_is_read(tagger, data):
    with live_server(create_app(tagger, model="m", data=data, max_bytes=1_000)) as url:
        # announces a gigabyte and sends none of it: answered from the header alone
        head = (b"POST /api/suggest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000000000\r\n\r\n")  # fmt: skip
        assert _raw_request(url, head).startswith(b"HTTP/1.1 413")
        # chunked, no length: answered once 70 KB (over the 66.5 KB limit) have arrived, though the body has
        # not ended (no final empty chunk follows)
        head = (b"POST /api/suggest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        chunk = b"%x\r\n%s\r\n" % (10_000, b"x" * 10_000)
        assert _raw_request(url, head, [chunk] * 7).startswith(b"HTTP/1.1 413")


# ------------------------------------------------------------------------------------------ micro-batching
class SlowEmbedder(FakeEmbedder):
    """The fake embedder with a fixed cost per call, like a real encoder's per-batch overhead."""

    def encode(self, texts):
        time.sleep(0.3)
        return super().encode(texts)


def test_concurrent_suggest_requests_share_encoder_batches(data):
    texts = [f"{TEXT} Item {i} was posted on a website." for i in range(8)]
    tagger = make_tagger()
    expected = {t: render.suggestion_document("", "m", *(lambda a: (a.suggestions, a.warnings))(tagger.suggest_article(t)))
                for t in texts}  # fmt: skip
    tagger.embedder = SlowEmbedder()
    app = create_app(tagger, model="m", data=data)
    start = threading.Barrier(len(texts))
    with live_server(app) as url:
        warm = app.state.batcher.batches

        def post(text):
            start.wait(timeout=30)
            return http("POST", f"{url}/api/suggest", {"text": text})

        with ThreadPoolExecutor(len(texts)) as pool:
            results = list(pool.map(post, texts))
        batches = app.state.batcher.batches - warm
    assert [code for code, _ in results] == [200] * len(texts)
    assert [doc for _, doc in results] == [expected[t] for t in texts]  # batched = one at a time
    assert batches <= 3, f"{len(texts)} concurrent requests took {batches} encoder batches"


# ------------------------------------------------------------------------------------------ the command
def test_serve_refuses_a_public_bind_without_a_token_before_loading_anything(tmp_path):
    runner = CliRunner()
    refused = runner.invoke(cli_app, ["serve", "--host", "0.0.0.0", "--model", str(tmp_path / "none")], env={
        "DISARM_TAGGER_TOKEN": ""})  # fmt: skip
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        "error: --host 0.0.0.0 can be reached from other machines: set --token or DISARM_TAGGER_TOKEN"]
    # with the token from the environment it goes on, to the model folder (missing here: exit 3)
    tokened = runner.invoke(cli_app, ["serve", "--host", "0.0.0.0", "--model", str(tmp_path / "none")],
                            env={"DISARM_TAGGER_TOKEN": "s3cret"})  # fmt: skip
    assert tokened.exit_code == 3 and "no such model folder" in tokened.stderr



def test_batcher_groups_by_parameters_and_isolates_failures():
    from disarm_tagger.serve.batcher import MicroBatcher
    from disarm_tagger.text import InputError

    batcher = MicroBatcher(make_tagger(SlowEmbedder())).start()
    try:
        futures = [batcher.submit(TEXT, top_k=k) for k in (1, 2, 3, 2)]  # queued while the first runs
        futures.append(batcher.submit("<html><nav><a href='/'>Home</a></nav></html>", top_k=2))
        assert [len(f.result(timeout=30).suggestions) for f in futures[:4]] == [1, 2, 3, 2]
        with pytest.raises(InputError, match="no article text"):  # a bad input fails only its own request
            futures[4].result(timeout=30)
        assert len(batcher.submit(TEXT, top_k=1).result(timeout=30).suggestions) == 1  # the worker lives on
    finally:
        batcher.close()


def test_batcher_refuses_work_beyond_its_queue_and_after_close():
    from disarm_tagger.serve.batcher import BusyError, MicroBatcher

    release = threading.Event()

    class Blocked:
        def suggest_articles(self, raws, **_):
            release.wait(30)
            return [RuntimeError("not an article")] * len(raws)

    batcher = MicroBatcher(Blocked(), max_queue=2, max_wait=0.0).start()
    first = batcher.submit("a")
    while batcher._queue.qsize():  # the worker has taken the first job and is blocked in it
        time.sleep(0.01)
    queued = [batcher.submit("b"), batcher.submit("c")]
    with pytest.raises(BusyError, match="2 requests are already waiting"):
        batcher.submit("d")
    release.set()
    with pytest.raises(RuntimeError, match="not an article"):
        first.result(timeout=30)
    for f in queued:
        with pytest.raises(RuntimeError, match="not an article"):
            f.result(timeout=30)
    batcher.close()
    with pytest.raises(RuntimeError, match="not running"):
        batcher.submit("e")
