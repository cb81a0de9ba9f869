"""STIX 2.1: one ``report`` per article and one ``note`` per suggestion, pointing at DISARM's attack-patterns.

DISARM's attack-patterns are referenced by their DISARM STIX ids and, by default, not copied into the bundle:
a platform that holds DISARM already (OpenCTI's DISARM connector, an import of DISARM.json) resolves them,
and a bundle that carries no copy cannot contradict DISARM's objects. ``disarm_objects`` includes them,
verbatim as DISARM publishes them, for a consumer that does not hold DISARM. A technique without a DISARM STIX
id (a catalogue imported with --no-stix) gets an attack-pattern of ours, marked as not DISARM's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from ..version import __version__
from ..schema import Suggestion, Tactic, Technique
from .common import (confidence, evidence_text, tactic_shortname, technique_for, technique_url, timestamp,
                     uuid_for)  # fmt: skip

# Fixed timestamps. The tool keeps no state between runs, so it cannot know when it first exported an
# article; a fixed created/modified/published makes a re-export byte-identical and its re-import a no-op
# (STIX forbids two versions of one id with different `created`). Callers that keep state pass `created`.
TOOL_CREATED = "2025-01-01T00:00:00.000Z"
STABLE_CREATED = TOOL_CREATED
TOOL_IDENTITY = {
    "type": "identity", "spec_version": "2.1", "id": f"identity--{uuid_for('identity')}",
    "created": TOOL_CREATED, "modified": TOOL_CREATED, "name": "disarm-tagger", "identity_class": "system",
    "description": "Suggests DISARM Red Framework techniques for articles. Suggestions are unreviewed.",
}  # fmt: skip
NOT_DISARMS = ("Not DISARM's STIX object: the technique catalogue was imported without DISARM's STIX bundle "
               "(--no-stix), so disarm-tagger made this id. Text: DISARM Foundation, CC BY-SA 4.0.")  # fmt: skip


def generated_attack_pattern(t: Technique, tactics_by_id: Mapping[str, Tactic] | None = None) -> dict:
    """An attack-pattern of ours for a technique without a DISARM STIX id: uuid5 of the technique id,
    created by disarm-tagger, marked ``x_disarm_tagger_generated_id`` and saying so in its description. Its
    kill chain is ``disarm``, the name OpenCTI's DISARM connector gives DISARM's phases, so in OpenCTI it lands
    on the same phases as DISARM's own objects."""
    return {
        "type": "attack-pattern", "spec_version": "2.1",
        "id": f"attack-pattern--{uuid_for('attack-pattern', t.id)}",
        "created_by_ref": TOOL_IDENTITY["id"], "created": TOOL_CREATED, "modified": TOOL_CREATED, "name": t.name,
        "description": f"{t.summary}\n\n{NOT_DISARMS}".strip(),
        "kill_chain_phases": [{"kill_chain_name": "disarm", "phase_name": tactic_shortname(t, tactics_by_id)}],
        "external_references": [{"source_name": "DISARM", "external_id": t.id, "url": technique_url(t.id)}],
        "x_mitre_id": t.id, "x_mitre_is_subtechnique": t.parent_id is not None,
        "x_disarm_tagger_generated_id": True,
    }  # fmt: skip


def without_disarm_id(technique_ids: Iterable[str], techniques_by_id: Mapping[str, Technique]) -> list[str]:
    """The technique ids whose export carries an id made by disarm-tagger, not DISARM's, in first-seen order."""
    ids = dict.fromkeys(technique_ids)
    return [tid for tid in ids if not getattr(techniques_by_id.get(tid), "stix_id", "")]


def _with_references(stix_id: str, disarm_objects: Mapping[str, dict]) -> list[dict]:
    """DISARM's object for ``stix_id``, after the identity and markings it references."""
    obj = disarm_objects.get(stix_id)
    if obj is None:
        raise ValueError(f"{stix_id}: not among DISARM's STIX objects; were they imported from the same DISARM "
                         "snapshot as the technique catalogue?")  # fmt: skip
    refs = [obj.get("created_by_ref"), *obj.get("object_marking_refs", ())]
    return [disarm_objects[r] for r in refs if r in disarm_objects] + [obj]


def stix_bundle(source: str, suggestions: Sequence[Suggestion], techniques_by_id: Mapping[str, Technique], *,
                title: str = "", created: datetime | None = None, key: str | None = None, model: str = "",
                tactics_by_id: Mapping[str, Tactic] | None = None,
                disarm_objects: Mapping[str, dict] | None = None) -> dict:  # fmt: skip
    """A STIX 2.1 bundle for one article: a ``report`` referencing one attack-pattern per suggestion, and per
    suggestion a ``note`` on both carrying the score (``confidence``, 0-100) and the evidence sentences.

    ``key`` (default: ``source``) seeds the ids. ``created`` stamps the report and notes (default: the fixed
    ``STABLE_CREATED``). ``disarm_objects`` ({STIX id: object}, as imported from DISARM.json): include DISARM's
    attack-patterns, and the identity and marking they reference, verbatim; without it they are referenced only.
    """
    key = key or source
    ts = timestamp(created) if created else STABLE_CREATED
    report_id = f"report--{uuid_for('report', key)}"
    refs, included, notes = {}, {}, []
    for s in suggestions:
        t = technique_for(s, techniques_by_id)
        if t.stix_id:
            ref = t.stix_id
            for obj in _with_references(ref, disarm_objects) if disarm_objects is not None else ():
                included[obj["id"]] = obj
        else:
            ap = generated_attack_pattern(t, tactics_by_id)
            ref, included[ap["id"]] = ap["id"], ap
        refs[ref] = None
        notes.append({
            "type": "note", "spec_version": "2.1", "id": f"note--{uuid_for('note', key, s.technique_id)}",
            "created_by_ref": TOOL_IDENTITY["id"], "created": ts, "modified": ts,
            "abstract": f"{s.technique_id} {s.name}: score {s.score:.2f} (rank {s.rank})",
            "content": evidence_text(s) or "No evidence sentence.", "object_refs": [report_id, ref],
            "confidence": confidence(s.score), "x_disarm_tagger_score": s.score, "x_disarm_tagger_rank": s.rank,
            "x_disarm_tagger_evidence": [{"text": e.text, "start": e.start, "end": e.end} for e in s.evidence],
        })  # fmt: skip
    listing = "\n".join(f"- {s.technique_id} {s.name} ({s.tactic}): score {s.score:.2f}" for s in suggestions)
    generated = without_disarm_id([s.technique_id for s in suggestions], techniques_by_id)
    caveat = (f"\nNot DISARM's ids: {', '.join(generated)} have no DISARM STIX id (catalogue imported with "
              "--no-stix); their attack-patterns here were made by disarm-tagger.") if generated else ""  # fmt: skip
    report = {
        "type": "report", "spec_version": "2.1", "id": report_id, "created_by_ref": TOOL_IDENTITY["id"],
        "created": ts, "modified": ts, "published": ts, "name": title or source,
        "report_types": ["threat-report"],
        "description": f"DISARM techniques suggested by disarm-tagger {__version__} for {source} (unreviewed "
                       f"machine suggestions; scores are calibrated probabilities).\n{listing}{caveat}".strip(),
        "object_refs": list(refs) or [TOOL_IDENTITY["id"]],  # STIX requires at least one ref
        "labels": ["disarm-tagger"], "x_disarm_tagger_source": source,
    }  # fmt: skip
    if re.match(r"https?://", source):
        report["external_references"] = [{"source_name": "article", "url": source}]
    if model:
        report["x_disarm_tagger_model"] = model
    return {
        "type": "bundle",
        "id": f"bundle--{uuid_for('bundle', key, ts)}",
        "objects": [TOOL_IDENTITY, report, *included.values(), *notes],
    }


def merge_bundles(bundles: Iterable[dict], *, key: str) -> dict:
    """Many articles' bundles as one (e.g. a batch): objects deduplicated by id, first copy kept."""
    objects: dict[str, dict] = {}
    for bundle in bundles:
        for obj in bundle["objects"]:
            objects.setdefault(obj["id"], obj)
    return {"type": "bundle", "id": f"bundle--{uuid_for('bundle', key)}", "objects": list(objects.values())}
