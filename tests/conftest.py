"""Shared fixtures: a deterministic fake embedder (no model download, no torch) and a small fitted tagger."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import numpy as np
import pytest

from disarm_tagger import embed


SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared beside the repo, as in CI


def shared(relative: str) -> Path:
    """A path under ../shared: DISARM's checkout and the consumers' own data (MISP galaxy) the exports are
    checked against. Missing is a failure, not a skip: CI always has it."""
    path = SHARED / relative
    if not path.exists():
        pytest.fail(f"{path}: not found; these tests check against ../shared beside the repo, as CI has it")
    return path


STOP = frozenset("a an and the of to for in on with by it its is was were be as at from that this".split())


class FakeEmbedder:
    """Bag of hashed word vectors, averaged and L2-normalised: texts sharing words are similar."""

    name = "fake"
    dimension = 32
    backend = "fake"
    weights_sha256 = "0" * 64

    made = 0  # embedders built in this process: one per model load

    def __init__(self):
        self.calls = 0
        FakeEmbedder.made += 1

    @staticmethod
    def _word(word: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
        return np.random.default_rng(seed).standard_normal(FakeEmbedder.dimension)

    def encode(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP] or ["<empty>"]
            v = np.sum([self._word(w) for w in words], axis=0)
            out[i] = v / max(np.linalg.norm(v), 1e-9)
        return out


class SlowFakeEmbedder(FakeEmbedder):
    """The fake's vectors, 50 ms later per call: long enough for a test to kill a process while it tags."""

    def encode(self, texts):
        time.sleep(0.05)
        return super().encode(texts)


# The fake goes through the real backend lookup: `--backend fake`, and models saved with it, load it by name.
# Dask worker processes preload this file to have them too (tests/test_dask.py).
embed.register_backend("fake", FakeEmbedder)
embed.register_backend("fake-slow", SlowFakeEmbedder)


@pytest.fixture()
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture(scope="session")
def real_embedder():
    """The packaged MiniLM on the default backend, loaded once per session (tests marked slow)."""
    return embed.load_embedder()
