"""Suggestions -> the formats other tools read: STIX 2.1 (OpenCTI...), DISARM Navigator layers, MISP.

Pure functions returning dicts: nothing here prints, reads files or scores. Identifiers are uuid5 of stable
keys (the article's ``key``, by default its source, and the technique id), so re-running on the same
article gives the same ids, and with ``created`` fixed the same bytes.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from .version import __version__
from .schema import Evidence, Suggestion, Tactic, Technique

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:disarm-tagger")  # our own ids
MISP_NAMESPACE = uuid.UUID("9d6bd9d2-2cd3-4900-b61a-06cd64df3996")  # the DISARM MISP galaxy's cluster ids
MISP_GALAXY = "disarm-techniques"
DRAFT_TAG = 'workflow:state="draft"'  # MISP workflow taxonomy: machine suggestions an analyst should review
DISARM_URL = "https://github.com/DISARMFoundation/DISARMframeworks"
TOOL_CREATED = "2025-01-01T00:00:00.000Z"  # fixed, so the tool's identity is the same object in every bundle
DISARM_CREATED = "2024-11-22T16:43:58.000Z"  # not newer than DISARM.json: a platform keeps its own copy
# Verbatim from DISARMframeworks generated_files/DISARM.json: author and licence of technique descriptions.
DISARM_IDENTITY = {
    "type": "identity", "spec_version": "2.1", "id": "identity--f1a0f560-2d9e-4c5d-bf47-7e96e805de82",
    "created": "2024-11-22T16:43:58.073632Z", "modified": "2024-11-22T16:43:58.073632Z",
    "name": "DISARM Foundation", "identity_class": "organization",
    "description": "DISARM is a framework designed for describing and understanding disinformation "
                   "incidents.",
}  # fmt: skip
DISARM_MARKING = {
    "type": "marking-definition", "spec_version": "2.1",
    "id": "marking-definition--f79f25d2-8b96-4580-b169-eb7b613a7c31", "created_by_ref": DISARM_IDENTITY["id"],
    "created": "2024-11-22T16:43:58.073969Z", "definition_type": "statement",
    "name": "DISARM Foundation", "definition": {"statement": "CC-BY-SA-4.0 DISARM Foundation"},
}  # fmt: skip
TOOL_IDENTITY = {
    "type": "identity", "spec_version": "2.1", "id": f"identity--{uuid.uuid5(NAMESPACE, 'identity')}",
    "created": TOOL_CREATED, "modified": TOOL_CREATED, "name": "disarm-tagger", "identity_class": "system",
    "description": "Suggests DISARM Red Framework techniques for articles. Suggestions are unreviewed.",
}  # fmt: skip


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


def _timestamp(when: datetime | None) -> str:
    """STIX timestamp, UTC, millisecond precision; a naive datetime is taken as UTC."""
    when = when or datetime.now(timezone.utc)
    when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _technique(s: Suggestion, techniques_by_id: Mapping[str, Technique]) -> Technique:
    known = techniques_by_id.get(s.technique_id)
    return known or Technique(s.technique_id, s.name, "", s.tactic_id, s.tactic)


def tactic_shortname(technique: Technique, tactics_by_id: Mapping[str, Tactic] | None = None) -> str:
    """The STIX x_mitre_shortname of a technique's tactic; without the tactic table, the slug of its name
    (which is how DISARM forms every shortname).

    >>> tactic_shortname(Technique("T0001", "x", "", "TA07", "Select Channels and Affordances"))
    'select-channels-and-affordances'
    """
    tactic = (tactics_by_id or {}).get(technique.tactic_id)
    if tactic and tactic.shortname:
        return tactic.shortname
    return re.sub(r"[^a-z0-9]+", "-", (tactic.name if tactic else technique.tactic).lower()).strip("-")


def _evidence(s: Suggestion) -> str:
    return "\n".join(f"“{' '.join(e.text.split())}” (chars {e.start}–{e.end})" for e in s.evidence)


def _confidence(score: float) -> int:
    return max(0, min(100, round(score * 100)))


def technique_url(technique_id: str) -> str:
    return f"{DISARM_URL}/blob/main/generated_pages/techniques/{technique_id}.md"


# ------------------------------------------------------------------------------------------------ STIX 2.1
def attack_pattern(t: Technique, tactics_by_id: Mapping[str, Tactic] | None = None) -> dict:
    """A DISARM technique as a STIX attack-pattern, under DISARM's own STIX id when the catalogue has it.
    Without one the id is uuid5 of the technique id, marked ``x_disarm_tagger_generated_id``."""
    obj = {
        "type": "attack-pattern", "spec_version": "2.1",
        "id": t.stix_id or f"attack-pattern--{_uuid('attack-pattern', t.id)}",
        "created_by_ref": DISARM_IDENTITY["id"] if t.stix_id else TOOL_IDENTITY["id"],
        "created": DISARM_CREATED, "modified": DISARM_CREATED, "name": t.name,
        "kill_chain_phases": [{"kill_chain_name": "disarm",
                               "phase_name": tactic_shortname(t, tactics_by_id)}],
        "external_references": [{"source_name": "DISARM", "external_id": t.id, "url": technique_url(t.id)}],
        "object_marking_refs": [DISARM_MARKING["id"]],
        "x_mitre_id": t.id, "x_mitre_is_subtechnique": t.parent_id is not None,
    }  # fmt: skip
    if t.summary:
        obj["description"] = t.summary
    if not t.stix_id:
        obj["x_disarm_tagger_generated_id"] = True
    return obj


def stix_bundle(source: str, suggestions: Sequence[Suggestion], techniques_by_id: Mapping[str, Technique], *,
                title: str = "", created: datetime | None = None, key: str | None = None, model: str = "",
                tactics_by_id: Mapping[str, Tactic] | None = None) -> dict:  # fmt: skip
    """A STIX 2.1 bundle for one article: a ``report`` referencing one DISARM ``attack-pattern`` per
    suggestion, and per suggestion a ``note`` on both carrying the score (``confidence``, 0-100) and the
    evidence sentences. ``key`` (default: ``source``) seeds the ids."""
    key = key or source
    ts = _timestamp(created)
    report_id = f"report--{_uuid('report', key)}"
    patterns, notes = {}, []
    for s in suggestions:
        ap = attack_pattern(_technique(s, techniques_by_id), tactics_by_id)
        patterns[ap["id"]] = ap
        notes.append({
            "type": "note", "spec_version": "2.1", "id": f"note--{_uuid('note', key, s.technique_id)}",
            "created_by_ref": TOOL_IDENTITY["id"], "created": ts, "modified": ts,
            "abstract": f"{s.technique_id} {s.name}: score {s.score:.2f} (rank {s.rank})",
            "content": _evidence(s) or "No evidence sentence.", "object_refs": [report_id, ap["id"]],
            "confidence": _confidence(s.score), "x_disarm_tagger_score": s.score,
            "x_disarm_tagger_rank": s.rank,
            "x_disarm_tagger_evidence": [{"text": e.text, "start": e.start, "end": e.end}
                                         for e in s.evidence],
        })  # fmt: skip
    listing = "\n".join(f"- {s.technique_id} {s.name} ({s.tactic}): score {s.score:.2f}" for s in suggestions)
    report = {
        "type": "report", "spec_version": "2.1", "id": report_id, "created_by_ref": TOOL_IDENTITY["id"],
        "created": ts, "modified": ts, "published": ts, "name": title or source,
        "report_types": ["threat-report"],
        "description": f"DISARM techniques suggested by disarm-tagger {__version__} for {source} (unreviewed "
                       f"machine suggestions; scores are calibrated probabilities).\n{listing}".strip(),
        "object_refs": list(patterns) or [TOOL_IDENTITY["id"]],  # STIX requires at least one ref
        "labels": ["disarm-tagger"], "x_disarm_tagger_source": source,
    }  # fmt: skip
    if re.match(r"https?://", source):
        report["external_references"] = [{"source_name": "article", "url": source}]
    if model:
        report["x_disarm_tagger_model"] = model
    return {
        "type": "bundle",
        "id": f"bundle--{_uuid('bundle', key, ts)}",
        "objects": [TOOL_IDENTITY, DISARM_IDENTITY, DISARM_MARKING, report, *patterns.values(), *notes],
    }


def merge_bundles(bundles: Iterable[dict], *, key: str) -> dict:
    """Many articles' bundles as one (e.g. a batch): objects deduplicated by id, first copy kept."""
    objects: dict[str, dict] = {}
    for bundle in bundles:
        for obj in bundle["objects"]:
            objects.setdefault(obj["id"], obj)
    return {"type": "bundle", "id": f"bundle--{_uuid('bundle', key)}", "objects": list(objects.values())}


def suggestion_from_record(record: dict) -> Suggestion:
    """Inverse of ``render.suggestion_record`` (the JSON contract of `suggest -f json` and batch JSONL)."""
    evidence = tuple(Evidence(e["text"], e["start"], e["end"]) for e in record.get("evidence", ()))
    return Suggestion(record["rank"], record["technique_id"], record["name"], record["tactic_id"],
                      record["tactic"], record["score"], evidence)  # fmt: skip


# ------------------------------------------------------------------------------------ DISARM Navigator
@dataclass(frozen=True)
class TechniqueCount:
    """How many documents of a batch a technique was suggested for, with a few of their ids."""

    documents: int
    examples: tuple[str, ...]
    max_score: float


def count_documents(results: Iterable[tuple[str, Sequence[Suggestion]]], *, min_score: float = 0.0,
                    examples: int = 3) -> dict[str, TechniqueCount]:  # fmt: skip
    """Aggregate per-document suggestions (already cut to the top k) into technique -> TechniqueCount,
    counting a document once per technique scoring at least ``min_score``.

    >>> s = Suggestion(1, "T0001", "Chat Platform", "TA07", "Channels", 0.8)
    >>> count_documents([("a.txt", [s]), ("b.txt", [s])])["T0001"]
    TechniqueCount(documents=2, examples=('a.txt', 'b.txt'), max_score=0.8)
    """
    counts: dict[str, int] = {}
    shown: dict[str, list[str]] = {}
    best: dict[str, float] = {}
    for doc_id, suggestions in results:
        for s in {s.technique_id: s for s in suggestions if s.score >= min_score}.values():  # once per doc
            counts[s.technique_id] = counts.get(s.technique_id, 0) + 1
            ids = shown.setdefault(s.technique_id, [])
            ids += [doc_id] if len(ids) < examples else []
            best[s.technique_id] = max(best.get(s.technique_id, 0.0), s.score)
    return {tid: TechniqueCount(n, tuple(shown[tid]), best[tid]) for tid, n in sorted(counts.items())}


def navigator_layer(suggestions_or_counts: Sequence[Suggestion] | Mapping[str, TechniqueCount],
                    techniques_by_id: Mapping[str, Technique],
                    tactics_by_id: Mapping[str, Tactic] | None = None, *, name: str, description: str = "",
                    domain: str = "DISARM") -> dict:  # fmt: skip
    """A Navigator layer (ATT&CK Navigator layer format 4.5, which the DISARM Navigator reads). Given one
    article's suggestions, score = calibrated score x 100 and comment = evidence; given batch counts from
    ``count_documents``, score = number of documents and comment = how many and which."""
    rows = []
    if isinstance(suggestions_or_counts, Mapping):
        for tid, c in suggestions_or_counts.items():
            more = ", ..." if c.documents > len(c.examples) else ""
            rows.append((tid, c.documents, f"suggested for {c.documents} document(s), e.g. "
                         f"{', '.join(c.examples)}{more}; best score {c.max_score:.2f}"))  # fmt: skip
        top = max([r[1] for r in rows], default=1)
        legend = [{"label": "suggested for 1 document", "color": "#ffe766"},
                  {"label": f"suggested for {top} documents", "color": "#ff6666"}]  # fmt: skip
    else:
        rows = [(s.technique_id, _confidence(s.score), f"score {s.score:.2f} (rank {s.rank}). Evidence: "
                 f"{_evidence(s) or 'none'}") for s in suggestions_or_counts]  # fmt: skip
        top = 100
        legend = [{"label": "low score (x 100)", "color": "#ffe766"},
                  {"label": "high score (x 100)", "color": "#ff6666"}]  # fmt: skip
    scored = {tid for tid, _, _ in rows}
    parents = {techniques_by_id[t].parent_id for t in scored if t in techniques_by_id}
    techniques = []
    for tid, score, comment in rows:
        t = techniques_by_id.get(tid) or Technique(tid, tid, "", "", "")
        techniques.append({"techniqueID": tid, "tactic": tactic_shortname(t, tactics_by_id), "score": score,
                           "comment": comment, "enabled": True, "metadata": [], "links": [],
                           "showSubtechniques": tid in parents})  # fmt: skip
    return {
        "name": name, "versions": {"layer": "4.5", "navigator": "4.9.1"}, "domain": domain,
        "description": description, "filters": {"platforms": ["Windows", "Linux", "Mac"]}, "sorting": 3,
        "layout": {"layout": "side", "showID": True, "showName": True, "expandedSubtechniques": "annotated"},
        "hideDisabled": False, "techniques": techniques,
        "gradient": {"colors": ["#ffffff", "#ffe766", "#ff6666"], "minValue": 0, "maxValue": top},
        "legendItems": legend, "showTacticRowBackground": False, "selectTechniquesAcrossTactics": True,
        "selectSubtechniquesWithParent": False, "selectVisibleTechniques": False,
        "metadata": [{"name": "generator", "value": f"disarm-tagger {__version__}"}],
    }  # fmt: skip


# -------------------------------------------------------------------------------------------------- MISP
def misp_cluster_uuid(technique_id: str) -> str:
    """The DISARM MISP galaxy's cluster uuid for a technique.

    >>> misp_cluster_uuid("T0086.002") == str(uuid.uuid5(MISP_NAMESPACE, "T0086.002"))
    True
    """
    return str(uuid.uuid5(MISP_NAMESPACE, technique_id))


def misp_tag(technique_name: str) -> str:
    """The tag that attaches a DISARM technique's galaxy cluster to a MISP event or attribute.

    >>> misp_tag("Develop AI-Generated Images (Deepfakes)")
    'misp-galaxy:disarm-techniques="Develop AI-Generated Images (Deepfakes)"'
    """
    return f'misp-galaxy:{MISP_GALAXY}="{technique_name}"'


def misp_tags(suggestions: Sequence[Suggestion]) -> list[dict]:
    """One MISP galaxy tag per suggestion, with its cluster uuid, technique id and score."""
    return [{"name": misp_tag(s.name), "galaxy_type": MISP_GALAXY, "value": s.name,
             "uuid": misp_cluster_uuid(s.technique_id), "technique_id": s.technique_id, "score": s.score}
            for s in suggestions]  # fmt: skip


def misp_event(source: str, suggestions: Sequence[Suggestion],
               techniques_by_id: Mapping[str, Technique] | None = None, *, title: str = "",
               created: datetime | None = None, key: str | None = None) -> dict:  # fmt: skip
    """A MISP event (``{"Event": ...}``, MISP 2.4 JSON format) for one article: the article tagged with
    one DISARM galaxy tag per suggestion and ``workflow:state="draft"`` (machine suggestions to review),
    one text attribute per technique holding its evidence (tagged, score in the comment), and the
    DISARM galaxy clusters."""
    key = key or source
    when = datetime.fromisoformat(_timestamp(created).replace("Z", "+00:00"))
    stamp = str(int(when.timestamp()))
    techniques_by_id = techniques_by_id or {}
    attributes = [{
        "uuid": _uuid("misp-attribute", key, s.technique_id), "type": "text", "category": "Other",
        "value": _evidence(s) or s.name, "to_ids": False, "disable_correlation": True, "timestamp": stamp,
        "comment": f"{s.technique_id} {s.name}: score {s.score:.2f} (disarm-tagger suggestion)",
        "Tag": [{"name": misp_tag(s.name)}],
    } for s in suggestions]  # fmt: skip
    if re.match(r"https?://", source):
        attributes.append({"uuid": _uuid("misp-attribute", key, "link"), "type": "link",
                           "category": "External analysis", "value": source, "to_ids": False,
                           "timestamp": stamp, "comment": "the article"})  # fmt: skip
    clusters = [{
        "uuid": misp_cluster_uuid(s.technique_id), "type": MISP_GALAXY, "value": s.name,
        "tag_name": misp_tag(s.name), "description": _technique(s, techniques_by_id).summary,
        "source": DISARM_URL, "authors": ["DISARM Foundation"],
        "meta": {"external_id": [s.technique_id], "refs": [technique_url(s.technique_id)],
                 "disarm_tagger_score": [f"{s.score:.4f}"]},
    } for s in suggestions]  # fmt: skip
    event = {
        "uuid": _uuid("misp-event", key), "info": f"DISARM techniques suggested for {title or source}",
        "date": when.date().isoformat(), "timestamp": stamp, "threat_level_id": "4", "analysis": "0",
        "distribution": "0", "published": False, "Attribute": attributes,
        "Tag": [{"name": n} for n in dict.fromkeys([DRAFT_TAG] + [misp_tag(s.name) for s in suggestions])],
        "Galaxy": [{"type": MISP_GALAXY, "name": "Techniques", "description": "DISARM techniques",
                    "GalaxyCluster": clusters}] if clusters else [],
    }  # fmt: skip
    return {"Event": event}


# ------------------------------------------------------------------------------------------ one article
EXPORT_FORMATS = ("stix", "navigator", "misp")


def article_key(source: str, text: str) -> str:
    """What seeds an article's export ids: its path or URL, or for text without one ("stdin", a paste)
    the sha256 of the text, so the same text exports to the same ids.

    >>> article_key("a.html", "x"), article_key("stdin", "x")[:15]
    ('a.html', 'sha256:2d711642')
    """
    if source in ("stdin", ""):
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return source


def export_article(fmt: str, article, techniques_by_id: Mapping[str, Technique], *, source: str,
                   model: str = "") -> dict:  # fmt: skip
    """One article's suggestions (a ``tagger.Article``: title, text, suggestions) as a STIX bundle, a
    Navigator layer or a MISP event: what `suggest --format stix|navigator|misp` prints."""
    key = article_key(source, article.text)
    if fmt == "stix":
        return stix_bundle(source, article.suggestions, techniques_by_id, title=article.title, key=key, model=model)
    if fmt == "navigator":
        return navigator_layer(article.suggestions, techniques_by_id, name=f"disarm-tagger: {article.title or source}",
                               description=f"DISARM techniques suggested for {source}" + (f" by {model}" if model else ""))
    if fmt == "misp":
        return misp_event(source, article.suggestions, techniques_by_id, title=article.title, key=key)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")


# ------------------------------------------------------------------------------------------ batch export
def read_batch_records(path) -> Iterable[tuple[str, str, list[Suggestion]]]:
    """(id, source, suggestions) for each successful record of a batch JSONL file, streamed."""
    import json

    with open(path, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line) if line.strip() else {}
            if "suggestions" in record:
                yield record["id"], record.get("source", record["id"]), [
                    suggestion_from_record(s) for s in record["suggestions"]]


def export_batch(records_path, fmt: str, techniques_by_id: Mapping[str, Technique], *, name: str,
                 min_score: float = 0.0) -> str:  # fmt: skip
    """A finished batch as one interchange file: a merged STIX bundle (one report per document), one
    Navigator layer counting documents per technique, or MISP events one per line (JSON lines)."""
    import json

    records = read_batch_records(records_path)
    if fmt == "stix":
        bundles = (stix_bundle(src, sugg, techniques_by_id, key=doc_id) for doc_id, src, sugg in records)
        return json.dumps(merge_bundles(bundles, key=name), ensure_ascii=False, indent=2)
    if fmt == "navigator":
        n = 0

        def documents():  # one pass over the file: aggregate and count together
            nonlocal n
            for doc_id, _src, sugg in records:
                n += 1
                yield doc_id, sugg

        counts = count_documents(documents(), min_score=min_score)
        return json.dumps(navigator_layer(counts, techniques_by_id, name=f"disarm-tagger: {name}",
                                          description=f"{n} documents from {name}"), ensure_ascii=False, indent=2)
    if fmt == "misp":
        return "".join(json.dumps(misp_event(src, sugg, techniques_by_id, key=doc_id), ensure_ascii=False) + "\n"
                       for doc_id, src, sugg in records)  # fmt: skip
    raise ValueError(f"unknown export format {fmt!r}")
