"""The feedback loop: annotations keep their provenance, are validated and replaced, and change the model."""

from __future__ import annotations

import json
import time
from datetime import date

import pytest
from typer.testing import CliRunner

from conftest import FakeEmbedder
from disarm_tagger import annotate, corpus
from disarm_tagger.cli import app
from disarm_tagger.tagger import Tagger
from test_tagger import TECHNIQUES, _examples

NEW_TEXT = "Donors funded the operation through a crowdfunding page."


@pytest.fixture()
def data(tmp_path):
    folder = tmp_path / "training_data"
    folder.mkdir()
    corpus.write_jsonl(folder / corpus.TECHNIQUES, TECHNIQUES)
    corpus.write_jsonl(folder / corpus.EXAMPLES, _examples())
    return folder


def _records(folder) -> list[dict]:
    lines = (folder / corpus.ANNOTATIONS).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_annotation_is_appended_with_provenance(data):
    result = annotate.annotate(
        "---\ntitle: Donations\n---\n" + NEW_TEXT,
        "t0004",
        data=data,
        source="a.md",
        note="checked",
        annotator="ana",
        today=date(2025, 3, 1),
    )
    assert result.previous_labels is None and result.path == data / corpus.ANNOTATIONS
    (rec,) = _records(data)
    assert result.record == rec  # what the caller (CLI, server) is given is what was written
    ex_id = annotate.text_id(NEW_TEXT)
    assert ex_id.startswith("LOCAL-") and len(ex_id) == 14
    assert rec == {
        "id": ex_id,
        "incident_id": ex_id,
        "incident_name": "Donations",
        "text": NEW_TEXT,
        "labels": ["T0004"],
        "source_url": "",
        "origin": "local",
        "annotated_at": "2025-03-01",
        "annotator": "ana",
        "source": "a.md",
        "note": "checked",
    }
    annotate.annotate("A website hosted the posts.", ["T0002"], data=data, incident_id="I1")
    assert [r["incident_id"] for r in _records(data)] == [ex_id, "I1"]  # appended, the first line untouched
    assert (data / corpus.EXAMPLES).read_text() == "".join(
        corpus.dumps_line(corpus.to_dict(e)) for e in _examples()
    )


def test_unknown_labels_are_rejected_and_nothing_is_written(data):
    with pytest.raises(annotate.AnnotationError, match=r"T9999, T9999\.001"):
        annotate.annotate(NEW_TEXT, "T0004,T9999,T9999.001", data=data)
    with pytest.raises(annotate.AnnotationError, match="no labels"):
        annotate.annotate(NEW_TEXT, " , ", data=data)
    assert not (data / corpus.ANNOTATIONS).exists()


def test_reannotating_the_same_text_replaces_its_labels(data):
    annotate.annotate(NEW_TEXT, "T0004", data=data)
    annotate.annotate("A website hosted the posts.", "T0002", data=data)
    again = annotate.annotate(
        NEW_TEXT + "\n", "T0001,T0004", data=data, annotator="bo"
    )  # same extracted text
    assert again.previous_labels == ("T0004",)
    records = _records(data)
    assert [r["labels"] for r in records] == [["T0001", "T0004"], ["T0002"]]
    assert records[0]["annotator"] == "bo"
    assert not list(data.glob(".*.tmp"))  # the atomic rewrite left no temporary file


def test_annotating_an_imported_passage_keeps_its_incident(data):
    imported = _examples()[5]  # I3: "Readers paid with card payments to unlock the posts."
    result = annotate.annotate(imported.text.upper(), "T0004,T0001", data=data)
    assert result.example.incident_id == imported.incident_id  # same CV group as the passage it replaces
    merged = corpus.load_corpus(data)
    assert merged.local_duplicates == 1 and len(merged.examples) == len(_examples())
    chosen = annotate.annotate("Readers paid.", "T0004", data=data, incident_id="X9")
    assert chosen.example.incident_id == "X9"


def _rank_and_score(tagger: Tagger, text: str, label: str) -> tuple[int, float]:
    scores = tagger.predict_proba([text])[0]
    ranked = [tagger.classes_[j] for j in tagger.rank(scores)]
    return ranked.index(label), float(scores[tagger.classes_.index(label)])


def test_a_confirmed_annotation_changes_the_next_model(data):
    before_data = corpus.load_corpus(data)
    before = Tagger(FakeEmbedder()).fit(before_data.examples, before_data.techniques)
    rank0, _ = _rank_and_score(before, NEW_TEXT, "T0004")
    assert rank0 > 0  # the model does not already put the analyst's label first

    annotate.annotate(NEW_TEXT, "T0004", data=data, annotator="ana")
    after_data = corpus.load_corpus(data)
    assert after_data.local_examples == 1 and len(after_data.examples) == len(before_data.examples) + 1
    assert after_data.sha256 != before_data.sha256  # the model's provenance records the change
    assert corpus.provenance(after_data, data)["counts"]["local_annotations"] == 1
    after = Tagger(FakeEmbedder()).fit(after_data.examples, after_data.techniques)
    rank1, score1 = _rank_and_score(after, NEW_TEXT, "T0004")
    # the analyst's label moves to the top; scores of two models are calibrated on different data, so the
    # comparison that matters is within each model: T0004 now beats every other technique
    assert rank1 == 0 < rank0
    assert score1 == after.predict_proba([NEW_TEXT])[0].max()


def test_cli_annotate_file_stdin_and_errors(data, tmp_path):
    article = tmp_path / "a.md"
    article.write_text(NEW_TEXT)
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "annotate",
            str(article),
            "--labels",
            "T0004",
            "--data",
            str(data),
            "--annotator",
            "ana",
            "--note",
            "seen in the source",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "added T0004 for LOCAL-" in ok.stdout
    replaced = runner.invoke(
        app, ["annotate", "-", "--labels", "T0004,T0001", "--data", str(data)], input=NEW_TEXT
    )
    assert replaced.exit_code == 0 and "replaced T0004 with T0001,T0004" in replaced.stdout
    assert len(_records(data)) == 1 and _records(data)[0]["source"] == "stdin"
    bad = runner.invoke(app, ["annotate", str(article), "--labels", "T0004,T9999", "--data", str(data)])
    assert bad.exit_code == 1 and "unknown technique id(s): T9999" in bad.stderr
    missing = runner.invoke(
        app, ["annotate", str(article), "--labels", "T0004", "--data", str(tmp_path / "none")]
    )
    assert missing.exit_code == 4 and "not found" in missing.stderr
    empty = runner.invoke(app, ["annotate", "-", "--labels", "T0004", "--data", str(data)], input="  \n")
    assert empty.exit_code == 1 and "error:" in empty.stderr


WRITER = """
import sys, time
from pathlib import Path
from disarm_tagger import annotate
data, go, text, labels = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
while not go.exists():  # all writers start together
    time.sleep(0.001)
annotate.annotate(text, labels, data=data, annotator="proc")
"""


def test_concurrent_annotate_processes_lose_no_update(data):
    """12 processes on one data folder at once, 6 replacing earlier labels and 6 adding texts: every update
    lands (the read-modify-write of annotations.jsonl runs under a lock)."""
    import os
    import subprocess
    import sys

    old = [f"Operators posted item number {i} on a messaging channel." for i in range(6)]
    new = [f"A website hosted article number {i} for the campaign." for i in range(6)]
    for text in old:
        annotate.annotate(text, "T0001", data=data)
    go = data.parent / "go"
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    jobs = [(text, "T0001,T0004") for text in old] + [(text, "T0002") for text in new]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(data), str(go), text, labels], env=env)
             for text, labels in jobs]  # fmt: skip
    try:
        time.sleep(1.5)  # let every writer import and reach the start line
        go.touch()
        codes = [p.wait(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0] * len(jobs)
    labels = {r["text"]: r["labels"] for r in _records(data)}
    assert len(_records(data)) == 12 and len(labels) == 12
    assert labels == {**{t: ["T0001", "T0004"] for t in old}, **{t: ["T0002"] for t in new}}


def test_a_writer_waits_for_the_lock_and_gives_up_after_the_timeout(data):
    lock = data / (corpus.ANNOTATIONS + annotate.LOCK_SUFFIX)
    with annotate.locked(lock):
        with pytest.raises(annotate.AnnotationBusyError, match="another writer"):
            with annotate.locked(lock, timeout=0.05):  # a second open() of the lock: excluded in-process too
                pass
    with annotate.locked(lock, timeout=0.05):  # released on exit
        pass
