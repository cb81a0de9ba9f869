"""A model folder: exact round trip, refusal of changed or unsafe files, and whole-or-nothing replacement."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_tagger import TECHNIQUES, _examples

from disarm_tagger import corpus, persist
from disarm_tagger.tagger import Tagger

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def fitted(fake_embedder) -> Tagger:
    return Tagger(fake_embedder).fit(_examples(), TECHNIQUES)


def test_save_load_round_trip(fitted, fake_embedder, tmp_path):
    meta = persist.save(fitted, tmp_path / "m", provenance={"training_data_sha256": "abc"})
    on_disk = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert on_disk == meta
    assert on_disk["labels"] == list(fitted.classes_)
    assert on_disk["format_version"] == persist.FORMAT_VERSION
    assert on_disk["provenance"] == {"training_data_sha256": "abc"}
    assert on_disk["threshold"] == fitted.threshold_ and on_disk["weights"] == fitted.weights_
    assert on_disk["embedder"] | {"package": "-"} == {
        "name": "fake", "package": "-", "dimension": fake_embedder.dimension, "backend": "fake",
        "weights_sha256": fake_embedder.weights_sha256}  # fmt: skip
    assert sorted(os.listdir(tmp_path / "m")) == sorted(["meta.json", *on_disk["files"]])
    assert set(on_disk["files"]) == {"config.json", "arrays.npz", "techniques.jsonl", "README.md"}
    assert "Inner cross-validation" in (tmp_path / "m" / "README.md").read_text()
    assert set(on_disk["versions"]) >= {"python", "numpy"}
    loaded = persist.load(tmp_path / "m", embedder=fake_embedder)
    assert loaded.get_params() | {"embedder": None} == fitted.get_params() | {"embedder": None}
    texts = ["a website with a domain", "faces by neural networks"]
    np.testing.assert_array_equal(loaded.predict_proba(texts), fitted.predict_proba(texts))
    assert loaded.suggest(texts[0]) == fitted.suggest(texts[0])


def test_load_uses_the_recorded_backend_through_the_registry(fitted, tmp_path):
    persist.save(fitted, tmp_path / "m")  # fitted with the fake embedder, registered as "fake" in conftest
    loaded = persist.load(tmp_path / "m")
    assert loaded.embedder_.backend == "fake"
    with pytest.raises(persist.ModelError, match="unknown backend 'nope'"):
        persist.load(tmp_path / "m", backend="nope")


def test_a_model_trained_on_other_int8_vectors_warns_on_load(tmp_path):
    import warnings

    from conftest import FakeEmbedder

    class Int8(FakeEmbedder):
        backend = "onnx-int8"

        def __init__(self, variant: str):
            super().__init__()
            self.variant = variant

    persist.save(Tagger(Int8("7-bit")).fit(_examples(), TECHNIQUES), tmp_path / "m")
    assert json.loads((tmp_path / "m" / "meta.json").read_text())["embedder"]["int8_scheme"] == "7-bit"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        persist.load(tmp_path / "m", embedder=Int8("7-bit"))  # the same scheme: silent
    with pytest.warns(UserWarning, match=r"another scheme \(7-bit; this encoder: 6-bit\).*retrain"):
        persist.load(tmp_path / "m", embedder=Int8("6-bit"))
    persist.save(Tagger(Int8("")).fit(_examples(), TECHNIQUES), tmp_path / "old")  # written before the scheme
    assert "int8_scheme" not in json.loads((tmp_path / "old" / "meta.json").read_text())["embedder"]
    with pytest.warns(UserWarning, match="full-range int8 weights"):
        persist.load(tmp_path / "old", embedder=Int8("7-bit"))


@pytest.mark.parametrize("name", ["config.json", "arrays.npz", "techniques.jsonl"])
def test_a_changed_file_is_refused(fitted, fake_embedder, tmp_path, name):
    persist.save(fitted, tmp_path / "m")
    with open(tmp_path / "m" / name, "ab") as fh:
        fh.write(b"\x00")
    with pytest.raises(persist.ModelError, match=f"{name}: sha256 does not match"):
        persist.load(tmp_path / "m", embedder=fake_embedder)


class Boom:
    """Unpickling this object would run code: it would create the file named at construction."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def test_a_folder_with_pickled_arrays_and_matching_hashes_is_refused_without_running_them(fitted, fake_embedder,
                                                                                         tmp_path):  # fmt: skip
    folder, marker = tmp_path / "m", tmp_path / "pwned"
    persist.save(fitted, folder)
    with np.load(folder / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["Y_"] = np.array([Boom(str(marker))], dtype=object)
    np.savez(folder / "arrays.npz", **arrays)  # saved with pickle, as an attacker would
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"]["arrays.npz"] = corpus.sha256_file(folder / "arrays.npz")  # and the hashes made to match
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(persist.ModelError, match="inconsistent"):
        persist.load(folder, embedder=fake_embedder)
    assert not marker.exists()


def test_label_list_mismatch_is_refused(fitted, fake_embedder, tmp_path):
    persist.save(fitted, tmp_path / "m")
    meta_path = tmp_path / "m" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["labels"] = meta["labels"][::-1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(persist.ModelError, match="label list"):
        persist.load(tmp_path / "m", embedder=fake_embedder)


def test_old_format_is_refused_with_advice(fitted, fake_embedder, tmp_path):
    persist.save(fitted, tmp_path / "m")
    meta_path = tmp_path / "m" / "meta.json"
    meta_path.write_text(json.dumps(json.loads(meta_path.read_text()) | {"format_version": 1}))
    with pytest.raises(persist.ModelError, match="retrain it"):
        persist.load(tmp_path / "m", embedder=fake_embedder)


def test_missing_model_folder_is_a_model_error(tmp_path):
    with pytest.raises(persist.ModelError, match="no such model folder"):
        persist.load(tmp_path / "nope")


def test_save_copies_disarms_stix_objects_and_load_verifies_them(fitted, fake_embedder, tmp_path):
    stix = tmp_path / "disarm_stix.jsonl"
    stix.write_text('{"id": "attack-pattern--1", "type": "attack-pattern"}\n')
    meta = persist.save(fitted, tmp_path / "m", disarm_stix=stix)
    assert (tmp_path / "m" / persist.DISARM_STIX).read_bytes() == stix.read_bytes()
    assert persist.DISARM_STIX in meta["files"]
    persist.load(tmp_path / "m", embedder=fake_embedder)
    assert persist.read_disarm_objects(tmp_path / "m") == {"attack-pattern--1": {"id": "attack-pattern--1",
                                                                                  "type": "attack-pattern"}}
    (tmp_path / "m" / persist.DISARM_STIX).write_text("{}\n")
    with pytest.raises(persist.ModelError, match="disarm_stix.jsonl: sha256 does not match"):
        persist.load(tmp_path / "m", embedder=fake_embedder)
    with pytest.raises(persist.ModelError, match="disarm_stix.jsonl: sha256 does not match"):
        persist.read_disarm_objects(tmp_path / "m")
    persist.save(fitted, tmp_path / "plain")
    with pytest.raises(persist.ModelError, match="has no disarm_stix.jsonl"):
        persist.read_disarm_objects(tmp_path / "plain")


def test_public_api_train_save_load(fake_embedder, tmp_path):
    import disarm_tagger

    model = disarm_tagger.train(_examples(), TECHNIQUES, embedder=fake_embedder)
    assert isinstance(model, disarm_tagger.Tagger)
    disarm_tagger.save(model, tmp_path / "m")
    loaded = disarm_tagger.load(tmp_path / "m", embedder=fake_embedder)
    assert loaded.suggest("a messaging channel relayed posts")[0].technique_id == "T0001"


# ------------------------------------------------------------------------------ whole or nothing
SAVER = """
import sys, time
sys.path[:0] = [{tests!r}, {src!r}]
from conftest import FakeEmbedder
from disarm_tagger import persist
if {fallback!r}:
    persist._exchange = lambda a, b: False  # the two-rename path of filesystems without renameat2
tagger = persist.load({new!r}, embedder=FakeEmbedder())
for name in ("_write_json", "write_jsonl", "sha256_file", "_swap_in"):  # slow every step down a little
    real = getattr(persist, name)
    setattr(persist, name, lambda *a, _real=real, **k: (time.sleep(0.02), _real(*a, **k))[1])
real_rename = persist.os.rename
persist.os.rename = lambda *a: (time.sleep(0.02), real_rename(*a))[1]
print("ready", flush=True)
persist.save(tagger, {folder!r}, provenance={{"version": "new"}})
print("saved", flush=True)
"""


@pytest.mark.parametrize("fallback", [False, True], ids=["renameat2", "two-renames"])
def test_a_save_killed_at_any_moment_leaves_the_old_or_the_new_model(fitted, fake_embedder, tmp_path, fallback):
    rng = random.Random(4)
    folder, new = tmp_path / "m", tmp_path / "new"
    persist.save(fitted.set_params(rrf_k=7.0), new)
    fitted.set_params(rrf_k=10.0)
    outcomes = set()
    for attempt in range(12):
        persist.save(fitted, folder, provenance={"version": "old"})
        code = SAVER.format(tests=str(REPO / "tests"), src=str(REPO / "src"), folder=str(folder), new=str(new),
                            fallback=fallback)
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.35))  # a save takes about 0.25 s with the slowed steps
        proc.send_signal(signal.SIGKILL)
        finished = proc.stdout.read().strip() == "saved"
        proc.wait()
        loaded = persist.load(folder, embedder=fake_embedder)
        version = loaded.meta_["provenance"]["version"]
        assert version in ("old", "new"), attempt
        assert loaded.rrf_k == (7.0 if version == "new" else fitted.rrf_k)  # files and meta belong together
        if finished:
            assert version == "new"
        outcomes.add(version)
    assert outcomes == {"old", "new"}  # the kills landed both before and after the swap
