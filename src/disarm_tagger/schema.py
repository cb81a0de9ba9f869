"""Frozen records that flow through the pipeline: pages -> examples -> suggestions -> reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Phase:
    id: str
    name: str
    summary: str = ""


@dataclass(frozen=True)
class Tactic:
    id: str
    name: str
    summary: str = ""
    phase_id: str = ""
    shortname: str = ""  # STIX x_mitre_shortname, used by Navigator layers
    stix_id: str = ""


@dataclass(frozen=True)
class Technique:
    id: str
    name: str
    summary: str
    tactic_id: str
    tactic: str
    phase_id: str = ""
    parent_id: str | None = None
    associated: tuple[str, ...] = ()
    stix_id: str = ""

    @property
    def parent_or_self(self) -> str:
        """The top-level technique id (``T0086.002`` -> ``T0086``)."""
        return self.parent_id or self.id


@dataclass(frozen=True)
class Example:
    """One quoted source passage and the technique ids analysts attached to it."""

    id: str
    incident_id: str
    incident_name: str
    text: str
    labels: tuple[str, ...]
    source_url: str = ""
    origin: str = "disarm"  # "disarm" imported, "local" an analyst's annotation, "authored" written from definitions
    annotated_at: str = ""
    annotator: str = ""


@dataclass(frozen=True)
class Evidence:
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Suggestion:
    rank: int
    technique_id: str
    name: str
    tactic_id: str
    tactic: str
    score: float
    evidence: tuple[Evidence, ...] = field(default=())


@dataclass(frozen=True)
class Article:
    """One input's extracted text and its suggestions (evidence offsets refer to ``text``)."""

    title: str
    text: str
    warnings: tuple[str, ...]
    suggestions: tuple[Suggestion, ...]


Row = tuple[tuple[str, ...], tuple[float, ...], tuple[str, ...]]  # ranked labels, their scores, predicted set


@dataclass(frozen=True)
class Prediction:
    """One method's output for one held-out passage. ``ranked`` holds every label, best first, as users
    see it; ``scores`` is aligned with ``ranked``; ``predicted`` are the labels at or above the threshold."""

    method: str
    fold: int
    example_id: str
    incident_id: str
    gold: tuple[str, ...]
    ranked: tuple[str, ...]
    scores: tuple[float, ...]
    predicted: tuple[str, ...]
    seen: frozenset[str] = field(repr=False)  # labels with a real (not authored) training example in this fold


def to_dict(record: Any) -> dict[str, Any]:
    """A record as a JSON-ready dict (tuples become lists)."""
    out = asdict(record)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def from_dict(cls: type, data: dict[str, Any]):
    """Build ``cls`` from a dict, ignoring unknown keys and turning lists into tuples."""
    names = {f.name for f in fields(cls)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return cls(**kwargs)
