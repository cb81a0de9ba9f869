"""Suggestions -> the files other tools read: STIX 2.1 (OpenCTI...), DISARM Navigator layers, MISP events.

Pure functions returning data: nothing here prints or scores, and the only files read are a batch's records
and the packaged MISP galaxy table. Identifiers are uuid5 of stable keys (the article's ``key``, by default its source, and the
technique id), so re-running on the same article gives the same ids. ``export_article`` is the one call the
CLI and the web server make for an article; ``export_warnings`` says what a consumer will not get from it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from ..schema import Evidence, Suggestion, Technique
from .common import NAMESPACE, tactic_shortname, technique_url
from .misp import (MISP_NAMESPACE, misp_cluster_uuid, misp_event, misp_response, misp_tag, misp_tags,
                   without_cluster)  # fmt: skip
from .navigator import TechniqueCount, count_documents, navigator_layer
from .stix import TOOL_IDENTITY, generated_attack_pattern, merge_bundles, stix_bundle, without_disarm_id

__all__ = ["EXPORT_FORMATS", "MISP_NAMESPACE", "NAMESPACE", "TOOL_IDENTITY", "BatchExport", "TechniqueCount",
           "article_key", "count_documents", "export_article", "export_batch", "export_warnings",
           "generated_attack_pattern", "merge_bundles", "misp_cluster_uuid", "misp_event", "misp_response",
           "misp_tag", "misp_tags", "navigator_layer", "read_batch_records", "stix_bundle",
           "suggestion_from_record", "tactic_shortname", "technique_url"]  # fmt: skip

EXPORT_FORMATS = ("stix", "navigator", "misp")


def suggestion_from_record(record: dict) -> Suggestion:
    """Inverse of ``render.suggestion_record`` (the JSON contract of `suggest -f json` and batch JSONL)."""
    evidence = tuple(Evidence(e["text"], e["start"], e["end"]) for e in record.get("evidence", ()))
    return Suggestion(record["rank"], record["technique_id"], record["name"], record["tactic_id"],
                      record["tactic"], record["score"], evidence)  # fmt: skip


def article_key(source: str, text: str) -> str:
    """What seeds an article's export ids: its path or URL, or for text without one ("stdin", a paste)
    the sha256 of the text, so the same text exports to the same ids.

    >>> article_key("a.html", "x"), article_key("stdin", "x")[:15]
    ('a.html', 'sha256:2d711642')
    """
    if source in ("stdin", ""):
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return source


def _check_format(fmt: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")


def export_article(fmt: str, article, techniques_by_id: Mapping[str, Technique], *, source: str,
                   model: str = "", disarm_objects: Mapping[str, dict] | None = None,
                   created: datetime | None = None) -> dict:  # fmt: skip
    """One article's suggestions (a ``tagger.Article``: title, text, suggestions) as a STIX bundle, a
    Navigator layer or a MISP event: what `suggest --format stix|navigator|misp` prints. ``disarm_objects``
    (STIX only): include DISARM's attack-patterns verbatim instead of referencing them by id. ``created``:
    the STIX report's and notes' timestamp (default fixed) or the MISP event's (default now)."""
    _check_format(fmt)
    key = article_key(source, article.text)
    if fmt == "stix":
        return stix_bundle(source, article.suggestions, techniques_by_id, title=article.title, key=key,
                           model=model, created=created, disarm_objects=disarm_objects)  # fmt: skip
    if fmt == "navigator":
        by = f" by {model}" if model else ""
        return navigator_layer(article.suggestions, techniques_by_id, name=f"disarm-tagger: {article.title or source}",
                               description=f"DISARM techniques suggested for {source}{by}")  # fmt: skip
    return misp_event(source, article.suggestions, title=article.title, key=key, created=created)


def export_warnings(fmt: str, technique_ids: Iterable[str],
                    techniques_by_id: Mapping[str, Technique]) -> list[str]:  # fmt: skip
    """What the consumer of an export of these techniques will not get, one line each (empty: nothing)."""
    _check_format(fmt)
    ids = list(technique_ids)
    if fmt == "stix" and (generated := without_disarm_id(ids, techniques_by_id)):
        return [f"{len(generated)} technique(s) have no DISARM STIX id (the catalogue was imported with "
                f"--no-stix): {', '.join(generated)}; their attack-patterns carry ids made by disarm-tagger, "
                "marked x_disarm_tagger_generated_id"]  # fmt: skip
    if fmt == "misp" and (missing := without_cluster(ids)):
        return [f"{len(missing)} technique(s) have no cluster in MISP's DISARM galaxy (made from DISARM 1.4): "
                f"{', '.join(missing)}; tagged {misp_tag(missing[0])} and so on instead"]  # fmt: skip
    return []


# ------------------------------------------------------------------------------------------ batch export
def read_batch_records(path) -> Iterable[tuple[str, str, list[Suggestion]]]:
    """(id, source, suggestions) for each successful record of a batch JSONL file, streamed."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line) if line.strip() else {}
            if "suggestions" in record:
                yield record["id"], record.get("source", record["id"]), [
                    suggestion_from_record(s) for s in record["suggestions"]]


@dataclass(frozen=True)
class BatchExport:
    text: str  # the file's content
    warnings: list[str]  # export_warnings over every technique in it


def export_batch(records_path, fmt: str, techniques_by_id: Mapping[str, Technique], *, name: str,
                 min_score: float = 0.0, disarm_objects: Mapping[str, dict] | None = None) -> BatchExport:  # fmt: skip
    """A finished batch as one interchange file: a merged STIX bundle (one report per document), one
    Navigator layer counting documents per technique, or MISP events as ``{"response": [{"Event": ...}, ...]}``.
    One pass over the records file."""
    _check_format(fmt)
    seen: dict[str, None] = {}
    n = 0

    def records():
        nonlocal n
        for doc_id, src, sugg in read_batch_records(records_path):
            n += 1
            seen.update(dict.fromkeys(s.technique_id for s in sugg))
            yield doc_id, src, sugg

    if fmt == "stix":
        doc = merge_bundles((stix_bundle(src, sugg, techniques_by_id, key=doc_id, disarm_objects=disarm_objects)
                             for doc_id, src, sugg in records()), key=name)  # fmt: skip
    elif fmt == "navigator":
        counts = count_documents(((doc_id, sugg) for doc_id, _src, sugg in records()), min_score=min_score)
        doc = navigator_layer(counts, techniques_by_id, name=f"disarm-tagger: {name}",
                              description=f"{n} documents from {name}")  # fmt: skip
    else:
        doc = misp_response(misp_event(src, sugg, key=doc_id) for doc_id, src, sugg in records())
    warnings = export_warnings(fmt, seen, techniques_by_id)
    return BatchExport(json.dumps(doc, ensure_ascii=False, indent=2), warnings)
