"""The authored coverage set (training_data/authored.jsonl): its summary for the manifest and its checks.

The passages are written by this project from DISARM's technique definitions, a few per technique, so that
every technique has training text. Bad authored text teaches the tagger the wrong thing, so ``check``
enforces: every technique has passages written for it; no technique id or technique name in any text;
every label in the catalogue; no two passages alike (same text, or the same sentence skeleton: the trace a
template leaves); and, with an embedder, no passage near-identical to another or close to a DISARM
incident passage (those are evaluation data and must never be paraphrased). Pure: returns a report.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from .disarm import ID_PATTERN
from .schema import Example, Technique

MIN_PASSAGES = 4
ALLOWED_NAMES = frozenset({"social media"})  # a technique name that is also an everyday phrase of news text
SKELETON_N, SKELETON_SHARED, SKELETON_JACCARD = 5, 2, 0.6  # see tests/test_coverage.py
NEAR_IDENTICAL = 0.95  # cosine between two authored passages
NEAR_DISARM = 0.90  # cosine between an authored passage and a DISARM passage or sentence
LENGTH_BINS = (0, 60, 100, 150, 250)  # words: the bins of label_density's comparison
ATTRIBUTION = ("Written by the disarm-tagger project from the technique definitions of DISARM Foundation, "
               "DISARMframeworks (https://github.com/DISARMFoundation/DISARMframeworks), licensed CC BY-SA 4.0; "
               "no DISARM incident passage was paraphrased.")  # fmt: skip
_FUNCTION = frozenset("""a an the of in on at to for from by with and or but as that which who whom whose this these
those it its they them their he she his her we our you your is are was were be been being has have had do does
did not no than then so such into onto over under about after before during while when where how what why if
also more most less many much some any all each other same own only very can could would should may might will
shall must just both either neither nor per via""".split())  # fmt: skip


def _normal(text: str) -> str:
    return " " + re.sub(r"[^a-z0-9]+", " ", text.lower()).strip() + " "


def skeleton(text: str) -> list[str]:
    """Function words kept, every run of other words one slot: the shape a sentence template leaves.

    >>> " ".join(skeleton("Bots in Kenya flooded the hashtag with 400 posts."))
    '_ in _ the _ with _'
    """
    out: list[str] = []
    for word in re.findall(r"[A-Za-z']+|\d+", text.lower()):
        token = word if word in _FUNCTION else "_"
        if not (token == "_" and out and out[-1] == "_"):
            out.append(token)
    return out


def _shingles(tokens: list[str], n: int = SKELETON_N) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def shared_skeletons(texts: Sequence[str]) -> list[tuple[int, int, int, float]]:
    """(i, j, shared function-word n-grams, Jaccard) for pairs of texts built on one sentence skeleton."""
    sets = [_shingles(skeleton(t)) for t in texts]
    index: dict[tuple, list[int]] = defaultdict(list)
    for i, s in enumerate(sets):
        for gram in s:
            index[gram].append(i)
    shared: Counter = Counter()
    for owners in index.values():
        for a in range(len(owners)):
            for b in range(a + 1, len(owners)):
                shared[owners[a], owners[b]] += 1
    out = []
    for (i, j), count in sorted(shared.items()):
        jaccard = count / len(sets[i] | sets[j])
        if count >= SKELETON_SHARED and jaccard >= SKELETON_JACCARD:
            out.append((i, j, count, round(jaccard, 3)))
    return out


@dataclass
class CoverageReport:
    passages: int
    per_technique: dict[str, int]  # technique id -> passages written for it
    problems: list[str] = field(default_factory=list)
    max_cosine_to_disarm: dict[str, float] = field(default_factory=dict)  # quantiles, when embedded
    max_cosine_between_authored: float | None = None
    label_density: list[dict] = field(default_factory=list)  # label_density(): a description, not a rule

    @property
    def ok(self) -> bool:
        return not self.problems


def _written_for(ex: Example) -> str:
    """authored.jsonl ids are ``A-<technique id>-<n>``: the technique the passage was written for."""
    return ex.id.split("-")[1] if ex.id.startswith("A-") else ""


def summary(authored: Sequence[Example], techniques: Sequence[Technique]) -> dict:
    """What manifest.json says about the authored set: counts overall and per tactic, multi-label share."""
    tactic = {t.id: t.tactic_id for t in techniques}
    per_tactic: dict[str, dict] = {}
    for ex in authored:
        row = per_tactic.setdefault(tactic.get(_written_for(ex), "?"), {"passages": 0, "techniques": set()})
        row["passages"] += 1
        row["techniques"].add(_written_for(ex))
    return {"passages": len(authored), "techniques": len({_written_for(e) for e in authored}),
            "multi_label": sum(len(e.labels) > 1 for e in authored),
            "per_tactic": {ta: {"passages": r["passages"], "techniques": len(r["techniques"])}
                           for ta, r in sorted(per_tactic.items())},
            "attribution": ATTRIBUTION}  # fmt: skip


def label_density(authored: Sequence[Example], real: Sequence[Example]) -> list[dict]:
    """Labels per passage by passage length (LENGTH_BINS, in words), authored against real passages.

    Passages of one length are compared because a longer text describes more: a mean over a whole set
    mostly measures how long its passages are.

    >>> from .schema import Example
    >>> ex = lambda words, labels: Example("x", "I-1", "", "w " * words, tuple(labels))
    >>> rows = label_density([ex(30, ["T1"]), ex(120, ["T1", "T2"])], [ex(110, ["T1", "T2", "T3"])])
    >>> [(r["words"], r["authored"], r["authored_labels"], r["real"], r["real_labels"]) for r in rows[:3]]
    [('0-59', 1, 1.0, 0, None), ('60-99', 0, None, 0, None), ('100-149', 1, 2.0, 1, 3.0)]
    """
    def length_bin(example: Example) -> int:
        return int(np.searchsorted(LENGTH_BINS, len(example.text.split()), side="right")) - 1

    rows = [{"words": f"{lo}-{hi - 1}"} for lo, hi in pairwise(LENGTH_BINS)]
    rows.append({"words": f"{LENGTH_BINS[-1]}+"})
    for key, examples in (("authored", authored), ("real", real)):
        counts: dict[int, list[int]] = defaultdict(list)
        for e in examples:
            counts[length_bin(e)].append(len(e.labels))
        for i, row in enumerate(rows):
            row[key] = len(counts[i])
            row[f"{key}_labels"] = round(sum(counts[i]) / len(counts[i]), 2) if counts[i] else None
    return rows


def check(authored: Sequence[Example], techniques: Sequence[Technique], *, embedder=None,
          disarm_texts: Sequence[str] = ()) -> CoverageReport:  # fmt: skip
    """Every rule of the authored set; with ``embedder``, also the similarity rules against each other and
    against ``disarm_texts`` (DISARM passages and their sentences)."""
    known = {t.id for t in techniques}
    names = {t.id: _normal(t.name) for t in techniques
             if len(t.name.split()) >= 2 and _normal(t.name).strip() not in ALLOWED_NAMES}  # fmt: skip
    counts = Counter(_written_for(e) for e in authored)
    report = CoverageReport(len(authored), {t.id: counts[t.id] for t in techniques})
    problems = report.problems
    for tid, n in report.per_technique.items():
        if n < MIN_PASSAGES:
            problems.append(f"{tid}: {n} passages written for it (at least {MIN_PASSAGES} needed)")
    seen: dict[str, str] = {}
    for ex in authored:
        if ex.origin != "authored":
            problems.append(f"{ex.id}: origin is {ex.origin!r}, not 'authored'")
        if _written_for(ex) not in ex.labels:
            problems.append(f"{ex.id}: the technique it was written for is not among its labels")
        unknown = sorted(set(ex.labels) - known)
        if unknown:
            problems.append(f"{ex.id}: labels not in the catalogue: {', '.join(unknown)}")
        if ID_PATTERN.search(ex.text):
            problems.append(f"{ex.id}: a technique id in the text")
        text = _normal(ex.text)
        for tid, name in names.items():
            if name in text:
                problems.append(f"{ex.id}: the text names technique {tid} ({name.strip()!r})")
        if text in seen:
            problems.append(f"{ex.id}: the same text as {seen[text]}")
        seen[text] = ex.id
    for i, j, count, jaccard in shared_skeletons([e.text for e in authored]):
        problems.append(f"{authored[i].id} and {authored[j].id} share a sentence skeleton ({count} function-word "
                        f"{SKELETON_N}-grams, Jaccard {jaccard})")  # fmt: skip
    if embedder is not None:
        _check_similarity(report, authored, embedder, disarm_texts)
    return report


def _check_similarity(report: CoverageReport, authored: Sequence[Example], embedder, disarm_texts) -> None:
    A = embedder.encode([e.text for e in authored])
    sims = A @ A.T
    np.fill_diagonal(sims, -1.0)
    report.max_cosine_between_authored = round(float(sims.max()), 4)
    for i, j in zip(*np.where(np.triu(sims) >= NEAR_IDENTICAL)):
        report.problems.append(f"{authored[i].id} and {authored[j].id} are near-identical (cosine {sims[i, j]:.3f})")
    if not len(disarm_texts):
        return
    best = (A @ embedder.encode(list(disarm_texts)).T).max(axis=1)
    quantiles = (0.5, 0.9, 0.99, 1.0)
    report.max_cosine_to_disarm = {f"q{int(q * 100)}": round(float(np.quantile(best, q)), 4) for q in quantiles}
    for ex, b in zip(authored, best):
        if b >= NEAR_DISARM:
            report.problems.append(f"{ex.id}: cosine {b:.3f} to a DISARM incident passage (at most {NEAR_DISARM})")


def disarm_texts(examples: Sequence[Example]) -> list[str]:
    """What authored text must not come close to: each DISARM passage, and each of its sentences of six or
    more words (a paraphrase of one sentence hides inside a long passage's embedding)."""
    from .text import split_sentences

    real = [e for e in examples if e.origin == "disarm"]
    return [e.text for e in real] + [s.text for e in real for s in split_sentences(e.text) if len(s.text.split()) >= 6]
