"""A fast CPU path for the sentence embedder: ONNX export, a local cache, and an onnxruntime encoder.

The exported graph holds the whole sentence-transformers pipeline of all-MiniLM-L6-v2 (transformer, mean
pooling over the attention mask, L2 normalisation), so `OnnxEncoder.encode` returns the same unit vectors
as `SentenceTransformer.encode(..., normalize_embeddings=True)`.

Building (`export_onnx`, or `ensure_onnx` on a cache miss) imports torch and transformers lazily. Loading
and encoding import only onnxruntime, tokenizers and numpy, so a process that only embeds starts quickly.
Nothing here downloads anything: the model folder must already be on disk.
"""

from __future__ import annotations

import json
import os
import platform
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from .corpus import sha256_file

OPSET = 17
FP32_NAME = "model.onnx"
INT8_NAME = "model-int8.onnx"
META_NAME = "onnx_meta.json"
# The int8 graph's weights use 7 of their 8 bits (onnxruntime's `reduce_range`). With full-range int8 weights,
# x86 CPUs without VNNI saturate 16-bit sums in the u8 x s8 product and CPUs with it do not, so the same text
# embedded differently from one machine to the next (median cosine 0.993 between two machines' int8 vectors):
# a model trained on one machine scored differently on another. With 7-bit weights every kernel sums exactly.
INT8_SCHEME = "dynamic, per-channel QInt8 weights, reduce_range"
WEIGHTS_NAME = "model.safetensors"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@lru_cache(maxsize=8)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def weights_sha256(model_dir: Path) -> str:
    """sha256 of `model_dir/model.safetensors`, memoised per (path, size, mtime) within a process."""
    path = (Path(model_dir) / WEIGHTS_NAME).resolve()
    stat = path.stat()
    return _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def cache_dir(model_dir: Path) -> Path:
    """Cache folder for the ONNX files of `model_dir`, keyed by the first 16 hex of its weights sha256.

    The root is `$DISARM_TAGGER_CACHE`, else `~/.cache/disarm-tagger`.
    """
    root = Path(os.environ.get("DISARM_TAGGER_CACHE") or Path.home() / ".cache" / "disarm-tagger")
    return root / "onnx" / weights_sha256(model_dir)[:16]


@contextmanager
def _atomic_target(final: Path):
    """Yield a temporary path next to `final`; move it onto `final` on success, delete it on failure."""
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _pooled_module(model_dir: Path):
    """The HF encoder wrapped with mean pooling and L2 normalisation (imports torch lazily)."""
    import torch
    from transformers import AutoModel

    class MeanPooledNormalized(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    encoder = AutoModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager")
    return MeanPooledNormalized(encoder).eval()


def export_onnx(model_dir: Path, out_dir: Path, *, quantize: bool = True) -> Path:
    """Export `model_dir` to `out_dir/model.onnx` (+ `model-int8.onnx` if `quantize`); return the one to use.

    Uses the TorchScript exporter (`dynamo=False`) with dynamic batch and sequence axes. The int8 model is
    made with onnxruntime's dynamic quantisation (per-channel QInt8 weights in 7 bits, `INT8_SCHEME`). Every
    file is written to a temporary name and moved into place, and `onnx_meta.json` (written last) records
    the weights sha256, opset, quantised flag and int8 scheme, library versions and the sha256 of each file.
    """
    import onnxruntime
    import torch

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = _pooled_module(model_dir)
    example = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    args = (example, (example != 0).long(), torch.zeros_like(example))
    axes = {name: {0: "batch", 1: "sequence"} for name in _INPUTS}
    axes["embedding"] = {0: "batch"}

    fp32 = out_dir / FP32_NAME
    with _atomic_target(fp32) as tmp, torch.inference_mode(), warnings.catch_warnings():
        # Tracing warns that a mask-padding check becomes a constant; it is always false for our inputs,
        # and the tests compare against sentence-transformers across batch and sequence sizes.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module, args, str(tmp), dynamo=False, input_names=list(_INPUTS), output_names=["embedding"],
            dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True,
        )
    files = [fp32]

    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8 = out_dir / INT8_NAME
        with _atomic_target(int8) as tmp:
            quantize_dynamic(fp32, tmp, per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)
        files.append(int8)

    meta = {
        "weights_sha256": weights_sha256(model_dir),
        "opset": OPSET,
        "quantized": quantize,
        "int8_scheme": INT8_SCHEME if quantize else None,
        "exporter": "torch.onnx.export(dynamo=False)",
        "files": {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files},
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
    }
    with _atomic_target(out_dir / META_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return files[-1]


def _cache_is_valid(folder: Path, name: str, sha256: str) -> bool:
    """Cheap check: meta names the same weights and int8 scheme, and records `name` with its size on disk."""
    try:
        meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
        size = (folder / name).stat().st_size
        return (meta["weights_sha256"] == sha256 and meta.get("int8_scheme") == INT8_SCHEME
                and meta["files"][name]["bytes"] == size)  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return False


def ensure_onnx(model_dir: Path, *, quantize: bool = True) -> Path:
    """Return the cached ONNX file for `model_dir` (int8 if `quantize`), exporting it on a cache miss.

    A hit needs `onnx_meta.json` to name the same full weights sha256, the current `INT8_SCHEME` (a cache
    written before the scheme changed is rebuilt) and the file's size on disk. A miss
    builds both files (quantising adds a few seconds), so the other variant is then a hit too.
    """
    folder = cache_dir(model_dir)
    name = INT8_NAME if quantize else FP32_NAME
    if not _cache_is_valid(folder, name, weights_sha256(model_dir)):
        export_onnx(model_dir, folder, quantize=True)
    return folder / name


def default_threads() -> int:
    """$OMP_NUM_THREADS when set, as torch reads it (dask sets it to 1 in each worker process, which runs
    one partition at a time), else every core."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


class OnnxEncoder:
    """Sentence embeddings from an exported ONNX graph, tokenised with the `tokenizers` library.

    `encode` returns float32 unit vectors of shape [n, dim] in input order. Texts are sorted by length
    within a call so each batch is padded only to its own longest text. With ``parallel``, batches run on
    that many Python threads at once, each session run on one core (ONNX Runtime and the tokenizer release
    the interpreter lock); otherwise one batch at a time on ``threads`` cores.
    """

    def __init__(self, onnx_path: Path, tokenizer_json: Path, *, max_length: int = 256, threads: int | None = None,
                 parallel: int = 1) -> None:  # fmt: skip
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.onnx_path = Path(onnx_path)
        self.tokenizer_json = Path(tokenizer_json)
        self.max_length = max_length
        self.parallel = max(1, parallel)
        self.threads = 1 if self.parallel > 1 else (threads or default_threads())

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(self.onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = [i.name for i in self._session.get_inputs()]
        self.dim = int(self._session.get_outputs()[0].shape[1])
        self._pool = None

        # The shipped tokenizer.json pads and truncates to a fixed 128: replace both settings.
        self._tokenizer = Tokenizer.from_file(str(self.tokenizer_json))
        padding = self._tokenizer.padding or {}
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.enable_padding(
            pad_id=padding.get("pad_id", 0),
            pad_type_id=padding.get("pad_type_id", 0),
            pad_token=padding.get("pad_token", "[PAD]"),
        )

    def _run(self, batch: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(batch)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feed = {name: np.asarray(columns[name], dtype=np.int64) for name in self._input_names}
        return self._session.run(None, feed)[0]

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """Embed `texts`; returns float32 [len(texts), dim], L2-normalised, in input order."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        if self.parallel > 1 and len(batches) > 1:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="onnx")
            results = self._pool.map(lambda idx: self._run([texts[i] for i in idx]), batches)
        else:
            results = (self._run([texts[i] for i in idx]) for idx in batches)
        for idx, vectors in zip(batches, results):
            out[idx] = vectors
        return out
