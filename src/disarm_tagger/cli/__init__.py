"""The `disarm-tagger` command: one typer app, every command a thin wrapper over one library call.

Shared options and helpers live here; the commands are in this package's modules, by what they do:
``data`` (import-disarm, check-authored, tune-encoder, train, annotate), ``tag`` (suggest, batch),
``measure`` (eval, bench) and ``server`` (serve, bench-serve).
"""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..version import __version__

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
EXIT_INTERRUPTED = 130  # batch: Ctrl-C (128 + SIGINT, as shells report it)


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
    from .. import batch, formats, render

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
MaxBytesOption = Annotated[int, typer.Option(help="Refuse documents larger than this many bytes, and PDF or "
                                              "Word files whose text is.")]
LocalOption = Annotated[bool, typer.Option(help="Include local analyst annotations (annotations.jsonl).")]
AuthoredOption = Annotated[bool, typer.Option(help="Include the authored coverage passages (authored.jsonl).")]
TextRidgeOption = Annotated[bool, typer.Option("--text-ridge", help="Also fit and fuse ridge_text, a ridge regression "
                            "from a passage's words and embedding to its techniques, fitted on the authored "
                            "passages: more techniques DISARM has no passage for reach the top 10, at a small cost "
                            "in P@1 (see README, Evaluation). Off by default.")]
IncludeDisarmOption = Annotated[bool, typer.Option("--include-disarm", help="stix only: put DISARM's own "
                                "attack-pattern objects in the bundle, verbatim from DISARM.json (kept in the model "
                                "folder), for a platform that does not hold DISARM yet. Default: reference them by "
                                "their DISARM STIX ids only.")]  # fmt: skip


def _load_model(model: Path | None, backend: str | None):
    from .. import persist

    folder = model or persist.default_model_dir()
    try:
        return folder, persist.load(folder, backend=backend)
    except persist.ModelError as exc:
        raise fail(str(exc), EXIT_MODEL) from exc


def _disarm_objects(folder: Path) -> dict[str, dict]:
    from .. import persist

    try:
        return persist.read_disarm_objects(folder)
    except persist.ModelError as exc:
        raise fail(str(exc), EXIT_MODEL) from exc


def _warn(lines) -> None:
    for line in lines:
        typer.echo(f"warning: {line}", err=True)


def _read_input(path: str, max_bytes: int) -> str:
    from .. import text

    if path == "-":
        return text.decode_bytes(sys.stdin.buffer.read(max_bytes + 1), source="stdin", max_bytes=max_bytes)
    return text.read_path(Path(path), max_bytes=max_bytes)




def _progress():
    """A progress callback printing 'step i/n, elapsed, ETA' to stderr."""
    started = time.perf_counter()

    def report(step: int, total: int, what: str) -> None:
        elapsed = time.perf_counter() - started
        eta = elapsed / step * (total - step) if step else 0.0
        typer.echo(f"[{step}/{total}] {what}  elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min", err=True)

    return report


# The commands register themselves on `app` when their modules are imported.
from . import data, measure, server, tag  # noqa: E402,F401  (after app and the shared helpers)
