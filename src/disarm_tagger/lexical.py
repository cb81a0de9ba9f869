"""TF-IDF in plain numpy: fitted once, stored as arrays, applied without scikit-learn or pickle.

``Tfidf`` reproduces scikit-learn's ``TfidfVectorizer(sublinear_tf=True, smooth_idf=True, norm="l2")`` for
the two analyzers the tagger uses (checked against it in the tests). Its state is a vocabulary, an idf
vector and, after ``index``, a term-major sparse matrix of the technique texts, so scoring a document is
one gather-and-add over the document's own terms.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from .signals import name_analyzer

_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern


def word_analyzer(stop_words: frozenset[str]) -> Callable[[str], list[str]]:
    """Lower-cased words of two or more characters, stop words removed, then word pairs (1-2 grams)."""

    def analyse(text: str) -> list[str]:
        words = [w for w in _TOKEN.findall(text.lower()) if w not in stop_words]
        return words + [f"{a} {b}" for a, b in zip(words, words[1:])]

    return analyse


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # fitting only

    return frozenset(ENGLISH_STOP_WORDS)


class Tfidf:
    """A fitted TF-IDF space. ``kind`` is "words" (1-2 grams, English stop words) or "names" (stemmed)."""

    def __init__(self, kind: str, vocabulary: Sequence[str], idf: np.ndarray, stop_words: Iterable[str] = ()):
        if kind not in ("words", "names"):
            raise ValueError(f"unknown TF-IDF kind {kind!r}")
        self.kind = kind
        self.stop_words = frozenset(stop_words)
        self.vocabulary = {term: i for i, term in enumerate(vocabulary)}
        self.idf = np.asarray(idf, dtype=np.float64)
        self.analyse = word_analyzer(self.stop_words) if kind == "words" else name_analyzer
        self.matrix: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # term-major (indptr, rows, values)
        self.n_rows = 0

    @classmethod
    def fit(cls, kind: str, texts: Sequence[str], *, min_df: int = 1) -> Tfidf:
        """Vocabulary (terms in at least ``min_df`` texts) and smoothed idf, ln((1 + n) / (1 + df)) + 1, over
        ``texts``."""
        stop = _stop_words() if kind == "words" else frozenset()
        analyse = word_analyzer(stop) if kind == "words" else name_analyzer
        df = Counter(term for text in texts for term in set(analyse(text)))
        vocabulary = sorted(t for t, n in df.items() if n >= min_df)
        counts = np.array([df[t] for t in vocabulary], dtype=np.float64)
        return cls(kind, vocabulary, np.log((1 + len(texts)) / (1 + counts)) + 1.0, stop)

    def matrix_of(self, texts: Sequence[str]):
        """The texts' vectors as the rows of a scipy CSR matrix [len(texts), vocabulary] (fitting only)."""
        from scipy.sparse import csr_matrix

        vectors = [self.vector(t) for t in texts]
        indptr = np.cumsum([0] + [len(idx) for idx, _ in vectors])
        indices = np.concatenate([idx for idx, _ in vectors]) if vectors else np.zeros(0, np.int64)
        data = np.concatenate([w for _, w in vectors]) if vectors else np.zeros(0)
        return csr_matrix((data, indices, indptr), shape=(len(texts), len(self.vocabulary)))

    def vector(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(term indices, weights) of one text: sublinear tf x idf, L2-normalised; unknown terms dropped."""
        counts = Counter(i for term in self.analyse(text) if (i := self.vocabulary.get(term)) is not None)
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        idx = np.fromiter(counts, dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        w = (1.0 + np.log(tf)) * self.idf[idx]
        return idx, w / np.linalg.norm(w)

    def index(self, texts: Sequence[str]) -> Tfidf:
        """Store ``texts`` (the technique texts) as the rows every later ``similarity`` is computed against:
        ``matrix_of`` in term-major order (CSC), each term's rows ascending."""
        by_term = self.matrix_of(texts).tocsc()
        self.matrix = (by_term.indptr.astype(np.int64), by_term.indices.astype(np.int32),
                       by_term.data.astype(np.float32))  # fmt: skip
        self.n_rows = len(texts)
        return self

    def similarity(self, text: str) -> np.ndarray:
        """Cosine similarity of ``text`` to every indexed row."""
        indptr, rows, values = self.matrix
        idx, w = self.vector(text)
        starts, ends = indptr[idx], indptr[idx + 1]
        lengths = ends - starts
        if not lengths.sum():
            return np.zeros(self.n_rows)
        positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        return np.bincount(rows[positions], weights=values[positions] * np.repeat(w, lengths), minlength=self.n_rows)

    # -------------------------------------------------------------------------------- state
    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        indptr, rows, values = self.matrix
        json_state = {"kind": self.kind, "n_rows": self.n_rows, "stop_words": sorted(self.stop_words)}
        vocab = "\n".join(sorted(self.vocabulary, key=self.vocabulary.get)).encode("utf-8")
        return json_state, {"vocabulary": np.frombuffer(vocab, dtype=np.uint8), "idf": self.idf, "indptr": indptr,
                            "rows": rows, "values": values}  # fmt: skip

    @classmethod
    def from_state(cls, json_state: dict, arrays: dict[str, np.ndarray]) -> Tfidf:
        out = cls(json_state["kind"], _terms(arrays["vocabulary"]), arrays["idf"], json_state["stop_words"])
        out.matrix = (arrays["indptr"], arrays["rows"], arrays["values"])
        out.n_rows = int(json_state["n_rows"])
        return out


def _terms(stored: np.ndarray) -> list[str]:
    """The vocabulary as stored: UTF-8 bytes of the terms joined by newlines (no term holds one: the
    analyzers split on whitespace), or, in model folders written before that, an array of strings (its
    fixed-width unicode took 20 MB for 140,000 terms, a tenth of a second to decompress at every start)."""
    if stored.dtype == np.uint8:
        return stored.tobytes().decode("utf-8").split("\n") if stored.size else []
    return stored.tolist()
