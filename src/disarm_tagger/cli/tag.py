"""Commands that tag documents: suggest (one article) and batch (a backlog)."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..text import DEFAULT_MAX_BYTES
from . import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    BackendOption,
    BatchFormat,
    Engine,
    Format,
    IncludeDisarmOption,
    MaxBytesOption,
    ModelOption,
    _disarm_objects,
    _load_model,
    _read_input,
    _warn,
    app,
    fail,
)


@app.command()
def suggest(
    path: Annotated[str, typer.Argument(help="Article file (.txt, .md, .html, .docx, or a .pdf with a text "
                    "layer) or - for standard input.")],
    *,
    model: ModelOption = None,
    top_k: Annotated[int, typer.Option(min=1, max=400, help="How many suggestions to show. A long report "
                     "carries more techniques than 10: try 20-30 (README: Long documents).")] = 10,
    min_score: Annotated[float, typer.Option(min=0.0, max=1.0, help="Hide suggestions scoring below this.")] = 0.0,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format("table"),
    backend: BackendOption = None,
    max_bytes: MaxBytesOption = DEFAULT_MAX_BYTES,
    include_disarm: IncludeDisarmOption = False,
) -> None:
    """Suggest DISARM techniques for one article, with the sentences that support each.

    Examples:

      disarm-tagger suggest article.html

      disarm-tagger suggest threat-report.pdf --top-k 30

      cat report.txt | disarm-tagger suggest - --format json --top-k 5

      disarm-tagger suggest article.html --format stix > bundle.json   (also: navigator, misp)
    """
    from .. import render, text

    try:
        raw = _read_input(path, max_bytes)
    except text.InputError as exc:
        raise fail(str(exc)) from exc
    text.warm_up()  # spaCy imports while the model loads
    folder, tagger = _load_model(model, backend)
    tagger.embedder_.encode(["warm up"])  # the encoder session starts meanwhile too
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
    from .. import formats

    by_id = {t.id: t for t in tagger.techniques_}
    disarm_objects = _disarm_objects(folder) if include_disarm and fmt == "stix" else None
    typer.echo(render.article(fmt, article, source=source, model=str(folder), threshold=tagger.threshold_,
                              techniques_by_id=by_id, disarm_objects=disarm_objects))  # fmt: skip
    if fmt in formats.EXPORT_FORMATS:
        _warn(formats.export_warnings(fmt, [s.technique_id for s in article.suggestions], by_id))

def _batch_progress(total: int | None):
    """(callback, stop) for a rich progress bar on stderr: a bar with ETA when the total is known."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,  # fmt: skip
        TimeRemainingColumn,
    )

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
    input: Annotated[Path, typer.Argument(help="A folder (recursive: .txt .md .html .htm .pdf .docx; a "
                     "PDF is read from its text layer, so a scan needs OCR first), a .jsonl file of "
                     "objects, or a .csv file with a header row.")],  # fmt: skip
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
    or --strict and an error record, or INPUT/OUT unusable, or OUT locked by another run; 2 usage; 3 model;
    130 interrupted (Ctrl-C): the records written so far stay, and the same command resumes.

    Examples:

      disarm-tagger batch articles/ --out tags.jsonl

      disarm-tagger batch backlog.csv --id-field url --text-field body --out tags.csv

      disarm-tagger batch backlog.jsonl --out tags.jsonl --engine dask --scheduler tcp://10.0.0.5:8786
    """
    from .. import batch as batch_lib
    from .. import persist

    if Engine(engine).value == "local" and (scheduler or workers):
        raise typer.BadParameter("--scheduler and --workers need --engine dask")
    if scheduler and workers:
        raise typer.BadParameter("--workers starts a cluster on this machine; a --scheduler cluster has its own")
    run = partial(batch_lib.run_batch, load_tagger=lambda: _load_model(model, backend)[1])
    if Engine(engine).value == "dask":
        from .. import dask_engine

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
    except KeyboardInterrupt:
        stop()
        typer.echo(f"interrupted: {records} keeps every record written so far; run the same command again to "
                   "resume", err=True)  # fmt: skip
        raise typer.Exit(EXIT_INTERRUPTED) from None
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
