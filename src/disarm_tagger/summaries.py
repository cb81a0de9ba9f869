"""Turn one method's held-out predictions into every number the report shows (pure; no I/O, no fitting).

Input: ``schema.Prediction`` records with gold labels, the full ranking users see, the labels at
or above the fold's threshold and the set of labels the fold's training side had examples of.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .metrics import (
    PRF,
    expected_calibration_error,
    average_precision_score,
    bootstrap_interval,
    bootstrap_metric,
    map_labels,
    parent_id,
    per_label_prf,
    precision_at_k,
    precision_recall_curve_points,
    prf_from_counts,
    ranking_summary,
    recall_at_k,
    seen_unseen_recall,
    set_prf,
)
from .schema import Prediction, Technique

OURS = "ours"  # the method name of our tagger in every report
HEADLINE = ("p@1", "r@10", "map", "micro_f1")  # the numbers with bootstrap intervals, margins and --compare
CURVE_K = 20
SHORT = {"precision": "p", "recall": "r", "f1": "f1"}  # names in the flat headline view
PR_GRID = tuple(round(t, 2) for t in np.linspace(0.0, 1.0, 101))


def _prf(p: PRF) -> dict:
    return {"precision": p.precision, "recall": p.recall, "f1": p.f1, "support": p.support,
            "predicted": p.predicted, "tp": p.tp}  # fmt: skip


def _pooled(prfs: Sequence[PRF]) -> PRF:
    tp, pred, sup = (sum(getattr(p, k) for p in prfs) for k in ("tp", "predicted", "support"))
    return prf_from_counts(tp, pred - tp, sup - tp)


def _top(p: Prediction, k: int = 10) -> set[str]:
    return set(p.ranked[:k])


def seen_unseen(preds: Sequence[Prediction]) -> dict:
    """Recall@10 and P/R/F1 at threshold for gold labels the training side had examples of ("seen") or not.
    Pooled over gold labels: each fold is split by its own training labels, then counts are summed."""
    by_fold: dict[int, list[Prediction]] = {}
    for p in preds:
        by_fold.setdefault(p.fold, []).append(p)
    at_thr, at_10 = {"seen": [], "unseen": []}, {"seen": [], "unseen": []}
    for docs in by_fold.values():
        gold, seen = [set(p.gold) for p in docs], docs[0].seen
        for key, out in seen_unseen_recall([set(p.predicted) for p in docs], gold, seen).items():
            at_thr[key].append(out)
        for key, out in seen_unseen_recall([_top(p) for p in docs], gold, seen).items():
            at_10[key].append(out)
    result = {}
    for key in ("seen", "unseen"):
        thr, top = _pooled(at_thr[key]), _pooled(at_10[key])
        result[key] = {"support": thr.support, "r@10": top.recall if top.support else None,
                       "precision_at_threshold": thr.precision, "predicted": thr.predicted,
                       "recall_at_threshold": thr.recall if thr.support else None,
                       "f1_at_threshold": thr.f1}  # fmt: skip
    return result


def parent_level(preds: Sequence[Prediction]) -> dict:
    """Ranking metrics and micro P/R/F1 with labels rolled up to parent techniques (first occurrence kept)."""
    ranked = [list(dict.fromkeys(parent_id(lab) for lab in p.ranked)) for p in preds]
    gold = [map_labels(p.gold, parent_id) for p in preds]
    predicted = [map_labels(p.predicted, parent_id) for p in preds]
    micro = set_prf(predicted, gold, average="micro")
    return {"ranking": ranking_summary(ranked, gold), "micro": _prf(micro)}


def per_technique(preds: Sequence[Prediction], techniques: Sequence[Technique]) -> list[dict]:
    """Support, P/R/F1 at threshold and R@10 for each label that is gold or predicted, by support."""
    by_id = {t.id: t for t in techniques}
    prf = per_label_prf([p.predicted for p in preds], [p.gold for p in preds])
    hits: dict[str, int] = {}
    for p in preds:
        for lab in set(p.gold) & _top(p):
            hits[lab] = hits.get(lab, 0) + 1
    rows = []
    for lab, s in prf.items():
        t = by_id.get(lab)
        rows.append({"id": lab, "name": t.name if t else "", "tactic_id": t.tactic_id if t else ""} | _prf(s)
                    | {"r@10": hits.get(lab, 0) / s.support if s.support else None})  # fmt: skip
    return sorted(rows, key=lambda r: (-r["support"], -r["predicted"], r["id"]))


def per_tactic(preds: Sequence[Prediction], techniques: Sequence[Technique]) -> list[dict]:
    """Per tactic: gold labels of its techniques (support), pooled recall@10, the same for the unseen slice
    (gold labels with no real training passage in their fold), and micro P/R/F1 at threshold."""
    tactic_of = {t.id: t.tactic_id for t in techniques}
    names, members = {}, {}
    for t in techniques:
        names[t.tactic_id] = t.tactic
        members.setdefault(t.tactic_id, []).append(t.id)
    gold, predicted = [p.gold for p in preds], [p.predicted for p in preds]
    rows = []
    for tactic in sorted(members):
        pairs = [(lab, p) for p in preds for lab in p.gold if tactic_of.get(lab) == tactic]
        if not pairs and not any(tactic_of.get(lab) == tactic for p in predicted for lab in p):
            continue
        hit = sum(lab in _top(p) for lab, p in pairs)
        unseen = [(lab, p) for lab, p in pairs if lab not in p.seen]
        s = set_prf(predicted, gold, average="micro", labels=members[tactic])
        rows.append({"id": tactic, "name": names[tactic], "support": len(pairs),
                     "r@10": hit / len(pairs) if pairs else None, "unseen_support": len(unseen),
                     "unseen_r@10": sum(lab in _top(p) for lab, p in unseen) / len(unseen) if unseen else None}
                    | _prf(s))  # fmt: skip
    return rows


def calibration(preds: Sequence[Prediction]) -> dict:
    """Expected calibration error of the scores: over every (passage, technique) pair, and over the top 10
    each passage shows (what an analyst reads)."""
    every = [(score, lab in p.gold) for p in preds for lab, score in zip(p.ranked, p.scores)]
    shown = [(score, lab in p.gold) for p in preds for lab, score in zip(p.ranked[:10], p.scores[:10])]
    return {name: expected_calibration_error([s for s, _ in pairs], [g for _, g in pairs])
            for name, pairs in (("ece_all", every), ("ece_top10", shown))}  # fmt: skip


HUB_SHARE = 0.30  # a technique in more top 10s than this, and more than twice as often as it is gold, is a hub


def hub_line(gold_rate):
    """The share of top 10s above which a technique is a hub: HUB_SHARE, or twice its gold rate when that is
    higher (a technique gold that often has earned its place). Works on one rate or an array of them."""
    return np.maximum(HUB_SHARE, 2 * np.asarray(gold_rate))


def hubs(rankings: Sequence[Sequence[str]], golds: Sequence[Sequence[str]] | None = None,
         *, floor: float = 0.2) -> list[dict]:  # fmt: skip
    """Techniques found in the top 10 of at least ``floor`` of the documents: their share, their gold rate
    (when gold labels are given) and whether that makes them a hub (content-blind noise).

    >>> hubs([["a", "b"], ["a", "c"], ["a", "d"]], [["b"], ["c"], ["d"]], floor=0.5)
    [{'id': 'a', 'share': 1.0, 'gold_rate': 0.0, 'hub': True}]
    """
    n = len(rankings)
    counts: dict[str, int] = {}
    for ranked in rankings:
        for lab in set(ranked[:10]):
            counts[lab] = counts.get(lab, 0) + 1
    rows = []
    for lab, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if c / n < floor:
            continue
        rate = sum(lab in g for g in golds) / n if golds is not None else None
        rows.append({"id": lab, "share": c / n, "gold_rate": rate,
                     "hub": bool(c / n > (HUB_SHARE if rate is None else hub_line(rate)))})  # fmt: skip
    return rows


def summarise(preds: Sequence[Prediction], techniques: Sequence[Technique]) -> dict:
    """Every metric for one method's predictions (documents without gold labels are skipped)."""
    preds = [p for p in preds if p.gold]
    ranked, gold = [p.ranked for p in preds], [set(p.gold) for p in preds]
    predicted = [set(p.predicted) for p in preds]
    curve = ranking_summary(ranked, gold, ks=range(1, CURVE_K + 1), precision_ks=())
    scores = [dict(zip(p.ranked, p.scores)) for p in preds]
    out = {
        "n_documents": len(preds),
        "n_incidents": len({p.incident_id for p in preds}),
        "ranking": ranking_summary(ranked, gold),
        "r_at_k": [curve[f"r@{k}"] for k in range(1, CURVE_K + 1)],
        "micro": _prf(set_prf(predicted, gold, average="micro")),
        "macro": _prf(set_prf(predicted, gold, average="macro")),
        "seen_unseen": seen_unseen(preds),
        "parent": parent_level(preds),
        "per_technique": per_technique(preds, techniques),
        "per_tactic": per_tactic(preds, techniques),
        "pr_curve": [list(pt) for pt in precision_recall_curve_points(scores, gold, thresholds=PR_GRID)],
        "calibration": calibration(preds),
        "hubs": hubs(ranked, [p.gold for p in preds]),
    }
    return out | {"headline": headline(out)}


def headline(summary: dict) -> dict[str, float | None]:
    """A flat name -> value view of a summary: what --fail-under and --compare look at."""
    flat = dict(summary["ranking"])
    for avg in ("micro", "macro"):
        flat |= {f"{avg}_{short}": summary[avg][k] for k, short in SHORT.items()}
    flat |= {f"parent_{k}": v for k, v in summary["parent"]["ranking"].items() if k in ("p@1", "r@10", "map")}
    for key in ("seen", "unseen"):
        flat[f"{key}_r@10"] = summary["seen_unseen"][key]["r@10"]
        flat[f"{key}_recall"] = summary["seen_unseen"][key]["recall_at_threshold"]
    return flat


GATE_METRICS = ("p@1", "p@3", "p@5", "r@1", "r@3", "r@5", "r@10", "map", "mrr", "micro_p", "micro_r",
                "micro_f1", "macro_p", "macro_r", "macro_f1", "parent_p@1", "parent_r@10", "parent_map",
                "seen_r@10", "seen_recall", "unseen_r@10", "unseen_recall")  # fmt: skip


# ------------------------------------------------------------------------------------------ intervals
def _doc_values(p: Prediction) -> dict[str, list[float]]:
    """Per-passage values whose pooled statistic is each headline metric (micro F1 needs counts)."""
    gold = set(p.gold)
    return {"p@1": [precision_at_k(p.ranked, gold, k=1)], "r@10": [recall_at_k(p.ranked, gold, k=10)],
            "map": [average_precision_score(p.ranked, gold)],
            "micro_f1": [len(gold & set(p.predicted)), len(p.predicted), len(gold)]}  # fmt: skip


def _micro_f1(stride: int, offset: int = 0) -> Callable[[np.ndarray], float]:
    """Micro F1 from pooled (tp, n_predicted, n_gold) triples found every ``stride`` values."""

    def stat(a: np.ndarray) -> float:
        tp, n_pred, n_gold = (a[offset + i :: stride].sum() for i in range(3))
        return float(2 * tp / (n_pred + n_gold)) if n_pred + n_gold else 0.0

    return stat


def _grouped(groups: Sequence[str], values: Sequence[list[float]]) -> list[list[float]]:
    out: dict[str, list[float]] = {}
    for g, v in zip(groups, values):
        out.setdefault(g, []).extend(v)
    return list(out.values())


def intervals(preds: Sequence[Prediction], *, n_resamples: int = 1000) -> dict[str, list[float]]:
    """95% bootstrap intervals of the headline metrics, resampling incidents."""
    docs = [p for p in preds if p.gold]
    groups, values = [p.incident_id for p in docs], [_doc_values(p) for p in docs]
    out = {}
    for key in HEADLINE:
        if key == "micro_f1":
            per_group = _grouped(groups, [v[key] for v in values])
            lo, hi = bootstrap_interval(per_group, statistic=_micro_f1(3), n_resamples=n_resamples)
        else:
            lo, hi = bootstrap_metric(groups, [v[key][0] for v in values], n_resamples=n_resamples)
        out[key] = [lo, hi]
    return out


def margin(ours: Sequence[Prediction], other: Sequence[Prediction], *, n_resamples: int = 1000) -> dict:
    """Ours minus another method on the same passages, with a paired bootstrap interval over incidents."""
    if [p.example_id for p in ours] != [p.example_id for p in other]:
        raise ValueError("methods were scored on different passages")
    pairs = [(a, b) for a, b in zip(ours, other) if a.gold]
    groups = [a.incident_id for a, _ in pairs]
    out = {}
    for key in HEADLINE:
        va, vb = [_doc_values(a)[key] for a, _ in pairs], [_doc_values(b)[key] for _, b in pairs]
        if key == "micro_f1":  # six values per passage: ours' (tp, n_pred, n_gold), then the other's

            def diff(a: np.ndarray) -> float:
                return _micro_f1(6)(a) - _micro_f1(6, 3)(a)

            per_doc = [x + y for x, y in zip(va, vb)]
            point = diff(np.array([v for d in per_doc for v in d], dtype=float))
            lo, hi = bootstrap_interval(_grouped(groups, per_doc), statistic=diff, n_resamples=n_resamples)
        else:
            diffs = [x[0] - y[0] for x, y in zip(va, vb)]
            point = float(np.mean(diffs))
            lo, hi = bootstrap_metric(groups, diffs, n_resamples=n_resamples)
        out[key] = {"margin": point, "interval": [lo, hi]}
    return out


# ------------------------------------------------------------------------------------------ gates
def parse_gates(specs: Sequence[str]) -> dict[str, float]:
    """``["map=0.30", "r@10=0.45"]`` -> ``{"map": 0.3, "r@10": 0.45}``; unknown names raise ValueError.

    >>> parse_gates(["MAP=0.3", "r@10=.45"])
    {'map': 0.3, 'r@10': 0.45}
    """
    out = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip().lower()
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--fail-under {spec!r}: expected METRIC=VALUE, e.g. map=0.30") from None
        if not sep or name not in GATE_METRICS:
            raise ValueError(f"--fail-under {spec!r}: unknown metric; choose from {', '.join(GATE_METRICS)}")
    return out


def check_gates(values: dict[str, float], gates: dict[str, float]) -> list[str]:
    """One message per metric below its floor (empty list: all gates pass).

    >>> check_gates({"map": 0.25, "r@10": 0.5}, {"map": 0.3, "r@10": 0.45})
    ['map 0.2500 is below the required 0.3000']
    """
    out = []
    for name, floor in gates.items():
        value = values.get(name)
        if value is None or math.isnan(value):
            out.append(f"{name} was not measured (no gold labels of that kind); required {floor:.4f}")
        elif value < floor:
            out.append(f"{name} {value:.4f} is below the required {floor:.4f}")
    return out


def compare_headline(current: dict[str, float], committed: dict, *, tolerance: float) -> list[str]:
    """Messages for headline metrics that fell more than ``tolerance`` below a committed metrics.json.

    >>> compare_headline({"map": 0.30}, {"methods": {"ours": {"headline": {"map": 0.35}}}}, tolerance=0.02)
    ['map 0.3000 is 0.0500 below the committed 0.3500 (tolerance 0.02)']
    """
    old = committed.get("methods", {}).get(OURS, {}).get("headline", {})
    if not old:
        return [f"the committed metrics hold no headline metrics for {OURS!r}; nothing to compare with"]
    out = []
    for key in HEADLINE:
        if old.get(key) is None or current.get(key) is None:
            continue
        if current[key] < old[key] - tolerance - 1e-12:
            out.append(f"{key} {current[key]:.4f} is {old[key] - current[key]:.4f} below the committed "
                       f"{old[key]:.4f} (tolerance {tolerance:g})")  # fmt: skip
    return out
