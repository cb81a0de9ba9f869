"""DISARM framework pages -> Phases, Tactics, Techniques and Examples. No ML imports here.

Reads a DISARMframeworks checkout (``generated_pages/`` and the STIX bundle, see ``STIX_BUNDLES``). Incident
pages hold a table whose rows quote a source passage in italics followed by analyst commentary naming
technique ids. Only the italic passage becomes example text; the row's technique plus every id the
commentary names become its labels.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .schema import Example, Phase, Tactic, Technique


class DisarmFormatError(ValueError):
    """The checkout or a page does not look like DISARM's generated markdown."""


# T0097.109, T0097:109, T00145.006 (stray zero), T0097. 109 -> normalised by normalise_id()
ID_PATTERN = re.compile(r"\bT\s?(\d{4,5})(?:\s?[.:]\s?(\d{3}))?(?!\d)")
_HEADER = re.compile(r"^#\s+(Technique|Tactic|Phase|Incident)\s+([A-Z]+\d+(?:\.\d+)?):\s*(.*?)\s*$", re.M)
_ITALIC_TAG = re.compile(r"</?\s*i\s*>", re.I)
_MD_ITALIC = re.compile(r"(?<![\w])_(?=[\"“”'‘’\[])(.+?)(?<=\S)_(?![\w])", re.S)
# "(T0146: Account Asset, T0150.001: Newly Created Asset)", names may hold one level of parentheses
_ID_PARENTHETICAL = re.compile(r"\s*\((?:[^()]|\([^()]*\))*?\bT\s?\d{4,5}\b(?:[^()]|\([^()]*\))*\)")
_BR = re.compile(r"<\s*br\s*/?\s*>", re.I)
_TAG = re.compile(r"<[^>]{0,200}>")
_LINK = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")
_URL = re.compile(r"https?://[^\s|)\]]+")


def normalise_id(raw: str) -> str | None:
    """Canonical form of a technique id as written, or None if it is not one.

    >>> normalise_id("T0097:109"), normalise_id("T00145.006"), normalise_id("T0086.002"), normalise_id("T12")
    ('T0097.109', 'T0145.006', 'T0086.002', None)
    """
    m = ID_PATTERN.fullmatch(raw.strip()) or ID_PATTERN.match(raw.strip())
    if not m:
        return None
    number = int(m.group(1))
    if number > 9999:
        return None
    base = f"T{number:04d}"
    return f"{base}.{m.group(2)}" if m.group(2) else base


def _field(text: str, label: str) -> str:
    m = re.search(rf"\*\*\s*{label}\s*:?\s*\*\*\s*:?\s*(.*?)\s*(?:<br|\n|$)", text, re.I)
    return m.group(1).strip() if m else ""


def _header(text: str, kind: str, path: Path) -> tuple[str, str]:
    for m in _HEADER.finditer(text):
        if m.group(1) == kind:
            return m.group(2), m.group(3)
    raise DisarmFormatError(f"{path}: no '# {kind} ID: name' header")


def _pages(root: Path, folder: str) -> list[Path]:
    pages = sorted((root / "generated_pages" / folder).glob("*.md"))
    if not pages:
        raise DisarmFormatError(f"{root}: no pages in generated_pages/{folder}/ (is this a DISARMframeworks checkout?)")
    return pages


def _table_rows(text: str, first_header: str) -> list[tuple[str, str]]:
    """(first cell, rest of row) for the rows of the table whose first header cell is ``first_header``.

    The rest of the row is kept whole, so a ``|`` inside a quoted passage does not split it.
    """
    rows: list[tuple[str, str]] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|") and re.match(rf"\|\s*{re.escape(first_header)}\s*\|", stripped):
            inside = True
            continue
        if not inside:
            continue
        if not stripped.startswith("|"):
            if rows or stripped:
                break
            continue
        if re.fullmatch(r"\|[\s|:-]*", stripped):
            continue
        m = re.match(r"\|\s*(\[[^\]]*\]\([^)]*\)|[^|]*?)\s*\|(.*)$", stripped)
        if m:
            rest = m.group(2).strip()
            rows.append((m.group(1), rest[:-1].rstrip() if rest.endswith("|") else rest))
    return rows


def read_phases(root: Path) -> list[Phase]:
    out = []
    for path in _pages(root, "phases"):
        text = path.read_text(encoding="utf-8")
        pid, name = _header(text, "Phase", path)
        out.append(Phase(id=pid, name=name, summary=_field(text, "Summary")))
    return out


# Where a checkout keeps DISARM's STIX 2.1 bundle: upstream's layout first, then older flat snapshots.
STIX_BUNDLES = ("generated_files/DISARM_STIX/DISARM.json", "generated_files/DISARM.json")


def stix_bundle_path(root: Path) -> Path | None:
    """The first of ``STIX_BUNDLES`` that exists in the checkout, or None."""
    return next((root / rel for rel in STIX_BUNDLES if (root / rel).is_file()), None)


def _stix_objects(path: Path | None) -> list[dict]:
    if path is None:
        return []
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("objects", [])
    except json.JSONDecodeError as exc:
        raise DisarmFormatError(f"{path}: not valid JSON ({exc})") from exc


def _external_id(obj: dict) -> str:
    for ref in obj.get("external_references", []):
        if ref.get("external_id"):
            return ref["external_id"]
    return ""


def disarm_stix_objects(stix: list[dict]) -> list[dict]:
    """DISARM's own STIX objects that an export may include, verbatim: every attack-pattern, after the
    identity and marking-definitions they reference (bundle order kept, so the same bundle gives the same list)."""
    patterns = [o for o in stix if o.get("type") == "attack-pattern"]
    refs = {ref for o in patterns for ref in (o.get("created_by_ref"), *o.get("object_marking_refs", ())) if ref}
    return [o for o in stix if o.get("id") in refs] + patterns


def read_tactics(root: Path, stix: list[dict] = ()) -> list[Tactic]:
    by_id = {_external_id(o): o for o in stix if o.get("type") == "x-mitre-tactic"}
    out = []
    for path in _pages(root, "tactics"):
        text = path.read_text(encoding="utf-8")
        tid, name = _header(text, "Tactic", path)
        obj = by_id.get(tid, {})
        shortname = obj.get("x_mitre_shortname") or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        out.append(
            Tactic(
                id=tid,
                name=name,
                summary=_field(text, "Summary"),
                phase_id=_field(text, "Belongs to phase"),
                shortname=shortname,
                stix_id=obj.get("id", ""),
            )
        )
    return out


def read_techniques(root: Path, tactics: list[Tactic], stix: list[dict] = ()) -> list[Technique]:
    stix_ids = {_external_id(o): o["id"] for o in stix if o.get("type") == "attack-pattern"}
    tactic_by_id = {t.id: t for t in tactics}
    out = []
    for path in _pages(root, "techniques"):
        text = path.read_text(encoding="utf-8")
        tid, name = _header(text, "Technique", path)
        tactic_field = _field(text, "Tactic")
        tactic_id = tactic_field.split()[0] if tactic_field else ""
        tactic = tactic_by_id.get(tactic_id)
        parent = _field(text, "Parent Technique")
        associated = [normalise_id(cell) for cell, _ in _table_rows(text, "Associated Technique")]
        out.append(
            Technique(
                id=tid,
                name=name,
                summary=clean_text(_field(text, "Summary")),
                tactic_id=tactic_id,
                tactic=tactic.name if tactic else tactic_field[len(tactic_id) :].strip(),
                phase_id=tactic.phase_id if tactic else "",
                parent_id=normalise_id(parent) if parent else None,
                associated=tuple(sorted({a for a in associated if a and a != tid})),
                stix_id=stix_ids.get(tid, ""),
            )
        )
    return sorted(out, key=lambda t: t.id)  # "T0014" before "T0014.001", whatever the file names sort as


# ---------------------------------------------------------------------------------------------- incidents


@dataclass
class ImportReport:
    """What the incident import repaired, dropped and counted; printed by the CLI."""

    rows: int = 0
    rows_without_passage: int = 0
    merged_duplicates: int = 0
    repaired: list[str] = field(default_factory=list)  # "I00077: T0097.003 -> T0097.102 (by name)"
    dropped: list[str] = field(default_factory=list)  # "I00108: T0999 (not in catalogue)"
    skipped_pages: list[str] = field(default_factory=list)  # incident pages without an id header


def _note(notes: list[str], note: str) -> None:
    if note not in notes:  # the same passage repeats across rows; report each repair once
        notes.append(note)


def split_passage(cell: str) -> tuple[str, str]:
    """Split a description cell into (quoted passage, analyst commentary).

    Italics are ``<i>``/``<I>`` tags (an opening tag met inside italics closes them) or, where a cell
    has no such tags, markdown ``_"…"_``. Passage pieces are joined with a blank line.

    >>> split_passage('<i>Quote one.</i> Comment (T0001: X). <I>Quote two.<i> More.')
    ('Quote one.\\n\\nQuote two.', 'Comment (T0001: X). More.')
    >>> split_passage('_"A quote."_ <br />Commentary (T0002).')
    ('"A quote."', '<br />Commentary (T0002).')
    """
    quoted: list[str] = []
    comment: list[str] = []
    if _ITALIC_TAG.search(cell):
        inside, pos = False, 0
        for m in _ITALIC_TAG.finditer(cell):
            (quoted if inside else comment).append(cell[pos : m.start()])
            is_close = m.group(0).replace(" ", "").startswith("</")
            if inside:
                inside = False  # any italic tag inside italics closes them
            elif not is_close:
                inside = True
            pos = m.end()
        tail = cell[pos:]
        if inside:  # never closed: the passage ends where the commentary starts naming ids
            first_id = ID_PATTERN.search(tail)
            cut = tail.rfind("<br", 0, first_id.start()) if first_id else -1
            cut = cut if cut > 0 else (len(tail) if not first_id else 0)
            quoted.append(tail[:cut])
            comment.append(tail[cut:])
        else:
            comment.append(tail)
    else:
        pos = 0
        for m in _MD_ITALIC.finditer(cell):
            comment.append(cell[pos : m.start()])
            quoted.append(m.group(1))
            pos = m.end()
        comment.append(cell[pos:])
    pieces = [p.strip() for p in quoted if p.strip()]
    return "\n\n".join(pieces), " ".join(c.strip() for c in comment if c.strip())


def clean_text(raw: str) -> str:
    """HTML fragment -> plain text: <br> to newlines, tags dropped, entities decoded, spaces folded.

    >>> clean_text('Line&nbsp;one<br>  <b>two</b><br /><br />[...]<br/>three')
    'Line one\\ntwo\\n\\n[...]\\nthree'
    """
    text = _BR.sub("\n", raw)
    text = _TAG.sub("", text)
    text = html.unescape(text).replace("\u00a0", " ")
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _name_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


def _unique_names(catalogue: dict[str, Technique]) -> dict[str, str]:
    """Normalised technique name -> id, for the names that belong to exactly one technique."""
    by_name: dict[str, list[str]] = {}
    for tech in catalogue.values():
        by_name.setdefault(_name_key(tech.name), []).append(tech.id)
    return {key: ids[0] for key, ids in by_name.items() if len(ids) == 1}


def resolve_ids(
    comment: str, catalogue: dict[str, Technique], where: str, report: ImportReport
) -> list[str]:
    """Technique ids named in commentary, repaired to catalogue ids where possible.

    An id that is not in the catalogue is mapped by the name written after it ("T0097.003: Journalist
    Persona") when that name belongs to exactly one technique; otherwise it is dropped and reported.
    """
    unique_names: dict[str, str] | None = None  # built only when an unknown id needs it
    found: list[str] = []
    for m in ID_PATTERN.finditer(comment):
        written = m.group(0)
        tid = normalise_id(written)
        if tid in catalogue:
            if written.replace(" ", "") != tid:
                _note(report.repaired, f"{where}: {written} -> {tid} (id form)")
            found.append(tid)
            continue
        after = _name_key(comment[m.end() : m.end() + 120].lstrip(" :-–"))
        unique_names = unique_names if unique_names is not None else _unique_names(catalogue)
        matches = [i for key, i in unique_names.items() if after == key or after.startswith(key + " ")]
        longest = max(matches, key=lambda i: len(catalogue[i].name), default=None)
        if longest:
            _note(report.repaired, f"{where}: {written} -> {longest} (by name)")
            found.append(longest)
        else:
            _note(report.dropped, f"{where}: {written} (not in catalogue, name not matched)")
    return found


def _incident_url(text: str) -> str:
    for first, _rest in _table_rows(text, "Reference"):
        link = _LINK.match(first)
        url = link.group(2) if link else (_URL.search(first).group(0) if _URL.search(first) else "")
        if url:
            return url
    return ""


def passage_key(text: str) -> str:
    """What makes two passages "the same": case and punctuation ignored. The importer merges repeated
    passages by it, and local annotations replace imported passages by it.

    >>> passage_key("“Fake  accounts”, they said.") == passage_key("fake accounts they said")
    True
    """
    return re.sub(r"\W+", " ", text.lower()).strip()


def read_examples(root: Path, techniques: list[Technique]) -> tuple[list[Example], ImportReport]:
    """One Example per unique quoted passage across all incident pages, labels merged."""
    catalogue = {t.id: t for t in techniques}
    report = ImportReport()
    merged: dict[str, dict] = {}
    for path in _pages(root, "incidents"):
        text = path.read_text(encoding="utf-8")
        try:
            incident_id, incident_name = _header(text, "Incident", path)
        except DisarmFormatError:
            report.skipped_pages.append(path.name)
            continue
        url = _incident_url(text)
        for first, cell in _table_rows(text, "Technique"):
            report.rows += 1
            where = f"{incident_id}"
            row_id = normalise_id(first.lstrip("[").split()[0]) if first else None
            quote_html, comment = split_passage(cell)
            passage = clean_text(quote_html)
            inline = _ID_PARENTHETICAL.findall(passage)
            if inline:  # analysts sometimes annotate inside the quote: that is commentary, not passage
                comment = " ".join([comment, *inline])
                passage = clean_text(_ID_PARENTHETICAL.sub("", passage).replace(" .", ".").replace(" ,", ","))
                note = f"{where}: moved {len(inline)} inline id annotation(s) from quote to labels"
                _note(report.repaired, note)
            if ID_PATTERN.search(passage):  # an id outside any parenthesis: drop the ids, keep the words
                passage = clean_text(ID_PATTERN.sub("", passage))
            if not passage:
                report.rows_without_passage += 1
                continue
            labels = resolve_ids(comment, catalogue, where, report)
            if row_id in catalogue:
                labels.insert(0, row_id)
            elif first:
                labels.extend(resolve_ids(first, catalogue, where, report))
            key = passage_key(passage)
            if key in merged:  # keep the smallest (incident, text) so page and row order do not matter
                report.merged_duplicates += 1
                rec = merged[key]
                rec["labels"].update(labels)
                if (incident_id, passage) < (rec["incident_id"], rec["text"]):
                    rec.update(incident_id=incident_id, incident_name=incident_name, text=passage, source_url=url)
                continue
            merged[key] = {
                "incident_id": incident_id,
                "incident_name": incident_name,
                "text": passage,
                "labels": set(labels),
                "source_url": url,
            }
    examples = []
    for key, rec in merged.items():
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:10]
        if not rec["labels"]:
            report.dropped.append(f"{rec['incident_id']}: passage {digest} has no valid label")
            continue
        examples.append(
            Example(
                id=f"{rec['incident_id']}-{digest}",
                incident_id=rec["incident_id"],
                incident_name=rec["incident_name"],
                text=rec["text"],
                labels=tuple(sorted(rec["labels"])),
                source_url=rec["source_url"],
            )
        )
    examples.sort(key=lambda e: e.id)
    return examples, report


@dataclass(frozen=True)
class Framework:
    phases: list[Phase]
    tactics: list[Tactic]
    techniques: list[Technique]
    stix_bundle: str | None = None  # the bundle's path inside the checkout; None: read with require_stix=False
    stix_objects: list[dict] = field(default_factory=list)  # disarm_stix_objects() of the bundle, verbatim


def read_framework(root: Path, *, require_stix: bool = True) -> Framework:
    """Phases, tactics and techniques of a checkout. Without a STIX bundle the techniques carry no DISARM
    STIX ids, which the exports need: that is an error unless ``require_stix`` is False."""
    root = Path(root)
    if not (root / "generated_pages").is_dir():
        raise DisarmFormatError(f"{root}: no generated_pages/ folder (expected a DISARMframeworks checkout)")
    bundle = stix_bundle_path(root)
    if bundle is None and require_stix:
        tried = " or ".join(str(root / rel) for rel in STIX_BUNDLES)
        raise DisarmFormatError(f"{root}: no DISARM STIX bundle (tried {tried}); pass --no-stix to import "
                                "without DISARM's STIX ids")
    stix = _stix_objects(bundle)
    phases = read_phases(root)
    tactics = read_tactics(root, stix)
    return Framework(phases=phases, tactics=tactics, techniques=read_techniques(root, tactics, stix),
                     stix_bundle=bundle.relative_to(root).as_posix() if bundle else None,
                     stix_objects=disarm_stix_objects(stix))
