"""Commands that build and check training data and models: import-disarm, check-authored, tune-encoder,
train, annotate."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..text import DEFAULT_MAX_BYTES
from . import (
    EXIT_DATA,
    EXIT_USAGE,
    AuthoredOption,
    BackendOption,
    DataOption,
    LocalOption,
    MaxBytesOption,
    TextRidgeOption,
    _progress,
    _read_input,
    app,
    fail,
)


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
    from .. import corpus, disarm

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
    passage or sentence (cosine >= 0.90); manifest.json describes authored.jsonl and named_examples.jsonl as
    they are (re-run import-disarm after editing either). Exit 0 when all hold, 4 otherwise.

    It also prints labels per passage by passage length, authored against DISARM's passages: a description to
    read, not a rule (a longer passage describes more, so compare like with like).
    """
    from .. import corpus
    from ..embed import EmbedderError, load_embedder

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
    if report.label_density:
        typer.echo("labels per passage by length (words), authored | real: " + "; ".join(
            f"{r['words']}: {_mean_of(r, 'authored')} | {_mean_of(r, 'real')}" for r in report.label_density))
    for line in report.problems:
        typer.echo(f"problem: {line}", err=True)
    if not report.ok:
        raise fail(f"{len(report.problems)} problem(s) in the authored set", EXIT_DATA)
    typer.echo("every rule holds")


def _mean_of(row: dict, key: str) -> str:
    return f"{row[key + '_labels']:.2f} (n={row[key]:,})" if row[key] else "none"


@app.command("tune-encoder")
def tune_encoder_cmd(
    *,
    data: DataOption = Path("training_data"),
    out: Annotated[Path, typer.Option(help="Folder to write the tuned sentence-transformers encoder to.")] = Path(
        "models/encoder-tuned"
    ),
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the authored passages.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the batch order.")] = 0,
) -> None:
    """Fine-tune the packaged all-MiniLM-L6-v2 on authored passages <-> technique definitions (contrastive).

    Uses only the authored coverage set and DISARM's definitions, never a DISARM incident passage, so an
    evaluation with the tuned encoder stays leak-free. Measure it with `eval --compare-encoder OUT`. Takes
    15-50 minutes on 2 cores (about 6 GB of memory) and imports torch.
    """
    from .. import corpus, tune

    try:
        data_set = corpus.load_corpus(data, include_local=False)
    except corpus.CorpusError as exc:
        raise fail(str(exc), EXIT_DATA) from exc
    if not data_set.authored:
        raise fail(f"{data}: no authored passages to tune on", EXIT_DATA)
    summary = tune.tune_encoder(data_set.authored, data_set.techniques, out, epochs=epochs, seed=seed,
                                progress=_progress())  # fmt: skip
    typer.echo(f"wrote {out}/: {summary['pairs']:,} pairs, {summary['steps']} steps in {summary['seconds']:.0f} s, "
               f"peak memory {summary['peak_rss_mb']:,.0f} MB; mean loss per epoch {summary['mean_loss_per_epoch']}")

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
    text_ridge: TextRidgeOption = False,
) -> None:
    """Train a tagger on training_data/ and write a model folder.

    Fusion weights, the weight of authored passages, score calibration and the threshold are tuned by
    leave-one-incident-out cross-validation over the real (DISARM and annotated) passages inside the
    training data; the inner-CV metrics go into meta.json and the model card.
    """
    from .. import corpus, persist
    from ..embed import EmbedderError, load_embedder
    from ..tagger import Tagger

    started = time.perf_counter()
    try:
        data_set = replace(corpus.load_corpus(data, include_local=local, include_authored=authored),
                           text_ridge=text_ridge)  # fmt: skip
        embedder = load_embedder(backend)
    except corpus.CorpusError as exc:
        raise fail(str(exc), EXIT_DATA) from exc
    except EmbedderError as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    typer.echo(f"training on {len(data_set.examples)} real passages ({data_set.local_examples} local annotations, "
               f"{data_set.local_duplicates} replacing imported passages) and {len(data_set.authored)} authored "
               f"passages over {len(data_set.techniques)} techniques", err=True)  # fmt: skip
    tagger = Tagger(embedder, **data_set.tagger_params).fit(data_set.training, data_set.techniques)
    stix = data / corpus.DISARM_STIX  # DISARM's own STIX objects, for exports that include them
    meta = persist.save(tagger, out, provenance=corpus.provenance(data_set, data),
                        disarm_stix=stix if stix.exists() else None)  # fmt: skip
    cv = meta["cv"]
    typer.echo(f"wrote {out}/ in {time.perf_counter() - started:.0f}s; inner LOIO CV: P@1 {cv['p@1']:.2f}, "
               f"R@10 {cv['r@10']:.2f}, MAP {cv['map']:.2f}; threshold {meta['threshold']:.2f}; authored weight "
               f"{meta['authored_weight']:g}")  # fmt: skip

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
    from .. import annotate as annotate_lib
    from .. import corpus, text

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
