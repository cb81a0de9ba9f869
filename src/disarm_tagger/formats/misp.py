"""MISP: an event per article, tagged with the official DISARM galaxy's clusters where MISP has one.

MISP attaches a galaxy cluster by tag name only: ``misp-galaxy:disarm-techniques="<cluster value>"``. The
official galaxy (MISP/misp-galaxy) was generated from DISARM 1.4: some 1.6 techniques have no cluster, one
was renamed, and two share a name with another technique. So the tag comes from a table pinned from that
galaxy (technique id -> cluster value, ``data/misp_galaxy_disarm_techniques.json``), never from our
technique name; a technique without a cluster gets the namespaced ``disarm:technique="<id>"`` instead.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources

from ..schema import Suggestion
from .common import evidence_text, timestamp, uuid_for

MISP_NAMESPACE = uuid.UUID("9d6bd9d2-2cd3-4900-b61a-06cd64df3996")  # the DISARM MISP galaxy's cluster ids
GALAXY_TABLE = "misp_galaxy_disarm_techniques.json"
FALLBACK_TAG = 'disarm:technique="{}"'  # our own machine tag: no MISP galaxy or taxonomy owns this namespace
DRAFT_TAG = 'workflow:state="draft"'  # MISP workflow taxonomy: machine suggestions an analyst should review


def galaxy_table(clusters: dict) -> dict:
    """The pinned table from a misp-galaxy cluster file (clusters/disarm-techniques.json): the galaxy type
    and technique id -> cluster value. A value two clusters share is left out: its tag would attach both.

    >>> galaxy_table({"type": "g", "values": [{"value": "A", "meta": {"external_id": "T1"}},
    ...     {"value": "B", "meta": {"external_id": "T2"}}, {"value": "B", "meta": {"external_id": "T3"}}]})
    {'galaxy_type': 'g', 'clusters': {'T1': 'A'}}
    """
    values = [c["value"] for c in clusters["values"]]
    unique = {v for v in values if values.count(v) == 1}
    by_id = {c["meta"]["external_id"]: c["value"] for c in clusters["values"] if c["value"] in unique}
    return {"galaxy_type": clusters["type"], "clusters": dict(sorted(by_id.items()))}


@lru_cache(maxsize=1)
def pinned_galaxy() -> dict:
    """The packaged table: {"galaxy_type", "clusters": {technique id: cluster value}, "source", "commit"}."""
    return json.loads((resources.files("disarm_tagger") / "data" / GALAXY_TABLE).read_text(encoding="utf-8"))


def cluster_tag(galaxy_type: str, value: str) -> str:
    """The tag name MISP gives a galaxy cluster, and the only one that attaches it.

    >>> cluster_tag("disarm-techniques", "Develop AI-Generated Images (Deepfakes)")
    'misp-galaxy:disarm-techniques="Develop AI-Generated Images (Deepfakes)"'
    """
    return f'misp-galaxy:{galaxy_type}="{value}"'


def misp_tag(technique_id: str) -> str:
    """The galaxy tag of a technique's cluster in the pinned galaxy, else ``disarm:technique="<id>"``.

    >>> misp_tag("T0002"), misp_tag("T0143.002")
    ('misp-galaxy:disarm-techniques="Facilitate State Propaganda"', 'disarm:technique="T0143.002"')
    """
    galaxy = pinned_galaxy()
    value = galaxy["clusters"].get(technique_id)
    return cluster_tag(galaxy["galaxy_type"], value) if value else FALLBACK_TAG.format(technique_id)


def without_cluster(technique_ids: Iterable[str]) -> list[str]:
    """The technique ids the pinned galaxy has no cluster for (tagged with the fallback), first-seen order."""
    clusters = pinned_galaxy()["clusters"]
    return [tid for tid in dict.fromkeys(technique_ids) if tid not in clusters]


def misp_cluster_uuid(technique_id: str) -> str:
    """The DISARM MISP galaxy's cluster uuid for a technique (DISARMframeworks'
    generate_DISARM_MISP_galaxy.py rule).

    >>> misp_cluster_uuid("T0086.002") == str(uuid.uuid5(MISP_NAMESPACE, "T0086.002"))
    True
    """
    return str(uuid.uuid5(MISP_NAMESPACE, technique_id))


def misp_tags(suggestions: Sequence[Suggestion]) -> list[dict]:
    """One tag per suggestion with its technique id and score; ``cluster_uuid`` when it is a galaxy tag."""
    out = []
    for s in suggestions:
        tag = {"name": misp_tag(s.technique_id), "technique_id": s.technique_id, "score": s.score}
        if tag["name"].startswith("misp-galaxy:"):
            tag["cluster_uuid"] = misp_cluster_uuid(s.technique_id)
        out.append(tag)
    return out


def misp_event(source: str, suggestions: Sequence[Suggestion], *, title: str = "", created: datetime | None = None,
               key: str | None = None) -> dict:  # fmt: skip
    """A MISP event (``{"Event": ...}``, MISP's JSON format) for one article: tagged ``workflow:state="draft"``
    (machine suggestions to review) and with one tag per suggestion (``misp_tag``), plus one text attribute per
    technique holding its evidence, tagged alike, score in the comment. No ``Galaxy`` block: MISP attaches the
    clusters from the tags. ``created`` (default: now) gives the event's date and timestamp."""
    key = key or source
    when = datetime.fromisoformat(timestamp(created or datetime.now(timezone.utc)).replace("Z", "+00:00"))
    stamp = str(int(when.timestamp()))
    missing = set(without_cluster(s.technique_id for s in suggestions))
    attributes = [{
        "uuid": uuid_for("misp-attribute", key, s.technique_id), "type": "text", "category": "Other",
        "value": evidence_text(s) or s.name, "to_ids": False, "disable_correlation": True, "timestamp": stamp,
        "comment": f"{s.technique_id} {s.name}: score {s.score:.2f} (disarm-tagger suggestion"
                   + ("; no cluster in MISP's DISARM galaxy" if s.technique_id in missing else "") + ")",
        "Tag": [{"name": misp_tag(s.technique_id)}],
    } for s in suggestions]  # fmt: skip
    if re.match(r"https?://", source):
        attributes.append({"uuid": uuid_for("misp-attribute", key, "link"), "type": "link",
                           "category": "External analysis", "value": source, "to_ids": False,
                           "timestamp": stamp, "comment": "the article"})  # fmt: skip
    tags = dict.fromkeys([DRAFT_TAG] + [misp_tag(s.technique_id) for s in suggestions])
    event = {
        "uuid": uuid_for("misp-event", key), "info": f"DISARM techniques suggested for {title or source}",
        "date": when.date().isoformat(), "timestamp": stamp, "threat_level_id": "4", "analysis": "0",
        "distribution": "0", "published": False, "Attribute": attributes, "Tag": [{"name": n} for n in tags],
    }  # fmt: skip
    return {"Event": event}


def misp_response(events: Iterable[dict]) -> dict:
    """Many ``{"Event": ...}`` as one file MISP imports: ``{"response": [...]}``, MISP's own export shape."""
    return {"response": list(events)}
