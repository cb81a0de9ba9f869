"""What the three export formats share: deterministic ids, timestamps, and how a suggestion is described."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone

from ..schema import Suggestion, Tactic, Technique

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:disarm-tagger")  # our own ids
DISARM_URL = "https://github.com/DISARMFoundation/DISARMframeworks"


def uuid_for(*parts: str) -> str:
    """uuid5 of stable keys in our namespace: the same keys give the same id on every run."""
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


def timestamp(when: datetime) -> str:
    """STIX timestamp, UTC, millisecond precision; a naive datetime is taken as UTC.

    >>> timestamp(datetime(2025, 3, 1, 12, 0, 0, 123456))
    '2025-03-01T12:00:00.123Z'
    """
    when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def technique_for(s: Suggestion, techniques_by_id: Mapping[str, Technique]) -> Technique:
    """The catalogue's technique for a suggestion, or one made from the suggestion when the catalogue lacks it."""
    known = techniques_by_id.get(s.technique_id)
    return known or Technique(s.technique_id, s.name, "", s.tactic_id, s.tactic)


def tactic_shortname(technique: Technique, tactics_by_id: Mapping[str, Tactic] | None = None) -> str:
    """The STIX x_mitre_shortname of a technique's tactic (DISARM's kill-chain phase name); without the
    tactic table, the slug of its name (which is how DISARM forms every shortname).

    >>> tactic_shortname(Technique("T0001", "x", "", "TA07", "Select Channels and Affordances"))
    'select-channels-and-affordances'
    """
    tactic = (tactics_by_id or {}).get(technique.tactic_id)
    if tactic and tactic.shortname:
        return tactic.shortname
    return re.sub(r"[^a-z0-9]+", "-", (tactic.name if tactic else technique.tactic).lower()).strip("-")


def evidence_text(s: Suggestion) -> str:
    return "\n".join(f"“{' '.join(e.text.split())}” (chars {e.start}–{e.end})" for e in s.evidence)


def confidence(score: float) -> int:
    """A score in [0, 1] as a 0-100 integer (STIX confidence, Navigator score).

    >>> confidence(0.834), confidence(1.2)
    (83, 100)
    """
    return max(0, min(100, round(score * 100)))


def technique_url(technique_id: str) -> str:
    return f"{DISARM_URL}/blob/main/generated_pages/techniques/{technique_id}.md"
