"""The `disarm-tagger` command: every command a thin wrapper over one library call."""

from __future__ import annotations

import sys
import time
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Annotated, Optional

import typer

from .text import DEFAULT_MAX_BYTES
from .version import __version__

app = typer.Typer(
    help="Suggest DISARM Red Framework technique ids for articles about influence operations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Exit codes, documented in the README.
EXIT_ERROR = 1  # bad input: missing, unreadable, empty, too large...
EXIT_USAGE = 2  # typer/click usage errors
EXIT_MODEL = 3  # model folder missing, tampered or incompatible
EXIT_DATA = 4  # training data or DISARM checkout malformed
EXIT_GATE = 5  # eval: a --fail-under floor or the --compare tolerance was not met


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"disarm-tagger {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Suggest DISARM Red Framework technique ids for articles about influence operations."""


def _choices(name: str, values) -> type[Enum]:
    return Enum(name, {v: v for v in values}, type=str)


def _formats():
    from . import batch, formats, render

    return _choices("Format", render.FORMATS), _choices("BatchFormat", (*batch.FORMATS, *formats.EXPORT_FORMATS))


Format, BatchFormat = _formats()
Engine = _choices("Engine", ("local", "dask"))
DataOption = Annotated[Path, typer.Option(help="training_data folder (techniques, examples, annotations, authored "
                                          "passages).")]  # fmt: skip
ModelOption = Annotated[Optional[Path], typer.Option("--model", show_default=False,
                        help="Model folder. Default: $DISARM_TAGGER_MODEL, else models/default.")]  # fmt: skip
BackendOption = Annotated[Optional[str], typer.Option(show_default=False, help="Embedding backend: onnx-int8 "
                          "(quantised, fastest), onnx (exact fp32, built once from the packaged weights), torch "
                          "(reference). Default: the model's own.")]  # fmt: skip
MaxBytesOption = Annotated[int, typer.Option(help="Refuse documents larger than this many bytes.")]
LocalOption = Annotated[bool, typer.Option(help="Include local analyst annotations (annotations.jsonl).")]
AuthoredOption = Annotated[bool, typer.Option(help="Include the authored coverage passages (authored.jsonl).")]
IncludeDisarmOption = Annotated[bool, typer.Option("--include-disarm", help="stix only: put DISARM's own "
                                "attack-pattern objects in the bundle, verbatim from DISARM.json (kept in the model "
                                "folder), for a platform that does not hold DISARM yet. Default: reference them by "
                                "their DISARM STIX ids only.")]  # fmt: skip


def _load_model(model: Path | None, backend: str | None):
    from . import persist

    folder = model or persist.default_model_dir()
    try:
        return folder, persist.load(folder, backend=backend)
    except persist.ModelError as exc:
        raise fail(str(exc), EXIT_MODEL) from exc


def _disarm_objects(folder: Path) -> dict[str, dict]:
    from . import persist

    try:
        return persist.read_disarm_objects(folder)
    except persist.ModelError as exc:
        raise fail(str(exc), EXIT_MODEL) from exc


def _warn(lines) -> None:
    for line in lines:
        typer.echo(f"warning: {line}", err=True)


def _read_input(path: str, max_bytes: int) -> str:
    from . import text

    if path == "-":
        return text.decode_bytes(sys.stdin.buffer.read(max_bytes + 1), source="stdin", max_bytes=max_bytes)
    return text.read_path(Path(path), max_bytes=max_bytes)


@app.command("import-disarm")
def import_disarm_cmd(
    path: Annotated[Path, typer.Argument(help="A DISARMframeworks checkout (the folder holding generated_pages/).")],
    *,
    out: Annotated[Path, typer.Option(help="Folder to write techniques, tactics, phases and examples to.")] = Path(
        "training_data"
    ),
    stix: Annotated[bool, typer.Option(help="Require DISARM's STIX bundle (generated_files/DISARM_STIX/DISARM.json, "
                    "or generated_files/DISARM.json in older snapshots) for the techniques' STIX ids. --no-stix "
                    "imports without it; exports then say their ids are not DISARM's.")] = True,
) -> None:
    """Turn DISARM incident pages into training data.

    Writes techniques.jsonl, tactics.jsonl, phases.jsonl, examples.jsonl and manifest.json. Example text
    is the quoted source passage only; the analyst commentary only contributes labels. Local analyst
    annotations (annotations.jsonl) and authored passages (authored.jsonl) in the same folder are left
    untouched. Exit 4 when the checkout is malformed.
    """
    from . import corpus, disarm

    try:
        summary = corpus.import_disarm(path, out, stix=stix)
    except (disarm.DisarmFormatError, corpus.CorpusError, OSError) as exc:
        raise fail(str(exc), EXIT_DATA) from exc
    rep = summary.report
    typer.echo(f"{summary.examples} examples from {summary.incidents} incidents ({rep.rows} table rows, "
               f"{rep.merged_duplicates} repeated passages merged); {summary.techniques_used} of {summary.techniques} "
               f"techniques used; {summary.tactics} tactics, {summary.phases} phases")  # fmt: skip
    typer.echo(f"ids repaired: {len(rep.repaired)}; ids dropped: {len(rep.dropped)}")
    for prefix, lines in (("repaired", rep.repaired), ("dropped ", rep.dropped)):
        for line in lines:
            typer.echo(f"  {prefix} {line}")
    for name in rep.skipped_pages:
        typer.echo(f"  skipped  incident page {name} (no id header)")
    typer.echo(f"wrote {out}/")


@app.command("check-authored")
def check_authored(
    *,
    data: DataOption = Path("training_data"),
    similarity: Annotated[bool, typer.Option(help="Also embed every passage: none near-identical to another, none "
                          "close to a DISARM incident passage (loads the embedder; about a minute).")] = True,
    backend: BackendOption = None,
) -> None:
    """Check the authored coverage set (training_data/authored.jsonl) against its rules.

    Every technique has at least 4 passages written for it; no text holds a technique id or a technique's
    name; every label is in the catalogue; no two passages share a text or a sentence skeleton; with
    --similarity, no two passages are near-identical (cosine >= 0.95) and none is close to a DISARM incident
    passage or sentence (cosine >= 0.90). Exit 0 when all hold, 4 otherwise.
    """
    from . import corpus
    from .embed import EmbedderError, load_embedder

    try:
        report = corpus.check_authored(data, embedder=load_embedder(backend) if similarity else None)
    except corpus.CorpusError as exc:
        raise fail(str(exc), EXIT_DATA) from exc
    except EmbedderError as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    counts = sorted(report.per_technique.values())
    typer.echo(f"{report.passages:,} authored passages for {sum(n > 0 for n in counts)} of {len(counts)} "
               f"techniques; per technique min {counts[0]}, median {counts[len(counts) // 2]}, max {counts[-1]}")
    if report.max_cosine_to_disarm:
        quantiles = ", ".join(f"{k} {v:.2f}" for k, v in report.max_cosine_to_disarm.items())
        typer.echo(f"max cosine of each passage to DISARM passages and sentences: {quantiles}; closest pair of "
                   f"authored passages: {report.max_cosine_between_authored:.2f}")  # fmt: skip
    for line in report.problems:
        typer.echo(f"problem: {line}", err=True)
    if not report.ok:
        raise fail(f"{len(report.problems)} problem(s) in the authored set", EXIT_DATA)
    typer.echo("every rule holds")


@app.command()
def train(
    *,
    data: DataOption = Path("training_data"),
    out: Annotated[Path, typer.Option(help="Model folder to write (replaced whole, never half-written).")] = Path(
        "models/default"
    ),
    backend: BackendOption = None,
    local: LocalOption = True,
    authored: AuthoredOption = True,
) -> None:
    """Train a tagger on training_data/ and write a model folder.

    Fusion weights, the weight of authored passages, score calibration and the threshold are tuned by
    leave-one-incident-out cross-validation over the real (DISARM and annotated) passages inside the
    training data; the inner-CV metrics go into meta.json and the model card.
    """
    from . import corpus, persist
    from .embed import EmbedderError, load_embedder
    from .tagger import Tagger

    started = time.perf_counter()
    try:
        data_set = corpus.load_corpus(data, include_local=local, include_authored=authored)
        embedder = load_embedder(backend)
    except corpus.CorpusError as exc:
        raise fail(str(exc), EXIT_DATA) from exc
    except EmbedderError as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    typer.echo(f"training on {len(data_set.examples)} real passages ({data_set.local_examples} local annotations, "
               f"{data_set.local_duplicates} replacing imported passages) and {len(data_set.authored)} authored "
               f"passages over {len(data_set.techniques)} techniques", err=True)  # fmt: skip
    tagger = Tagger(embedder).fit(data_set.training, data_set.techniques)
    stix = data / corpus.DISARM_STIX  # DISARM's own STIX objects, for exports that include them
    meta = persist.save(tagger, out, provenance=corpus.provenance(data_set, data),
                        disarm_stix=stix if stix.exists() else None)  # fmt: skip
    cv = meta["cv"]
    typer.echo(f"wrote {out}/ in {time.perf_counter() - started:.0f}s; inner LOIO CV: P@1 {cv['p@1']:.2f}, "
               f"R@10 {cv['r@10']:.2f}, MAP {cv['map']:.2f}; threshold {meta['threshold']:.2f}; authored weight "
               f"{meta['authored_weight']:g}")  # fmt: skip


@app.command()
def suggest(
    path: Annotated[str, typer.Argument(help="Article file (.txt, .md, .html) or - for standard input.")],
    *,
    model: ModelOption = None,
    top_k: Annotated[int, typer.Option(min=1, max=400, help="How many suggestions to show.")] = 10,
    min_score: Annotated[float, typer.Option(min=0.0, max=1.0, help="Hide suggestions scoring below this.")] = 0.0,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format("table"),
    backend: BackendOption = None,
    max_bytes: MaxBytesOption = DEFAULT_MAX_BYTES,
    include_disarm: IncludeDisarmOption = False,
) -> None:
    """Suggest DISARM techniques for one article, with the sentences that support each.

    Examples:

      disarm-tagger suggest article.html

      cat report.txt | disarm-tagger suggest - --format json --top-k 5

      disarm-tagger suggest article.html --format stix > bundle.json   (also: navigator, misp)
    """
    from . import render, text

    try:
        raw = _read_input(path, max_bytes)
    except text.InputError as exc:
        raise fail(str(exc)) from exc
    folder, tagger = _load_model(model, backend)
    try:
        article = tagger.suggest_article(raw, top_k=top_k, min_score=min_score)
    except text.InputError as exc:
        raise fail(f"{path}: {exc}") from exc
    _warn(article.warnings)
    source = "stdin" if path == "-" else path
    fmt = Format(format).value
    if fmt == "table":
        render.print_table(source, str(folder), article.suggestions, tagger.threshold_)
        return
    from . import formats

    by_id = {t.id: t for t in tagger.techniques_}
    disarm_objects = _disarm_objects(folder) if include_disarm and fmt == "stix" else None
    typer.echo(render.article(fmt, article, source=source, model=str(folder), threshold=tagger.threshold_,
                              techniques_by_id=by_id, disarm_objects=disarm_objects))  # fmt: skip
    if fmt in formats.EXPORT_FORMATS:
        _warn(formats.export_warnings(fmt, [s.technique_id for s in article.suggestions], by_id))


@app.command()
def annotate(
    path: Annotated[str, typer.Argument(help="Article file (.txt, .md, .html) or - for standard input.")],
    *,
    labels: Annotated[str, typer.Option(help="Confirmed DISARM technique ids, comma separated.")],
    incident: Annotated[Optional[str], typer.Option(show_default=False, help="Incident id grouping this "
                        "text in cross-validation. Default: LOCAL-<sha8 of the text>.")] = None,  # fmt: skip
    data: Annotated[Path, typer.Option(help="training_data folder (labels checked against it).")] = Path(
        "training_data"
    ),
    note: Annotated[str, typer.Option(help="Free-text note stored with the annotation.")] = "",
    annotator: Annotated[Optional[str], typer.Option(show_default=False, help="Who confirmed the labels. "
                         "Default: the login name.")] = None,  # fmt: skip
    max_bytes: MaxBytesOption = DEFAULT_MAX_BYTES,
) -> None:
    """Record analyst-confirmed techniques for an article in training_data/annotations.jsonl.

    The next `train` learns from it; `import-disarm` never touches that file. Annotating the same text again
    replaces its labels. Exit codes: 0 recorded; 1 bad input or unknown technique id; 4 training data missing.

    Examples:

      disarm-tagger annotate article.html --labels T0086.002,T0151.004 --note "checked with the source"

      cat post.txt | disarm-tagger annotate - --labels T0097.101 --incident I00077
    """
    from . import annotate as annotate_lib
    from . import corpus, text

    try:
        raw = _read_input(path, max_bytes)
        result = annotate_lib.annotate(raw, labels, data=data, source="stdin" if path == "-" else path,
                                       incident_id=incident or "", note=note,
                                       annotator=annotator if annotator is not None else annotate_lib.login_name())
    except (text.InputError, annotate_lib.AnnotationError) as exc:
        raise fail(str(exc)) from exc
    except corpus.CorpusError as exc:
        raise fail(str(exc), EXIT_DATA) from exc
    ex = result.example
    what = "added" if result.previous_labels is None else f"replaced {','.join(result.previous_labels)} with"
    typer.echo(f"{what} {','.join(ex.labels)} for {ex.id} (incident {ex.incident_id}, {len(ex.text):,} "
               f"characters) in {result.path}; run `disarm-tagger train` to use it")


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
    from .serve import security

    loopback = security.is_loopback(host)
    if not loopback and not token:
        raise fail(f"--host {host} can be reached from other machines: set --token or DISARM_TAGGER_TOKEN",
                   EXIT_USAGE)  # fmt: skip
    folder, tagger = _load_model(model, backend)
    if hasattr(tagger.embedder, "batch_size"):
        # A request's few sentences span every length: in encoder batches of 32 the short ones are padded to the
        # longest, in batches of 8 (sorted by length) hardly at all. Measured: see "Speed" under serve in README.
        tagger.embedder.batch_size = 8
    import uvicorn

    from . import corpus
    from .serve import create_app

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

    from . import corpus
    from .serve import loadtest

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


def _progress():
    """A progress callback printing 'step i/n, elapsed, ETA' to stderr."""
    started = time.perf_counter()

    def report(step: int, total: int, what: str) -> None:
        elapsed = time.perf_counter() - started
        eta = elapsed / step * (total - step) if step else 0.0
        typer.echo(f"[{step}/{total}] {what}  elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min", err=True)

    return report


@app.command("eval")
def eval_cmd(
    *,
    data: DataOption = Path("training_data"),
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, report.md and plots.")] = Path("eval"),
    folds: Annotated[Optional[int], typer.Option(min=2, show_default=False, help="GroupKFold by incident with "
                     "this many folds. Default: leave one incident out.")] = None,  # fmt: skip
    test: Annotated[Optional[Path], typer.Option(show_default=False, help="Score a trained model (--model) on "
                    "this labelled JSONL (examples schema) instead of cross-validating.")] = None,  # fmt: skip
    model: ModelOption = None,
    ablations: Annotated[bool, typer.Option(help="Refit without each signal in turn (slow).")] = True,
    ablation_folds: Annotated[int, typer.Option(min=2, help="GroupKFold folds for the ablations.")] = 10,
    fail_under: Annotated[Optional[list[str]], typer.Option(show_default=False, metavar="METRIC=VALUE",
                          help="Exit 5 if our METRIC is below VALUE, e.g. map=0.30 (repeatable).")] = None,
    compare: Annotated[Optional[Path], typer.Option(show_default=False, help="A committed metrics.json: exit 5 if "
                       "a headline metric (P@1, R@10, MAP, micro F1) is lower by more than --tolerance, or if it "
                       "was measured on other training data or another split.")] = None,  # fmt: skip
    tolerance: Annotated[float, typer.Option(min=0.0, help="Allowed drop for --compare.")] = 0.02,
    cache: Annotated[Path, typer.Option(help="Embedding cache shared by all folds (keyed by backend, weights "
                     "and text).")] = Path(".cache/embeddings.npz"),  # fmt: skip
    backend: BackendOption = None,
    local: LocalOption = True,
    authored: AuthoredOption = True,
) -> None:
    """Evaluate by incident: cross-validation (default), or a trained model on a labelled test file.

    Folds split the real passages (DISARM incidents, local annotations) by incident; authored passages are
    always training data, never tested on. Every fold refits the tagger and the baselines (most-frequent
    prior, TF-IDF + logistic regression) on its training incidents only. Writes metrics.json, report.md and
    PNG plots to --out; progress goes to stderr. Exit codes: 0 ok, 1 bad input, 2 usage, 3 model, 4 data,
    5 a --fail-under or --compare gate failed.

    Examples:

      disarm-tagger eval --folds 10 --no-ablations --out /tmp/eval

      disarm-tagger eval --test held_out.jsonl --model models/default --fail-under map=0.30
    """
    import json

    from . import corpus, evalrun, evaluate, report, summaries
    from .embed import EmbedderError

    if model is not None and test is None:
        raise fail("--model is only used with --test FILE", EXIT_USAGE)
    if test is not None and not test.is_file():
        raise fail(f"{test}: no such test file")
    try:
        gates = summaries.parse_gates(fail_under or [])
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    try:  # read before anything is written: --compare may point into --out
        committed = json.loads(compare.read_text(encoding="utf-8")) if compare else None
    except (OSError, ValueError) as exc:
        raise fail(f"--compare {compare}: cannot read it ({exc})") from exc
    try:
        if test:
            folder, tagger = _load_model(model, backend)
            run = evalrun.heldout(test, folder, tagger, progress=_progress())
        else:
            run = evalrun.cross_validation(data, folds=folds, ablations=ablations, ablation_folds=ablation_folds,
                                           local=local, authored=authored, backend=backend, cache=cache,
                                           progress=_progress())  # fmt: skip
    except corpus.CorpusError as exc:
        raise fail(str(exc), EXIT_DATA) from exc
    except (evaluate.EvalError, EmbedderError) as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    paths = report.write(run.report, out, command=f"{run.command} --out {out}", provenance=run.provenance)
    for name, m in run.report.methods.items():
        h = m["headline"]
        typer.echo(f"{name:30s} P@1 {h['p@1']:.3f}  R@10 {h['r@10']:.3f}  MAP {h['map']:.3f}  "
                   f"micro F1 {h['micro_f1']:.3f}")  # fmt: skip
    typer.echo(f"wrote {', '.join(str(p) for p in paths)}")
    problems = evalrun.gate_problems(run, gates=gates, committed=committed, tolerance=tolerance)
    for line in problems:
        typer.echo(f"gate failed: {line}", err=True)
    if problems:
        raise typer.Exit(EXIT_GATE)


def _batch_progress(total: int | None):
    """(callback, stop) for a rich progress bar on stderr: a bar with ETA when the total is known."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)  # fmt: skip

    counts = [BarColumn(bar_width=20), MofNCompleteColumn(), TimeRemainingColumn()] if total else [
        TextColumn("{task.completed:,}")]
    bar = Progress(SpinnerColumn(), TextColumn("tagging"), *counts, TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), console=Console(stderr=True))  # fmt: skip
    task = bar.add_task("tagging", total=total, rate="")
    bar.start()

    def update(s) -> None:
        bar.update(task, completed=s.seen, rate=f"{s.docs_per_second:.1f} docs/s, {s.errors:,} errors")

    return update, bar.stop


@app.command("batch")
def batch_cmd(
    input: Annotated[Path, typer.Argument(help="A folder (recursive: .txt .md .html .htm; .pdf files become error "
                     "records), a .jsonl file of objects, or a .csv file with a header row.")],  # fmt: skip
    *,
    out: Annotated[Path, typer.Option(help="Output file. Run again with the same --out to resume.")],
    format: Annotated[Optional[BatchFormat], typer.Option("--format", "-f", show_default=False, help="jsonl: one "
                      "record per document; csv: one row per suggestion; stix (one bundle, a report per document), "
                      "navigator (one layer counting documents per technique), misp (one event per document, in a "
                      "response object): written to OUT when the run ends, from the resumable records in "
                      "OUT.records.jsonl. Default: csv if OUT ends in .csv, else jsonl.")] = None,  # fmt: skip
    top_k: Annotated[int, typer.Option(min=1, max=400, help="Suggestions per document.")] = 10,
    min_score: Annotated[float, typer.Option(min=0.0, max=1.0, help="Drop suggestions scoring below this.")] = 0.0,
    model: ModelOption = None,
    backend: BackendOption = None,
    id_field: Annotated[str, typer.Option(help="JSONL key or CSV column holding the document id.")] = "id",
    text_field: Annotated[str, typer.Option(help="JSONL key or CSV column holding the document text.")] = "text",
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 if this run wrote any error record.")] = False,
    max_bytes: MaxBytesOption = DEFAULT_MAX_BYTES,
    batch_size: Annotated[int, typer.Option(min=1, max=4096, help="Documents per encoder call.")] = 32,
    include_disarm: IncludeDisarmOption = False,
    engine: Annotated[Engine, typer.Option(help="local: tag in this process. dask: tag on a dask.distributed "
                      "cluster (needs the package's dask extra), the one at --scheduler, else --workers processes started "
                      "on this machine; OUT, resume, the lock and the records are the same.")] = "local",
    scheduler: Annotated[Optional[str], typer.Option(show_default=False, help="--engine dask: the scheduler of a "
                         "running cluster (tcp://HOST:8786), e.g. on dask-jobqueue or Kubernetes. Its workers need "
                         "disarm-tagger installed, not the model: the model folder is sent to them.")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, show_default=False, help="--engine dask without "
                       "--scheduler: single-threaded worker processes to start on this machine. Default: one per "
                       "core.")] = None,
) -> None:
    """Tag a backlog of documents into a JSONL or CSV file, streaming and resumable.

    A JSONL line is {"id", "source", "suggestions": [...]} (suggestions as in `suggest --format json`, plus
    "warnings" when there are any) or {"id", "source", "error"}. CSV has one row per suggestion: id, source,
    rank, technique_id, name, tactic_id, tactic, score, evidence (the first sentence), error. Ids are paths
    relative to a folder INPUT, else the --id-field values. Ids already in OUT are skipped, so a killed run
    resumes where it stopped; a repeated input id is tagged once and reported. Bad documents (unreadable,
    binary, empty, too large, no article text) become error records and the run goes on.

    Exit codes: 0 done (error records are counted in the summary); 1 there was work and nothing succeeded,
    or --strict and an error record, or INPUT/OUT unusable, or OUT locked by another run; 2 usage; 3 model.

    Examples:

      disarm-tagger batch articles/ --out tags.jsonl

      disarm-tagger batch backlog.csv --id-field url --text-field body --out tags.csv

      disarm-tagger batch backlog.jsonl --out tags.jsonl --engine dask --scheduler tcp://10.0.0.5:8786
    """
    from . import batch as batch_lib
    from . import persist

    if Engine(engine).value == "local" and (scheduler or workers):
        raise typer.BadParameter("--scheduler and --workers need --engine dask")
    if scheduler and workers:
        raise typer.BadParameter("--workers starts a cluster on this machine; a --scheduler cluster has its own")
    run = partial(batch_lib.run_batch, load_tagger=lambda: _load_model(model, backend)[1])
    if Engine(engine).value == "dask":
        from . import dask_engine

        run = partial(dask_engine.run_batch, model=model or persist.default_model_dir(), backend=backend,
                      scheduler=scheduler, workers=workers)  # fmt: skip
    fmt = BatchFormat(format).value if format else "csv" if out.suffix.lower() == ".csv" else "jsonl"
    records = batch_lib.records_path(out, fmt)
    total, progress, stop = None, None, lambda: None
    if sys.stderr.isatty():
        try:
            total = batch_lib.count_inputs(input, id_field=id_field, text_field=text_field)
        except batch_lib.BacklogError:
            pass  # run_batch reports it
        progress, stop = _batch_progress(total)
    try:
        summary = run(input, records, fmt="csv" if fmt == "csv" else "jsonl", top_k=top_k, min_score=min_score,
                      id_field=id_field, text_field=text_field, max_bytes=max_bytes, batch_size=batch_size,
                      progress=progress)  # fmt: skip
    except batch_lib.BacklogError as exc:
        raise fail(str(exc)) from exc
    except persist.ModelError as exc:
        raise fail(str(exc), EXIT_MODEL) from exc
    except OSError as exc:  # OUT not writable, disk full...
        raise fail(f"{out}: {exc.strerror or exc}") from exc
    finally:
        stop()
    _warn(summary.notes)
    typer.echo(f"{summary.processed:,} documents in {summary.seconds:.1f}s ({summary.docs_per_second:.1f} docs/s): "
               f"{summary.succeeded:,} tagged, {summary.errors:,} errors, {summary.skipped:,} already in {records}")
    if summary.duplicates:
        more = len(summary.duplicates) - 20
        shown = ", ".join(summary.duplicates[:20]) + (f" and {more:,} more" if more > 0 else "")
        typer.echo(f"{len(summary.duplicates):,} repeated ids in the input, tagged once: {shown}")
    if records != out:
        folder = model or persist.default_model_dir()
        catalogue = {t.id: t for t in persist.read_catalogue(folder)}
        disarm_objects = _disarm_objects(folder) if include_disarm and fmt == "stix" else None
        _warn(batch_lib.write_export(records, out, fmt, catalogue, name=str(input), min_score=min_score,
                                     disarm_objects=disarm_objects))  # fmt: skip
        typer.echo(f"wrote {fmt} export to {out} (records kept in {records})")
    if (summary.processed and not summary.succeeded) or (strict and summary.errors):
        raise typer.Exit(EXIT_ERROR)


@app.command()
def bench(
    *,
    docs: Annotated[int, typer.Option(min=1, help="Synthetic documents to tag.")] = 300,
    model: ModelOption = None,
    backend: BackendOption = None,
    data: DataOption = Path("training_data"),
    seed: Annotated[int, typer.Option(help="Seed of the synthetic backlog.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Documents per encoder call.")] = 32,
    compare: Annotated[bool, typer.Option(help="Also time every backend on the same sentences and compare their "
                       "top-10 suggestions with torch's on the training passages.")] = True,
    article: Annotated[Optional[Path], typer.Option(show_default=False, help="Only time `suggest` on this article: "
                       "the cold CLI (3 processes, median) and warm suggest_article calls (median of 5).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    write_backlog: Annotated[Optional[Path], typer.Option(show_default=False, help="Only write the synthetic "
                             "backlog (--docs documents) to this JSONL file.")] = None,  # fmt: skip
) -> None:
    """Measure `batch` throughput against the bare encoder on a synthetic backlog; compare the backends; or time
    `suggest` on one article.

    The ratio (pipeline docs/s / encoder docs/s over the same sentences) shows what text extraction,
    sentence splitting, scoring and writing cost on top of embedding. Model loading is not timed.

    Examples:

      disarm-tagger bench --docs 300 --backend onnx-int8 --no-compare

      disarm-tagger bench --article article.md

      disarm-tagger bench --write-backlog backlog.jsonl --docs 2000
    """
    import json

    from . import bench as bench_lib
    from . import corpus, persist, render

    try:
        if write_backlog:
            n = bench_lib.write_backlog(write_backlog, docs, seed, data=data)
            typer.echo(f"wrote {n:,} documents to {write_backlog}")
            return
        folder, tagger = _load_model(model, backend)
        if article:
            result = {"suggest": bench_lib.suggest_timing(article, folder, tagger, backend=backend)}
        else:
            load = (lambda name: persist.load(folder, backend=name)) if compare else None
            result = bench_lib.benchmark(tagger, docs=docs, seed=seed, data=data, batch_size=batch_size,
                                         load_backend=load)  # fmt: skip
    except corpus.CorpusError as exc:
        raise fail(str(exc), EXIT_DATA) from exc
    except OSError as exc:
        raise fail(str(exc)) from exc
    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        render.print_bench(result)
