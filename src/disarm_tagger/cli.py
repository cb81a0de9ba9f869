"""The `disarm-tagger` command: every command a thin wrapper over one library call."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
