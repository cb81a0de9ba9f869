"""Commands for the review page and REST API: serve, and bench-serve (its load benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..text import DEFAULT_MAX_BYTES
from . import (
    EXIT_DATA,
    EXIT_ERROR,
    EXIT_USAGE,
    BackendOption,
    MaxBytesOption,
    ModelOption,
    _load_model,
    app,
    fail,
)


@app.command()
def serve(
    *,
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    model: ModelOption = None,
    data: Annotated[Path, typer.Option(help="training_data folder: reviews are saved to its annotations.jsonl "
                    "and their labels checked against its techniques.jsonl.")] = Path("training_data"),  # fmt: skip
    token: Annotated[Optional[str], typer.Option(envvar="DISARM_TAGGER_TOKEN", show_default=False,
                     help="Require 'Authorization: Bearer TOKEN' on every API call (the page asks for it). "
                     "Default: $DISARM_TAGGER_TOKEN.")] = None,  # fmt: skip
    backend: BackendOption = None,
    max_bytes: MaxBytesOption = DEFAULT_MAX_BYTES,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Most concurrent suggest requests tagged in one "
                          "batched call (micro-batching); 1 tags them one at a time.")] = 32,  # fmt: skip
) -> None:
    """Serve the review page and the REST API: suggest, review, save annotations, export.

    Open http://HOST:PORT/ for the page and /docs for the API. The model is loaded once at start; SIGINT or
    SIGTERM stops the server after the requests in progress. A --host other than loopback is refused
    unless a token is set.

    Examples:

      disarm-tagger serve

      DISARM_TAGGER_TOKEN=$(openssl rand -hex 16) disarm-tagger serve --host 0.0.0.0 --port 8080
    """
    from ..serve import security

    loopback = security.is_loopback(host)
    if not loopback and not token:
        raise fail(f"--host {host} can be reached from other machines: set --token or DISARM_TAGGER_TOKEN",
                   EXIT_USAGE)  # fmt: skip
    folder, tagger = _load_model(model, backend)
    import uvicorn

    from .. import corpus
    from ..serve import create_app

    if not (data / corpus.TECHNIQUES).exists():
        typer.echo(f"warning: {data / corpus.TECHNIQUES} not found: saving reviews will fail (--data)", err=True)
    hosts = [*security.LOOPBACK_NAMES, host] if loopback else None  # Host header check against DNS rebinding
    api = create_app(tagger, model=str(folder), data=data, token=token, max_bytes=max_bytes, allowed_hosts=hosts,
                     max_batch=batch_size)  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, timeout_graceful_shutdown=10,
                                           server_header=False, log_level="info"))  # fmt: skip
    typer.echo(f"review page: http://{host}:{port}/  (model {folder}; reviews go to {data / corpus.ANNOTATIONS})",
               err=True)  # fmt: skip
    server.run()
    if not server.started:
        raise fail(f"could not serve on {host}:{port} (see the log above)")

@app.command("bench-serve")
def bench_serve(
    *,
    url: Annotated[Optional[str], typer.Option(show_default=False, help="A running server to load. Default: start "
                   "`disarm-tagger serve` on 127.0.0.1 and a free port, and stop it afterwards.")] = None,  # fmt: skip
    requests: Annotated[int, typer.Option(min=1, help="Requests in all.")] = 64,
    clients: Annotated[int, typer.Option(min=1, help="Concurrent clients, each sending its share in turn.")] = 8,
    chars: Annotated[int, typer.Option(min=50, help="Characters per passage.")] = 500,
    model: ModelOption = None,
    backend: BackendOption = None,
    data: Annotated[Path, typer.Option(help="training_data folder the passages are drawn from.")] = Path(
        "training_data"
    ),
    token: Annotated[Optional[str], typer.Option(envvar="DISARM_TAGGER_TOKEN", show_default=False,
                     help="Bearer token for --url.")] = None,  # fmt: skip
    batch_size: Annotated[int, typer.Option(min=1, help="The started server's --batch-size (1: no micro-batching).")] = 32,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Load-test the server: REQUESTS suggest calls of ~CHARS-character passages from CLIENTS concurrent
    clients; prints p50/p95/max latency, errors and throughput (goal: p95 <= 1.0 s, 0 errors).

    Examples:

      disarm-tagger bench-serve

      disarm-tagger bench-serve --url http://127.0.0.1:8000 --requests 200 --clients 16
    """
    import json
    import tempfile

    from .. import corpus
    from ..serve import loadtest

    try:
        texts = loadtest.passages(data, requests, chars=chars)
    except (corpus.CorpusError, ValueError, OSError) as exc:
        raise fail(str(exc), EXIT_DATA) from exc
    if url:
        result = loadtest.run(url, texts, clients=clients, token=token)
    else:
        args = [*(["--model", str(model)] if model else []), *(["--backend", backend] if backend else []),
                "--data", str(data), "--batch-size", str(batch_size)]  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            try:
                proc, url = loadtest.start_server(args, log=Path(tmp) / "serve.log")
            except loadtest.ServerError as exc:
                raise fail(str(exc)) from exc
            try:
                result = loadtest.run(url, texts, clients=clients)
            finally:
                result_code = loadtest.stop_server(proc)
        result["server_exit_code"] = result_code
    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(f"{result['requests']} requests ({result['chars_mean']:.0f} characters each) from "
                   f"{result['clients']} clients to {result['url']}: p50 {result['p50']:.2f}s, p95 "
                   f"{result['p95']:.2f}s, max {result['max']:.2f}s, {result['errors']} errors, "
                   f"{result['requests_per_s']:.1f} requests/s; load average {result['load_average']}")  # fmt: skip
        for line in result["error_examples"]:
            typer.echo(f"  error: {line}")
    if result["errors"]:
        raise typer.Exit(EXIT_ERROR)
