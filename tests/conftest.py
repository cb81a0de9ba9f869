"""Shared fixtures: a deterministic fake embedder (no model download, no torch) and a small fitted tagger."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from disarm_tagger import embed

# CI (.ci/run sets CI=1) draws the same hypothesis examples every run, so a commit cannot turn main red by an
# unlucky draw; runs elsewhere draw new examples each time and keep the ones that failed, to find new bugs.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


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


class DyingFakeEmbedder(SlowFakeEmbedder):
    """The slow fake that kills its own worker process mid-partition, once: when ``armed`` names a file
    (tests/test_dask.py sets it in each worker), the first process to reach its fourth call creates that
    file, writes its pid and the running task's key into it and SIGKILLs itself. A kill sent by the test
    from outside raced the partition's 50 ms; this one always lands inside a partition."""

    armed: str | None = None

    def encode(self, texts):
        if DyingFakeEmbedder.armed and self.calls >= 3:
            try:
                fd = os.open(DyingFakeEmbedder.armed, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass  # another worker died already: one death per armed run
            else:
                from distributed import get_worker

                os.write(fd, json.dumps({"pid": os.getpid(), "key": get_worker().get_current_task()}).encode())
                os.fsync(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        return super().encode(texts)


# The fake goes through the real backend lookup: `--backend fake`, and models saved with it, load it by name.
# Dask worker processes preload this file to have them too (tests/test_dask.py).
embed.register_backend("fake", FakeEmbedder)
embed.register_backend("fake-slow", SlowFakeEmbedder)
embed.register_backend("fake-dying", DyingFakeEmbedder)


@pytest.fixture()
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture(scope="session")
def real_embedder():
    """The packaged MiniLM on the default backend, loaded once per session (tests marked slow)."""
    return embed.load_embedder()
