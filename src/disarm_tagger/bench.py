"""How fast a backlog is tagged: the batch pipeline against the bare encoder, and the embedding backends.

``synthetic_backlog`` makes a reproducible backlog from the training passages and technique summaries.
``benchmark`` returns a dict: documents/s of the whole batch pipeline and of the encoder alone over the
very units the pipeline embeds (their ratio says how much the rest costs), and, per backend, encoder speed
and the top-10 agreement of its suggestions with torch's on the training passages. Nothing here prints.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from . import text as textmod

REFERENCE = "torch"


def synthetic_backlog(n: int, seed: int = 0, *, data: Path = Path("training_data")) -> Iterator[dict]:
    """``n`` documents {"id", "text"}: each 2-6 paragraphs drawn (seeded) from the training passages (3 in 4)
    and the technique summaries. Raises corpus.CorpusError when ``data`` is not a training_data folder."""
    from .corpus import load_corpus

    corpus = load_corpus(Path(data), include_local=False)
    passages = [e.text for e in corpus.examples]
    summaries = [f"{t.name}. {t.summary}" for t in corpus.techniques if t.summary]
    rng = random.Random(seed)
    for i in range(n):
        paragraphs = [rng.choice(passages) if rng.random() < 0.75 else rng.choice(summaries)
                      for _ in range(rng.randint(2, 6))]  # fmt: skip
        yield {"id": f"doc-{i:06d}", "text": "\n\n".join(paragraphs)}


def write_backlog(path: Path, n: int, seed: int = 0, *, data: Path = Path("training_data")) -> int:
    """Write synthetic_backlog() as JSONL; returns the number of documents."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for doc in synthetic_backlog(n, seed, data=data):
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
            count += 1
    return count


def _unit_batches(texts: Sequence[str], batch_size: int) -> list[list[str]]:
    """The texts the pipeline embeds, grouped as it groups them: one encoder call per micro-batch."""
    batches = []
    for start in range(0, len(texts), batch_size):
        batches.append([u.text for raw in texts[start : start + batch_size] for u in textmod.prepare(raw).units])
    return batches


def _encode_seconds(embedder, batches: list[list[str]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        embedder.encode(batch)
    return time.perf_counter() - started


def _top10(tagger, passages: Sequence[str]) -> list[list[str]]:
    articles = tagger.suggest_articles(passages, top_k=10)
    return [[s.technique_id for s in a.suggestions] for a in articles]


def overlap_at_10(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]]) -> float:
    """Mean |top10(a) ∩ top10(b)| / 10 over paired rankings.

    >>> overlap_at_10([["T1", "T2"] + [f"A{i}" for i in range(8)]], [["T2", "T1"] + [f"B{i}" for i in range(8)]])
    0.2
    """
    if not a:
        return 0.0
    return sum(len(set(x[:10]) & set(y[:10])) / 10 for x, y in zip(a, b)) / len(a)


def benchmark(tagger, *, docs: int = 300, seed: int = 0, data: Path = Path("training_data"),
              batch_size: int = 32, load_backend: Callable[[str], object] | None = None) -> dict:  # fmt: skip
    """Time the batch pipeline and the bare encoder (before and after it, averaged) on one synthetic
    backlog; with ``load_backend`` (backend name -> tagger), also compare every backend with torch.
    Model loading is never timed."""
    from .batch import run_batch
    from .corpus import load_corpus

    backlog = list(synthetic_backlog(docs, seed, data=data))
    passages = [e.text for e in load_corpus(Path(data), include_local=False).examples]
    batches = _unit_batches([d["text"] for d in backlog], batch_size)
    embedder = tagger.embedder_
    backend = getattr(embedder, "backend", "custom")
    tagger.suggest_articles([d["text"] for d in backlog[:2]])  # warm up: model, ONNX session, spaCy, imports
    before = _encode_seconds(embedder, batches)  # encoder, pipeline, encoder: a shared machine drifts
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp, "backlog.jsonl"), Path(tmp, "out.jsonl")
        source.write_text("".join(json.dumps(d) + "\n" for d in backlog), encoding="utf-8")
        started = time.perf_counter()
        summary = run_batch(source, out, tagger=tagger, batch_size=batch_size)
        pipeline = time.perf_counter() - started
    after = _encode_seconds(embedder, batches)
    encoder = (before + after) / 2
    n_units = sum(map(len, batches))
    result = {
        "docs": docs, "units": n_units, "batch_size": batch_size, "backend": backend, "seed": seed,
        "load_average": round(os.getloadavg()[0], 2),
        "pipeline": {"seconds": round(pipeline, 3), "docs_per_s": round(docs / pipeline, 2),
                     "succeeded": summary.succeeded, "errors": summary.errors},
        "encoder": {"seconds": round(encoder, 3), "docs_per_s": round(docs / encoder, 2),
                    "units_per_s": round(n_units / encoder, 1),
                    "runs_seconds": [round(before, 3), round(after, 3)]},
        "ratio": round(encoder / pipeline, 3),
    }  # fmt: skip
    if load_backend is not None:
        result["backends"] = compare_backends(tagger, load_backend, batches, passages, docs=docs)
    return result


def compare_backends(tagger, load_backend: Callable[[str], object], batches: list[list[str]],
                     passages: Sequence[str], *, docs: int) -> dict:  # fmt: skip
    """Per backend: encoder seconds and docs/s over ``batches``, speed-up over torch, and the top-10 overlap
    of its suggestions with torch's on ``passages``. A backend that cannot load gets {"error": ...}."""
    from .embed import PACKAGED_BACKENDS

    own = getattr(tagger.embedder_, "backend", None)
    rows: dict[str, dict] = {}
    rankings: dict[str, list] = {}
    timings: dict[str, float] = {}
    for name in PACKAGED_BACKENDS:
        try:
            candidate = tagger if name == own else load_backend(name)
            candidate.embedder_.encode(["warm up"])
        except Exception as err:  # noqa: BLE001 - reported in the table, the others still run
            rows[name] = {"error": f"{type(err).__name__}: {err}"}
            continue
        seconds = max(_encode_seconds(candidate.embedder_, batches), 1e-9)
        rows[name] = {"seconds": round(seconds, 3), "docs_per_s": round(docs / seconds, 2)}
        timings[name] = seconds
        rankings[name] = _top10(candidate, passages)
    for name, row in rows.items():
        if REFERENCE in timings and name in timings:
            row["speedup_vs_torch"] = round(timings[REFERENCE] / timings[name], 2)
        if REFERENCE in rankings and name in rankings:
            row["top10_overlap_vs_torch"] = round(overlap_at_10(rankings[REFERENCE], rankings[name]), 3)
    return rows


def suggest_timing(article: Path, folder: Path, tagger, *, backend: str | None = None, cold_runs: int = 3,
                   warm_runs: int = 5) -> dict:  # fmt: skip
    """What an analyst waits for: the whole `disarm-tagger suggest ARTICLE` process (cold: imports, model
    load, encoder session, extraction, scoring), ``cold_runs`` times, and ``tagger.suggest_article`` on an
    already loaded model (warm, after one untimed call), ``warm_runs`` times. Medians and every run."""
    import statistics
    import subprocess
    import sys

    command = [sys.executable, "-m", "disarm_tagger", "suggest", str(article), "--format", "json", "--model",
               str(folder), *(["--backend", backend] if backend else [])]  # fmt: skip
    cold = []
    for _ in range(cold_runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        cold.append(time.perf_counter() - started)
    raw = textmod.read_path(Path(article))
    tagger.suggest_article(raw)
    warm = []
    for _ in range(warm_runs):
        started = time.perf_counter()
        tagger.suggest_article(raw)
        warm.append(time.perf_counter() - started)
    return {"article": str(article), "backend": getattr(tagger.embedder_, "backend", "custom"),
            "load_average": round(os.getloadavg()[0], 2),
            "cold_seconds": {"median": round(statistics.median(cold), 3), "runs": [round(x, 3) for x in cold]},
            "warm_seconds": {"median": round(statistics.median(warm), 4), "runs": [round(x, 4) for x in warm]}}
