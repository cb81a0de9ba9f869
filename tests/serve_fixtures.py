"""Shared by the server tests: a small fitted tagger with the fake embedder, its training_data folder, and a
real uvicorn server on 127.0.0.1 (a free port) that stops when the ``with`` block ends."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import FakeEmbedder
from disarm_tagger import corpus
from disarm_tagger.tagger import Tagger
from test_tagger import TECHNIQUES, _examples

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "src" / "disarm_tagger" / "data" / "example_article.md"


def make_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    corpus.write_jsonl(folder / corpus.TECHNIQUES, TECHNIQUES)
    corpus.write_jsonl(folder / corpus.EXAMPLES, _examples())
    return folder


def make_tagger(embedder=None) -> Tagger:
    return Tagger(embedder or FakeEmbedder()).fit(_examples(), TECHNIQUES)


@contextlib.contextmanager
def live_server(app, *, timeout: float = 30.0):
    """Run ``app`` on uvicorn in a thread, on a socket bound to 127.0.0.1 first (no port race); yields the
    base URL and always shuts the server down."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def http(method: str, url: str, payload=None, *, headers=None, timeout: float = 30.0) -> tuple[int, dict]:
    """(status, JSON body) of one request with the standard library."""
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
