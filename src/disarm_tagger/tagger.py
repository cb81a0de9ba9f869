"""The estimator: fit on labelled passages, score every DISARM technique for new text, suggest with evidence.

``Tagger`` follows scikit-learn's contract: ``__init__`` stores arguments (``get_params``), ``fit`` returns
self, learned state ends in ``_`` and is listed once (``state``/``from_state``), and ``classes_`` fixes the
column order of every score matrix.

Fitting computes, for every real passage (DISARM or an analyst's annotation), its signals with its own
incident held out, then tunes the fusion weights and the weight of authored passages on those
out-of-fold signals, calibrates the fused score to a probability and picks the threshold that maximises
micro F1. Authored passages (written by the project from DISARM's definitions) are always on the training
side: they are neighbours and ridge targets, never the passages weights are tuned or calibrated on.
"""

from __future__ import annotations

import hashlib
import inspect
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from . import calibrate, lexical
from . import signals as sig
from . import text as textmod
from .schema import Article, Evidence, Example, Suggestion, Technique

WEIGHT_GRID = (0.0, 0.5, 1.0, 2.0)
DEFAULT_WEIGHTS = {name: 1.0 for name in sig.SIGNALS} | {"cooc": 0.0, "unseen": 0.0, "prior": 0.0}
AUTHORED = "authored"  # Example.origin of the passages written from DISARM's definitions
AUTHORED_GRID = (0.25, 0.5, 1.0)  # weights tried for authored passages, relative to real ones
MIN_GAIN = 0.005  # a weight moves away from its default only for a clear out-of-fold gain
PRIORS = ("all", "real")  # label prior over every origin (weighted) or over real passages only
HUB_ROUNDS = 20  # passes of the hub cap (each can only raise penalties, so it settles in a few)
HUB_MARGIN = 0.75  # the cap aims this far under the hub line: out-of-fold shares understate new texts' shares
TEXT_MIN_DF = 5  # ridge_text's vocabulary: words and word pairs in at least this many authored passages
TEXT_ALPHA = 3.0  # ridge_text's regularisation
MATCH_ROWS = sig.SLICE_ROWS  # short documents are grouped to fill one product slice of Units.best

__all__ = ["Article", "NotFittedError", "Tagger", "check_is_fitted"]


class NotFittedError(RuntimeError):
    """The tagger was used before fit() or load()."""


def check_is_fitted(tagger: Tagger) -> None:
    if not hasattr(tagger, "classes_"):
        raise NotFittedError("this Tagger is not fitted: call fit() or disarm_tagger.load()")


def _half(x: np.ndarray) -> np.ndarray:
    """float32 values that float16 holds exactly: a model folder then stores embeddings in half the space and
    the loaded tagger scores exactly as the fitted one (cosines change by about 1e-3)."""
    return np.asarray(x, dtype=np.float16).astype(np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class _Query:
    """One document's unit embeddings, ready for summaries; ``best``: its units' best cosine into each
    training example (signals.Units.best), while it is being scored."""

    doc: textmod.Document
    Q: np.ndarray
    best: np.ndarray | None = None

    @property
    def mean(self) -> np.ndarray:
        return _normalise(self.Q.mean(axis=0)) if len(self.Q) else np.zeros(self.Q.shape[1])


class Tagger:
    # Learned state, listed once: persist writes and reads exactly these (plus the three TF-IDF spaces).
    _ARRAYS = ("U_", "unit_owner_", "unit_starts_", "doc_emb_", "Y_", "T_name_", "T_full_", "W_", "C_", "incidents_",
               "authored_", "prior_", "zs_mean_", "zs_std_", "calib_x_", "calib_y_", "hub_", "R_text_", "R_emb_",
               "r0_")  # fmt: skip
    _JSON = ("classes_", "weights_", "authored_weight_", "threshold_", "cv_metrics_", "lexicon_")
    _TFIDF = ("tfidf_", "name_tfidf_", "text_tfidf_")
    # embeddings and ridge_text's weights: kept at float16 precision, stored as float16
    _HALF = ("U_", "doc_emb_", "T_name_", "T_full_", "C_", "R_text_", "R_emb_")
    _SMALL = {"Y_": np.uint8, "W_": np.float32}  # stored in these types, exactly: 0/1 labels, float32-rounded weights

    def __init__(self, embedder=None, *, weights: dict | None = None, tune: bool = True,
                 temperature: float = 0.05, rrf_k: float = 10.0, ridge_alpha: float = 1.0,
                 max_per_parent: int = 3, frozen: tuple[str, ...] = (), authored_weight: float | None = None,
                 prior: str = "all", calibration: str = "interpolated", objective: str = "balanced",
                 hub_cap: bool = True, named_examples: dict | None = None, text_ridge: bool = False):  # fmt: skip
        self.embedder = embedder
        self.weights = weights
        self.tune = tune
        self.temperature = temperature
        self.rrf_k = rrf_k
        self.ridge_alpha = ridge_alpha
        self.max_per_parent = max_per_parent
        self.frozen = frozen  # weight names tuning must leave as given (ablations)
        self.authored_weight = authored_weight  # None: tuned over AUTHORED_GRID
        self.prior = prior
        self.calibration = calibration  # "interpolated" or "steps" (plain isotonic, for comparison)
        self.objective = objective  # what tuning maximises: see OBJECTIVES
        self.hub_cap = hub_cap  # penalise techniques that crowd every top 10 (see hub_penalties)
        self.named_examples = named_examples  # technique id -> names for the lexicon, beside DISARM's own lists
        self.text_ridge = text_ridge  # fit and fuse the ridge_text signal (opt-in: see text_ridge())

    def get_params(self, deep: bool = False) -> dict:
        """The constructor arguments, as scikit-learn's ``get_params``."""
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return {n: getattr(self, n) for n in names}

    def set_params(self, **params) -> Tagger:
        for name, value in params.items():
            if name not in self.get_params():
                raise ValueError(f"unknown Tagger parameter {name!r}")
            setattr(self, name, value)
        return self

    @property
    def embedder_(self):
        """The embedder in use: the one given, else the default packaged one (loaded on first use)."""
        if self.embedder is None:
            from .embed import load_embedder

            self.embedder = load_embedder()
        return self.embedder

    # ------------------------------------------------------------------------------------------ fitting
    def fit(self, examples: Sequence[Example], techniques: Sequence[Technique]) -> Tagger:
        if not examples:
            raise ValueError("no training examples")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}, not {self.prior!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        emb = self.embedder_
        self.classes_ = tuple(sorted(t.id for t in techniques))
        index = {c: i for i, c in enumerate(self.classes_)}
        by_id = {t.id: t for t in techniques}
        self.techniques_ = [by_id[c] for c in self.classes_]
        unknown = {lab for e in examples for lab in e.labels} - set(index)
        if unknown:
            raise ValueError(f"labels not in the technique catalogue: {', '.join(sorted(unknown))}")
        self.Y_ = np.zeros((len(examples), len(self.classes_)))
        for i, ex in enumerate(examples):
            self.Y_[i, [index[lab] for lab in ex.labels]] = 1.0
        self.incidents_ = np.array([e.incident_id for e in examples])
        authored = np.array([e.origin == AUTHORED for e in examples])
        docs = [textmod.segment(e.text) for e in examples]
        unit_texts = [u.text for d in docs for u in d.units]
        self.unit_owner_ = np.repeat(np.arange(len(examples)), [len(d.units) for d in docs])
        self.unit_starts_ = np.searchsorted(self.unit_owner_, np.arange(len(examples)))
        self.U_ = _half(emb.encode(unit_texts))
        self.doc_emb_ = _half(_normalise(np.add.reduceat(self.U_, self.unit_starts_, axis=0)))
        names, fulls, lexical_texts = technique_texts(self.techniques_)
        self.T_name_, self.T_full_ = _half(emb.encode(names)), _half(emb.encode(fulls))
        # each technique's TF-IDF text: its name and definition, then the passages authored for it
        authored_text: dict[str, list[str]] = {c: [] for c in self.classes_}
        for e in examples:
            if e.origin == AUTHORED:
                for lab in e.labels:
                    authored_text[lab].append(e.text)
        lexical_texts = [" ".join([t, *authored_text[c]]) for t, c in zip(lexical_texts, self.classes_)]
        real_texts = [e.text for e in examples if e.origin != AUTHORED]
        self.tfidf_ = lexical.Tfidf.fit("words", lexical_texts + real_texts).index(lexical_texts)
        self.name_tfidf_ = lexical.Tfidf.fit("names", names).index(names)
        self.lexicon_ = sig.build_lexicon(self.techniques_, self.named_examples)
        self.authored_ = authored
        self._index()
        self.C_ = _half(sig.centroids(self.doc_emb_[authored], self.Y_[authored]))
        on = authored if self.text_ridge else np.zeros(len(examples), bool)  # off: an empty fit, all zeros
        self.text_tfidf_, self.R_text_, self.R_emb_, self.r0_ = text_ridge(
            [e.text for e, a in zip(examples, on) if a], self.doc_emb_[on], self.Y_[on])
        real = np.flatnonzero(~authored)
        if not len(real):
            raise ValueError("no real (DISARM or analyst-annotated) passages to tune and calibrate on")
        queries = [_Query(docs[i], self.U_[self.unit_owner_ == i]) for i in real]
        raw = [self._raw_signals(q) for q in queries]
        self.zs_mean_ = np.array([np.mean([r[k] for r in raw], 0) for k in sig.ZERO_SHOT])
        self.zs_std_ = np.array([np.std([r[k] for r in raw], 0) + 1e-3 for k in sig.ZERO_SHOT])
        Y_real = self.Y_[real]
        if self.authored_weight is not None or not authored.any():
            grid = (1.0 if self.authored_weight is None else self.authored_weight,)
        else:
            grid = AUTHORED_GRID
        runs = {}
        for w_auth in grid:
            self.authored_weight_ = w_auth
            held_out = sig.ridge_leave_one_group_out(self.doc_emb_, self.Y_, self.incidents_, self.incidents_[real],
                                                     alpha=self.ridge_alpha, sample_weight=self.sample_weight_)
            oof = [self._signals(q, r, pool=self.incidents_ != self.incidents_[i], W=held_out[self.incidents_[i]])
                   for q, r, i in zip(queries, raw, real)]  # fmt: skip
            weights, frozen = dict(self.weights or DEFAULT_WEIGHTS), frozenset(self.frozen)
            if not self.text_ridge:
                weights, frozen = weights | {"ridge_text": 0.0}, frozen | {"ridge_text"}
            if self.tune:
                weights = tune_weights(oof, Y_real, weights, k=self.rrf_k, frozen=frozen,
                                       balanced=self.objective == "balanced")  # fmt: skip
            score = objective(oof, Y_real, weights, k=self.rrf_k, balanced=self.objective == "balanced")
            runs[w_auth] = (score, weights, oof)
        chosen = 1.0 if 1.0 in runs else grid[0]  # the default stays unless another is clearly better
        challenger = max(runs, key=lambda w: runs[w][0])
        if runs[challenger][0] > runs[chosen][0] + MIN_GAIN:
            chosen = challenger
        self.authored_weight_ = chosen
        _, self.weights_, oof = runs[chosen]
        self.prior_ = self._prior(np.ones(len(examples), bool))
        W = sig.ridge_weights(self.doc_emb_, self.Y_, alpha=self.ridge_alpha, sample_weight=self.sample_weight_)
        self.W_ = W.astype(np.float32).astype(np.float64)  # float32 on disk, so exactly what was fitted
        fused = np.array([fuse(s, a, self.weights_, k=self.rrf_k) for s, a in oof])
        self.hub_ = hub_penalties(fused, Y_real) if self.hub_cap else np.zeros(len(self.classes_))
        self._calibrate(fused - self.hub_, Y_real)
        return self

    def _index(self) -> None:
        """Derived from U_, unit_starts_, Y_ and authored_, not stored: the label matrices scoring multiplies
        by, and (on first use, see ``units_``) the training units laid out for matching."""
        self._units = None
        self.labels_ = sig.Labels(self.Y_)
        self.authored_labels_ = sig.Labels(self.Y_[self.authored_.astype(bool)])

    @property
    def units_(self) -> sig.Units:
        """The training units laid out for matching, built when first needed (about 20 ms) rather than
        while a cold ``suggest`` loads the model beside its spaCy import thread."""
        if self._units is None:
            self._units = sig.Units(self.U_, self.unit_starts_)
        return self._units

    @property
    def sample_weight_(self) -> np.ndarray:
        """Each training example's weight: 1 for real passages, ``authored_weight_`` for authored ones."""
        return np.where(self.authored_, self.authored_weight_, 1.0)

    def _calibrate(self, fused: np.ndarray, Y: np.ndarray) -> None:
        from .metrics import ranking_summary

        self.calib_x_, self.calib_y_ = calibrate.isotonic_knots(fused.ravel(), Y.ravel(),
                                                                interpolate=self.calibration == "interpolated")
        probs = calibrate.apply(self.calib_x_, self.calib_y_, fused)
        self.oof_scores_ = probs
        golds = [set(np.flatnonzero(y)) for y in Y]
        ranked = [list(np.argsort(-p, kind="stable")) for p in probs]
        self.cv_metrics_ = {k: round(v, 4) for k, v in ranking_summary(ranked, golds).items()}
        best = (0.0, 0.5)
        for t in np.unique(np.round(probs[probs > 0], 4)):
            pred = probs >= t
            f1 = 2 * (pred & (Y > 0)).sum() / max(pred.sum() + Y.sum(), 1)
            best = max(best, (float(f1), float(t)))
        self.threshold_ = best[1]
        self.cv_metrics_["micro_f1_at_threshold"] = round(best[0], 4)

    # ------------------------------------------------------------------------------------------ state
    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Everything fit() learned, as JSON-ready values and numpy arrays: what a model folder stores."""
        check_is_fitted(self)
        params = {k: v for k, v in self.get_params().items() if k != "embedder"}
        json_state = {"params": params | {"frozen": list(self.frozen)}}
        json_state |= {name: getattr(self, name) for name in self._JSON}
        json_state["classes_"] = list(self.classes_)
        json_state["lexicon_"] = {term: list(ix) for term, ix in self.lexicon_.items()}
        arrays = {name: getattr(self, name) for name in self._ARRAYS}
        arrays |= {name: arrays[name].astype(np.float16) for name in self._HALF}  # exact: see _half
        arrays |= {name: arrays[name].astype(dtype) for name, dtype in self._SMALL.items()}
        for name in self._TFIDF:
            js, arr = getattr(self, name).state()
            json_state[name] = js
            arrays |= {f"{name}.{k}": v for k, v in arr.items()}
        return json_state, arrays

    @classmethod
    def from_state(cls, json_state: dict, arrays, techniques: Sequence[Technique], embedder=None) -> Tagger:
        """Rebuild a fitted tagger from ``state()``'s output and the catalogue in label order."""
        params = dict(json_state["params"])
        tagger = cls(embedder, **params | {"frozen": tuple(params.get("frozen", ()))})
        for name in cls._JSON:
            setattr(tagger, name, json_state[name])
        tagger.classes_ = tuple(json_state["classes_"])
        tagger.lexicon_ = {term: tuple(ix) for term, ix in json_state["lexicon_"].items()}
        for name in cls._ARRAYS:
            dtype = np.float32 if name in cls._HALF else np.float64 if name in cls._SMALL else None
            setattr(tagger, name, np.asarray(arrays[name], dtype=dtype))
        for name in cls._TFIDF:
            prefix = f"{name}."
            own = {k[len(prefix):]: arrays[k] for k in arrays if k.startswith(prefix)}
            setattr(tagger, name, lexical.Tfidf.from_state(json_state[name], own))
        tagger._index()
        tagger.techniques_ = list(techniques)
        if [t.id for t in tagger.techniques_] != list(tagger.classes_):
            raise ValueError("the technique catalogue is not in the tagger's label order")
        return tagger

    # ------------------------------------------------------------------------------------------ scoring
    def _raw_signals(self, q: _Query) -> dict[str, np.ndarray]:
        """Signals that need no training labels: technique similarity, TF-IDF, lexicon."""
        n = len(self.classes_)
        if not len(q.Q):
            return {k: np.zeros(n) for k in (*sig.ZERO_SHOT, "tfidf", "name_tfidf", "lexicon", "ridge_text")}
        return {
            "zs_name": sig.zero_shot(q.Q, self.T_name_),
            "zs_full": sig.zero_shot(q.Q, self.T_full_),
            "tfidf": self.tfidf_.similarity(q.doc.text),
            "name_tfidf": self.name_tfidf_.similarity(q.doc.text),
            "lexicon": sig.lexicon_scores(q.doc.text, self.lexicon_, n),
            "ridge_text": self._ridge_text(q) if self.text_ridge else np.zeros(n),  # off: no work per text
        }

    def _ridge_text(self, q: _Query) -> np.ndarray:
        idx, w = self.text_tfidf_.vector(q.doc.text)
        return w @ self.R_text_[idx] + q.mean @ self.R_emb_ + self.r0_

    def _prior(self, pool: np.ndarray) -> np.ndarray:
        weight = self.sample_weight_ if self.prior == "all" else (~self.authored_).astype(float)
        return np.log1p(weight[pool] @ self.Y_[pool])

    def _matches(self, q: _Query) -> np.ndarray:
        """The query's best cosine into each training example: the ones ``_scored`` set, else computed."""
        return q.best if q.best is not None else self.units_.best(q.Q)

    def _signals(self, q: _Query, raw: dict, *, pool: np.ndarray, W: np.ndarray | None = None):
        """All signals for one query, using only the training examples in ``pool``. ``W``: ridge weights
        fitted on the pool; None means the pool is the whole training set, whose fitted state is used."""
        out = dict(raw)
        for i, k in enumerate(sig.ZERO_SHOT):
            out[k] = sig.column_normalise(raw[k], self.zs_mean_[i], self.zs_std_[i])
        weight = self.sample_weight_ * pool
        real = weight * ~self.authored_
        n, Y = len(self.classes_), self.labels_
        if len(q.Q) and pool.any():
            best = self._matches(q)
            sim = sig.example_similarity(best, q.mean, self.doc_emb_)
            out["knn"] = sig.knn_scores(sim, Y, real, temperature=self.temperature)
            out["knn_authored"] = sig.knn_scores(sim, Y, self.authored_ * 1.0, temperature=self.temperature)
            out["knn_sentences"] = sig.sentence_votes(best[:, self.authored_], self.authored_labels_,
                                                      temperature=self.temperature)  # fmt: skip
            out["centroid"] = sig.zero_shot(q.Q, self.C_)
            out["ridge"] = q.mean @ (self.W_ if W is None else W)
            out["cooc"] = sig.cooccurrence(out["knn"], Y, real)
        else:
            out |= {k: np.zeros(n) for k in ("knn", "knn_authored", "knn_sentences", "centroid", "ridge", "cooc")}
        out["prior"] = self.prior_ if W is None else self._prior(pool)
        seen = Y.totals(weight) > 0
        active = {k: seen if k in sig.SUPERVISED else np.ones(n, bool) for k in sig.SIGNALS}
        active["knn"] = Y.totals(real) > 0
        has_authored = self.authored_labels_.carried
        active["knn_authored"] = active["centroid"] = active["knn_sentences"] = active["ridge_text"] = has_authored
        active["lexicon"] = out["lexicon"] > 0
        active["name_tfidf"] = out["name_tfidf"] > 0
        return out, active

    def _scored(self, queries: Sequence[_Query]) -> Iterator[tuple[_Query, np.ndarray]]:
        """Each query with its calibrated scores, in order; its ``best`` is set while it is yielded (for
        its evidence). Queries are matched against the training units in groups of about MATCH_ROWS units,
        one product per group: reading the ~25,000 training units costs about as much for one sentence as
        for hundreds, and a document has a dozen."""
        pool = np.ones(len(self.Y_), bool)
        for group in _groups(queries, MATCH_ROWS):
            matched = self.units_.best(np.concatenate([q.Q for q in group]))
            bounds = np.cumsum([0] + [len(q.Q) for q in group])
            for q, lo, hi in zip(group, bounds, bounds[1:]):
                q.best = matched[lo:hi]
                s, a = self._signals(q, self._raw_signals(q), pool=pool)
                fused = fuse(s, a, self.weights_, k=self.rrf_k) - self.hub_
                yield q, calibrate.apply(self.calib_x_, self.calib_y_, fused)
                q.best = None

    def _scores(self, queries: Sequence[_Query]) -> np.ndarray:
        out = np.zeros((len(queries), len(self.classes_)))
        for i, (_, scores) in enumerate(self._scored(queries)):
            out[i] = scores
        return out

    def _queries(self, docs: Sequence[textmod.Document]) -> list[_Query]:
        """Embed every unit of every document in one encoder call."""
        vectors = self.embedder_.encode([u.text for d in docs for u in d.units])
        bounds = np.cumsum([0] + [len(d.units) for d in docs])
        return [_Query(d, vectors[bounds[i] : bounds[i + 1]]) for i, d in enumerate(docs)]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated scores [n_texts, n_classes] for clean texts; column j is technique ``classes_[j]``."""
        check_is_fitted(self)
        return self._scores(self._queries([textmod.segment(t) for t in texts]))

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

    # ------------------------------------------------------------------------------------------ suggesting
    def suggest_documents(self, docs: Sequence[textmod.Document], *, top_k: int = 10,
                          min_score: float = 0.0) -> list[Article]:  # fmt: skip
        """Ranked suggestions with evidence for prepared documents (``text.prepare``), one encoder call."""
        check_is_fitted(self)
        return self._articles(self._queries(docs), top_k, min_score)

    def _articles(self, queries: Sequence[_Query], top_k: int, min_score: float) -> list[Article]:
        return [Article(q.doc.title, q.doc.text, q.doc.warnings, tuple(self._suggestions(q, scores, top_k, min_score)))
                for q, scores in self._scored(queries)]  # fmt: skip

    def embed_articles(self, raws: Sequence[str]) -> list[_Query | textmod.InputError]:
        """The encoder's half of ``suggest_articles``: each raw input prepared and embedded (one encoder
        call for all of them), or its InputError. It reads nothing that scoring writes, so a batch run
        embeds the next micro-batch on another thread while ``suggest_embedded`` scores this one."""
        prepared: list = []
        for raw in raws:
            try:
                prepared.append(textmod.prepare(raw))
            except textmod.InputError as exc:
                prepared.append(exc)
        docs = [p for p in prepared if isinstance(p, textmod.Document)]
        good = iter(self._queries(docs) if docs else [])
        return [p if isinstance(p, textmod.InputError) else next(good) for p in prepared]

    def suggest_embedded(self, embedded: Sequence[_Query | textmod.InputError], *, top_k: int = 10,
                         min_score: float = 0.0) -> list[Article | textmod.InputError]:  # fmt: skip
        """The scoring half of ``suggest_articles``, for the output of ``embed_articles``."""
        check_is_fitted(self)
        good = iter(self._articles([e for e in embedded if isinstance(e, _Query)], top_k, min_score))
        return [e if isinstance(e, textmod.InputError) else next(good) for e in embedded]

    def suggest_articles(self, raws: Sequence[str], *, top_k: int = 10, min_score: float = 0.0,
                         ) -> list[Article | textmod.InputError]:  # fmt: skip
        """``suggest_article`` for many raw inputs: a bad input yields its InputError in its slot."""
        check_is_fitted(self)
        return self.suggest_embedded(self.embed_articles(raws), top_k=top_k, min_score=min_score)

    def suggest_article(self, raw: str, *, top_k: int = 10, min_score: float = 0.0) -> Article:
        """Suggestions for raw input (plain text, markdown with front matter, or a saved HTML page).
        Evidence offsets refer to ``Article.text``, the extracted article text. Raises text.InputError."""
        return self.suggest_documents([textmod.prepare(raw)], top_k=top_k, min_score=min_score)[0]

    def suggest(self, text: str, *, top_k: int = 10, min_score: float = 0.0) -> list[Suggestion]:
        """Ranked technique suggestions for clean text, each with up to three evidence sentences."""
        return list(self.suggest_documents([textmod.segment(text)], top_k=top_k, min_score=min_score)[0].suggestions)

    def _suggestions(self, q: _Query, scores: np.ndarray, top_k: int, min_score: float) -> list[Suggestion]:
        out = []
        for j in self.rank(scores, top_k=top_k)[:top_k]:
            if scores[j] < min_score:
                continue
            t = self.techniques_[j]
            out.append(Suggestion(rank=len(out) + 1, technique_id=t.id, name=t.name, tactic_id=t.tactic_id,
                                  tactic=t.tactic, score=round(float(scores[j]), 4),
                                  evidence=self._evidence(q, j)))  # fmt: skip
        return out

    def _evidence(self, q: _Query, j: int, n: int = 3) -> tuple[Evidence, ...]:
        """The units that best support label j: close to its description and to training units that
        carry it."""
        if not len(q.Q):
            return ()
        score = q.Q @ self.T_full_[j]
        carriers = self.labels_.examples(j)
        if len(carriers):
            score = 0.5 * score + 0.5 * self._matches(q)[:, carriers].max(axis=1)
        best = np.argsort(-score, kind="stable")[:n]
        keep = [i for i in best if score[i] >= score[best[0]] - 0.1]
        units = q.doc.units
        return tuple(Evidence(units[i].text, units[i].start, units[i].end) for i in sorted(keep))


def _groups(queries: Sequence[_Query], rows: int) -> Iterator[list[_Query]]:
    """Consecutive queries in groups of about ``rows`` units: a group closes once it holds ``rows``."""
    group: list[_Query] = []
    size = 0
    for q in queries:
        group.append(q)
        size += len(q.Q)
        if size >= rows:
            yield group
            group, size = [], 0
    if group:
        yield group


def fuse(signals: dict, active: dict, weights: dict, *, k: float) -> np.ndarray:
    """Weighted reciprocal-rank fusion, then lift labels with no training example by (1 + weights["unseen"]):
    they can only earn rank from the zero-shot signals, and would otherwise sink below every seen label."""
    fused = sig.rrf(signals, active, weights, k=k)
    return np.where(active["knn"], fused, fused * (1.0 + weights.get("unseen", 0.0)))


def hub_penalties(fused: np.ndarray, Y: np.ndarray, *, top_k: int = 10) -> np.ndarray:
    """Per-technique amounts to subtract from fused scores so that no technique is a hub in these
    out-of-fold rankings: in the top ``top_k`` of more than HUB_SHARE of the passages and more than twice as
    often as it is gold. A hub scores high whatever the text says (DISARM's passages are mostly about
    personas, so persona techniques lean into every ranking) and crowds out what the text is about. Each
    hub gets the smallest penalty that brings its share under HUB_MARGIN x max(HUB_SHARE, 2 x gold rate), a
    margin because shares out of fold understate those on new texts; every other technique keeps 0, so
    rankings without hubs are untouched.

    >>> F = np.array([[3.0, 2.0, 1.0, 0.0]] * 4)
    >>> hub_penalties(F, np.array([[0, 1, 0, 0]] * 4), top_k=1)
    array([1.00001, 0.     , 0.     , 0.     ])
    """
    from .summaries import hub_line

    penalty = np.zeros(fused.shape[1])
    if fused.shape[1] <= top_k:  # every technique is in every top k: nothing to tell apart
        return penalty
    line = hub_line(Y.mean(axis=0))
    for _ in range(HUB_ROUNDS):
        scores = fused - penalty
        kth = -np.partition(-scores, [top_k - 1, top_k], axis=1)
        inside = scores >= kth[:, [top_k - 1]]
        over = np.flatnonzero(inside.mean(axis=0) > line)
        if not len(over):
            break
        for j in over:
            # the score j must beat to enter a top k: the k-th best of the others
            rival = np.where(inside[:, j], kth[:, top_k], kth[:, top_k - 1])
            margin = scores[:, j] - rival
            allowed = int(np.floor(HUB_MARGIN * line[j] * len(scores)))  # passages j may still reach
            cut = np.sort(margin)[::-1][allowed] if allowed < len(margin) else -np.inf
            penalty[j] += max(cut, 0.0) + 1e-5
    return penalty


# recent text_ridge fits by content: every fold of an evaluation has the same authored passages, and its
# ablations a few other sets
_TEXT_RIDGES: OrderedDict[str, tuple] = OrderedDict()
TEXT_RIDGES_KEPT = 6


def text_ridge(texts: Sequence[str], E: np.ndarray, Y: np.ndarray) -> tuple[lexical.Tfidf, np.ndarray, np.ndarray,
                                                                               np.ndarray]:  # fmt: skip
    """Ridge regression (with intercept) from a passage's TF-IDF vector and its mean embedding ``E`` to its
    labels ``Y``: (TF-IDF space, word weights [V, L], embedding weights [d, L], intercepts [L]). A passage
    then scores w @ R_text[terms] + e @ R_emb + r0. Fitted on authored passages only, so it is the same in
    every fold and the evaluation stays leak-free; the words let it learn which terms tell a technique from
    its neighbours, where the TF-IDF signal only measures overlap with each technique's text."""
    digest = hashlib.sha256(repr((list(texts), E.shape, Y.shape, TEXT_MIN_DF, TEXT_ALPHA)).encode())
    digest.update(np.ascontiguousarray(E).tobytes())
    digest.update(np.ascontiguousarray(Y, dtype=np.uint8).tobytes())
    key = digest.hexdigest()
    if key not in _TEXT_RIDGES:
        space = lexical.Tfidf.fit("words", texts, min_df=TEXT_MIN_DF).index([])
        n_terms, (n_dims, n_labels) = len(space.vocabulary), (E.shape[1], Y.shape[1])
        if len(texts):
            coef, r0 = _dual_ridge(space.matrix_of(texts), np.asarray(E, np.float64), np.asarray(Y, np.float64),
                                   alpha=TEXT_ALPHA)  # fmt: skip
        else:
            coef, r0 = np.zeros((n_terms + n_dims, n_labels)), np.zeros(n_labels)
        _TEXT_RIDGES[key] = (space, _half(coef[:n_terms]), _half(coef[n_terms:]), r0)
        while len(_TEXT_RIDGES) > TEXT_RIDGES_KEPT:  # each fit's arrays take about 20 MB
            _TEXT_RIDGES.popitem(last=False)
    _TEXT_RIDGES.move_to_end(key)
    return _TEXT_RIDGES[key]


def _dual_ridge(X_words, E: np.ndarray, Y: np.ndarray, *, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with intercept from [X_words | E] (sparse words, dense embedding) to Y, solved in the
    dual: an n x n positive definite system over the centred Gram matrix, which for 9,357 passages and
    12,000 features takes about 10 s where scikit-learn's iterative sparse solver took 140. Returns (weights
    [features, labels], intercepts [labels]); equal to scikit-learn's Ridge (checked in the tests)."""
    from scipy.linalg import solve  # fitting only

    K = (X_words @ X_words.T).toarray() + E @ E.T
    mean = K.mean(axis=0)
    K -= mean[None, :] + mean[:, None] - mean.mean()  # the Gram matrix of the centred features
    K[np.diag_indices_from(K)] += alpha
    A = solve(K, Y - Y.mean(axis=0), assume_a="pos", overwrite_a=True)  # its columns sum to 0
    W = np.vstack([np.asarray(X_words.T @ A), E.T @ A])
    x_mean = np.concatenate([np.asarray(X_words.mean(axis=0)).ravel(), E.mean(axis=0)])
    return W, Y.mean(axis=0) - x_mean @ W


def technique_texts(techniques: Sequence[Technique]) -> tuple[list[str], list[str], list[str]]:
    """What each technique is compared with: its name, name + summary, and the TF-IDF text (name twice)."""
    names = [t.name for t in techniques]
    fulls = [f"{t.name}: {t.summary}" for t in techniques]
    return names, fulls, [f"{n}. {f}" for n, f in zip(names, fulls)]


OBJECTIVES = ("balanced", "all")


def objective(oof: list, Y: np.ndarray, weights: dict, *, k: float, balanced: bool = True) -> float:
    """What tuning maximises on the out-of-fold signals: (MAP + R@10) / 2 over every gold label ("all"), or
    with R@10 the mean of its value on gold labels that had a real training passage in the pool and on those
    that had none ("balanced"). DISARM's passages favour a few tactics; the texts analysts tag elsewhere mostly
    carry labels DISARM has no passage for, so "balanced" gives both kinds an equal say."""
    from .metrics import average_precision_score

    ap, hits = 0.0, {True: [0, 0], False: [0, 0]}
    for (s, a), y in zip(oof, Y):
        gold = set(np.flatnonzero(y))
        ranked = list(np.argsort(-fuse(s, a, weights, k=k), kind="stable"))
        ap += average_precision_score(ranked, gold)
        top = set(ranked[:10])
        for g in gold:
            had_real = bool(a["knn"][g])
            hits[had_real][0] += g in top
            hits[had_real][1] += 1
    if balanced and hits[True][1] and hits[False][1]:
        recall = 0.5 * (hits[True][0] / hits[True][1] + hits[False][0] / hits[False][1])
    else:
        recall = (hits[True][0] + hits[False][0]) / max(hits[True][1] + hits[False][1], 1)
    return (ap / max(len(Y), 1) + recall) / 2


def tune_weights(oof: list, Y: np.ndarray, weights: dict, *, k: float, passes: int = 1,
                 frozen: frozenset = frozenset(), balanced: bool = True) -> dict:  # fmt: skip
    """Coordinate ascent over fusion weights on out-of-fold signals. A step is taken only for a gain above
    MIN_GAIN: with a few dozen incidents, smaller gains are noise. ``frozen`` weights are never changed
    (ablations hold a removed signal at 0)."""
    best_w, best = dict(weights), objective(oof, Y, weights, k=k, balanced=balanced)
    for _ in range(passes):
        for name in (*sig.SIGNALS, "unseen"):
            if name in frozen:
                continue
            for value in WEIGHT_GRID:
                trial = best_w | {name: value}
                if trial != best_w and any(trial.values()):
                    score = objective(oof, Y, trial, k=k, balanced=balanced)
                    if score > best + MIN_GAIN:
                        best_w, best = trial, score
    return best_w
