"""The `eval` command's work as library calls: run a cross-validation or a held-out test, then check gates.

Each function returns data; the CLI prints and picks exit codes.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from . import corpus, evaluate, summaries
from .evaluate import EvalReport, Progress


@dataclass(frozen=True)
class Run:
    report: EvalReport
    provenance: dict  # what was evaluated: training data (sha256) or test file and model
    command: str  # the command line that reproduces it


def cross_validation(data: Path, *, folds: int | None = None, ablations: bool = True, ablation_folds: int = 10,
                     local: bool = True, authored: bool = True, backend: str | None = None,
                     cache: Path | None = None, progress: Progress | None = None) -> Run:  # fmt: skip
    """Cross-validate on a training_data folder by incident. Raises corpus.CorpusError, evaluate.EvalError,
    embed.EmbedderError."""
    from .embed import CachedEmbedder, load_embedder

    data_set = corpus.load_corpus(data, include_local=local, include_authored=authored)
    embedder = CachedEmbedder(load_embedder(backend), cache)
    try:
        report = evaluate.evaluate(data_set.examples, data_set.techniques, embedder=embedder,
                                   authored=data_set.authored, n_folds=folds, ablations=ablations,
                                   ablation_folds=ablation_folds, progress=progress)  # fmt: skip
    finally:
        embedder.save()
    argv = ["--data", str(data), *(["--folds", str(folds)] if folds else []),
            *(["--ablation-folds", str(ablation_folds)] if ablations else ["--no-ablations"]),
            *([] if local else ["--no-local"]), *([] if authored else ["--no-authored"]),
            *(["--backend", backend] if backend else [])]  # fmt: skip
    return Run(report, corpus.provenance(data_set, data), shlex.join(["disarm-tagger", "eval", *argv]))


def heldout(test: Path, model_folder: Path, tagger, *, progress: Progress | None = None) -> Run:
    """Score a loaded model on a labelled JSONL file (examples schema)."""
    from .schema import Example

    examples = corpus.read_jsonl(test, Example)
    report = evaluate.evaluate_model(tagger, examples, progress=progress)
    provenance = evaluate.heldout_provenance(test, model_folder, tagger)
    return Run(report, provenance, shlex.join(["disarm-tagger", "eval", "--test", str(test), "--model",
                                               str(model_folder)]))  # fmt: skip


def gate_problems(run: Run, *, gates: dict[str, float], committed: dict | None, tolerance: float) -> list[str]:
    """Every reason the run fails its gates: a --fail-under floor, a drop below the committed metrics, or a
    committed baseline measured on other data or another split (not comparable: refused, not compared)."""
    problems = summaries.check_gates(run.report.headline(), gates)
    if committed is None:
        return problems
    checks = (("training data sha256", committed.get("data", {}).get("training_data_sha256"),
               run.provenance.get("training_data_sha256")),
              ("split", committed.get("config", {}).get("split"), run.report.config.get("split")))  # fmt: skip
    mismatched = [f"{what} {was!r} there, {now!r} here" for what, was, now in checks if was != now]
    if mismatched:
        return problems + ["refusing to compare with metrics of another run: " + "; ".join(mismatched)
                           + " (regenerate them with `make eval-ci-baseline` from a clean commit)"]  # fmt: skip
    return problems + summaries.compare_headline(run.report.headline(), committed, tolerance=tolerance)
