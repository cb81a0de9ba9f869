"""Per-label evidence signals and their fusion. Pure numpy: every function maps arrays to arrays.

Shapes: a query document is a matrix of unit (sentence) embeddings ``Q`` [m, d]; the training side holds
unit embeddings ``U`` [u, d] owned by examples ``owner`` [u] (sorted, contiguous), example label matrix
``Y`` [n, L] (a ``Labels``, which holds only its nonzero entries), technique embeddings ``T`` [L, d]. A
signal is a vector over the L labels.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

import numpy as np

SIGNALS = ("knn", "knn_authored", "knn_sentences", "centroid", "ridge", "ridge_text", "cooc", "zs_name", "zs_full",
           "tfidf", "name_tfidf", "lexicon", "prior")  # fmt: skip
# knn: real passages (DISARM, analysts' annotations) as neighbours; knn_authored: authored passages as neighbours;
# knn_sentences: each sentence's own vote among the authored passages; centroid: similarity to the mean of each
# technique's authored passages; ridge_text: ridge regression from a passage's TF-IDF words and mean embedding
# to its labels, fitted on the authored passages. Each ranks only the labels it has examples of; the others rank
# every label.
SUPERVISED = frozenset({"knn", "ridge", "cooc", "prior"})  # labels with a training example (any origin)
ZERO_SHOT = ("zs_name", "zs_full")  # similarity to technique names / names + summaries, column-normalised


class Labels:
    """A 0/1 example x label matrix Y [n, L] kept as its nonzero entries. An example carries one to three
    of hundreds of labels, so a product with Y costs its few thousand entries, not n x L: with ten
    thousand training passages the dense products took most of the time a text spends in scoring.

    >>> y = Labels(np.array([[1, 0, 1], [0, 0, 1]]))
    >>> y.totals(np.array([2.0, 3.0])).tolist(), y.totals(np.array([[1.0, 0.0], [0.0, 1.0]])).tolist()
    ([2.0, 0.0, 5.0], [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    >>> y.spread(np.array([1.0, 10.0, 100.0])).tolist()
    [101.0, 100.0]
    >>> y.examples(2).tolist(), y.examples(1).tolist(), y.carried.tolist()
    ([0, 1], [], [True, False, True])
    """

    def __init__(self, Y: np.ndarray):
        Y = np.asarray(Y)
        self.shape = Y.shape
        self.cols, self.rows = np.nonzero(Y.T)  # column-major: each label's examples are contiguous
        # label j's entries are bounds[j] to bounds[j + 1]; labels with an example, and where each starts:
        self._bounds = np.searchsorted(self.cols, np.arange(self.shape[1] + 1))
        self._labels = np.flatnonzero(self.carried)
        self._starts = self._bounds[self._labels]

    @property
    def carried(self) -> np.ndarray:
        """[L] bool: the labels at least one example carries."""
        return np.diff(self._bounds) > 0

    def examples(self, j: int) -> np.ndarray:
        """The rows (examples) that carry label ``j``, in order."""
        return self.rows[self._bounds[j] : self._bounds[j + 1]]

    def totals(self, w: np.ndarray) -> np.ndarray:
        """``w @ Y``: per-label sums of example weights ``w`` [n], or of each row of ``w`` [m, n]."""
        out = np.zeros((*w.shape[:-1], self.shape[1]), dtype=np.result_type(w.dtype, np.float32))
        if len(self.rows):
            out[..., self._labels] = np.add.reduceat(w[..., self.rows], self._starts, axis=-1)
        return out

    def spread(self, v: np.ndarray) -> np.ndarray:
        """``Y @ v``: per-example sums of label values ``v`` [L]."""
        return np.bincount(self.rows, weights=v[self.cols], minlength=self.shape[0])


def top_mean(sim: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean of the k largest values down axis 0 (fewer rows: mean of all).

    >>> top_mean(np.array([[1.0, 0.0], [0.5, 0.2], [0.0, 0.4]]), k=2).round(2).tolist()
    [0.75, 0.3]
    """
    k = min(k, sim.shape[0])
    if k == 0:
        return np.zeros(sim.shape[1])
    return np.partition(sim, sim.shape[0] - k, axis=0)[-k:].mean(axis=0)


SLICE_ROWS = 512  # query sentences per slice of a long document: 100 kB each against 25,000 training units


class Units:
    """The training units (rows of ``U``; an example's units are the contiguous rows from its ``starts``
    entry), laid out for ``best``: grouped by how many units their example has, and within a group by
    each unit's place in its example. An example's best match is then a maximum over k contiguous column
    blocks, not one of thousands of tiny reduceat segments: the same floats, in under half the time.
    Holds a reordered copy of ``U``.
    """

    def __init__(self, U: np.ndarray, starts: np.ndarray):
        counts = np.diff(starts, append=len(U))
        self.examples = len(starts)
        self.groups: list[tuple[int, np.ndarray, int]] = []  # (k units, its examples, its first column)
        order, column = [], 0
        for k in np.unique(counts):
            examples = np.flatnonzero(counts == k)
            order += [starts[examples] + j for j in range(k)]
            self.groups.append((int(k), examples, column))
            column += int(k) * len(examples)
        self.U = np.ascontiguousarray(U[np.concatenate(order)] if order else U[:0])

    def best(self, Q: np.ndarray) -> np.ndarray:
        """Each query unit's best cosine into each training example [m, n]; -1 into one without units.

        >>> units = Units(np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]]), np.array([0, 2]))
        >>> units.best(np.array([[1.0, 0.0]]))
        array([[1., 0.]])
        """
        out = np.full((len(Q), self.examples), -1.0, dtype=np.result_type(Q.dtype, self.U.dtype))
        for lo in range(0, len(Q), SLICE_ROWS):  # the product of a long document, a slice at a time
            sim = Q[lo : lo + SLICE_ROWS] @ self.U.T
            for k, examples, column in self.groups:
                m = len(examples)
                blocks = [sim[:, column + j * m : column + (j + 1) * m] for j in range(k)]
                if k == 1:
                    out[lo : lo + len(sim), examples] = blocks[0]
                elif k:
                    best = np.maximum(blocks[0], blocks[1])
                    for block in blocks[2:]:
                        np.maximum(best, block, out=best)
                    out[lo : lo + len(sim), examples] = best
        return out


def example_similarity(best: np.ndarray, q_doc: np.ndarray, E_doc: np.ndarray) -> np.ndarray:
    """Similarity of one query document to every training example [n], from ``Units.best``: half the mean
    of the best three query-sentence matches into the example, half the cosine of the mean document
    embeddings."""
    return 0.5 * top_mean(best, 3) + 0.5 * (E_doc @ q_doc)


def sentence_votes(best: np.ndarray, Y: Labels, *, temperature: float) -> np.ndarray:
    """Each query sentence votes over the examples (``best`` [m, n], their labels ``Y`` [n, L]) with softmax
    weights of its best match into each; a label scores its largest share in any one sentence's vote. A
    sentence that plainly describes one behaviour gives that technique most of its vote, a sentence about
    nothing in particular spreads its vote thin, and a technique one paragraph of a long article describes
    is not averaged away by the rest.

    >>> best = np.array([[0.9, 0.1, 0.1], [0.5, 0.5, 0.5]])
    >>> sentence_votes(best, Labels(np.eye(3)), temperature=0.1).round(3).tolist()
    [0.999, 0.333, 0.333]
    """
    if not best.size:
        return np.zeros(Y.shape[1])
    out = np.full(Y.shape[1], -np.inf, dtype=np.float32)
    for lo in range(0, len(best), SLICE_ROWS):  # a long document's sentences a slice at a time (each
        s = best[lo : lo + SLICE_ROWS] / temperature  # votes alone, so the slices change no value)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        np.maximum(out, Y.totals(p.astype(np.float32, copy=False)).max(axis=0), out=out)
    return out.astype(np.float64)


def knn_scores(sim: np.ndarray, Y: Labels, weight: np.ndarray, *, temperature: float) -> np.ndarray:
    """Softmax-weighted vote of the training examples for each label; ``weight`` scales each example's
    vote (0 leaves it out of the pool, e.g. the held-out incident).

    >>> y = Labels(np.array([[1, 0], [0, 1]]))
    >>> knn_scores(np.array([0.9, 0.1]), y, np.array([1.0, 1.0]), temperature=0.1).round(4).tolist()
    [0.9997, 0.0003]
    >>> knn_scores(np.array([0.9, 0.1]), y, np.array([0.0, 1.0]), temperature=0.1).tolist()
    [0.0, 1.0]
    """
    pool = weight > 0
    if not pool.any():
        return np.zeros(Y.shape[1])
    s = sim[pool] / temperature
    w = np.zeros(len(sim))
    w[pool] = np.exp(s - s.max()) * weight[pool]
    return Y.totals(w / w.sum())


def centroids(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Unit-length mean of the rows of X carrying each label [L, d] (zero for a label no row carries).

    >>> centroids(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1, 1], [0, 1]])).round(3).tolist()
    [[1.0, 0.0], [0.707, 0.707]]
    """
    sums = Y.T @ X
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def cooccurrence(knn: np.ndarray, Y: Labels, weight: np.ndarray) -> np.ndarray:
    """Labels that travel with the labels kNN found: sum_j knn[j] * P(label | j), with P estimated over the
    (weighted) training examples. Computed without forming the label x label matrix.

    >>> y = Labels(np.array([[1, 1], [0, 1]]))
    >>> cooccurrence(np.array([1.0, 0.0]), y, np.array([1.0, 1.0])).tolist()
    [1.0, 1.0]
    >>> cooccurrence(np.array([0.0, 1.0]), y, np.array([1.0, 1.0])).tolist()
    [0.5, 1.0]
    """
    counts = Y.totals(weight)
    per_example = weight * Y.spread(knn / np.where(counts > 0, counts, 1.0))
    return Y.totals(per_example)


_STOP = frozenset("the and for with that this from are was were use using used into their its".split())


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A crude English suffix stripper, enough to match "journalists" with "Journalist Persona".

    >>> [stem(w) for w in ("journalists", "platforms", "identities", "hosting", "asset")]
    ['journalist', 'platform', 'identity', 'host', 'asset']
    """
    for suffix in ("ings", "ing", "ies", "es", "s", "ed"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def name_analyzer(text: str) -> list[str]:
    """Stemmed words and word pairs, for matching technique names against article text."""
    words = [stem(w) for w in re.findall(r"[a-z][a-z0-9\-]+", text.lower())]
    words = [w for w in words if w not in _STOP]
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


def ridge_weights(X: np.ndarray, Y: np.ndarray, *, alpha: float = 1.0,
                  sample_weight: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Closed-form multi-output ridge regression X -> Y (no intercept; X rows are unit vectors), each row
    weighted by ``sample_weight``.

    With fewer examples than dimensions the dual form X.T (X X.T + alpha I)^-1 Y gives the same weights
    from an n x n solve instead of a d x d one.

    >>> X = np.random.default_rng(0).standard_normal((5, 8)); Y = np.eye(5)[:, :2]
    >>> primal = np.linalg.solve(X.T @ X + np.eye(8), X.T @ Y)
    >>> bool(np.allclose(ridge_weights(X, Y), primal))
    True
    """
    root = np.sqrt(sample_weight)[:, None] if sample_weight is not None else 1.0
    X, Y = np.asarray(X, float) * root, np.asarray(Y, float) * root
    n, d = X.shape
    if n < d:
        return X.T @ np.linalg.solve(X @ X.T + alpha * np.eye(n), Y)
    return np.linalg.solve(X.T @ X + alpha * np.eye(d), X.T @ Y)


def ridge_leave_one_group_out(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, held_out, *, alpha: float = 1.0,
                              sample_weight: np.ndarray | None = None) -> dict:  # fmt: skip
    """Ridge weights fitted without each group in ``held_out``: {group: W}. The Gram matrices of the whole
    set are computed once and each group's own part subtracted, so each group costs one d x d solve.

    >>> rng = np.random.default_rng(1); X = rng.standard_normal((12, 3)); Y = rng.standard_normal((12, 2))
    >>> g = np.array(list("aabbccddeeff"))
    >>> bool(np.allclose(ridge_leave_one_group_out(X, Y, g, ["b"])["b"], ridge_weights(X[g != "b"], Y[g != "b"])))
    True
    """
    w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, float)
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    gram, cross = X.T @ (w[:, None] * X), X.T @ (w[:, None] * Y)
    out = {}
    for group in dict.fromkeys(held_out):
        m = groups == group
        Xg, wg = X[m], w[m][:, None]
        out[group] = np.linalg.solve(gram - Xg.T @ (wg * Xg) + alpha * np.eye(X.shape[1]), cross - Xg.T @ (wg * Y[m]))
    return out


def zero_shot(Q: np.ndarray, T: np.ndarray, k: int = 3) -> np.ndarray:
    """How strongly the document's best few sentences match each technique description."""
    return top_mean(Q @ T.T, k)


def column_normalise(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """z-score each label against its own distribution over training documents: some technique texts
    are close to everything (hubs); this asks "is this document unusually close to that technique"."""
    return (values - mean) / std


# A named example: a run of words that each hold a capital or a digit ("League of Legends", "4chan", "iCloud").
_NAME = re.compile(r"(?=[\w.\-]*[A-Z0-9])[\w.\-]*\w(?:\s(?:of\s)?(?=[\w.\-]*[A-Z0-9])[\w.\-]*\w)*")
_EXAMPLE_LISTS = (re.compile(r"\b[Ee]xamples?\b[^.]*?\binclud\w*\s+(.+)"),  # "Examples of X include A, B and C"
                  re.compile(r"^(.+?)\s+(?:is|are)\s+(?:an\s+)?examples?\s+of\b"))  # "A, B and C are examples of X"
_POSSESSIVE = re.compile(r"[\w.\-]+[’']s\s+")  # "Google's Google Play Store": the owner is not the example
MAX_EXAMPLE_WORDS = 5


def _plain_capitals(name: str) -> str:
    """A one-word CamelCase name as people also type it; any other name unchanged.

    >>> [_plain_capitals(n) for n in ("YouTube", "VK", "eBay", "Signal", "League of Legends")]
    ['Youtube', 'VK', 'eBay', 'Signal', 'League of Legends']
    """
    camel = " " not in name and name[0].isupper() and not name.isupper() and any(c.isupper() for c in name[1:])
    return name.capitalize() if camel else name


def build_lexicon(techniques: Iterable, extra: Mapping[str, Iterable[str]] | None = None
                  ) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """Named examples in the technique summaries -> label indices, from the two ways DISARM's pages list
    them: "Examples of Chat Platforms include WhatsApp and Signal" and "YouTube and Vimeo are examples of
    Video Platforms". A list item longer than MAX_EXAMPLE_WORDS words is prose (an example of an event, not a
    name) and is skipped, and so is a whole list that starts with one. A one-word name in CamelCase also
    matches with only its first capital ("Youtube").
    ``extra`` adds names by technique id (the project's named_examples.jsonl), each as it is written and in
    the same plain-capitals form.

    >>> from types import SimpleNamespace as T
    >>> lexicon = build_lexicon([
    ...     T(summary="Examples of Chat Platforms include WhatsApp, WeChat, and Signal."),
    ...     T(summary="YouTube and League of Legends are examples of places. Prominent examples include "
    ...               "the 1980s campaign that the United States ran in Fort Detrick, Maryland.")])
    >>> {term: ix for term, ix in lexicon.items() if ix == (0,)}
    {'Signal': (0,), 'WeChat': (0,), 'Wechat': (0,), 'WhatsApp': (0,), 'Whatsapp': (0,)}
    >>> {term: ix for term, ix in lexicon.items() if ix == (1,)}
    {'League of Legends': (1,), 'YouTube': (1,), 'Youtube': (1,)}
    >>> build_lexicon([T(id="T1", summary="")], {"T1": ["BitChute"], "T9": ["Rumble"]})
    {'BitChute': (0,), 'Bitchute': (0,)}
    """
    lexicon: dict[str, set[int]] = {}
    for i, tech in enumerate(techniques):
        for name in extra.get(tech.id, ()) if extra else ():
            for term in {name, _plain_capitals(name)}:
                lexicon.setdefault(term, set()).add(i)
        for sentence in re.split(r"(?<=[.;!?])\s+", tech.summary):
            for pattern in _EXAMPLE_LISTS:
                match = pattern.search(sentence.rstrip("."))
                if not match:
                    continue
                items = [_POSSESSIVE.sub("", re.sub(r"[()]", " ", item)).strip()
                         for item in re.split(r",|;|\band\b|\bor\b|\betc\b", match.group(1))]
                if len(items[0].split()) > MAX_EXAMPLE_WORDS:  # "examples include the 1980s campaign that..."
                    continue
                for item in items:
                    if len(item.split()) > MAX_EXAMPLE_WORDS:
                        continue
                    for name in _NAME.findall(re.sub(r"^(?:A|An|The)\s", "", item)):
                        if "Platform" in name:
                            continue
                        for term in {name, _plain_capitals(name)}:
                            lexicon.setdefault(term, set()).add(i)
    return {term: tuple(sorted(ix)) for term, ix in sorted(lexicon.items())}


@functools.cache
def _term(term: str) -> tuple[frozenset[str], re.Pattern]:
    """A lexicon term's words, and its whole-word pattern (a few hundred terms, compiled once)."""
    return frozenset(re.findall(r"\w+", term)), re.compile(rf"\b{re.escape(term)}\b")


def lexicon_scores(text: str, lexicon: Mapping[str, tuple[int, ...]], n_labels: int) -> np.ndarray:
    out = np.zeros(n_labels)
    words = set(re.findall(r"\w+", text))
    for term, labels in lexicon.items():  # the regex runs only where every word of the term occurs
        needed, pattern = _term(term)
        if needed <= words and pattern.search(text):
            out[list(labels)] += 1.0
    return out


def rrf(signals: Mapping[str, np.ndarray], active: Mapping[str, np.ndarray], weights: Mapping[str, float], *,
        k: float = 10.0) -> np.ndarray:  # fmt: skip
    """Weighted reciprocal-rank fusion over labels. Each signal ranks only its active labels (a label with
    no training example has no kNN rank); inactive labels get nothing from that signal.

    >>> s = {"a": np.array([3.0, 2.0, 1.0]), "b": np.array([0.0, 5.0, 0.0])}
    >>> act = {"a": np.array([True, True, True]), "b": np.array([False, True, False])}
    >>> rrf(s, act, {"a": 1.0, "b": 1.0}, k=1).round(3).tolist()
    [1.0, 1.5, 0.333]
    """
    n = len(next(iter(signals.values())))
    fused = np.zeros(n)
    for name, values in signals.items():
        w = weights.get(name, 0.0)
        if w == 0.0:
            continue
        mask = active[name]
        v = np.where(mask, values, -np.inf)
        order = np.argsort(-v, kind="stable")
        rank = np.empty(n)
        rank[order] = np.arange(n)
        fused += np.where(mask, w / (k + rank), 0.0)
    return fused
