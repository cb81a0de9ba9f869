"""Tag a backlog: stream documents (see backlog.py) and append one record per id to OUT.

Streaming: inputs are read lazily and tagged in micro-batches (one encoder call per batch), so memory is
bounded by a batch, not by the backlog. Resumable and exact: ids already in OUT are skipped, a torn record
left by a killed run is cut away before appending, each record is written whole with one write and flushed
(fsync after every batch), and ``OUT.lock`` stops two runs from writing one OUT. A bad document becomes an
error record and the run goes on. Library only: nothing here prints or exits.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import render
from . import text as textmod
from .backlog import BacklogError, Item, count_inputs, csv_field_limit, read_inputs

__all__ = ["BacklogError", "BatchError", "LockedError", "Item", "Summary", "OutputLock", "count_inputs",
           "read_inputs", "run_batch", "tag_items"]

CSV_COLUMNS = ("id", "source", "rank", "technique_id", "name", "tactic_id", "tactic", "score", "evidence", "error")
FORMATS = ("jsonl", "csv")  # record formats; the export formats (formats.EXPORT_FORMATS) are written from jsonl
MAX_BATCH_CHARS = 4_000_000  # a micro-batch also ends when its documents hold this much text


class BatchError(BacklogError):
    """OUT cannot be used (not a batch output, or locked); one line for the user. Bad documents are not this."""


class LockedError(BatchError):
    """Another live run holds OUT.lock."""


@dataclass
class Summary:
    succeeded: int = 0
    errors: int = 0
    skipped: int = 0  # ids already in OUT
    duplicates: list[str] = field(default_factory=list)  # ids seen again in the input: not written again
    notes: list[str] = field(default_factory=list)  # repairs and lock take-overs, for the user
    seconds: float = 0.0

    @property
    def processed(self) -> int:
        return self.succeeded + self.errors

    @property
    def seen(self) -> int:
        return self.processed + self.skipped + len(self.duplicates)

    @property
    def docs_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0


# ---------------------------------------------------------------- OUT: lock, resume scan, records
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """``OUT.lock`` holding the pid of the run writing OUT: flock'ed while held (the kernel drops it when the
    process dies, even by SIGKILL), and a pid of a live process in it is respected too."""

    def __init__(self, out: Path):
        self.path = Path(f"{out}.lock")
        self.notes: list[str] = []
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                os.close(fd)
                message = f"process {holder or '?'}, {self.path}"
                raise LockedError(f"{self.path.with_suffix('')} is being written by another batch run ({message}); "
                                  "wait for it to finish") from None  # fmt: skip
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if not current:  # the previous holder removed the file between our open and flock: retry
                os.close(fd)
                continue
            content = os.pread(fd, 64, 0).decode(errors="replace").strip()
            if content.isdigit() and _pid_alive(int(content)):
                os.close(fd)
                raise LockedError(f"{self.path} names process {content}, which is running; if it is not a batch "
                                  f"run on this output, delete {self.path}")  # fmt: skip
            if content:
                self.notes.append(f"took over the stale lock {self.path} (process {content} is not running)")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
            self._fd = fd
            return self
        raise LockedError(f"{self.path}: could not take the lock (other runs keep replacing it)")

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding the flock
            os.close(self._fd)
            self._fd = None


def _scan_jsonl(path: Path) -> tuple[set[str], int, str | None]:
    """(ids in OUT, bytes to keep, note). Only the last line may be torn or invalid; it is cut away."""
    done: set[str] = set()
    offset, bad = 0, None
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if bad is not None:
                raise BatchError(f"{path}:{bad[0]}: not a batch record; refusing to append to this file")
            try:
                record = json.loads(line) if line.endswith(b"\n") else None
                ident = record["id"] if record is not None else None
            except (ValueError, TypeError, KeyError):
                ident = None
            if ident is None and line.strip():
                bad = (n, offset, len(line))
            elif ident is not None:
                done.add(ident)
            offset += len(line)
    if bad is None:
        return done, offset, None
    return done, bad[1], f"cut a torn last record ({bad[2]:,} bytes at line {bad[0]}) from {path}; it is redone"


def _scan_csv(path: Path) -> tuple[set[str], int, str | None]:
    """(ids in OUT, bytes to keep, note). The rows of the last id are always cut and redone: a killed write
    may have stopped at a row boundary inside that id's group, which no check could tell apart."""
    done: set[str] = set()
    pos, complete = [0], [True]

    def lines():
        with path.open("rb") as fh:
            for line in fh:
                pos[0] += len(line)
                complete[0] = line.endswith(b"\n")
                yield line.decode("utf-8", "replace")

    old = csv_field_limit()
    reader = csv.reader(lines())
    header_end, run_start, good_end, last, torn = 0, 0, 0, None, False
    try:
        for row in reader:
            if not complete[0]:
                torn = True
                break
            if not row:
                continue
            if not header_end:
                if tuple(row) != CSV_COLUMNS:
                    raise BatchError(f"{path}: not a batch CSV (header {row[:4]}...); refusing to append to it")
                header_end = run_start = good_end = pos[0]
                continue
            if row[0] != last:
                if last is not None:
                    done.add(last)
                last, run_start = row[0], good_end
            good_end = pos[0]
    except csv.Error:
        torn = True
    finally:
        csv.field_size_limit(old)
    keep = run_start if last is not None else header_end
    note = f"cut a torn last record ({pos[0] - keep:,} bytes) from {path}; it is redone" if torn else None
    return done, keep, note


def _record(item: Item, result, fmt: str) -> bytes:
    if fmt == "jsonl":
        rec: dict = {"id": item.id, "source": item.source}
        if isinstance(result, Exception):
            rec["error"] = str(result)
        else:
            rec["suggestions"] = [render.suggestion_record(s) for s in result.suggestions]
            if result.warnings:
                rec["warnings"] = list(result.warnings)
        return (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if isinstance(result, Exception) or not result.suggestions:
        error = str(result) if isinstance(result, Exception) else ""
        writer.writerow([item.id, item.source, "", "", "", "", "", "", "", error])
    else:
        for s in result.suggestions:
            evidence = s.evidence[0].text if s.evidence else ""
            writer.writerow([item.id, item.source, s.rank, s.technique_id, s.name, s.tactic_id, s.tactic, s.score,
                             evidence, ""])  # fmt: skip
    return buffer.getvalue().encode("utf-8")


# ---------------------------------------------------------------- the run
def _single_threaded_blas():
    """Scoring does thousands of small matrix products; multi-threaded OpenBLAS makes each one wait for its
    threads (3x slower per document on a busy 2-core machine). The encoder has its own thread pool (ONNX
    Runtime, torch's OpenMP), so this does not slow it down."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _tag(tagger, raws: list, *, top_k: int, min_score: float, anything_done: bool) -> list:
    """One result per raw (an Article or an exception). A crash inside the tagger is isolated to its
    document, unless every document fails before anything ever succeeded: then it is not the documents."""
    texts = [r for r in raws if isinstance(r, str)]
    try:
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


def run_batch(input: Path, out: Path, *, tagger=None, load_tagger: Callable[[], object] | None = None,
              fmt: str = "jsonl", top_k: int = 10, min_score: float = 0.0, id_field: str = "id",
              text_field: str = "text", max_bytes: int = textmod.DEFAULT_MAX_BYTES, batch_size: int = 32,
              progress: Callable[[Summary], None] | None = None) -> Summary:  # fmt: skip
    """Tag every document of ``input`` not yet in ``out`` and append its record; return the counts.

    ``load_tagger`` (instead of ``tagger``) is called only once a document needs tagging. Raises BacklogError
    (INPUT), BatchError (OUT) or LockedError when they cannot be used; bad documents become error records.
    """
    if fmt not in FORMATS:
        raise BatchError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    items = read_inputs(input, id_field=id_field, text_field=text_field, max_bytes=max_bytes)
    return tag_items(items, out, tagger=tagger, load_tagger=load_tagger, fmt=fmt, top_k=top_k, min_score=min_score,
                     batch_size=batch_size, progress=progress)  # fmt: skip


def tag_items(items: Iterable[Item], out: Path, *, tagger=None, load_tagger=None, fmt: str = "jsonl",
              top_k: int = 10, min_score: float = 0.0, batch_size: int = 32,
              progress: Callable[[Summary], None] | None = None) -> Summary:  # fmt: skip
    """run_batch() over any iterable of Items."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary, started = Summary(), time.perf_counter()
    with OutputLock(out) as lock, _single_threaded_blas():
        summary.notes += lock.notes
        done: set[str] = set()
        if out.exists() and out.stat().st_size:
            done, keep, note = (_scan_csv if fmt == "csv" else _scan_jsonl)(out)
            if keep < out.stat().st_size:
                os.truncate(out, keep)
            if note:
                summary.notes.append(note)
        seen: set[str] = set()
        batch: list[tuple[Item, object]] = []
        with out.open("ab") as fh:
            if fmt == "csv" and fh.tell() == 0:
                fh.write(_record_header())
                fh.flush()

            def flush() -> None:
                nonlocal tagger
                if tagger is None:
                    tagger = load_tagger()
                results = _tag(tagger, [raw for _i, raw in batch], top_k=top_k, min_score=min_score,
                               anything_done=bool(summary.succeeded or done))  # fmt: skip
                for (item, _raw), result in zip(batch, results):
                    fh.write(_record(item, result, fmt))  # one write per record, then flush: never half a line
                    fh.flush()
                    if isinstance(result, Exception):
                        summary.errors += 1
                    else:
                        summary.succeeded += 1
                os.fsync(fh.fileno())
                batch.clear()
                summary.seconds = time.perf_counter() - started
                if progress:
                    progress(summary)

            chars = 0
            for item in items:
                if item.id in seen:
                    summary.duplicates.append(item.id)
                    continue
                seen.add(item.id)
                if item.id in done:
                    summary.skipped += 1
                    if progress and summary.skipped % 256 == 0:
                        progress(summary)
                    continue
                try:
                    raw = item.load()
                except textmod.InputError as err:
                    raw = err
                batch.append((item, raw))
                chars += len(raw) if isinstance(raw, str) else 0
                if len(batch) >= batch_size or chars >= MAX_BATCH_CHARS:
                    flush()
                    chars = 0
            if batch:
                flush()
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


def _record_header() -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(CSV_COLUMNS)
    return buffer.getvalue().encode("utf-8")
