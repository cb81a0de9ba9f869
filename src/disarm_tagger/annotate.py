"""The analyst feedback loop: confirmed labels for an article go to training_data/annotations.jsonl.

``disarm-tagger import-disarm`` never writes that file and ``train`` merges it (corpus.load_corpus), so a
confirmed annotation shapes the next model. One record per text: annotating the same text again
replaces its labels. Writers are serialised by an flock on ``annotations.jsonl.lock`` held over the whole
read-modify-write, so concurrent annotate processes (or server requests) never drop each other's updates.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from . import corpus, text
from .disarm import passage_key
from .schema import Example, Technique, to_dict


LOCK_SUFFIX = ".lock"  # annotations.jsonl.lock, beside the file it guards
LOCK_TIMEOUT = 30.0  # seconds to wait for another writer; a write takes milliseconds


class AnnotationError(ValueError):
    """Labels that are not DISARM technique ids of the catalogue, or no labels at all."""


class AnnotationBusyError(AnnotationError):
    """Another writer held the annotations lock for longer than LOCK_TIMEOUT."""


@dataclass(frozen=True)
class Annotation:
    example: Example
    path: Path
    previous_labels: tuple[str, ...] | None  # None: a new record; else the labels it replaced
    record: dict  # the line written to annotations.jsonl


def parse_labels(labels: str | list[str]) -> tuple[str, ...]:
    """Comma or space separated ids, upper-cased, duplicates dropped, sorted.

    >>> parse_labels("t0086.002, T0151.004 T0086.002")
    ('T0086.002', 'T0151.004')
    """
    items = labels.split(",") if isinstance(labels, str) else labels
    return tuple(sorted({p.upper() for item in items for p in re.split(r"[\s,]+", item) if p}))


def check_labels(labels: tuple[str, ...], techniques: list[Technique], where: str = "the catalogue") -> None:
    if not labels:
        raise AnnotationError("no labels given (e.g. --labels T0086.002,T0151.004)")
    known = {t.id for t in techniques}
    unknown = [lab for lab in labels if lab not in known]
    if unknown:
        listing = ", ".join(unknown)
        raise AnnotationError(f"unknown technique id(s): {listing} (not one of the {len(known)} in {where})")


def login_name() -> str:
    """The login name to record as annotator, or "" where there is none (a bare container)."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


def text_id(article_text: str) -> str:
    """``LOCAL-`` and the first 8 hex digits of the text's sha256."""
    return "LOCAL-" + hashlib.sha256(article_text.encode("utf-8")).hexdigest()[:8]


def annotate(
    raw: str,
    labels: str | list[str],
    *,
    data: Path,
    source: str = "",
    incident_id: str = "",
    note: str = "",
    annotator: str = "",
    today: date | None = None,
) -> Annotation:
    """Record analyst-confirmed ``labels`` for the article in ``raw`` (text, markdown or HTML) in
    ``data``/annotations.jsonl. Raises AnnotationError, text.InputError or corpus.CorpusError."""
    data = Path(data)
    wanted = parse_labels(labels)
    catalogue = data / corpus.TECHNIQUES
    check_labels(wanted, corpus.read_jsonl(catalogue, Technique), str(catalogue))
    doc = text.prepare(raw)  # the text suggest and serve score: the same extraction
    title, article = doc.title, doc.text
    ex_id = text_id(article)
    example = Example(
        id=ex_id,
        incident_id=incident_id or _imported_incident(data, article) or ex_id,
        incident_name=title or f"local annotation {ex_id}",
        text=article,
        labels=wanted,
        source_url=source if re.match(r"https?://", source) else "",
        origin="local",
        annotated_at=(today or date.today()).isoformat(),
        annotator=annotator,
    )
    record = to_dict(example) | {"source": source, "note": note}  # extra keys: kept, ignored by the reader
    path = data / corpus.ANNOTATIONS
    with locked(path.with_name(path.name + LOCK_SUFFIX)):
        records = _read_records(path)
        previous = next((r for r in records if r.get("id") == ex_id), None)
        if previous is None:
            with open(path, "a", encoding="utf-8", newline="\n") as fh:
                fh.write(corpus.dumps_line(record))
                fh.flush()
                os.fsync(fh.fileno())
            return Annotation(example, path, None, record)
        _write_atomically(path, [record if r.get("id") == ex_id else r for r in records])
    return Annotation(example, path, tuple(previous.get("labels", ())), record)


@contextlib.contextmanager
def locked(lock_path: Path, *, timeout: float = LOCK_TIMEOUT):
    """Hold an exclusive flock on ``lock_path`` (created if needed and never removed, so every writer locks
    the same inode). flock excludes other processes and other open()s in this process alike; the kernel
    releases it when the holder dies. Raises AnnotationBusyError after ``timeout`` seconds of waiting."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AnnotationBusyError(f"{lock_path}: another writer has held it for over {timeout:.0f}s; "
                                              "try again") from None  # fmt: skip
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def _imported_incident(data: Path, article: str) -> str:
    """The incident of an imported passage equal to ``article`` (as corpus.merge_examples compares them):
    the annotation replaces that passage at train time and must stay in its incident's CV group."""
    key = passage_key(article)
    path = data / corpus.EXAMPLES
    imported = corpus.read_jsonl(path, Example) if path.exists() else []
    return next((e.incident_id for e in imported if passage_key(e.text) == key), "")


def _read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        try:
            return [json.loads(line) for line in fh if line.strip()]
        except json.JSONDecodeError as exc:
            raise corpus.CorpusError(f"{path}: not valid JSONL ({exc})") from exc


def _write_atomically(path: Path, records: list[dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.writelines(corpus.dumps_line(r) for r in records)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
