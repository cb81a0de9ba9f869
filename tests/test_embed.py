"""The embedder registry and the embedding cache (no real model needed)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FakeEmbedder

from disarm_tagger import embed


class OtherBackend(FakeEmbedder):
    backend = "other"

    @staticmethod
    def _word(word: str):
        return FakeEmbedder._word(word + "!")


def test_cache_keys_vectors_by_backend_weights_variant_and_text(tmp_path):
    path = tmp_path / "cache.npz"
    first = embed.CachedEmbedder(FakeEmbedder(), path)
    a = first.encode(["bots flooded the hashtag"])
    first.save()
    other = embed.CachedEmbedder(OtherBackend(), path)  # same file, same text, another backend
    b = other.encode(["bots flooded the hashtag"])
    assert other.inner.calls == 1  # not served from the first backend's vectors
    np.testing.assert_array_equal(b, OtherBackend().encode(["bots flooded the hashtag"]))
    assert not np.allclose(a, b)
    reweighted = FakeEmbedder()
    reweighted.weights_sha256 = "1" * 64  # same backend name, other weights
    again = embed.CachedEmbedder(reweighted, path)
    again.encode(["bots flooded the hashtag"])
    assert reweighted.calls == 1
    requantised = FakeEmbedder()
    requantised.variant = "another int8 scheme"  # same backend and weights, vectors computed another way
    embed.CachedEmbedder(requantised, path).encode(["bots flooded the hashtag"])
    assert requantised.calls == 1
    same = embed.CachedEmbedder(FakeEmbedder(), path)
    np.testing.assert_array_equal(same.encode(["bots flooded the hashtag"]), a)
    assert same.inner.calls == 0  # the same backend and weights: a hit


def test_the_int8_backend_names_its_scheme_and_the_others_have_none():
    from disarm_tagger.onnx_backend import INT8_SCHEME

    assert embed.PackagedEmbedder("onnx-int8").variant == INT8_SCHEME
    assert embed.PackagedEmbedder("onnx").variant == ""


def test_registry_lookup_and_unknown_backend():
    assert embed.load_embedder("fake").backend == "fake"
    assert set(embed.PACKAGED_BACKENDS) <= set(embed.backends())
    with pytest.raises(embed.EmbedderError, match="unknown backend 'nope'"):
        embed.load_embedder("nope")
