"""OUT, the records file of a batch run, written exactly once per id whichever engine tags the documents.

``RecordWriter`` takes ``OUT.lock`` (two runs never write one OUT), reads the ids OUT already holds (a re-run
skips them), cuts a torn last record left by a killed run, and appends whole records: one write per record,
flushed, and an fsync per batch of records. ``pending`` turns the input into the documents still to tag.
Library only: nothing here prints or exits.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from . import render
from . import text as textmod
from .backlog import BacklogError, Item, csv_field_limit

CSV_COLUMNS = ("id", "source", "rank", "technique_id", "name", "tactic_id", "tactic", "score", "evidence", "error")


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


def record(ident: str, source: str, result, fmt: str) -> bytes:
    """One document's record in ``fmt`` (jsonl: one line; csv: one row per suggestion), from its Article or
    exception."""
    if fmt == "jsonl":
        rec: dict = {"id": ident, "source": source}
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
        writer.writerow([ident, source, "", "", "", "", "", "", "", error])
    else:
        for s in result.suggestions:
            evidence = s.evidence[0].text if s.evidence else ""
            writer.writerow([ident, source, s.rank, s.technique_id, s.name, s.tactic_id, s.tactic, s.score,
                             evidence, ""])  # fmt: skip
    return buffer.getvalue().encode("utf-8")


class Pending(NamedTuple):
    """A document still to tag: its id, where it came from, and its text (or why it cannot be read)."""

    id: str
    source: str
    raw: str | textmod.InputError


class Record(NamedTuple):
    """A document's record, ready to append: ``data`` holds the whole record (all its CSV rows)."""

    id: str
    error: bool
    data: bytes


def pending(items: Iterable[Item], done: set[str], summary: Summary,
            progress: Callable[[Summary], None] | None = None) -> Iterator[Pending]:  # fmt: skip
    """The documents of ``items`` not in ``done``, each id once, texts loaded; repeats and skipped ids are
    counted in ``summary``."""
    seen: set[str] = set()
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
        yield Pending(item.id, item.source, raw)


class RecordWriter:
    """OUT held for appending. Entering takes the lock, fills ``done`` with the ids OUT holds and cuts a torn
    last record; ``write`` appends records, never one for an id OUT already has, and counts them in ``summary``."""

    def __init__(self, out: Path, fmt: str, summary: Summary):
        self.out, self.fmt, self.summary = Path(out), fmt, summary
        self.done: set[str] = set()
        self._lock = OutputLock(self.out)
        self._fh = None

    def __enter__(self) -> RecordWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock.__enter__()
        try:
            self.summary.notes += self._lock.notes
            if self.out.exists() and self.out.stat().st_size:
                self.done, keep, note = (_scan_csv if self.fmt == "csv" else _scan_jsonl)(self.out)
                if keep < self.out.stat().st_size:
                    os.truncate(self.out, keep)
                if note:
                    self.summary.notes.append(note)
            self._fh = self.out.open("ab")
            if self.fmt == "csv" and self._fh.tell() == 0:
                self._fh.write(_record_header())
                self._fh.flush()
        except BaseException:
            self.__exit__()
            raise
        return self

    def write(self, records: Iterable[Record]) -> None:
        for rec in records:
            if rec.id in self.done:  # an engine handed an id back twice: OUT keeps the first
                self.summary.notes.append(f"dropped a second record for {rec.id!r}")
                continue
            self._fh.write(rec.data)  # one write per record, then flush: never half a line
            self._fh.flush()
            self.done.add(rec.id)
            if rec.error:
                self.summary.errors += 1
            else:
                self.summary.succeeded += 1
        os.fsync(self._fh.fileno())

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._lock.__exit__()


def _record_header() -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(CSV_COLUMNS)
    return buffer.getvalue().encode("utf-8")
