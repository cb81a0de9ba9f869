"""Baselines the tagger must beat, with the same fit-and-predict signature as ``evaluate.tagger_method``:
``method(train_examples, test_texts, techniques) -> (rows, info)`` where each row is
(every label ranked best first, their scores, the predicted label set). Both see the training fold only.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from .metrics import precision_recall_curve_points
from .schema import Example, Row, Technique

PRIOR = "prior (most frequent)"
TFIDF = "tf-idf + logistic regression"
DESCRIPTIONS = {
    PRIOR: "ranks every technique by its number of training-fold examples (ties by id); predicts the top m, "
    "m = median number of labels per training example (rounded half up)",
    TFIDF: "TF-IDF (word 1-2 grams, sublinear tf) + one-vs-rest logistic regression (liblinear, C=10) on the "
    "training-fold passages; labels without a training example score 0; threshold maximises micro F1 on "
    "out-of-fold scores of an inner GroupKFold by incident (up to 5 folds) within the training fold",
}
LR_C = 10.0
INNER_FOLDS = 5



def _ranked(labels: Sequence[str], score: Mapping[str, float]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    order = sorted(labels, key=lambda lab: (-score.get(lab, 0.0), lab))
    return tuple(order), tuple(float(score.get(lab, 0.0)) for lab in order)


# ---------------------------------------------------------------------------------------------- prior
def prior_rows(counts: Mapping[str, float], median_labels: float, n_train: int, n_test: int) -> list[Row]:
    """The same ranking for every document: label frequency in training, top m predicted.

    >>> prior_rows({"a": 1, "b": 3, "c": 0}, 1.0, 4, 1)[0]
    (('b', 'a', 'c'), (0.75, 0.25, 0.0), ('b',))
    """
    m = int(np.floor(median_labels + 0.5))
    freq = {lab: n / max(n_train, 1) for lab, n in counts.items()}
    ranked, scores = _ranked(sorted(counts), freq)
    return [(ranked, scores, ranked[:m])] * n_test


def prior_method(train: Sequence[Example], texts: Sequence[str], techniques: Sequence[Technique]):
    counts = Counter(lab for e in train for lab in e.labels)
    all_counts = {t.id: counts.get(t.id, 0) for t in techniques}
    median = float(np.median([len(e.labels) for e in train]))
    return prior_rows(all_counts, median, len(train), len(texts)), {"m": int(np.floor(median + 0.5))}


# ---------------------------------------------------------------------------------------------- tf-idf + LR
def _fit_lr(train: Sequence[Example]):
    """TF-IDF + one-vs-rest logistic regression over the labels present in ``train``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer(classes=sorted({lab for e in train for lab in e.labels}))
    Y = binarizer.fit_transform([e.labels for e in train])
    if Y.shape[1] == 1:  # one label only: a single always-positive column cannot be learned
        Y = np.hstack([Y, 1 - Y])
    model = make_pipeline(
        TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), stop_words="english"),
        OneVsRestClassifier(LogisticRegression(C=LR_C, solver="liblinear")),
    )
    with warnings.catch_warnings():  # a label on every training passage gives a constant column: fine
        warnings.simplefilter("ignore", UserWarning)
        model.fit([e.text for e in train], Y)
    return model, list(binarizer.classes_)


def _lr_scores(model, labels: list[str], texts: Sequence[str]) -> list[dict[str, float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        probs = model.predict_proba(list(texts))
    return [dict(zip(labels, map(float, row))) for row in probs]


def inner_threshold(train: Sequence[Example], *, n_folds: int = INNER_FOLDS) -> float:
    """Threshold maximising micro F1 on out-of-fold scores of a GroupKFold by incident inside ``train``."""
    from sklearn.model_selection import GroupKFold

    groups = [e.incident_id for e in train]
    k = min(n_folds, len(set(groups)))
    if k < 2:
        return 0.5
    scores, golds = [], []
    for tr, te in GroupKFold(n_splits=k).split(np.zeros(len(train)), groups=groups):
        model, labels = _fit_lr([train[i] for i in tr])
        scores += _lr_scores(model, labels, [train[i].text for i in te])
        golds += [set(train[i].labels) for i in te]
    best = (0.0, 0.5)
    for t, p, r in precision_recall_curve_points(scores, golds):
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        best = max(best, (f1, -t))  # ties: the lowest threshold
    return -best[1] if best[0] > 0 else 0.5


def tfidf_logreg_method(train: Sequence[Example], texts: Sequence[str], techniques: Sequence[Technique]):
    model, labels = _fit_lr(train)
    threshold = inner_threshold(train)
    every = [t.id for t in techniques]
    known = set(every)
    rows = []
    for score in _lr_scores(model, labels, texts):
        score = {lab: s for lab, s in score.items() if lab in known}
        ranked, values = _ranked(every, score)
        rows.append((ranked, values, tuple(sorted(lab for lab, s in score.items() if s >= threshold))))
    return rows, {"threshold": round(threshold, 6)}
