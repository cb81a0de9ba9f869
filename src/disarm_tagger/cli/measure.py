"""Commands that measure: eval (accuracy by incident) and bench (speed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import (
    EXIT_DATA,
    EXIT_GATE,
    EXIT_USAGE,
    AuthoredOption,
    BackendOption,
    DataOption,
    LocalOption,
    ModelOption,
    TextRidgeOption,
    _load_model,
    _progress,
    app,
    fail,
)


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
    text_ridge: TextRidgeOption = False,
    compare_encoder: Annotated[Optional[list[str]], typer.Option(show_default=False, metavar="BACKEND|DIR",
                               help="Add an ablation row embedding with another backend (e.g. onnx) or a "
                               "sentence-transformers folder (e.g. from tune-encoder); repeatable.")] = None,
    articles: Annotated[Optional[Path], typer.Option(show_default=False, help="A folder of real articles: report "
                        "hub techniques (in most top 10s whatever the text) over them and the held-out "
                        "passages, with a model fitted on all the data.")] = None,
    long_documents: Annotated[bool, typer.Option("--long-documents", help="Also measure recall on longer "
                              "texts: held-out passages of 2, 3 and 5 incidents joined into one article "
                              "(5 folds by incident; about 2 minutes).")] = False,
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

    from .. import corpus, evalrun, evaluate, report, summaries
    from ..embed import EmbedderError

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
                                           compare_encoders=compare_encoder or (), articles=articles,
                                           long_documents=long_documents, text_ridge=text_ridge,
                                           progress=_progress())  # fmt: skip
    except corpus.CorpusError as exc:
        raise fail(str(exc), EXIT_DATA) from exc
    except (evaluate.EvalError, EmbedderError) as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    paths = report.write(run.report, out, command=f"{run.command} --out {out}", provenance=run.provenance,
                         commit=run.commit)  # fmt: skip
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

    from .. import bench as bench_lib
    from .. import corpus, persist, render

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
