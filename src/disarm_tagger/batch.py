"""Tag a backlog: stream documents (see backlog.py) and append one record per id to OUT (see records.py).

Streaming: inputs are read lazily and tagged in micro-batches (one encoder call per batch), so memory is
bounded by a batch, not by the backlog. Resumable and exact: ids already in OUT are skipped, a torn record
left by a killed run is cut away before appending, each record is written whole with one write and flushed
(fsync after every batch), and ``OUT.lock`` stops two runs from writing one OUT. A bad document becomes an
error record and the run goes on. ``tag_records`` is the tagging both engines run: this process here, the
workers of a dask cluster in dask_engine.py. Library only: nothing here prints or exits.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from . import text as textmod
from .backlog import BacklogError, Item, count_inputs, read_inputs
from .records import (CSV_COLUMNS, BatchError, LockedError, OutputLock, Pending, Record, RecordWriter, Summary,
                      pending, record)  # fmt: skip

__all__ = ["BacklogError", "BatchError", "LockedError", "Item", "Summary", "OutputLock", "count_inputs",
           "read_inputs", "run_batch", "tag_items", "tag_records", "CSV_COLUMNS"]

FORMATS = ("jsonl", "csv")  # record formats; the export formats (formats.EXPORT_FORMATS) are written from jsonl
MAX_BATCH_CHARS = 4_000_000  # a micro-batch also ends when its documents hold this much text


# ---------------------------------------------------------------- the run
def single_threaded_blas():
    """Scoring does thousands of small matrix products; multi-threaded OpenBLAS makes each one wait for its
    threads (3x slower per document on a busy 2-core machine). The encoder has its own thread pool (ONNX
    Runtime, torch's OpenMP), so this does not slow it down."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _tag(tagger, raws: list, *, top_k: int, min_score: float, anything_done: bool,
         embedded: Future | None = None) -> list:  # fmt: skip
    """One result per raw (an Article or an exception). ``embedded``: the texts' ``embed_articles``, when
    it was started earlier. A crash inside the tagger is isolated to its document, unless every document
    fails before anything ever succeeded: then it is not the documents."""
    texts = [r for r in raws if isinstance(r, str)]
    try:
        if embedded is not None:
            results = tagger.suggest_embedded(embedded.result(), top_k=top_k, min_score=min_score)
        else:
            results = tagger.suggest_articles(texts, top_k=top_k, min_score=min_score) if texts else []
    except Exception as batch_error:  # noqa: BLE001 - retried one by one below
        results = []
        for t in texts:
            try:
                results.extend(tagger.suggest_articles([t], top_k=top_k, min_score=min_score))
            except Exception as err:  # noqa: BLE001
                results.append(textmod.InputError(f"internal error: {type(err).__name__}: {err}"))
        if not anything_done and all(isinstance(r, Exception) for r in results):
            raise batch_error
    it = iter(results)
    return [next(it) if isinstance(r, str) else r for r in raws]


def tag_records(tagger, docs: Sequence[Pending], *, fmt: str, top_k: int, min_score: float,
                anything_done: bool, embedded: Future | None = None) -> list[Record]:  # fmt: skip
    """Tag one micro-batch (one encoder call) and return each document's record, in order."""
    raws = [d.raw for d in docs]
    results = _tag(tagger, raws, top_k=top_k, min_score=min_score, anything_done=anything_done,
                   embedded=embedded)  # fmt: skip
    return [Record(d.id, isinstance(r, Exception), record(d.id, d.source, r, fmt)) for d, r in zip(docs, results)]


def micro_batches(docs: Iterable[Pending], batch_size: int, *,
                  key: Callable[[str], int] | None = None) -> Iterator[list[Pending]]:  # fmt: skip
    """Group documents into batches of ``batch_size``, or fewer holding MAX_BATCH_CHARS of text. With ``key``
    every batch holds the documents of one ``key(id)`` only, and the part-filled ones come last."""
    open_batches: dict[int, list[Pending]] = {}
    chars: dict[int, int] = {}
    for doc in docs:
        k = key(doc.id) if key else 0
        batch = open_batches.setdefault(k, [])
        batch.append(doc)
        chars[k] = chars.get(k, 0) + (len(doc.raw) if isinstance(doc.raw, str) else 0)
        if len(batch) >= batch_size or chars[k] >= MAX_BATCH_CHARS:
            del chars[k]
            yield open_batches.pop(k)
    for k in sorted(open_batches):
        yield open_batches[k]


def embedded_ahead(batches: Iterable[list[Pending]], get_tagger: Callable[[], object],
                   ) -> Iterator[tuple[list[Pending], Future]]:  # fmt: skip
    """Each micro-batch with its texts' ``embed_articles`` running on a worker thread, started one batch
    ahead: the encoder works on the next batch while the caller scores this one (both release the
    interpreter lock for most of their time). ``get_tagger()`` is called once there is a batch."""
    with ThreadPoolExecutor(1, thread_name_prefix="embed") as pool:
        ahead = None
        for batch in batches:
            texts = [d.raw for d in batch if isinstance(d.raw, str)]
            started = pool.submit(get_tagger().embed_articles, texts)
            if ahead:
                yield ahead
            ahead = batch, started
        if ahead:
            yield ahead


def open_input(input: Path, *, fmt: str, id_field: str = "id", text_field: str = "text",
               max_bytes: int = textmod.DEFAULT_MAX_BYTES) -> Iterator[Item]:  # fmt: skip
    """The documents of ``input`` for a run writing ``fmt`` records (raises BatchError for an unknown one)."""
    if fmt not in FORMATS:
        raise BatchError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return read_inputs(input, id_field=id_field, text_field=text_field, max_bytes=max_bytes)


def run_batch(input: Path, out: Path, *, tagger=None, load_tagger: Callable[[], object] | None = None,
              fmt: str = "jsonl", top_k: int = 10, min_score: float = 0.0, id_field: str = "id",
              text_field: str = "text", max_bytes: int = textmod.DEFAULT_MAX_BYTES, batch_size: int = 32,
              progress: Callable[[Summary], None] | None = None) -> Summary:  # fmt: skip
    """Tag every document of ``input`` not yet in ``out`` and append its record; return the counts.

    ``load_tagger`` (instead of ``tagger``) is called only once a document needs tagging. Raises BacklogError
    (INPUT), BatchError (OUT) or LockedError when they cannot be used; bad documents become error records.
    """
    items = open_input(input, fmt=fmt, id_field=id_field, text_field=text_field, max_bytes=max_bytes)
    return tag_items(items, out, tagger=tagger, load_tagger=load_tagger, fmt=fmt, top_k=top_k, min_score=min_score,
                     batch_size=batch_size, progress=progress)  # fmt: skip


def tag_items(items: Iterable[Item], out: Path, *, tagger=None, load_tagger=None, fmt: str = "jsonl",
              top_k: int = 10, min_score: float = 0.0, batch_size: int = 32,
              progress: Callable[[Summary], None] | None = None) -> Summary:  # fmt: skip
    """run_batch() over any iterable of Items."""
    summary, started = Summary(), time.perf_counter()
    the_tagger = functools.cache(load_tagger) if tagger is None else lambda: tagger
    with RecordWriter(out, fmt, summary) as writer, single_threaded_blas():
        resumed = bool(writer.done)
        batches = micro_batches(pending(items, writer.done, summary, progress), batch_size)
        for batch, embedded in embedded_ahead(batches, the_tagger):
            anything_done = bool(summary.succeeded) or resumed
            writer.write(tag_records(the_tagger(), batch, fmt=fmt, top_k=top_k, min_score=min_score,
                                     anything_done=anything_done, embedded=embedded))  # fmt: skip
            summary.seconds = time.perf_counter() - started
            if progress:
                progress(summary)
    summary.seconds = time.perf_counter() - started
    if progress:
        progress(summary)
    return summary


# ---------------------------------------------------------------- exports of a finished run
def records_path(out: Path, fmt: str) -> Path:
    """Where a run's resumable records go: OUT itself for jsonl/csv, OUT.records.jsonl for an export format."""
    from .formats import EXPORT_FORMATS

    return out.with_name(out.name + ".records.jsonl") if fmt in EXPORT_FORMATS else out


def write_export(records: Path, out: Path, fmt: str, techniques_by_id, *, name: str, min_score: float = 0.0,
                 disarm_objects=None) -> list[str]:  # fmt: skip
    """Write the export of a finished run's records to ``out`` atomically (a temporary file, then a rename);
    return its warnings (what the consumer will not get)."""
    from .formats import export_batch

    result = export_batch(records, fmt, techniques_by_id, name=name, min_score=min_score,
                          disarm_objects=disarm_objects)  # fmt: skip
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(result.text, encoding="utf-8")
    os.replace(tmp, out)
    return result.warnings
