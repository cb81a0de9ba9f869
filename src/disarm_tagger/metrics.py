"""Pure metric functions for ranked and set-valued label predictions (no I/O, no ML imports).

`ranked` is a sequence of label ids in descending score order (it may be shorter than k); `gold` is a
collection of label ids. Every `*_score` is higher-is-better and every ratio with a zero denominator is 0.0.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np


def _hits(ranked: Sequence[str], gold: Collection[str], k: int) -> int:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return len(set(ranked[:k]) & set(gold))


def precision_at_k(ranked: Sequence[str], gold: Collection[str], *, k: int) -> float:
    """Gold labels among the top k, divided by k (even when fewer than k labels were ranked).

    >>> precision_at_k(["a", "b", "c"], {"a", "c"}, k=2)
    0.5
    >>> precision_at_k(["a"], {"a"}, k=4)
    0.25
    """
    return _hits(ranked, gold, k) / k


def recall_at_k(ranked: Sequence[str], gold: Collection[str], *, k: int) -> float:
    """Gold labels among the top k, divided by the number of gold labels; 0.0 when `gold` is empty.

    >>> recall_at_k(["a", "b", "c"], {"a", "c", "z"}, k=2)
    0.3333333333333333
    >>> recall_at_k(["a"], set(), k=1)
    0.0
    """
    n_gold = len(set(gold))
    return _hits(ranked, gold, k) / n_gold if n_gold else 0.0


def average_precision_score(ranked: Sequence[str], gold: Collection[str]) -> float:
    """Mean of precision@rank over the ranks of gold hits, divided by |gold| (unranked gold labels add 0).

    >>> average_precision_score(["a", "x", "b"], {"a", "b"})  # (1/1 + 2/3) / 2
    0.8333333333333333
    >>> average_precision_score(["a"], {"a", "b"})
    0.5
    """
    gold_set, seen, total = set(gold), set(), 0.0
    for rank, label in enumerate(ranked, start=1):
        if label in gold_set and label not in seen:
            seen.add(label)
            total += len(seen) / rank
    return total / len(gold_set) if gold_set else 0.0


def reciprocal_rank(ranked: Sequence[str], gold: Collection[str]) -> float:
    """1 / rank of the first gold label in `ranked`, 0.0 if none is ranked.

    >>> reciprocal_rank(["x", "y", "a"], {"a"})
    0.3333333333333333
    """
    gold_set = set(gold)
    return next((1.0 / rank for rank, label in enumerate(ranked, start=1) if label in gold_set), 0.0)


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 with their counts: support = gold labels, predicted = predicted labels."""

    precision: float
    recall: float
    f1: float
    support: int
    predicted: int
    tp: int


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def prf_from_counts(tp: int, fp: int, fn: int) -> PRF:
    """PRF from true positive, false positive and false negative counts; 0/0 is 0.0.

    >>> prf_from_counts(2, 2, 0)
    PRF(precision=0.5, recall=1.0, f1=0.6666666666666666, support=2, predicted=4, tp=2)
    >>> prf_from_counts(0, 0, 0).f1
    0.0
    """
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return PRF(precision, recall, f1, support=tp + fn, predicted=tp + fp, tp=tp)


def _check_pairs(predicted: Sequence[Collection[str]], gold: Sequence[Collection[str]]) -> None:
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted label sets but {len(gold)} gold label sets")


def _label_counts(
    predicted: Sequence[Collection[str]], gold: Sequence[Collection[str]]
) -> dict[str, tuple[int, int, int]]:
    """label -> (tp, fp, fn) pooled over documents."""
    _check_pairs(predicted, gold)
    counts: dict[str, list[int]] = {}
    for pred, true in zip(predicted, gold):
        pred, true = set(pred), set(true)
        for label in pred | true:
            c = counts.setdefault(label, [0, 0, 0])
            c[0 if label in pred and label in true else 1 if label in pred else 2] += 1
    return {label: tuple(c) for label, c in counts.items()}


def set_prf(
    predicted: Sequence[Collection[str]],
    gold: Sequence[Collection[str]],
    *,
    average: Literal["micro", "macro"],
    labels: Sequence[str] | None = None,
) -> PRF:
    """Set-valued P/R/F1 over documents, restricted to `labels` when given.

    micro pools tp/fp/fn over all documents and labels (default: every label). macro averages the
    per-label precision, recall and F1 over `labels` (default: labels appearing in gold); a label never
    predicted has precision 0. The counts of a macro PRF are the pooled counts over those labels.

    >>> pred, gold = [{"a", "b"}, {"a"}], [{"a"}, {"b"}]
    >>> set_prf(pred, gold, average="micro")
    PRF(precision=0.3333333333333333, recall=0.5, f1=0.4, support=2, predicted=3, tp=1)
    >>> set_prf(pred, gold, average="macro").f1  # a: P=1/2 R=1 F1=2/3; b: all 0
    0.3333333333333333
    """
    if average not in ("micro", "macro"):
        raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
    counts = _label_counts(predicted, gold)
    if labels is None:
        labels = sorted(counts) if average == "micro" else sorted({lab for g in gold for lab in g})
    per_label = [counts.get(label, (0, 0, 0)) for label in dict.fromkeys(labels)]
    tp, fp, fn = (sum(c[i] for c in per_label) for i in range(3))
    pooled = prf_from_counts(tp, fp, fn)
    if average == "micro":
        return pooled
    rows = [prf_from_counts(*c) for c in per_label]
    means = np.mean([[r.precision, r.recall, r.f1] for r in rows], axis=0).tolist() if rows else [0.0] * 3
    return PRF(*means, support=pooled.support, predicted=pooled.predicted, tp=pooled.tp)


def per_label_prf(predicted: Sequence[Collection[str]], gold: Sequence[Collection[str]]) -> dict[str, PRF]:
    """PRF for every label seen in gold or predictions, keyed and ordered by label.

    >>> per_label_prf([{"a", "b"}], [{"a"}])["b"]
    PRF(precision=0.0, recall=0.0, f1=0.0, support=0, predicted=1, tp=0)
    """
    counts = _label_counts(predicted, gold)
    return {label: prf_from_counts(*counts[label]) for label in sorted(counts)}


def parent_id(label: str) -> str:
    """Strip a sub-technique suffix: "T0086.002" -> "T0086"; parent ids are returned unchanged.

    >>> parent_id("T0086.002"), parent_id("T0086")
    ('T0086', 'T0086')
    """
    return label.split(".", 1)[0]


def map_labels(labels: Iterable[str], mapping: Callable[[str], str]) -> set[str]:
    """Apply `mapping` to each label, e.g. to roll sub-techniques up to their parents.

    >>> sorted(map_labels(["T0086.002", "T0086.001", "T0049"], parent_id))
    ['T0049', 'T0086']
    """
    return {mapping(label) for label in labels}


def ranking_summary(
    rankings: Sequence[Sequence[str]],
    golds: Sequence[Collection[str]],
    *,
    ks: Sequence[int] = (1, 3, 5, 10),
    precision_ks: Sequence[int] = (1, 3, 5),
) -> dict[str, float]:
    """Mean over documents of "p@k" (k in `precision_ks`), "r@k" (k in `ks`), "map" and "mrr".

    Documents with an empty gold set are skipped; if none is left every value is NaN.

    >>> ranking_summary([["a", "b"], ["x", "c"], ["q"]], [{"a"}, {"c"}, set()], ks=(1, 2), precision_ks=(1,))
    {'p@1': 0.5, 'r@1': 0.5, 'r@2': 1.0, 'map': 0.75, 'mrr': 0.75}
    """
    _check_pairs(rankings, golds)
    pairs = [(r, g) for r, g in zip(rankings, golds) if len(g) > 0]
    columns: dict[str, Callable[[Sequence[str], Collection[str]], float]] = {}
    for k in precision_ks:
        columns[f"p@{k}"] = lambda r, g, k=k: precision_at_k(r, g, k=k)
    for k in ks:
        columns[f"r@{k}"] = lambda r, g, k=k: recall_at_k(r, g, k=k)
    columns["map"], columns["mrr"] = average_precision_score, reciprocal_rank
    return {
        key: float(np.mean([fn(r, g) for r, g in pairs])) if pairs else float("nan")
        for key, fn in columns.items()
    }


def bootstrap_interval(
    per_group_values: Sequence[Sequence[float]],
    *,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval that resamples groups (e.g. incidents) with replacement.

    Each group contributes its per-document values; `statistic` is computed over the pooled values of
    the resampled groups. Empty groups are ignored. Deterministic given `seed`.

    >>> lo, hi = bootstrap_interval([[1.0, 1.0], [0.0], [0.5, 0.5]], n_resamples=200)
    >>> 0.0 <= lo <= hi <= 1.0
    True
    >>> bootstrap_interval([[0.5], [0.5]])
    (0.5, 0.5)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    groups = [np.asarray(g, dtype=float).ravel() for g in per_group_values]
    groups = [g for g in groups if g.size]
    if not groups:
        raise ValueError("bootstrap_interval needs at least one non-empty group")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), size=(n_resamples, len(groups)))
    stats = [float(statistic(np.concatenate([groups[i] for i in row]))) for row in picks]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_metric(groups: Sequence[Hashable], values: Sequence[float], **kw) -> tuple[float, float]:
    """`bootstrap_interval` over `values` grouped by their group id (groups kept in first-seen order).

    >>> bootstrap_metric(["i1", "i2", "i1"], [1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    if len(groups) != len(values):
        raise ValueError(f"{len(groups)} group ids but {len(values)} values")
    grouped: dict[Hashable, list[float]] = {}
    for group, value in zip(groups, values):
        grouped.setdefault(group, []).append(value)
    return bootstrap_interval(list(grouped.values()), **kw)


def seen_unseen_recall(
    predicted: Sequence[Collection[str]], gold: Sequence[Collection[str]], seen: Collection[str]
) -> dict[str, PRF]:
    """Micro PRF split by whether a label is in `seen` (the training fold's labels).

    "seen"/"unseen" recall and support count gold labels in/out of `seen`; precision counts the
    predictions whose label falls in that bucket.

    >>> out = seen_unseen_recall([{"a"}], [{"a", "z"}], seen={"a"})
    >>> out["seen"].recall, out["unseen"].recall, out["unseen"].support
    (1.0, 0.0, 1)
    """
    seen_set, all_labels = set(seen), _label_counts(predicted, gold)
    in_seen = [label for label in all_labels if label in seen_set]
    in_unseen = [label for label in all_labels if label not in seen_set]
    return {
        "seen": set_prf(predicted, gold, average="micro", labels=in_seen),
        "unseen": set_prf(predicted, gold, average="micro", labels=in_unseen),
    }


def precision_recall_curve_points(
    scores: Sequence[Mapping[str, float]],
    gold: Sequence[Collection[str]],
    *,
    thresholds: Sequence[float] | None = None,
) -> list[tuple[float, float, float]]:
    """(threshold, micro precision, micro recall) in ascending threshold order, predicting score >= threshold.

    All (document, label) score pairs are pooled; gold labels without a score always count as misses.
    Default thresholds: every distinct score. Precision with nothing predicted is 0.0.

    >>> precision_recall_curve_points([{"a": 0.9, "b": 0.4}, {"c": 0.4}], [{"a"}, {"c", "d"}])
    [(0.4, 0.6666666666666666, 0.6666666666666666), (0.9, 1.0, 0.3333333333333333)]
    """
    _check_pairs(scores, gold)
    s = np.array([v for doc in scores for v in doc.values()], dtype=float)
    is_gold = np.array([lab in set(g) for doc, g in zip(scores, gold) for lab in doc], dtype=bool)
    n_gold = sum(len(set(g)) for g in gold)
    grid = np.unique(s) if thresholds is None else np.sort(np.asarray(thresholds, dtype=float))
    order = np.argsort(s, kind="stable")
    s_sorted, gold_sorted = s[order], is_gold[order]
    tp_at_or_above = np.concatenate([np.cumsum(gold_sorted[::-1])[::-1], [0]])
    points = []
    for t in grid:
        start = int(np.searchsorted(s_sorted, t, side="left"))
        tp, n_pred = int(tp_at_or_above[start]), len(s) - start
        points.append((float(t), _ratio(tp, n_pred), _ratio(tp, n_gold)))
    return points


def expected_calibration_error(scores: Sequence[float], labels: Sequence[bool], *, bins: int = 10) -> float:
    """Mean |mean score - share of positives| over equal-width score bins, weighted by bin size (lower is
    better; 0.0 for no scores).

    >>> round(expected_calibration_error([0.1, 0.1, 0.9, 0.9], [False, False, True, True]), 2)
    0.1
    >>> round(expected_calibration_error([0.5, 0.5], [True, True]), 2)
    0.5
    """
    s, y = np.asarray(scores, float), np.asarray(labels, float)
    if not len(s):
        return 0.0
    which = np.minimum((s * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        mask = which == b
        total += mask.sum() * abs(s[mask].mean() - y[mask].mean())
    return float(total / len(s))
