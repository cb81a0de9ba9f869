"""The `eval` command's work as library calls: run a cross-validation or a held-out test, then check gates.

Each function returns data; the CLI prints and picks exit codes.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from . import corpus, evaluate, summaries
from .evaluate import EvalReport, Progress


@dataclass(frozen=True)
class Run:
    report: EvalReport
    provenance: dict  # what was evaluated: training data (sha256) or test file and model
    command: str  # the command line that reproduces it
    commit: str = "unknown"  # the code's git commit when the run started


def cross_validation(data: Path, *, folds: int | None = None, ablations: bool = True, ablation_folds: int = 10,
                     local: bool = True, authored: bool = True, backend: str | None = None,
                     cache: Path | None = None, compare_encoders: Sequence[str] = (),
                     articles: Path | None = None, long_documents: bool = False, text_ridge: bool = False,
                     progress: Progress | None = None) -> Run:  # fmt: skip
    """Cross-validate on a training_data folder by incident. Raises corpus.CorpusError, evaluate.EvalError,
    embed.EmbedderError."""
    from .embed import CachedEmbedder, embedder_for, load_embedder
    from .report import git_commit

    commit = git_commit()
    data_set = replace(corpus.load_corpus(data, include_local=local, include_authored=authored),
                       text_ridge=text_ridge)  # fmt: skip
    embedder = CachedEmbedder(load_embedder(backend), cache)
    others = {spec: CachedEmbedder(embedder_for(spec), share=embedder) for spec in compare_encoders}
    try:
        report = evaluate.evaluate(data_set.examples, data_set.techniques, embedder=embedder,
                                   authored=data_set.authored, n_folds=folds, ablations=ablations,
                                   tagger_params=data_set.tagger_params,
                                   ablation_folds=ablation_folds, encoders=others, progress=progress)  # fmt: skip
        if articles is not None:
            report.config["article_hubs"] = article_hubs(data_set, embedder, articles, report)
        if long_documents:
            report.config["long_documents"] = long_document_recall(data_set, embedder, progress=progress)
    finally:
        embedder.save()
    argv = ["--data", str(data), *(["--folds", str(folds)] if folds else []),
            *(["--ablation-folds", str(ablation_folds)] if ablations else ["--no-ablations"]),
            *([] if local else ["--no-local"]), *([] if authored else ["--no-authored"]),
            *(["--backend", backend] if backend else []),
            *(arg for spec in compare_encoders for arg in ("--compare-encoder", spec)),
            *(["--articles", str(articles)] if articles is not None else []),
            *(["--long-documents"] if long_documents else []), *(["--text-ridge"] if text_ridge else [])]  # fmt: skip
    return Run(report, corpus.provenance(data_set, data), shlex.join(["disarm-tagger", "eval", *argv]), commit)


def article_hubs(data_set, embedder, folder: Path, report: EvalReport) -> dict:
    """Hub techniques over real articles (every .md/.txt/.html file in ``folder`` but READMEs, tagged by a tagger fitted on
    all the training data, as `train` fits it) together with the held-out DISARM passages of ``report``."""
    from . import summaries, text
    from .tagger import Tagger

    tagger = Tagger(embedder, **data_set.tagger_params).fit(data_set.training, data_set.techniques)
    paths = sorted(p for p in Path(folder).rglob("*")
                   if p.suffix.lower() in (".md", ".txt", ".html", ".htm") and not p.stem.upper().startswith("README"))
    articles = [[s.technique_id for s in a.suggestions]
                for a in tagger.suggest_articles([text.read_path(p) for p in paths])
                if not isinstance(a, text.InputError)]  # fmt: skip
    held_out = [p.ranked for p in report.predictions if p.method == summaries.OURS]
    return {"folder": str(folder), "articles": len(articles), "passages": len(held_out),
            "rows": summaries.hubs([*held_out, *articles])}  # fmt: skip


LONG_SIZES = (1, 2, 3, 5)  # passages per pseudo-article


def long_document_recall(data_set, embedder, *, folds: int = 5, per_fold: int = 12, seed: int = 0,
                         progress: Progress | None = None) -> dict:  # fmt: skip
    """How recall holds up as a text gets longer and carries more techniques. Real passages are split by
    incident (GroupKFold); in each fold a tagger is fitted as the cross-validation fits it on the training
    side, and pseudo-articles are built from the held-out side only: ``m`` passages of ``m`` different
    held-out incidents joined as paragraphs, gold = the union of their labels (``per_fold`` articles per
    size and fold; size 1 is every held-out passage alone)."""
    import random

    real = data_set.examples
    run = evaluate.tagger_method(embedder, authored=data_set.authored, **data_set.tagger_params)
    splits = evaluate.incident_folds(real, n_folds=min(folds, len({e.incident_id for e in real})))
    rng, docs = random.Random(seed), []  # (size, gold, seen, ranked ids, ids at the threshold)
    for fold in splits:
        seen = {label for i in fold.train for label in real[i].labels}
        by_incident: dict[str, list[int]] = {}
        for i in fold.test:
            by_incident.setdefault(real[i].incident_id, []).append(i)
        parts = [[i] for i in fold.test]
        for size in LONG_SIZES[1:]:
            if len(by_incident) >= size:
                parts += [[rng.choice(by_incident[g]) for g in rng.sample(sorted(by_incident), size)]
                          for _ in range(per_fold)]  # fmt: skip
        rows, _ = run([real[i] for i in fold.train], ["\n\n".join(real[i].text for i in p) for p in parts],
                      data_set.techniques)  # fmt: skip
        for p, (ranked, _, predicted) in zip(parts, rows):
            docs.append((len(p), {label for i in p for label in real[i].labels}, seen, ranked, predicted))
        if progress:
            progress(fold.index + 1, len(splits), f"long documents, fold {fold.index + 1}/{len(splits)}")
    return {"folds": len(splits), "per_fold": per_fold, "seed": seed, "rows": long_document_rows(docs)}


def long_document_rows(docs) -> list[dict]:
    """Per size: documents, mean gold labels, R@10, R@10·size (ten per passage), R@10 of the labels with and
    without a real training passage, and MAP, pooled over gold labels (MAP: mean over documents); and the
    suggestions at the fold's tuned threshold (the ✓ marks): how many per text, their precision and recall."""
    from .metrics import average_precision_score

    rows = []
    for size in sorted({d[0] for d in docs}):
        mine = [d for d in docs if d[0] == size]
        hits: dict[str, list[bool]] = {"top10": [], "scaled": [], "seen": [], "unseen": []}
        marked = sum(len(d[4]) for d in mine)
        right = sum(len(set(d[4]) & d[1]) for d in mine)
        for _, gold, seen, ranked, _ in mine:
            top, scaled = set(ranked[:10]), set(ranked[: 10 * size])
            for g in gold:
                hits["top10"].append(g in top)
                hits["scaled"].append(g in scaled)
                hits["seen" if g in seen else "unseen"].append(g in top)
        share = {k: (sum(v) / len(v) if v else None) for k, v in hits.items()}
        rows.append({"size": size, "documents": len(mine), "gold": sum(len(d[1]) for d in mine) / len(mine),
                     "r@10": share["top10"], "r@10_per_passage": share["scaled"], "seen_r@10": share["seen"],
                     "unseen_r@10": share["unseen"], "unseen_gold": len(hits["unseen"]),
                     "map": sum(average_precision_score(d[3], d[1]) for d in mine) / len(mine),
                     "marked": marked / len(mine), "p_at_threshold": right / marked if marked else None,
                     "r_at_threshold": right / len(hits["top10"]) if hits["top10"] else None})  # fmt: skip
    return rows


def heldout(test: Path, model_folder: Path, tagger, *, progress: Progress | None = None) -> Run:
    """Score a loaded model on a labelled JSONL file (examples schema)."""
    from .report import git_commit
    from .schema import Example

    commit = git_commit()
    examples = corpus.read_jsonl(test, Example)
    report = evaluate.evaluate_model(tagger, examples, progress=progress)
    provenance = evaluate.heldout_provenance(test, model_folder, tagger)
    return Run(report, provenance, shlex.join(["disarm-tagger", "eval", "--test", str(test), "--model",
                                               str(model_folder)]), commit)  # fmt: skip


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
