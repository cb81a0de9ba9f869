"""The server's load benchmark: N requests of ~500-character passages from C concurrent clients.

Each client is a thread with one keep-alive connection that sends its share of the requests one after
another, like an analyst's page would; latency is measured per request, from send to parsed reply.
Returns numbers, prints nothing (the CLI's `bench-serve` formats them).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from .. import corpus
from ..schema import Example


def passages(data: Path, n: int, *, chars: int = 500, seed: int = 0) -> list[str]:
    """``n`` distinct passages of about ``chars`` characters, made of consecutive DISARM example quotes
    (cut at a word boundary), so every request has real influence-operation text of the same size."""
    texts = [e.text for e in corpus.read_jsonl(Path(data) / corpus.EXAMPLES, Example)]
    if not texts:
        raise ValueError(f"{data}: no examples to build passages from")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    out = []
    for i in range(n):
        parts, j = [], i
        while sum(len(p) + 1 for p in parts) < chars:
            parts.append(texts[order[j % len(order)]])
            j += 1
        joined = " ".join(parts)
        cut = joined.rfind(" ", 0, chars + 1)
        out.append(f"[{i}] " + joined[: cut if cut > chars // 2 else chars])
    return out


def _client(url: str, texts: list[str], token: str | None, timeout: float, out: list) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    for text in texts:
        started = time.perf_counter()
        try:
            conn.request("POST", "/api/suggest", json.dumps({"text": text}), headers)
            response = conn.getresponse()
            body = json.loads(response.read())
            ok = response.status == 200 and "suggestions" in body
            error = None if ok else f"HTTP {response.status}: {body.get('error', '')}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            conn.close()
            conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        out.append((time.perf_counter() - started, error))
    conn.close()


def run(url: str, texts: list[str], *, clients: int = 8, token: str | None = None, timeout: float = 120.0) -> dict:
    """Send every text to ``url``/api/suggest from ``clients`` concurrent clients; latency percentiles in s."""
    results: list = []
    threads = [threading.Thread(target=_client, args=(url, texts[c::clients], token, timeout, results))
               for c in range(clients)]  # fmt: skip
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    latencies = np.array([s for s, _ in results])
    errors = [e for _, e in results if e]
    return {
        "url": url, "requests": len(results), "clients": clients,
        "chars_mean": round(float(np.mean([len(t) for t in texts])), 1),
        "errors": len(errors), "error_examples": errors[:3],
        "p50": round(float(np.percentile(latencies, 50)), 3), "p95": round(float(np.percentile(latencies, 95)), 3),
        "max": round(float(latencies.max()), 3), "seconds": round(seconds, 2),
        "requests_per_s": round(len(results) / seconds, 2), "load_average": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip


class ServerError(RuntimeError):
    """The benchmark's own server did not come up."""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_sigint() -> None:
    """In the server's child process before exec: SIGINT back to its default. A shell starts background jobs
    with SIGINT ignored, and a server started from one would inherit that: uvicorn still stops on SIGINT, but
    then re-raises an ignored signal and exits 0 instead of 130."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_server(args: list[str], *, log: Path, timeout: float = 300.0):
    """Start `disarm-tagger serve ARGS` on 127.0.0.1 and a free port; return (process, url) once /healthz
    answers (the server warms its encoder up before it listens). Stop it with ``stop_server``."""
    import subprocess
    import sys

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "disarm_tagger", "serve", "--host", "127.0.0.1",
                                 "--port", str(port), *args], stdout=fh, stderr=subprocess.STDOUT,
                                preexec_fn=_default_sigint)  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"the server exited with {proc.returncode}: {log.read_text(errors='replace')[-800:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status in (200, 401):
                return proc, url
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    raise ServerError(f"the server did not answer within {timeout:.0f}s")


def stop_server(proc, timeout: float = 30.0) -> int:
    """SIGTERM, wait for the graceful shutdown, kill if it hangs; the exit code."""
    import subprocess

    proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
