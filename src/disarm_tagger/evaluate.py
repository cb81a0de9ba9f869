"""Cross-validation by incident: refit every method inside each fold, score the held-out incidents, summarise.

Passages of one incident share wording, so folds split by incident, never by passage (STYLE rule 9).
Inside a fold every method is fitted on the training-fold examples only; the Tagger's own weight tuning,
calibration and threshold search are nested inside that fit. The functions here return data (an
``EvalReport``); report.py writes metrics.json, report.md and the plots; the CLI decides exit codes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import baselines
from .schema import Example, Prediction, Row, Technique
from .summaries import OURS, headline, intervals, margin, summarise
from .tagger import DEFAULT_WEIGHTS, Tagger, check_is_fitted

Progress = Callable[[int, int, str], None]  # (steps done, total steps, what was just done)
UNTUNED = "all signals, default weights (untuned)"
REFERENCE = "ours (tuned)"


class EvalError(ValueError):
    """The evaluation cannot run as asked (too many folds, an empty test set...). One line for the user."""


@dataclass(frozen=True)
class Fold:
    index: int
    train: tuple[int, ...]  # example indices
    test: tuple[int, ...]


@dataclass
class EvalReport:
    config: dict
    methods: dict[str, dict]  # method -> summaries.summarise() output (+ "intervals"), on the main split
    margins: dict[str, dict]  # baseline -> headline metric -> {"margin", "interval"}
    ablations: dict | None
    predictions: list[Prediction]  # every method, main split
    folds: list[dict]  # per fold: test incidents, sizes, our tagger's tuned threshold and weights

    def headline(self, method: str = OURS) -> dict[str, float | None]:
        return headline(self.methods[method])


# ------------------------------------------------------------------------------------------ splitting
def incident_folds(examples: Sequence[Example], *, n_folds: int | None = None) -> list[Fold]:
    """Leave one incident out (``n_folds=None``; incidents in id order) or scikit-learn's GroupKFold."""
    groups = [e.incident_id for e in examples]
    incidents = sorted(set(groups))
    if n_folds is None:
        splits = [_split_off(groups, inc) for inc in incidents]
    else:
        from sklearn.model_selection import GroupKFold

        if not 2 <= n_folds <= len(incidents):
            raise EvalError(f"--folds must be between 2 and the number of incidents ({len(incidents)})")
        splits = GroupKFold(n_splits=n_folds).split(np.zeros(len(groups)), groups=groups)
    return [Fold(i, tuple(map(int, tr)), tuple(map(int, te))) for i, (tr, te) in enumerate(splits)]


def _split_off(groups: Sequence[str], incident: str) -> tuple[list[int], list[int]]:
    test = [i for i, g in enumerate(groups) if g == incident]
    return [i for i, g in enumerate(groups) if g != incident], test


def describe_split(n_folds: int | None, n_incidents: int) -> str:
    if n_folds is None:
        return f"leave-one-incident-out ({n_incidents} folds)"
    return f"GroupKFold by incident ({n_folds} folds)"


# ------------------------------------------------------------------------------------------ methods
def tagger_rows(tagger: Tagger, texts: Sequence[str]) -> list[Row]:
    """(ranked labels, their scores, labels >= threshold) per text, using the tagger's own ranking."""
    rows = []
    for row in tagger.predict_proba(list(texts)):
        order = tagger.rank(row, top_k=10)
        predicted = tuple(c for c, s in zip(tagger.classes_, row) if s >= tagger.threshold_)
        ranked = tuple(tagger.classes_[j] for j in order)
        rows.append((ranked, tuple(float(row[j]) for j in order), predicted))
    return rows


def tagger_method(embedder, *, authored: Sequence[Example] = (), **params) -> Callable:
    """A fit-and-predict function (see baselines.py) for a Tagger built with ``params``, trained on the
    fold's training passages plus ``authored`` (which are never test passages)."""

    def run(train: Sequence[Example], texts: Sequence[str], techniques: Sequence[Technique]):
        tagger = Tagger(embedder, **params).fit([*train, *authored], techniques)
        weights = {k: float(v) for k, v in tagger.weights_.items()}
        info = {"threshold": float(tagger.threshold_), "weights": weights,
                "authored_weight": float(tagger.authored_weight_),
                "hubs_penalised": [c for c, v in zip(tagger.classes_, tagger.hub_) if v]}  # fmt: skip
        return tagger_rows(tagger, texts), info

    return run


def per_technique_subset(authored: Sequence[Example], n: int) -> tuple[Example, ...]:
    """The first ``n`` authored passages written for each technique (ids ``A-<technique>-<k>``, in order)."""
    return tuple(e for e in authored if int(e.id.rsplit("-", 1)[1]) <= n)


def ablation_variants(embedder, params: dict, *, encoders: dict | None = None) -> dict[str, Callable]:
    """Variants of ours, each tuned the same way:
    - each fused signal removed in turn (its weight held at 0, ``frozen``, while tuning re-weights the rest);
      components whose default weight is 0 are forced on at 1 instead; one untuned row (all defaults);
    - the data: without authored passages, and a learning curve over their number per technique;
    - the label prior over real passages only (forced on), tuning for every gold label alike, plain isotonic steps, no hub
      cap, the lexicon without the project's named examples (DISARM's own lists only), and the opt-in
      ridge_text signal switched on;
    - each other encoder in ``encoders`` (name -> embedder)."""
    authored = tuple(params.get("authored", ()))
    out = {UNTUNED: tagger_method(embedder, **params | {"tune": False, "weights": dict(DEFAULT_WEIGHTS)})}
    for name, default in DEFAULT_WEIGHTS.items():
        if name == "ridge_text" and not params.get("text_ridge"):
            continue  # off: its row is below
        label, value = (f"without {name}", 0.0) if default else (f"with {name} forced to 1", 1.0)
        out[label] = tagger_method(embedder, **params | {"weights": DEFAULT_WEIGHTS | {name: value},
                                                         "frozen": (name,)})  # fmt: skip
    if authored:
        out["without authored passages"] = tagger_method(embedder, **params | {"authored": ()})
        for n in LEARNING_CURVE:
            out[f"authored: {n} per technique"] = tagger_method(
                embedder, **params | {"authored": per_technique_subset(authored, n)})
    out["prior over real passages only, forced to 1"] = tagger_method(
        embedder, **params | {"prior": "real", "weights": DEFAULT_WEIGHTS | {"prior": 1.0}, "frozen": ("prior",)})
    out["tuned for every gold label alike"] = tagger_method(embedder, **params | {"objective": "all"})
    out["isotonic steps (no interpolation)"] = tagger_method(embedder, **params | {"calibration": "steps"})
    out["without the hub cap"] = tagger_method(embedder, **params | {"hub_cap": False})
    if not params.get("text_ridge"):
        out[WITH_TEXT_RIDGE] = tagger_method(embedder, **params | {"text_ridge": True})
    if params.get("named_examples"):
        out[WITHOUT_NAMES] = tagger_method(embedder, **params | {"named_examples": None})
    for name, other in (encoders or {}).items():
        out[f"encoder: {name}"] = tagger_method(other, **params)
    return out


WITHOUT_NAMES = "without the project's named examples"
WITH_TEXT_RIDGE = "with ridge_text (train --text-ridge)"
LEARNING_CURVE = (1, 2, 4, 8)  # authored passages per technique in the learning-curve rows (plus "all": ours)


def params_of(tagger: Tagger) -> dict:
    """A Tagger's parameters as the report records them: everything but the embedder, with the named examples
    counted rather than listed (they are in training_data/, whose sha256 the report records)."""
    params = {k: v for k, v in tagger.get_params().items() if k != "embedder"}
    if params.get("named_examples"):
        names = params["named_examples"]
        params["named_examples"] = f"{sum(map(len, names.values()))} names for {len(names)} techniques"
    return params


# ------------------------------------------------------------------------------------------ cross-validation
def cross_validate(examples: Sequence[Example], techniques: Sequence[Technique], methods: dict[str, Callable],
                   folds: Sequence[Fold], *, progress: Progress | None = None, step: int = 0,
                   total: int | None = None, stage: str = "fold",
                   ) -> tuple[list[Prediction], list[dict]]:  # fmt: skip
    """Fit each method on each fold's training examples and predict the fold's held-out examples."""
    predictions, infos = [], []
    for fold in folds:
        train, test = [examples[i] for i in fold.train], [examples[i] for i in fold.test]
        if {e.incident_id for e in train} & {e.incident_id for e in test}:  # what every number relies on
            raise AssertionError(f"fold {fold.index}: an incident is on both sides of the split")
        seen = frozenset(lab for e in train for lab in e.labels)  # real passages only: authored never count
        info = {"fold": fold.index, "test_incidents": sorted({e.incident_id for e in test}),
                "n_train": len(train), "n_test": len(test)}  # fmt: skip
        for name, method in methods.items():
            rows, extra = method(train, [e.text for e in test], techniques)
            if name == OURS:
                info |= extra
            for ex, (ranked, scores, predicted) in zip(test, rows):
                predictions.append(Prediction(name, fold.index, ex.id, ex.incident_id, tuple(ex.labels),
                                              ranked, scores, predicted, seen))  # fmt: skip
        infos.append(info)
        step += 1
        if progress:
            progress(step, total or len(folds), f"{stage} {fold.index + 1}/{len(folds)}")
    return predictions, infos


def by_method(predictions: Sequence[Prediction]) -> dict[str, list[Prediction]]:
    """Predictions grouped by method (first-seen order), each sorted by example id."""
    out: dict[str, list[Prediction]] = {}
    for p in predictions:
        out.setdefault(p.method, []).append(p)
    return {m: sorted(ps, key=lambda p: p.example_id) for m, ps in out.items()}


# ------------------------------------------------------------------------------------------ entry points
def _report(config: dict, predictions: list[Prediction], techniques: Sequence[Technique], folds: list[dict],
            ablations: dict | None, n_resamples: int) -> EvalReport:  # fmt: skip
    grouped = by_method(predictions)
    methods = {name: summarise(preds, techniques) | {"intervals": intervals(preds, n_resamples=n_resamples)}
               for name, preds in grouped.items()}  # fmt: skip
    margins = {name: margin(grouped[OURS], preds, n_resamples=n_resamples)
               for name, preds in grouped.items() if name != OURS}  # fmt: skip
    return EvalReport(config, methods, margins, ablations, predictions, folds)


def _ablate(examples, techniques, runs: dict[str, Callable], folds: list[Fold], tuned: list[Prediction] | None,
            *, step: int, total: int, progress: Progress | None) -> dict[str, dict]:  # fmt: skip
    """Ablation rows: tuned ours (reused when the split is the same, else in ``runs``), then every variant."""
    rows = {f"{OURS} (tuned)": summarise(tuned, techniques)} if tuned is not None else {}
    for name, method in runs.items():
        preds, _ = cross_validate(examples, techniques, {name: method}, folds, progress=progress, step=step,
                                  total=total, stage=f"ablation: {name}, fold")  # fmt: skip
        rows[name] = summarise(preds, techniques)
        step += len(folds)
    return {name: {"headline": headline(s), "ranking": s["ranking"], "calibration": s["calibration"]}
            for name, s in rows.items()}  # fmt: skip


def evaluate(examples: Sequence[Example], techniques: Sequence[Technique], *, embedder,
             authored: Sequence[Example] = (), n_folds: int | None = None, ablations: bool = True,
             ablation_folds: int = 10, tagger_params: dict | None = None, n_resamples: int = 1000,
             encoders: dict | None = None, progress: Progress | None = None) -> EvalReport:  # fmt: skip
    """Cross-validate our tagger and the baselines by incident; optionally ablate each signal.

    ``examples`` are the real passages (DISARM, local annotations) that folds split by incident; ``authored``
    passages join every training fold and are never tested on. ``n_folds=None`` is leave-one-incident-out.
    Ablations (see ``ablation_variants``; ``encoders`` adds one row per other embedder) run on a GroupKFold
    split of ``ablation_folds`` (capped at the number of incidents) because they multiply the cost.
    """
    params = dict(tagger_params or {})
    n_incidents = len({e.incident_id for e in examples})
    if n_incidents < 2:
        raise EvalError("cross-validation by incident needs at least two incidents")
    folds = incident_folds(examples, n_folds=n_folds)
    k_abl = min(ablation_folds, n_incidents)
    abl_folds = incident_folds(examples, n_folds=k_abl) if ablations else []
    reuse = bool(abl_folds) and folds == abl_folds
    method_params = params | {"authored": tuple(authored)}
    runs = {} if reuse else {f"{OURS} (tuned)": tagger_method(embedder, **method_params)}
    runs |= ablation_variants(embedder, method_params, encoders=encoders) if ablations else {}
    total = len(folds) + len(abl_folds) * len(runs)
    methods = {OURS: tagger_method(embedder, **method_params), baselines.PRIOR: baselines.prior_method,
               baselines.TFIDF: baselines.tfidf_logreg_method}  # fmt: skip
    predictions, infos = cross_validate(examples, techniques, methods, folds, progress=progress, total=total,
                                        stage="cv fold")  # fmt: skip
    ablation = None
    if ablations:
        tuned = [p for p in predictions if p.method == OURS] if reuse else None
        rows = _ablate(examples, techniques, runs, abl_folds, tuned, step=len(folds), total=total,
                       progress=progress)  # fmt: skip
        ablation = {"split": describe_split(k_abl, n_incidents), "reference": REFERENCE, "rows": rows}
    config = {"mode": "cross-validation", "split": describe_split(n_folds, n_incidents), "folds": len(folds),
              "ablation_folds": k_abl if ablations else None, "n_examples": len(examples),
              "n_authored": len(authored),
              "n_incidents": n_incidents, "n_techniques": len(techniques),
              "tagger_params": params_of(Tagger(None, **params)),
              "embedder": getattr(embedder, "name", type(embedder).__name__),
              "bootstrap_resamples": n_resamples, "baselines": baselines.DESCRIPTIONS,
              "by_origin": by_origin(examples, predictions, techniques)}  # fmt: skip
    return _report(config, predictions, techniques, infos, ablation, n_resamples)


def by_origin(examples: Sequence[Example], predictions: Sequence[Prediction], techniques: Sequence[Technique],
              ) -> dict[str, dict]:  # fmt: skip
    """Our headline metrics on imported DISARM passages and on local analyst annotations separately."""
    origin = {e.id: e.origin for e in examples}
    out = {}
    for name in sorted(set(origin.values())):
        preds = [p for p in predictions if p.method == OURS and origin[p.example_id] == name]
        out[name] = {"n_examples": len(preds)} | headline(summarise(preds, techniques))
    return out


def evaluate_model(tagger: Tagger, examples: Sequence[Example], *, n_resamples: int = 1000,
                   progress: Progress | None = None) -> EvalReport:  # fmt: skip
    """Score a fitted tagger on a labelled set (no refitting). Seen labels are those with at least one real
    (not authored) training example in the model; the prior baseline uses the same counts.
    The TF-IDF baseline needs training passages, which a model folder does not keep: it is left out."""
    check_is_fitted(tagger)
    if not any(e.labels for e in examples):
        raise EvalError("the test set holds no labelled passages")
    real = tagger.Y_[~tagger.authored_]  # authored passages never make a label "seen"
    counts = dict(zip(tagger.classes_, real.sum(axis=0).tolist()))
    seen = frozenset(c for c, n in counts.items() if n > 0)
    median = float(np.median(real.sum(axis=1)))
    runs = {OURS: tagger_rows(tagger, [e.text for e in examples]),
            baselines.PRIOR: baselines.prior_rows(counts, median, len(real), len(examples))}  # fmt: skip
    predictions = [Prediction(method, 0, ex.id, ex.incident_id, tuple(ex.labels), *row, seen)
                   for method, rows in runs.items() for ex, row in zip(examples, rows)]  # fmt: skip
    if progress:
        progress(1, 1, "scored the test set")
    overlap = sorted({e.incident_id for e in examples} & set(map(str, tagger.incidents_)))
    warnings = [f"{len(overlap)} test incident(s) are in the model's training data: {', '.join(overlap)}"]
    meta = getattr(tagger, "meta_", {})
    config = {"mode": "held-out test set", "split": "none (a trained model scored on a test file)",
              "folds": 1, "ablation_folds": None, "n_examples": len(examples),
              "n_incidents": len({e.incident_id for e in examples}), "n_techniques": len(tagger.classes_),
              "tagger_params": params_of(tagger) | {"weights_": tagger.weights_, "threshold_": tagger.threshold_},
              "embedder": meta.get("embedder", {}).get("name", getattr(tagger.embedder, "name", "unknown")),
              "bootstrap_resamples": n_resamples,
              "baselines": {baselines.PRIOR: baselines.DESCRIPTIONS[baselines.PRIOR]},
              "warnings": warnings if overlap else []}  # fmt: skip
    info = [{"fold": 0, "test_incidents": sorted({e.incident_id for e in examples}),
             "n_train": len(tagger.Y_), "n_test": len(examples), "threshold": tagger.threshold_,
             "weights": tagger.weights_}]  # fmt: skip
    return _report(config, predictions, list(tagger.techniques_), info, None, n_resamples)


def heldout_provenance(path: Path, model_folder: Path, tagger: Tagger) -> dict:
    """What a --test evaluation scored: the test file (and its sha256) and the model it came from."""
    from .corpus import sha256_file

    prov = getattr(tagger, "meta_", {}).get("provenance", {})
    return {"test_file": str(path), "test_sha256": sha256_file(Path(path)), "model": str(model_folder),
            "model_training_data_sha256": prov.get("training_data_sha256", "unknown"),
            "disarm_snapshot": prov.get("disarm_snapshot", "unknown")}  # fmt: skip
