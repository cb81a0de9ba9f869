"""Read a backlog lazily: the documents of a folder, a JSONL file or a CSV file, one ``Item`` at a time.

Nothing is read before it is needed: a folder is walked (sorted, so every run sees the same order), files
are read line by line, and an Item's text is loaded only when ``Item.load()`` is called, so ids already
done cost nothing. A record that cannot be used becomes an Item whose ``load`` raises text.InputError
with the reason; only an unusable INPUT as a whole raises BacklogError.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from . import text as textmod

SUFFIXES = frozenset({".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx"})


class BacklogError(RuntimeError):
    """The input as a whole cannot be read (missing, unknown kind, CSV without the columns)."""


@dataclass(frozen=True)
class Item:
    """One input document: its id, where it came from, and how to read it (``load`` raises InputError)."""

    id: str
    source: str
    load: Callable[[], str]


def _clean(value: str) -> str:
    """Undecodable bytes (surrogate escapes) -> U+FFFD, so ids and sources always encode as UTF-8."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _raise(message: str) -> str:
    raise textmod.InputError(message)


def _checked(value, source: str, name: str, max_bytes: int) -> str:
    if not isinstance(value, str):
        what = "no" if value is None else "a non-text"
        raise textmod.InputError(f"{source}: {what} {name!r} field")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise textmod.InputError(f"{source}: not valid UTF-8 at character {err.start:,}") from None
    return textmod.decode_bytes(data, source=source, max_bytes=max_bytes)


def _item(ident, source: str, fallback: str, load: Callable[[], str]) -> Item:
    if isinstance(ident, str) and ident:
        return Item(_clean(ident), source, load)
    if isinstance(ident, int) and not isinstance(ident, bool):
        return Item(str(ident), source, load)
    return Item(fallback, source, partial(_raise, f"{source}: no usable id"))


def _walk(root: Path, max_bytes: int) -> Iterator[Item]:
    problems: list[OSError] = []
    for folder, dirs, files in os.walk(root, onerror=problems.append):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for err in problems:
            rel = _clean(Path(err.filename or folder).relative_to(root).as_posix())
            reason = f"{err.filename}: cannot list it ({err.strerror})"
            yield Item(rel, _clean(str(err.filename)), partial(_raise, reason))
        problems.clear()
        for name in sorted(files):
            path = Path(folder, name)
            suffix = path.suffix.lower()
            if name.startswith(".") or suffix not in SUFFIXES:
                continue
            ident, source = _clean(path.relative_to(root).as_posix()), _clean(str(path))
            yield Item(ident, source, partial(textmod.read_path, path, max_bytes=max_bytes))


def _jsonl(path: Path, id_field: str, text_field: str, max_bytes: int) -> Iterator[Item]:
    limit = 6 * max_bytes + 4096  # JSON escapes can make a record up to six times its text
    with path.open("rb") as fh:
        n = 0
        while line := fh.readline(limit):
            n += 1
            source = f"{path}:{n}"
            if len(line) == limit and not line.endswith(b"\n"):
                while (rest := fh.readline(limit)) and not rest.endswith(b"\n"):
                    pass
                reason = f"{source}: record over {limit:,} bytes (--max-bytes)"
                yield Item(f"<line {n}>", source, partial(_raise, reason))
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8", "surrogateescape"))
            except ValueError as err:
                yield Item(f"<line {n}>", source, partial(_raise, f"{source}: not valid JSON ({err})"))
                continue
            if not isinstance(record, dict):
                yield Item(f"<line {n}>", source, partial(_raise, f"{source}: not a JSON object"))
                continue
            load = partial(_checked, record.get(text_field), source, text_field, max_bytes)
            yield _item(record.get(id_field), source, f"<line {n}>", load)


def csv_field_limit() -> int:
    old = csv.field_size_limit()
    try:
        csv.field_size_limit(sys.maxsize)
    except OverflowError:  # a C long is 32 bits here
        csv.field_size_limit(2**31 - 1)
    return old


def _csv(path: Path, id_field: str, text_field: str, max_bytes: int) -> Iterator[Item]:
    old = csv_field_limit()
    try:
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            i, j = header.index(id_field), header.index(text_field)
            n = 0
            while True:
                n += 1
                source = f"{path}:record {n}"
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    yield Item(f"<record {n}>", source, partial(_raise, f"{source}: bad CSV ({err})"))
                    continue
                if not any(cell.strip() for cell in row):
                    n -= 1
                    continue
                if len(row) <= max(i, j):
                    yield Item(f"<record {n}>", source, partial(_raise, f"{source}: {len(row)} columns, expected "
                                                                  f"{len(header)}"))  # fmt: skip
                    continue
                load = partial(_checked, row[j], source, text_field, max_bytes)
                yield _item(row[i], source, f"<record {n}>", load)
    finally:
        csv.field_size_limit(old)


def read_inputs(path: Path, *, id_field: str = "id", text_field: str = "text",
                max_bytes: int = textmod.DEFAULT_MAX_BYTES) -> Iterator[Item]:  # fmt: skip
    """Lazily yield the documents of a folder (recursive, sorted), a .jsonl/.ndjson file or a .csv file."""
    path = Path(path)
    if path.is_dir():
        return _walk(path, max_bytes)
    if not path.is_file():
        raise BacklogError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _jsonl(path, id_field, text_field, max_bytes)
    if suffix == ".csv":
        old = csv_field_limit()
        try:
            with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
                header = next(csv.reader(fh), [])
        except (OSError, csv.Error) as err:
            raise BacklogError(f"{path}: cannot read the CSV header ({err})") from None
        finally:
            csv.field_size_limit(old)
        missing = [f for f in (id_field, text_field) if f not in header]
        if missing:
            names = ", ".join(map(repr, missing))
            raise BacklogError(f"{path}: no column {names} in the CSV header (see --id-field, --text-field)")
        return _csv(path, id_field, text_field, max_bytes)
    raise BacklogError(f"{path}: expected a folder, a .jsonl file or a .csv file")


def count_inputs(path: Path, *, id_field: str = "id", text_field: str = "text") -> int:
    """How many documents read_inputs() will yield (JSONL: its non-empty line count), without reading them."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        count, last = 0, b"\n"
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                count += block.count(b"\n") - block.count(b"\n\n")
                last = block[-1:]
        return count + (last != b"\n")
    return sum(1 for _ in read_inputs(path, id_field=id_field, text_field=text_field))
