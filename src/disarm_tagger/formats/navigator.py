"""DISARM Navigator layers: ATT&CK Navigator 4.8.2, layer format 4.4, domain ``DISARM`` (the live DISARM
Navigator). A sub-technique is drawn only under an expanded parent, so every scored sub-technique brings its
parent's row with ``showSubtechniques: true``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..version import __version__
from ..schema import Suggestion, Tactic, Technique
from .common import confidence, evidence_text, tactic_shortname

LAYER_VERSION, NAVIGATOR_VERSION, DOMAIN = "4.4", "4.8.2", "DISARM"
PLATFORMS = ["Windows", "Linux", "Mac"]  # the x_mitre_platforms of every DISARM attack-pattern


@dataclass(frozen=True)
class TechniqueCount:
    """How many documents of a batch a technique was suggested for, with a few of their ids."""

    documents: int
    examples: tuple[str, ...]
    max_score: float


def count_documents(results: Iterable[tuple[str, Sequence[Suggestion]]], *, min_score: float = 0.0,
                    examples: int = 3) -> dict[str, TechniqueCount]:  # fmt: skip
    """Aggregate per-document suggestions (already cut to the top k) into technique -> TechniqueCount,
    counting a document once per technique scoring at least ``min_score``. The examples are the documents
    it scored highest in (ties: the smaller id), so the result does not depend on the order of ``results``
    (a dask batch appends its records in the order partitions finish).

    >>> s = Suggestion(1, "T0001", "Chat Platform", "TA07", "Channels", 0.8)
    >>> count_documents([("a.txt", [s]), ("b.txt", [s])])["T0001"]
    TechniqueCount(documents=2, examples=('a.txt', 'b.txt'), max_score=0.8)
    """
    counts: dict[str, int] = {}
    shown: dict[str, list[tuple[float, str]]] = {}
    best: dict[str, float] = {}
    for doc_id, suggestions in results:
        for s in {s.technique_id: s for s in suggestions if s.score >= min_score}.values():  # once per doc
            counts[s.technique_id] = counts.get(s.technique_id, 0) + 1
            top = shown.setdefault(s.technique_id, [])
            top.append((-s.score, doc_id))
            top.sort()
            del top[examples:]
            best[s.technique_id] = max(best.get(s.technique_id, 0.0), s.score)
    return {tid: TechniqueCount(n, tuple(i for _, i in shown[tid]), best[tid]) for tid, n in sorted(counts.items())}


def _row(tid: str, tactic: str, **fields) -> dict:
    return {"techniqueID": tid, "tactic": tactic, **fields, "enabled": True, "metadata": [], "links": []}


def navigator_layer(suggestions_or_counts: Sequence[Suggestion] | Mapping[str, TechniqueCount],
                    techniques_by_id: Mapping[str, Technique],
                    tactics_by_id: Mapping[str, Tactic] | None = None, *, name: str, description: str = "",
                    domain: str = DOMAIN) -> dict:  # fmt: skip
    """A DISARM Navigator layer. Given one article's suggestions, score = calibrated score x 100 and comment =
    evidence; given batch counts from ``count_documents``, score = number of documents and comment = how many
    and which. Each scored sub-technique's parent gets a row (unscored unless suggested itself) in the same
    tactic with ``showSubtechniques: true``, without which the Navigator hides the sub-technique."""
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
        rows = [(s.technique_id, confidence(s.score), f"score {s.score:.2f} (rank {s.rank}). Evidence: "
                 f"{evidence_text(s) or 'none'}") for s in suggestions_or_counts]  # fmt: skip
        top = 100
        legend = [{"label": "low score (x 100)", "color": "#ffe766"},
                  {"label": "high score (x 100)", "color": "#ff6666"}]  # fmt: skip
    techniques: dict[tuple[str, str], dict] = {}
    expand: dict[tuple[str, str], None] = {}  # (parent, tactic) cells to expand, in first-seen order
    for tid, score, comment in rows:
        t = techniques_by_id.get(tid) or Technique(tid, tid, "", "", "")
        tactic = tactic_shortname(t, tactics_by_id)
        techniques[(tid, tactic)] = _row(tid, tactic, score=score, comment=comment, showSubtechniques=False)
        if t.parent_id:
            expand[(t.parent_id, tactic)] = None
    for parent, tactic in expand:
        row = techniques.setdefault((parent, tactic), _row(parent, tactic, showSubtechniques=True))
        row["showSubtechniques"] = True
    return {
        "name": name, "versions": {"layer": LAYER_VERSION, "navigator": NAVIGATOR_VERSION}, "domain": domain,
        "description": description, "filters": {"platforms": PLATFORMS}, "sorting": 3,
        "layout": {"layout": "side", "aggregateFunction": "average", "showID": True, "showName": True,
                   "showAggregateScores": False, "countUnscored": False},
        "hideDisabled": False, "techniques": list(techniques.values()),
        "gradient": {"colors": ["#ffffff", "#ffe766", "#ff6666"], "minValue": 0, "maxValue": top},
        "legendItems": legend, "showTacticRowBackground": False, "tacticRowBackground": "#dddddd",
        "selectTechniquesAcrossTactics": True, "selectSubtechniquesWithParent": False,
        "metadata": [{"name": "generator", "value": f"disarm-tagger {__version__}"}], "links": [],
    }  # fmt: skip
