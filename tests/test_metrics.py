"""Metrics: hand-computed examples, edge cases and hypothesis properties."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disarm_tagger.metrics import (
    PRF,
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
    reciprocal_rank,
    seen_unseen_recall,
    set_prf,
)

PROPS = settings(max_examples=200, deadline=None)
LABELS = ["T0001", "T0002", "T0003.001", "T0003.002", "T0004", "T0005"]
label = st.sampled_from(LABELS)
label_set = st.sets(label, max_size=4)
ranking = st.lists(label, max_size=len(LABELS), unique=True)


@st.composite
def paired_sets(draw):
    """(predicted, gold): two equally long lists of label sets."""
    n = draw(st.integers(0, 6))
    docs = st.lists(label_set, min_size=n, max_size=n)
    return draw(docs), draw(docs)


# --- ranking metrics: hand-computed -------------------------------------------------------------------------


def test_precision_at_k_examples():
    ranked = ["a", "b", "c", "d"]
    assert precision_at_k(ranked, {"a", "c"}, k=1) == 1.0
    assert precision_at_k(ranked, {"a", "c"}, k=2) == 0.5
    assert precision_at_k(ranked, {"a", "c"}, k=3) == pytest.approx(2 / 3)
    assert precision_at_k(ranked, {"b"}, k=1) == 0.0


def test_precision_at_k_denominator_is_k_when_ranking_is_short():
    assert precision_at_k(["a", "b"], {"a", "b"}, k=5) == pytest.approx(2 / 5)
    assert precision_at_k([], {"a"}, k=3) == 0.0


def test_recall_at_k_examples_and_edges():
    ranked = ["a", "b", "c", "d"]
    assert recall_at_k(ranked, {"a", "d", "z"}, k=1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, {"a", "d", "z"}, k=4) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, {"a", "d", "z"}, k=100) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, set(), k=3) == 0.0
    assert recall_at_k([], {"a"}, k=3) == 0.0


@pytest.mark.parametrize("fn", [precision_at_k, recall_at_k])
def test_k_must_be_positive(fn):
    with pytest.raises(ValueError):
        fn(["a"], {"a"}, k=0)


def test_average_precision_examples():
    # hits at ranks 2 and 4: (1/2 + 2/4) / 2
    assert average_precision_score(["x", "a", "y", "b"], {"a", "b"}) == pytest.approx(0.5)
    # one gold label never ranked counts as a miss: (1/1 + 2/3) / 3
    assert average_precision_score(["a", "x", "b"], {"a", "b", "c"}) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision_score(["a", "b"], {"a", "b"}) == 1.0
    assert average_precision_score([], {"a"}) == 0.0
    assert average_precision_score(["a"], set()) == 0.0


def test_reciprocal_rank_examples():
    assert reciprocal_rank(["a", "b"], {"a"}) == 1.0
    assert reciprocal_rank(["x", "y", "z", "b"], {"b", "z"}) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x"], {"a"}) == 0.0
    assert reciprocal_rank([], {"a"}) == 0.0


def test_ranking_summary_example_skips_empty_gold():
    rankings = [["a", "b", "c"], ["x", "y", "d"], ["q"]]
    golds = [{"a", "c"}, {"d", "e"}, set()]
    out = ranking_summary(rankings, golds, ks=(1, 3, 10))
    assert list(out) == ["p@1", "p@3", "p@5", "r@1", "r@3", "r@10", "map", "mrr"]
    assert out["p@1"] == pytest.approx((1 + 0) / 2)
    assert out["p@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert out["p@5"] == pytest.approx((2 / 5 + 1 / 5) / 2)
    assert out["r@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert out["r@3"] == pytest.approx((1 + 1 / 2) / 2)
    assert out["r@10"] == pytest.approx((1 + 1 / 2) / 2)
    assert out["map"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 3) / 2) / 2)
    assert out["mrr"] == pytest.approx((1 + 1 / 3) / 2)


def test_ranking_summary_all_gold_empty_is_nan():
    out = ranking_summary([["a"]], [set()])
    assert out and all(math.isnan(v) for v in out.values())


# --- set metrics: hand-computed ----------------------------------------------------------------------------


def test_prf_from_counts_example_and_zero_division():
    assert prf_from_counts(3, 1, 2) == PRF(
        precision=0.75, recall=0.6, f1=pytest.approx(2 * 0.75 * 0.6 / 1.35), support=5, predicted=4, tp=3
    )
    assert prf_from_counts(0, 0, 0) == PRF(0.0, 0.0, 0.0, 0, 0, 0)
    assert prf_from_counts(0, 2, 0) == PRF(0.0, 0.0, 0.0, 0, 2, 0)
    assert prf_from_counts(0, 0, 3) == PRF(0.0, 0.0, 0.0, 3, 0, 0)


def test_prf_from_counts_is_the_harmonic_mean_of_its_ratios():
    p = prf_from_counts(3, 1, 5)  # precision 3/4, recall 3/8
    assert (p.precision, p.recall, p.support, p.predicted, p.tp) == (0.75, 0.375, 8, 4, 3)
    assert p.f1 == pytest.approx(2 * 0.75 * 0.375 / (0.75 + 0.375))


PRED = [{"a", "b"}, {"a"}, {"c"}]
GOLD = [{"a"}, {"b", "c"}, {"c"}]
# per label: a tp=1 fp=1 fn=0; b tp=0 fp=1 fn=1; c tp=1 fp=0 fn=1


def test_set_prf_micro_example():
    out = set_prf(PRED, GOLD, average="micro")
    # tp = 2 (a in doc1, c in doc3), fp = 2 (b doc1, a doc2), fn = 2 (b, c in doc2)
    assert (out.tp, out.predicted, out.support) == (2, 4, 4)
    assert (out.precision, out.recall, out.f1) == pytest.approx((0.5, 0.5, 0.5))


def test_set_prf_macro_example():
    out = set_prf(PRED, GOLD, average="macro")
    # a: P=1/2 R=1 F=2/3; b: 0 0 0; c: P=1 R=1/2 F=2/3
    assert out.precision == pytest.approx((0.5 + 0 + 1) / 3)
    assert out.recall == pytest.approx((1 + 0 + 0.5) / 3)
    assert out.f1 == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)
    assert (out.tp, out.predicted, out.support) == (2, 4, 4)


def test_set_prf_macro_labels_default_to_gold_and_unpredicted_label_scores_zero():
    # "z" is only predicted, so it is not in the default macro label set; "b" is never predicted.
    # a: P=1 R=1; b: P=0 R=0; z (explicit labels only): P=0 R=0
    out = set_prf([{"a", "z"}], [{"a", "b"}], average="macro")
    assert (out.precision, out.recall, out.f1) == pytest.approx((1 / 2, 1 / 2, 1 / 2))
    assert (out.tp, out.predicted, out.support) == (1, 1, 2)
    explicit = set_prf([{"a", "z"}], [{"a", "b"}], average="macro", labels=["a", "b", "z"])
    assert (explicit.precision, explicit.recall) == pytest.approx((1 / 3, 1 / 3))
    assert (explicit.tp, explicit.predicted, explicit.support) == (1, 2, 2)


def test_set_prf_micro_with_labels_restricts_counts():
    out = set_prf(PRED, GOLD, average="micro", labels=["c"])
    assert (out.tp, out.predicted, out.support) == (1, 1, 2)


def test_set_prf_errors_and_empty():
    with pytest.raises(ValueError):
        set_prf([{"a"}], [], average="micro")
    with pytest.raises(ValueError):
        set_prf([{"a"}], [{"a"}], average="weighted")  # type: ignore[arg-type]
    assert set_prf([], [], average="micro") == PRF(0.0, 0.0, 0.0, 0, 0, 0)
    assert set_prf([set()], [set()], average="macro") == PRF(0.0, 0.0, 0.0, 0, 0, 0)


def test_per_label_prf_example():
    out = per_label_prf(PRED, GOLD)
    assert list(out) == ["a", "b", "c"]
    assert out["a"] == prf_from_counts(1, 1, 0)
    assert out["b"] == prf_from_counts(0, 1, 1)
    assert out["c"] == prf_from_counts(1, 0, 1)


def test_parent_id_and_map_labels():
    assert parent_id("T0086.002") == "T0086"
    assert parent_id("T0086") == "T0086"
    assert map_labels({"T0086.001", "T0086.002", "T0049.003"}, parent_id) == {"T0086", "T0049"}
    assert map_labels([], parent_id) == set()
    # rolling up turns a sibling sub-technique miss into a parent-level hit
    pred, gold = [{"T0086.001"}], [{"T0086.002"}]
    assert set_prf(pred, gold, average="micro").f1 == 0.0
    rolled = [map_labels(s, parent_id) for s in pred], [map_labels(s, parent_id) for s in gold]
    assert set_prf(*rolled, average="micro").f1 == 1.0


def test_seen_unseen_recall_example():
    pred = [{"a", "z"}, {"b"}]
    gold = [{"a", "y"}, {"c", "z"}]
    out = seen_unseen_recall(pred, gold, seen={"a", "b", "c"})
    # seen gold: a (hit), c (miss); unseen gold: y (miss), z (doc 2 miss; z predicted in doc 1 is a fp)
    assert (out["seen"].recall, out["seen"].support, out["seen"].tp) == (0.5, 2, 1)
    assert (out["unseen"].recall, out["unseen"].support, out["unseen"].tp) == (0.0, 2, 0)
    assert out["seen"].predicted == 2 and out["unseen"].predicted == 1
    assert set(out) == {"seen", "unseen"}


def test_seen_unseen_recall_with_no_unseen_gold():
    out = seen_unseen_recall([{"a"}], [{"a"}], seen={"a"})
    assert out["unseen"] == PRF(0.0, 0.0, 0.0, 0, 0, 0)


def test_precision_recall_curve_points_example():
    scores = [{"a": 0.9, "b": 0.5, "c": 0.1}, {"a": 0.5, "d": 0.8}]
    gold = [{"a", "c"}, {"d", "e"}]  # 4 gold labels, "e" never scored
    points = precision_recall_curve_points(scores, gold)
    assert [t for t, _, _ in points] == [0.1, 0.5, 0.8, 0.9]
    expected = {0.1: (3 / 5, 3 / 4), 0.5: (2 / 4, 2 / 4), 0.8: (2 / 2, 2 / 4), 0.9: (1.0, 1 / 4)}
    for t, p, r in points:
        assert (p, r) == pytest.approx(expected[t])


def test_precision_recall_curve_points_explicit_thresholds_and_edges():
    scores = [{"a": 0.9, "b": 0.5}]
    points = precision_recall_curve_points(scores, [{"a"}], thresholds=[0.95, 0.0, 0.6])
    assert points == [(0.0, 0.5, 1.0), (0.6, 1.0, 1.0), (0.95, 0.0, 0.0)]
    assert precision_recall_curve_points([], []) == []
    assert precision_recall_curve_points([{}], [{"a"}], thresholds=[0.5]) == [(0.5, 0.0, 0.0)]
    with pytest.raises(ValueError):
        precision_recall_curve_points([{"a": 1.0}], [])


# --- bootstrap ----------------------------------------------------------------------------------------------


def test_bootstrap_is_deterministic_and_seed_sensitive():
    groups = [[0.0, 0.1], [0.9], [0.4, 0.6, 0.5], [1.0], [0.2]]
    a = bootstrap_interval(groups, n_resamples=300, seed=1)
    assert a == bootstrap_interval(groups, n_resamples=300, seed=1)
    assert a != bootstrap_interval(groups, n_resamples=300, seed=2)
    assert a[0] < np.mean(np.concatenate(groups)) < a[1]


def test_bootstrap_resamples_groups_not_documents():
    # One group of 99 zeros and one group holding a single 1.0. Resampling the two groups gives
    # pooled means 0 (p=1/4), 1/100 (p=1/2) or 1.0 (p=1/4); resampling the 100 documents would
    # essentially never give exactly 0 or 1.
    groups = [[0.0] * 99, [1.0]]
    assert bootstrap_interval(groups, n_resamples=2000, confidence=0.9) == (0.0, 1.0)
    # the statistic runs on pooled values (1/100), not on the mean of group means (1/2)
    assert bootstrap_interval(groups, n_resamples=2000, confidence=0.4) == pytest.approx((0.01, 0.01))
    # a single group: every resample is that group
    assert bootstrap_interval([[0.2, 0.4]]) == pytest.approx((0.3, 0.3))


def test_bootstrap_accepts_2d_array_and_statistic():
    values = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    lo, hi = bootstrap_interval(values, statistic=np.median, n_resamples=200)
    assert 0.0 <= lo <= hi <= 1.0


def test_bootstrap_errors():
    with pytest.raises(ValueError):
        bootstrap_interval([])
    with pytest.raises(ValueError):
        bootstrap_interval([[], []])
    with pytest.raises(ValueError):
        bootstrap_interval([[1.0]], confidence=1.0)
    with pytest.raises(ValueError):
        bootstrap_interval([[1.0]], n_resamples=0)
    with pytest.raises(ValueError):
        bootstrap_metric(["a"], [1.0, 2.0])


def test_bootstrap_metric_groups_by_id():
    ids = ["inc1", "inc2", "inc1", "inc3", "inc2"]
    values = [0.1, 0.7, 0.3, 0.9, 0.5]
    by_group = [[0.1, 0.3], [0.7, 0.5], [0.9]]
    kw = dict(n_resamples=200, seed=3)
    assert bootstrap_metric(ids, values, **kw) == bootstrap_interval(by_group, **kw)


# --- properties ---------------------------------------------------------------------------------------------


@PROPS
@given(ranking, label_set, st.integers(1, 10))
def test_ranking_scores_are_bounded(ranked, gold, k):
    for value in (
        precision_at_k(ranked, gold, k=k),
        recall_at_k(ranked, gold, k=k),
        average_precision_score(ranked, gold),
        reciprocal_rank(ranked, gold),
    ):
        assert 0.0 <= value <= 1.0


@PROPS
@given(st.lists(ranking, min_size=1, max_size=5), st.data())
def test_ranking_summary_is_bounded(rankings, data):
    golds = data.draw(st.lists(st.sets(label, min_size=1, max_size=3), min_size=len(rankings),
                               max_size=len(rankings)))
    assert all(0.0 <= v <= 1.0 for v in ranking_summary(rankings, golds).values())


@PROPS
@given(ranking, label_set)
def test_recall_at_k_is_monotone_in_k(ranked, gold):
    recalls = [recall_at_k(ranked, gold, k=k) for k in range(1, len(LABELS) + 2)]
    assert recalls == sorted(recalls)


@PROPS
@given(st.permutations(LABELS), st.integers(1, len(LABELS)))
def test_ap_is_one_when_gold_is_the_top_of_the_ranking(ranked, n_gold):
    assert average_precision_score(ranked, set(ranked[:n_gold])) == pytest.approx(1.0)
    assert reciprocal_rank(ranked, set(ranked[:n_gold])) == 1.0


@PROPS
@given(paired_sets(), st.sampled_from(["micro", "macro"]))
def test_set_prf_is_bounded(pair, average):
    out = set_prf(*pair, average=average)
    assert all(0.0 <= v <= 1.0 for v in (out.precision, out.recall, out.f1))


@PROPS
@given(paired_sets(), st.sampled_from(["micro", "macro"]), st.randoms(use_true_random=False))
def test_set_prf_is_invariant_to_document_and_label_order(pair, average, rnd: random.Random):
    predicted, gold = pair
    order = list(range(len(gold)))
    rnd.shuffle(order)
    # reversed-insertion lists as label containers: same labels, different iteration order
    shuffled_pred = [sorted(predicted[i], reverse=True) for i in order]
    shuffled_gold = [rnd.sample(sorted(gold[i]), len(gold[i])) for i in order]
    a = set_prf(predicted, gold, average=average)
    b = set_prf(shuffled_pred, shuffled_gold, average=average)
    assert (a.tp, a.predicted, a.support) == (b.tp, b.predicted, b.support)
    assert (a.precision, a.recall, a.f1) == pytest.approx((b.precision, b.recall, b.f1))


@PROPS
@given(paired_sets())
def test_per_label_counts_add_up_to_micro(pair):
    per_label = per_label_prf(*pair).values()
    micro = set_prf(*pair, average="micro")
    assert sum(p.tp for p in per_label) == micro.tp
    assert sum(p.predicted for p in per_label) == micro.predicted
    assert sum(p.support for p in per_label) == micro.support


@PROPS
@given(paired_sets(), st.sets(label))
def test_seen_unseen_partitions_micro_counts(pair, seen):
    out = seen_unseen_recall(*pair, seen=seen)
    micro = set_prf(*pair, average="micro")
    assert out["seen"].support + out["unseen"].support == micro.support
    assert out["seen"].tp + out["unseen"].tp == micro.tp
    assert all(0.0 <= p.recall <= 1.0 for p in out.values())


@PROPS
@given(st.lists(st.dictionaries(label, st.floats(0, 1)), min_size=1, max_size=5), st.data())
def test_pr_curve_is_bounded_and_recall_non_increasing(scores, data):
    gold = data.draw(st.lists(label_set, min_size=len(scores), max_size=len(scores)))
    points = precision_recall_curve_points(scores, gold)
    assert all(0.0 <= p <= 1.0 and 0.0 <= r <= 1.0 for _, p, r in points)
    recalls = [r for _, _, r in points]
    assert recalls == sorted(recalls, reverse=True)


unit = st.floats(0, 1, allow_nan=False)


@PROPS
@given(st.lists(st.lists(unit, max_size=5), min_size=1, max_size=8).filter(lambda g: any(g)),
       st.integers(0, 2**16))
def test_bootstrap_interval_is_ordered_and_within_value_range(groups, seed):
    lo, hi = bootstrap_interval(groups, n_resamples=50, seed=seed)
    pooled = [v for g in groups for v in g]
    eps = 1e-12
    assert lo <= hi
    assert min(pooled) - eps <= lo and hi <= max(pooled) + eps
