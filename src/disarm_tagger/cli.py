"""The `disarm-tagger` command: every command a thin wrapper over one library call."""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__

app = typer.Typer(
    help="Suggest DISARM Red Framework technique ids for articles about influence operations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_ERROR = 1  # bad input: missing, unreadable, empty, too large...
EXIT_USAGE = 2  # typer/click usage errors
EXIT_MODEL = 3  # model folder missing, tampered or incompatible
EXIT_DATA = 4  # training data or DISARM checkout malformed


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


@app.command("import-disarm")
def import_disarm_cmd(
    path: Annotated[Path, typer.Argument(help="A DISARMframeworks checkout (the folder holding generated_pages/).")],
    *,
    out: Annotated[Path, typer.Option(help="Folder to write techniques, tactics, phases and examples to.")] = Path(
        "training_data"
    ),
) -> None:
    """Turn DISARM incident pages into training data.

    Writes techniques.jsonl, tactics.jsonl, phases.jsonl, examples.jsonl and manifest.json. Example text
    is the quoted source passage only; the analyst commentary only contributes labels. Local analyst
    annotations (annotations.jsonl) in the same folder are left untouched.
    """
    from . import corpus, disarm

    try:
        summary = corpus.import_disarm(path, out)
    except (disarm.DisarmFormatError, corpus.CorpusError, OSError) as exc:
        raise fail(str(exc), EXIT_DATA) from exc
    rep = summary.report
    typer.echo(
        f"{summary.examples} examples from {summary.incidents} incidents ({rep.rows} table rows, "
        f"{rep.merged_duplicates} repeated passages merged); {summary.techniques_used} of {summary.techniques} "
        f"techniques used; {summary.tactics} tactics, {summary.phases} phases"
    )
    typer.echo(f"ids repaired: {len(rep.repaired)}; ids dropped: {len(rep.dropped)}")
    for line in rep.repaired:
        typer.echo(f"  repaired {line}")
    for line in rep.dropped:
        typer.echo(f"  dropped  {line}")
    for name in rep.skipped_pages:
        typer.echo(f"  skipped  incident page {name} (no id header)")
    typer.echo(f"wrote {out}/")


class Format(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"


class Backend(str, Enum):
    torch = "torch"
    onnx = "onnx"
    onnx_int8 = "onnx-int8"


ModelOption = Annotated[
    Optional[Path],
    typer.Option("--model", help="Model folder. Default: $DISARM_TAGGER_MODEL, else models/default.", show_default=False),
]
BackendOption = Annotated[
    Optional[Backend],
    typer.Option(help="Embedding backend: onnx (exact, fast start; built once from the packaged weights), "
                 "onnx-int8 (quantised, fastest), torch (reference). Default: the model's.", show_default=False),
]


def _load_model(model: Path | None, backend: Backend | None):
    from . import persist

    folder = model or persist.default_model_dir()
    try:
        return folder, persist.load(folder, backend=backend.value if backend else None)
    except persist.ModelError as exc:
        raise fail(str(exc), EXIT_MODEL) from exc


def _read_input(path: str, max_bytes: int) -> str:
    from . import text

    if path == "-":
        data = sys.stdin.buffer.read(max_bytes + 1)
        return text.decode_bytes(data, source="stdin", max_bytes=max_bytes)
    return text.read_path(Path(path), max_bytes=max_bytes)


@app.command()
def train(
    *,
    data: Annotated[Path, typer.Option(help="training_data folder (examples, techniques, annotations).")] = Path(
        "training_data"
    ),
    out: Annotated[Path, typer.Option(help="Model folder to write.")] = Path("models/default"),
    backend: BackendOption = None,
    local: Annotated[bool, typer.Option(help="Include local analyst annotations (annotations.jsonl).")] = True,
) -> None:
    """Train a tagger on training_data/ and write a model folder.

    Fusion weights, score calibration and the threshold are tuned by leave-one-incident-out
    cross-validation inside the training data; the inner-CV metrics go into meta.json and the model card.
    """
    from . import corpus, persist
    from .embed import PackagedEmbedder
    from .tagger import Tagger

    started = time.perf_counter()
    try:
        data_set = corpus.load_corpus(data, include_local=local)
    except corpus.CorpusError as exc:
        raise fail(str(exc), EXIT_DATA) from exc
    typer.echo(f"training on {len(data_set.examples)} examples ({data_set.local_examples} local annotations, "
               f"{data_set.local_duplicates} replacing imported passages) over {len(data_set.techniques)} techniques",
               err=True)  # fmt: skip
    tagger = Tagger(PackagedEmbedder(backend.value if backend else "onnx")).fit(data_set.examples, data_set.techniques)
    meta = persist.save(tagger, out, provenance=corpus.provenance(data_set, data))
    cv = meta["cv"]
    typer.echo(f"wrote {out}/ in {time.perf_counter() - started:.0f}s; inner LOIO CV: P@1 {cv['p@1']:.2f}, "
               f"R@10 {cv['r@10']:.2f}, MAP {cv['map']:.2f}; threshold {meta['threshold']:.2f}")  # fmt: skip


@app.command()
def suggest(
    path: Annotated[str, typer.Argument(help="Article file (.txt, .md, .html) or - for standard input.")],
    *,
    model: ModelOption = None,
    top_k: Annotated[int, typer.Option(min=1, max=400, help="How many suggestions to show.")] = 10,
    min_score: Annotated[float, typer.Option(min=0.0, max=1.0, help="Hide suggestions scoring below this.")] = 0.0,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    backend: BackendOption = None,
    max_bytes: Annotated[int, typer.Option(help="Refuse inputs larger than this many bytes.")] = 20_000_000,
) -> None:
    """Suggest DISARM techniques for one article, with the sentences that support each.

    Examples:

      disarm-tagger suggest article.html

      cat report.txt | disarm-tagger suggest - --format json --top-k 5
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
    for warning in article.warnings:
        typer.echo(f"warning: {warning}", err=True)
    source = "stdin" if path == "-" else path
    if format is Format.json:
        typer.echo(render.to_json(source, str(folder), article.suggestions, article.warnings))
    elif format is Format.markdown:
        typer.echo(render.to_markdown(source, str(folder), article.suggestions, tagger.threshold_))
    else:
        render.print_table(source, str(folder), article.suggestions, tagger.threshold_)
