"""The estimator: fit on labelled passages, score every DISARM technique for new text, suggest with evidence.

``Tagger`` follows scikit-learn's contract: ``__init__`` stores arguments, ``fit`` returns self, learned
state ends in ``_``, and ``classes_`` fixes the column order of every score matrix.

Fitting computes, for every training passage, its signals with its own incident held out (leave one
incident out inside the training set), then tunes the fusion weights on those out-of-fold signals,
calibrates the fused score to a probability (isotonic regression) and picks the threshold that
maximises micro F1. Nothing outside the training examples is ever seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import signals as sig
from . import text as textmod
from .schema import Evidence, Example, Suggestion, Technique

WEIGHT_GRID = (0.0, 0.5, 1.0, 2.0)
DEFAULT_WEIGHTS = {name: 1.0 for name in sig.SIGNALS} | {"cooc": 0.0, "unseen": 0.0}
MIN_GAIN = 0.005  # a weight moves away from its default only for a clear out-of-fold gain


class NotFittedError(RuntimeError):
    """The tagger was used before fit() or load()."""


def units(text: str, max_tokens: int = 200) -> list[textmod.Span]:
    """Sentences of clean text, long ones cut to fit the encoder window: nothing is dropped."""
    spans = textmod.split_sentences(text)
    return textmod.chunk_sentences(spans, text, max_tokens=max_tokens) if any(
        textmod.estimate_tokens(s.text) > max_tokens for s in spans
    ) else spans


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class _Query:
    """One document's unit embeddings and text, ready for scoring."""

    text: str
    spans: list[textmod.Span]
    Q: np.ndarray
    lexical: tuple | None = None  # (tfidf row, name tfidf row) when computed for many queries at once

    @property
    def doc(self) -> np.ndarray:
        return _normalise(self.Q.mean(axis=0)) if len(self.Q) else np.zeros(self.Q.shape[1])


@dataclass(frozen=True)
class Article:
    title: str
    text: str
    warnings: tuple[str, ...]
    suggestions: tuple[Suggestion, ...]


class Tagger:
    def __init__(self, embedder=None, *, weights: dict | None = None, tune: bool = True,
                 temperature: float = 0.05, rrf_k: float = 10.0, ridge_alpha: float = 1.0,
                 max_per_parent: int = 3, frozen: tuple[str, ...] = ()):  # fmt: skip
        self.embedder = embedder
        self.frozen = frozen  # weight names tuning must leave as given (ablations)
        self.weights = weights
        self.tune = tune
        self.temperature = temperature
        self.rrf_k = rrf_k
        self.ridge_alpha = ridge_alpha
        self.max_per_parent = max_per_parent

    # ------------------------------------------------------------------------------------------ fitting
    def _embedder(self):
        if self.embedder is None:
            from .embed import PackagedEmbedder

            self.embedder = PackagedEmbedder()
        return self.embedder

    def fit(self, examples: Sequence[Example], techniques: Sequence[Technique]) -> Tagger:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not examples:
            raise ValueError("no training examples")
        emb = self._embedder()
        self.classes_ = tuple(sorted(t.id for t in techniques))
        index = {c: i for i, c in enumerate(self.classes_)}
        by_id = {t.id: t for t in techniques}
        self.techniques_ = [by_id[c] for c in self.classes_]
        unknown = {lab for e in examples for lab in e.labels} - set(index)
        if unknown:
            raise ValueError(f"labels not in the technique catalogue: {', '.join(sorted(unknown))}")
        self._conditional_all = None  # derived from Y_, recomputed on first use
        self.Y_ = np.zeros((len(examples), len(self.classes_)))
        for i, ex in enumerate(examples):
            self.Y_[i, [index[lab] for lab in ex.labels]] = 1.0
        self.incidents_ = np.array([e.incident_id for e in examples])
        spans = [units(e.text) for e in examples]
        self.unit_texts_ = [s.text for sp in spans for s in sp]
        self.unit_owner_ = np.repeat(np.arange(len(examples)), [len(sp) for sp in spans])
        self.unit_starts_ = np.searchsorted(self.unit_owner_, np.arange(len(examples)))
        self.U_ = emb.encode(self.unit_texts_)
        self.doc_emb_ = _normalise(np.add.reduceat(self.U_, self.unit_starts_, axis=0))
        names, fulls, lexical = technique_texts(self.techniques_)
        self.T_name_ = emb.encode(names)
        self.T_full_ = emb.encode(fulls)
        self.tfidf_ = TfidfVectorizer(sublinear_tf=True, stop_words="english", ngram_range=(1, 2))
        self.tfidf_.fit(lexical + [e.text for e in examples])
        self.T_tfidf_ = self.tfidf_.transform(lexical)
        self.name_tfidf_ = TfidfVectorizer(analyzer=sig.name_analyzer, sublinear_tf=True).fit(names)
        self.T_name_tfidf_ = self.name_tfidf_.transform(names)
        self.lexicon_ = sig.build_lexicon(self.techniques_)
        queries = [_Query(e.text, sp, self.U_[self.unit_owner_ == i]) for i, (e, sp) in enumerate(zip(examples, spans))]
        raw = [self._raw_signals(q) for q in queries]
        self.zs_stats_ = {k: (np.mean([r[k] for r in raw], 0), np.std([r[k] for r in raw], 0) + 1e-3)
                          for k in ("zs_name", "zs_full")}  # fmt: skip
        oof = [self._signals(q, r, pool=self.incidents_ != inc) for q, r, inc in zip(queries, raw, self.incidents_)]
        self.W_ = sig.ridge_weights(self.doc_emb_, self.Y_, alpha=self.ridge_alpha)
        self.weights_ = dict(self.weights or DEFAULT_WEIGHTS)
        if self.tune:
            self.weights_ = tune_weights(oof, self.Y_, self.weights_, k=self.rrf_k, frozen=frozenset(self.frozen))
        fused = np.array([fuse(s, a, self.weights_, k=self.rrf_k) for s, a in oof])
        self._calibrate(fused)
        return self

    def _calibrate(self, fused: np.ndarray) -> None:
        from sklearn.isotonic import IsotonicRegression

        self.calibrator_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
        self.calibrator_.fit(fused.ravel(), self.Y_.ravel())
        probs = self._calibrated(fused)
        self.oof_scores_ = probs
        from .metrics import ranking_summary

        golds = [set(np.flatnonzero(y)) for y in self.Y_]
        self.cv_metrics_ = {k: round(v, 4) for k, v in ranking_summary([list(np.argsort(-p)) for p in probs], golds).items()}
        best = (0.0, 0.5)
        for t in np.unique(np.round(probs[probs > 0], 4)):
            pred = probs >= t
            tp = (pred & (self.Y_ > 0)).sum()
            f1 = 2 * tp / max(pred.sum() + self.Y_.sum(), 1)
            best = max(best, (f1, float(t)))
        self.threshold_ = best[1]
        self.cv_metrics_["micro_f1_at_threshold"] = round(best[0], 4)

    def _calibrated(self, fused: np.ndarray) -> np.ndarray:
        """Isotonic calibration is a step function: many labels would tie. A strictly increasing term of
        at most 0.001 keeps the fused order, so ranking by score is ranking by evidence."""
        steps = self.calibrator_.predict(fused.ravel()).reshape(fused.shape)
        return steps * (1 - 1e-3) + 1e-3 * fused / (1.0 + fused)

    # ------------------------------------------------------------------------------------------ scoring
    def _raw_signals(self, q: _Query) -> dict[str, np.ndarray]:
        """Signals that need no training labels: technique similarity, TF-IDF, lexicon."""
        n = len(self.classes_)
        if not len(q.Q):
            return {k: np.zeros(n) for k in ("zs_name", "zs_full", "tfidf", "name_tfidf", "lexicon")}
        tfidf, name_tfidf = q.lexical if q.lexical is not None else self._lexical([q.text])[0]
        return {
            "zs_name": sig.zero_shot(q.Q, self.T_name_),
            "zs_full": sig.zero_shot(q.Q, self.T_full_),
            "tfidf": tfidf,
            "name_tfidf": name_tfidf,
            "lexicon": sig.lexicon_scores(q.text, self.lexicon_, n),
        }

    def _lexical(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """TF-IDF similarity of each text to every technique (full text, and names), in one pass."""
        full = (self.tfidf_.transform(texts) @ self.T_tfidf_.T).toarray()
        names = (self.name_tfidf_.transform(texts) @ self.T_name_tfidf_.T).toarray()
        return list(zip(full, names))

    def _signals(self, q: _Query, raw: dict, *, pool: np.ndarray, W: np.ndarray | None = None):
        """All signals for one query, using only the training examples in ``pool``."""
        out = dict(raw)
        for k, (mean, std) in self.zs_stats_.items():
            out[k] = sig.column_normalise(raw[k], mean, std)
        counts = self.Y_[pool].sum(axis=0)
        if len(q.Q) and pool.any():
            sim = sig.example_similarity(q.Q, self.U_, self.unit_starts_, q.doc, self.doc_emb_)
            out["knn"] = sig.knn_scores(sim, self.Y_, pool, temperature=self.temperature)
            if W is None:
                W = sig.ridge_weights(self.doc_emb_[pool], self.Y_[pool], alpha=self.ridge_alpha)
            out["ridge"] = q.doc @ W
            out["cooc"] = sig.cooccurrence(out["knn"], self._conditional(pool))
        else:
            out["knn"] = out["ridge"] = out["cooc"] = np.zeros(len(self.classes_))
        out["prior"] = np.log1p(counts)
        seen = counts > 0
        active = {k: seen if k in sig.SUPERVISED else np.ones(len(seen), bool) for k in sig.SIGNALS}
        active["lexicon"] = out["lexicon"] > 0
        active["name_tfidf"] = out["name_tfidf"] > 0
        return out, active

    def _conditional(self, pool: np.ndarray) -> np.ndarray:
        if pool.all():  # prediction always uses the whole pool: compute it once
            if getattr(self, "_conditional_all", None) is None:
                self._conditional_all = sig.cooccurrence_matrix(self.Y_)
            return self._conditional_all
        return sig.cooccurrence_matrix(self.Y_[pool])

    def _check(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError("this Tagger is not fitted: call fit() or disarm_tagger.load()")

    def _query(self, text: str) -> _Query:
        spans = units(text)
        return _Query(text, spans, self._embedder().encode([s.text for s in spans]))

    def _score(self, q: _Query) -> np.ndarray:
        pool = np.ones(len(self.Y_), bool)
        s, a = self._signals(q, self._raw_signals(q), pool=pool, W=self.W_)
        return self._calibrated(fuse(s, a, self.weights_, k=self.rrf_k))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated scores [n_texts, n_classes]; column j is technique ``classes_[j]``."""
        self._check()
        return np.array([self._score(self._query(t)) for t in texts]).reshape(len(texts), len(self.classes_))

    def rank(self, scores: np.ndarray, *, top_k: int = 10) -> list[int]:
        """Label indices best first; within the first ``top_k`` at most ``max_per_parent`` techniques of
        one parent (image/audio/video deepfakes...), the rest move just below the top ``top_k``."""
        order = list(np.argsort(-scores, kind="stable"))
        if not self.max_per_parent:
            return order
        parents = [t.parent_id or t.id for t in self.techniques_]
        head, deferred, count = [], [], {}
        for j in order:
            if len(head) >= top_k:
                break
            p = parents[j]
            if count.get(p, 0) < self.max_per_parent:
                head.append(j)
                count[p] = count.get(p, 0) + 1
            else:
                deferred.append(j)
        taken = set(head) | set(deferred)
        return head + deferred + [j for j in order if j not in taken]

    def suggest(self, text: str, *, top_k: int = 10, min_score: float = 0.0) -> list[Suggestion]:
        """Ranked technique suggestions for clean article text, each with up to three evidence sentences."""
        self._check()
        return self._suggestions(self._query(text), top_k=top_k, min_score=min_score)

    def _suggestions(self, q: _Query, *, top_k: int, min_score: float) -> list[Suggestion]:
        scores = self._score(q)
        out = []
        for j in self.rank(scores, top_k=top_k)[:top_k]:
            if scores[j] < min_score:
                continue
            t = self.techniques_[j]
            out.append(Suggestion(rank=len(out) + 1, technique_id=t.id, name=t.name, tactic_id=t.tactic_id,
                                  tactic=t.tactic, score=round(float(scores[j]), 4),
                                  evidence=self._evidence(q, j)))  # fmt: skip
        return out

    def suggest_article(self, raw: str, *, top_k: int = 10, min_score: float = 0.0) -> Article:
        """Like suggest(), for raw input (plain text, markdown with front matter, or a saved HTML page).
        Evidence offsets refer to ``Article.text``, the extracted article text. Raises text.InputError."""
        result = self.suggest_articles([raw], top_k=top_k, min_score=min_score)[0]
        if isinstance(result, textmod.InputError):
            raise result
        return result

    def suggest_articles(self, raws: Sequence[str], *, top_k: int = 10, min_score: float = 0.0,
                         ) -> list[Article | textmod.InputError]:  # fmt: skip
        """suggest_article() for many inputs with one batched encoder call across all of them. A bad input
        yields its InputError in its slot; the others are unaffected."""
        self._check()
        prepared: list = []
        for raw in raws:
            try:
                title, text = textmod.extract_text(raw)
                prepared.append((title, text, units(text)))
            except textmod.InputError as exc:
                prepared.append(exc)
        good = [p for p in prepared if not isinstance(p, Exception)]
        vectors = self._embedder().encode([s.text for _t, _x, spans in good for s in spans])
        bounds = np.cumsum([0] + [len(spans) for _t, _x, spans in good])
        lexical = self._lexical([text for _t, text, _s in good]) if good else []
        out: list = []
        i = 0
        for p in prepared:
            if isinstance(p, Exception):
                out.append(p)
                continue
            title, text, spans = p
            q = _Query(text, spans, vectors[bounds[i] : bounds[i + 1]], lexical[i])
            language = textmod.detect_language_hint(text)
            warnings = (f"text looks non-English ({language}); the model is English-only, suggestions are best "
                        "effort",) if language else ()  # fmt: skip
            out.append(Article(title, text, warnings, tuple(self._suggestions(q, top_k=top_k, min_score=min_score))))
            i += 1
        return out

    def _evidence(self, q: _Query, j: int, n: int = 3) -> tuple[Evidence, ...]:
        """The sentences that best support label j: close to its description and to training sentences
        that carry it."""
        if not len(q.Q):
            return ()
        score = q.Q @ self.T_full_[j]
        carriers = self.Y_[self.unit_owner_, j] > 0
        if carriers.any():
            score = 0.5 * score + 0.5 * (q.Q @ self.U_[carriers].T).max(axis=1)
        best = np.argsort(-score, kind="stable")[:n]
        keep = [i for i in best if score[i] >= score[best[0]] - 0.1]
        return tuple(Evidence(q.spans[i].text, q.spans[i].start, q.spans[i].end) for i in sorted(keep))


def fuse(signals: dict, active: dict, weights: dict, *, k: float) -> np.ndarray:
    """Weighted reciprocal-rank fusion, then lift labels with no training example by (1 + weights["unseen"]):
    they can only earn rank from the zero-shot signals, and would otherwise sink below every seen label."""
    fused = sig.rrf(signals, active, weights, k=k)
    return np.where(active["knn"], fused, fused * (1.0 + weights.get("unseen", 0.0)))


def technique_texts(techniques: Sequence[Technique]) -> tuple[list[str], list[str], list[str]]:
    """What each technique is compared with: its name, name + summary, and the TF-IDF text (name twice)."""
    names = [t.name for t in techniques]
    fulls = [f"{t.name}: {t.summary}" for t in techniques]
    return names, fulls, [f"{n}. {f}" for n, f in zip(names, fulls)]


def tune_weights(oof: list, Y: np.ndarray, weights: dict, *, k: float, passes: int = 1,
                 frozen: frozenset = frozenset()) -> dict:  # fmt: skip
    """Coordinate ascent over fusion weights, maximising (MAP + R@10) / 2 on out-of-fold signals. A step is
    taken only for a gain above MIN_GAIN: with a few dozen incidents, smaller gains are noise. ``frozen``
    weights are never changed (ablations hold a removed signal at 0)."""
    from .metrics import average_precision_score, recall_at_k

    golds = [set(np.flatnonzero(y)) for y in Y]

    def objective(w: dict) -> float:
        total = 0.0
        for (s, a), gold in zip(oof, golds):
            ranked = list(np.argsort(-fuse(s, a, w, k=k), kind="stable"))
            total += average_precision_score(ranked, gold) + recall_at_k(ranked, gold, k=10)
        return total / (2 * len(golds))

    best_w, best = dict(weights), objective(weights)
    for _ in range(passes):
        for name in (*sig.SIGNALS, "unseen"):
            if name in frozen:
                continue
            for value in WEIGHT_GRID:
                trial = best_w | {name: value}
                if trial != best_w and any(trial.values()):
                    score = objective(trial)
                    if score > best + MIN_GAIN:
                        best_w, best = trial, score
    return best_w
