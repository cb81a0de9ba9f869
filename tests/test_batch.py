"""`disarm-tagger batch` with the fake embedder: inputs, output schema, resume, torn records, duplicates, bad
records, exit codes, the lock, and kill -9 at random points of a real subprocess."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import FakeEmbedder
from document_fixtures import make_docx, make_pdf
from disarm_tagger import batch, embed, persist, records, text
from disarm_tagger.schema import Technique
from disarm_tagger.cli import app
from disarm_tagger.tagger import Tagger
from test_tagger import TECHNIQUES, _examples

SENTENCES = [
    "Operators ran a messaging channel.", "Subscribers paid with card payments to unlock the posts.",
    "They registered a website and a domain for the campaign.", "Neural networks synthesised fake faces.",
    "A messaging channel relayed the posts to subscribers.", "The articles were hosted on a website.",
]  # fmt: skip
SUGGESTION_KEYS = {"rank", "technique_id", "name", "tactic_id", "tactic", "score", "evidence"}


def _doc(i: int) -> str:
    rng = random.Random(i)
    return " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 4)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("batch") / "model"
    persist.save(Tagger(FakeEmbedder()).fit(_examples(), TECHNIQUES), folder)
    return folder


@pytest.fixture()
def run(model_dir):
    def invoke(*args):
        return CliRunner().invoke(app, ["batch", *map(str, args), "--model", str(model_dir), "--top-k", "3"])

    return invoke


def _jsonl(path: Path, docs) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def test_jsonl_input_output_schema(run, tmp_path):
    docs = [{"id": f"d{i}", "text": _doc(i)} for i in range(5)] + [{"id": 7, "text": "x"}]
    source = _jsonl(tmp_path / "in.jsonl", docs)
    out = tmp_path / "out.jsonl"
    result = _ok(run(source, "--out", out))
    assert "6 tagged, 0 errors, 0 already in" in result.stdout
    records = _lines(out)
    assert [r["id"] for r in records] == ["d0", "d1", "d2", "d3", "d4", "7"]
    for n, record in enumerate(records, 1):
        assert set(record) == {"id", "source", "suggestions"} and record["source"] == f"{source}:{n}"
        assert [s["rank"] for s in record["suggestions"]] == [1, 2, 3]
        for s in record["suggestions"]:
            assert set(s) == SUGGESTION_KEYS and 0.0 <= s["score"] <= 1.0
    assert not (tmp_path / "out.jsonl.lock").exists()


def test_directory_input_ids_are_relative_paths(run, tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b.txt").write_text(SENTENCES[0])
    (root / "a.md").write_text("# Title\n\n" + SENTENCES[1])
    (root / "sub" / "c.html").write_text(f"<html><body><article><p>{SENTENCES[2]}</p></article></body></html>")
    (root / "report.pdf").write_bytes(make_pdf([["Operators ran a messaging", "channel. Posts went out."]]))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\n...")
    (root / "sub" / "memo.docx").write_bytes(make_docx(lambda memo: memo.add_paragraph(SENTENCES[3])))
    (root / "data.bin").write_bytes(b"ignored")
    (root / ".hidden.txt").write_text("ignored")
    (root / ".git" / "x.txt").write_text("ignored")
    out = tmp_path / "out.jsonl"
    _ok(run(root, "--out", out))
    records = _lines(out)
    ids = ["a.md", "b.txt", "broken.pdf", "report.pdf", "sub/c.html", "sub/memo.docx"]
    assert [r["id"] for r in records] == ids
    assert records[4]["source"] == str(root / "sub" / "c.html")
    assert "cannot read this PDF" in records[2]["error"]
    assert records[3]["suggestions"][0]["evidence"][0]["text"] == "Operators ran a messaging channel."
    assert records[5]["suggestions"][0]["evidence"][0]["text"] == SENTENCES[3]
    assert batch.count_inputs(root) == 6


def test_csv_input_with_large_and_multiline_fields_to_csv_output(run, tmp_path):
    source = tmp_path / "in.csv"
    big = " ".join([SENTENCES[0]] * 6000)  # ~200 kB: over csv's default 128 kB field limit
    with source.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "title", "body"])
        writer.writerow(["u1", "t", SENTENCES[1] + "\n" + SENTENCES[2]])
        writer.writerow(["u2", "t", big])
        writer.writerow(["u3", "t", ""])
    out = tmp_path / "out.csv"
    _ok(run(source, "--out", out, "--id-field", "url", "--text-field", "body"))
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == batch.CSV_COLUMNS
    assert [(r["id"], r["rank"]) for r in rows] == [("u1", "1"), ("u1", "2"), ("u1", "3"), ("u2", "1"),
                                                    ("u2", "2"), ("u2", "3"), ("u3", "")]  # fmt: skip
    assert rows[0]["technique_id"] and rows[0]["evidence"] in SENTENCES[1] + "\n" + SENTENCES[2]
    assert rows[-1]["error"] == f"{source}:record 3: is empty" and rows[0]["error"] == ""


def test_csv_input_without_the_columns_is_refused(run, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("name,body\nx,y\n")
    result = run(source, "--out", tmp_path / "out.jsonl")
    assert result.exit_code == 1 and "no column 'id', 'text'" in result.stderr


def test_resume_skips_done_ids_and_appends_only_new_ones(run, tmp_path):
    docs = [{"id": f"d{i}", "text": _doc(i)} for i in range(6)]
    source, out = _jsonl(tmp_path / "in.jsonl", docs[:3]), tmp_path / "out.jsonl"
    _ok(run(source, "--out", out))
    before = out.read_bytes()
    _jsonl(source, docs)
    result = _ok(run(source, "--out", out))
    assert "3 tagged, 0 errors, 3 already in" in result.stdout
    assert out.read_bytes().startswith(before)
    assert [r["id"] for r in _lines(out)] == [d["id"] for d in docs]
    assert "0 tagged, 0 errors, 6 already in" in _ok(run(source, "--out", out)).stdout


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_torn_last_record_is_cut_and_redone(run, tmp_path, suffix):
    docs = [{"id": f"d{i}", "text": _doc(i)} for i in range(8)]
    source, out = _jsonl(tmp_path / "in.jsonl", docs), tmp_path / f"out.{suffix}"
    _ok(run(source, "--out", out))
    complete = out.read_bytes()
    for cut in (7, 60):  # inside the last record, and further back (CSV: inside the last id's rows)
        out.write_bytes(complete[:-cut])
        result = _ok(run(source, "--out", out))
        assert "torn last record" in result.stderr
        assert out.read_bytes() == complete  # exactly as an uninterrupted run wrote it
    out.write_bytes(complete[: complete.index(b"\n") + 1][:-1])  # even a torn first record or header
    _ok(run(source, "--out", out))
    assert out.read_bytes() == complete


def test_duplicate_input_ids_are_written_once_and_reported(run, tmp_path):
    ids = ["a", "b", "a", "c", "b", "a"]
    source = _jsonl(tmp_path / "in.jsonl", [{"id": x, "text": _doc(i)} for i, x in enumerate(ids)])
    out = tmp_path / "out.jsonl"
    result = _ok(run(source, "--out", out))
    assert [r["id"] for r in _lines(out)] == ["a", "b", "c"]
    assert "3 repeated ids in the input, tagged once: a, b, a" in result.stdout
    assert "3 repeated ids" in _ok(run(source, "--out", out)).stdout  # the same on resume


def test_bad_files_become_error_records_and_the_run_goes_on(run, tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    files = {
        "1-good.txt": SENTENCES[0].encode(), "2-empty.txt": b"", "3-image.txt": b"\x89PNG\r\n\x1a\n\0\0\0IHDR",
        "4-latin1.txt": "café owners ran a channel".encode("latin-1"), "5-big.txt": b"word " * 100,
        "6-nav.html": b"<html><body><nav><a href='/'>Home</a></nav><script>x=1</script></body></html>",
        "7-good.md": SENTENCES[1].encode(),
    }  # fmt: skip
    for name, data in files.items():
        (root / name).write_bytes(data)
    out = tmp_path / "out.jsonl"
    result = _ok(run(root, "--out", out, "--max-bytes", "200"))
    records = {r["id"]: r for r in _lines(out)}
    assert list(records) == list(files)
    assert "suggestions" in records["1-good.txt"] and "suggestions" in records["7-good.md"]
    reasons = {name: records[name]["error"] for name in list(files)[1:-1]}
    assert reasons["2-empty.txt"].endswith("is empty")
    assert "PNG image" in reasons["3-image.txt"]
    assert "not valid UTF-8 at byte 3" in reasons["4-latin1.txt"]
    assert "over the 200-byte limit" in reasons["5-big.txt"]
    assert reasons["6-nav.html"] == "no article text found (the page may hold only navigation or scripts)"
    assert "2 tagged, 5 errors" in result.stdout


def test_a_text_of_too_many_sentences_is_an_error_record_not_a_crash(run, tmp_path, monkeypatch):
    monkeypatch.setattr(text, "MAX_UNITS", 3)  # the real limit is 20,000 sentences (about 2 GB of scoring)
    docs = [{"id": "short", "text": " ".join(SENTENCES[:3])}, {"id": "long", "text": " ".join(SENTENCES[:5])},
            {"id": "after", "text": SENTENCES[0]}]  # fmt: skip
    out = tmp_path / "out.jsonl"
    result = _ok(run(_jsonl(tmp_path / "in.jsonl", docs), "--out", out))
    records = {r["id"]: r for r in _lines(out)}
    assert "suggestions" in records["short"] and "suggestions" in records["after"]
    expected = ("too long to tag as one document: 5 sentences (the limit is 3); split it into parts and tag "
                "each")  # fmt: skip
    assert records["long"]["error"] == expected
    assert "2 tagged, 1 errors" in result.stdout


def test_bad_jsonl_records_become_error_records(run, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"id": "ok", "text": "Operators ran a messaging channel."}\n{"id": "x", \n'
                       b'{"text": "no id here"}\n{"id": "no-text"}\n{"id": "blank", "text": "  "}\n'
                       b'{"id": "latin", "text": "caf\xe9 channel"}\n\n[1, 2]\n'
                       b'{"id": "big", "text": "' + b"word " * 100 + b'"}\n')  # fmt: skip
    out = tmp_path / "out.jsonl"
    _ok(run(source, "--out", out, "--max-bytes", "200"))
    records = _lines(out)
    ids = ["ok", "<line 2>", "<line 3>", "no-text", "blank", "latin", "<line 8>", "big"]
    assert [r["id"] for r in records] == ids
    errors = [r.get("error", "") for r in records]
    assert errors[0] == "" and "not valid JSON" in errors[1] and "no usable id" in errors[2]
    assert "no 'text' field" in errors[3] and "only whitespace" in errors[4] and "not valid UTF-8" in errors[5]
    assert "not a JSON object" in errors[6] and "over the 200-byte limit" in errors[7]


def test_exit_codes(run, tmp_path):
    bad = _jsonl(tmp_path / "bad.jsonl", [{"id": "a", "text": ""}, {"id": "b"}])
    result = run(bad, "--out", tmp_path / "bad.out.jsonl")
    assert result.exit_code == 1 and "0 tagged, 2 errors" in result.stdout
    assert run(bad, "--out", tmp_path / "bad.out.jsonl").exit_code == 0  # nothing left to do
    mixed = _jsonl(tmp_path / "mixed.jsonl", [{"id": "a", "text": SENTENCES[0]}, {"id": "b"}])
    assert run(mixed, "--out", tmp_path / "m1.jsonl").exit_code == 0
    assert run(mixed, "--out", tmp_path / "m2.jsonl", "--strict").exit_code == 1
    assert run(tmp_path / "nope.jsonl", "--out", tmp_path / "m3.jsonl").exit_code == 1
    assert run(tmp_path / "bad.txt", "--out", tmp_path / "m3.jsonl").exit_code == 1
    no_model = CliRunner().invoke(app, ["batch", str(mixed), "--out", str(tmp_path / "m4.jsonl"), "--model",
                                        str(tmp_path / "no-model")])  # fmt: skip
    assert no_model.exit_code == 3 and "no such model folder" in no_model.stderr


def test_a_live_lock_refuses_and_a_stale_one_is_taken_over(run, tmp_path):
    source, out = _jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": SENTENCES[0]}]), tmp_path / "out.jsonl"
    lock = tmp_path / "out.jsonl.lock"
    lock.write_text(f"{os.getpid()}\n")  # a live process that does not hold the flock
    result = run(source, "--out", out)
    assert result.exit_code == 1 and f"names process {os.getpid()}, which is running" in result.stderr
    lock.unlink()
    with batch.OutputLock(out):  # a running batch: holds the flock
        result = run(source, "--out", out)
    assert result.exit_code == 1 and "being written by another batch run" in result.stderr
    assert not out.exists() and not lock.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid}\n")
    result = _ok(run(source, "--out", out))
    assert f"took over the stale lock {lock} (process {dead.pid}" in result.stderr
    assert not lock.exists() and [r["id"] for r in _lines(out)] == ["a"]


RUNNER = """
import sys
sys.path.insert(0, {tests!r})
import conftest  # registers the "fake" backend the model folder was saved with
from disarm_tagger.cli import app
app(prog_name="disarm-tagger")
"""


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_embedding_a_batch_ahead_tags_each_document_as_alone(model_dir, tmp_path):
    """The next micro-batch is embedded on a worker thread while this one is scored: scoring batch 0 waits
    until batch 1's embedding has begun (so it fails if nothing runs ahead), and every record equals the
    document tagged on its own."""
    tagger = persist.load(model_dir)
    texts = [_doc(i) for i in range(7)] + ["", _doc(8)]  # "" is read as an error, never embedded
    source = _jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    embedding_began, scored = [], []
    embed, score = tagger.embed_articles, tagger.suggest_embedded
    batch_1_began = threading.Event()

    def embed_articles(raws):
        embedding_began.append(raws)
        if len(embedding_began) == 2:
            batch_1_began.set()
        return embed(raws)

    def suggest_embedded(embedded, **kw):
        if not scored:
            assert batch_1_began.wait(timeout=10), "batch 1 was not embedded while batch 0 was scored"
        scored.append(embedded)
        return score(embedded, **kw)

    tagger.embed_articles, tagger.suggest_embedded = embed_articles, suggest_embedded
    out = tmp_path / "out.jsonl"
    summary = batch.run_batch(source, out, tagger=tagger, top_k=3, batch_size=3)
    assert (summary.succeeded, summary.errors) == (8, 1)
    assert embedding_began == [texts[0:3], texts[3:6], [texts[6], texts[8]]] and len(scored) == 3
    fresh = persist.load(model_dir)
    lines = _lines(out)
    assert "error" in lines.pop(7)
    alone = {i: fresh.suggest_article(texts[i], top_k=3) for i in (0, 1, 2, 3, 4, 5, 6, 8)}
    assert lines == [json.loads(records.record(f"d{i}", f"{source}:{i + 1}", a, "jsonl"))
                     for i, a in alone.items()]  # fmt: skip


def test_a_batch_whose_embedding_fails_is_retried_one_document_at_a_time(model_dir, tmp_path):
    tagger = persist.load(model_dir)
    texts = [_doc(i) for i in range(6)]
    poison = texts[4]
    source = _jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    embed = tagger.embed_articles

    def embed_articles(raws):
        if poison in raws:
            raise RuntimeError("encoder crashed")
        return embed(raws)

    tagger.embed_articles = embed_articles
    out = tmp_path / "out.jsonl"
    summary = batch.run_batch(source, out, tagger=tagger, top_k=3, batch_size=3)
    assert (summary.succeeded, summary.errors) == (5, 1)
    lines = _lines(out)
    assert [r["id"] for r in lines] == [f"d{i}" for i in range(6)]
    assert lines[4]["error"] == "internal error: RuntimeError: encoder crashed"
    assert all(len(r["suggestions"]) == 3 for i, r in enumerate(lines) if i != 4)


def _batch_process(model_dir: Path, tmp_path: Path, batch_size: int) -> tuple[list[str], Path, list[str]]:
    """(ids, OUT, argv): a 400-document backlog and the `batch` command line that tags it in a subprocess."""
    ids = [f"doc-{i:04d}" for i in range(400)]
    source = _jsonl(tmp_path / "in.jsonl", [{"id": x, "text": _doc(i)} for i, x in enumerate(ids)])
    out = tmp_path / "out.jsonl"
    code = RUNNER.format(tests=str(Path(__file__).parent))
    argv = [sys.executable, "-c", code, "batch", str(source), "--out", str(out), "--model", str(model_dir),
            "--batch-size", str(batch_size)]  # fmt: skip
    return ids, out, argv


def test_kill_9_at_random_points_then_resume_is_exact(model_dir, tmp_path):
    ids, out, argv = _batch_process(model_dir, tmp_path, batch_size=4)
    rng = random.Random(7)
    kills = 0
    for _ in range(4):
        start = _count_lines(out)
        target = start + rng.randint(1, 60)
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while proc.poll() is None and _count_lines(out) < target and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:
            proc.kill()  # SIGKILL: no cleanup, the lock and maybe a partial record stay behind
            kills += 1
        proc.wait()
    assert kills >= 3
    final = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert final.returncode == 0, final.stderr
    assert "took over the stale lock" in final.stderr
    records = _lines(out)  # every line is valid JSON
    assert [r["id"] for r in records] == ids  # each id exactly once, in input order
    assert all("suggestions" in r for r in records)


def test_ctrl_c_stops_says_how_to_resume_and_the_same_command_finishes(model_dir, tmp_path):
    ids, out, argv = _batch_process(model_dir, tmp_path, batch_size=2)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while proc.poll() is None and _count_lines(out) < 10 and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    written = _count_lines(out)
    assert proc.returncode == 130, (stdout, stderr)
    assert f"interrupted: {out} keeps every record written so far" in stderr and 10 <= written < len(ids)
    assert not (tmp_path / "out.jsonl.lock").exists()
    final = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert final.returncode == 0, final.stderr
    assert f"{len(ids) - written} tagged, 0 errors, {written} already in" in final.stdout
    assert [r["id"] for r in _lines(out)] == ids


TRAINING_DATA = Path(__file__).resolve().parents[1] / "training_data"


@pytest.mark.skipif(not (TRAINING_DATA / "examples.jsonl").exists(), reason="no training_data/ checkout")
def test_synthetic_backlog_is_seeded_and_bench_reports_every_measure(tmp_path):
    from disarm_tagger import bench

    first = list(bench.synthetic_backlog(5, seed=3, data=TRAINING_DATA))
    assert first == list(bench.synthetic_backlog(5, seed=3, data=TRAINING_DATA)) != list(
        bench.synthetic_backlog(5, seed=4, data=TRAINING_DATA))
    assert [d["id"] for d in first] == [f"doc-{i:06d}" for i in range(5)]
    assert all(len(d["text"].split("\n\n")) >= 2 for d in first)
    assert bench.write_backlog(tmp_path / "b.jsonl", 5, seed=3, data=TRAINING_DATA) == 5
    assert _lines(tmp_path / "b.jsonl") == first

    folder = tmp_path / "model"
    persist.save(Tagger(FakeEmbedder()).fit(_examples(), TECHNIQUES), folder)
    result = bench.benchmark(persist.load(folder), docs=6, data=TRAINING_DATA, batch_size=4)
    assert result["pipeline"]["succeeded"] == 6 and result["units"] > 6
    assert result["units"] == sum(len(text.prepare(d["text"]).units) for d in bench.synthetic_backlog(6, 0,
                                                                                                      data=TRAINING_DATA))
    encoder = result["encoder"]
    # every figure is rounded to 3 decimals: the ratio lies within what the rounded seconds allow, and no further
    e, p, half = encoder["seconds"], result["pipeline"]["seconds"], 0.0005
    assert (e - half) / (p + half) - half <= result["ratio"] <= (e + half) / (p - half) + half
    assert encoder["seconds"] == pytest.approx(sum(encoder["runs_seconds"]) / 2, abs=1e-3)


class ShuffledFake(FakeEmbedder):
    """Another embedder: words hash to other vectors, so its neighbours and rankings differ."""

    backend = "shuffled"

    @staticmethod
    def _word(word: str):
        return FakeEmbedder._word(word[::-1] + "#")


def test_bench_compares_backends_through_the_registry_and_sees_disagreement(tmp_path, monkeypatch):
    from disarm_tagger import bench

    catalogue = TECHNIQUES + [Technique(f"T09{i:02d}", f"Filler technique {i}", f"About topic number {i} and "
                                        f"subject {i * 7}.", "TA01", "Plan") for i in range(12)]  # fmt: skip
    folder = tmp_path / "model"
    persist.save(Tagger(FakeEmbedder()).fit(_examples(), catalogue), folder)
    for name, factory in (("torch", FakeEmbedder), ("onnx", FakeEmbedder), ("onnx-int8", ShuffledFake)):
        monkeypatch.setitem(embed._BACKENDS, name, factory)
    rows = bench.compare_backends(persist.load(folder), lambda name: persist.load(folder, backend=name),
                                  [["a messaging channel"]], [e.text for e in _examples()], docs=1)  # fmt: skip
    assert set(rows) == set(embed.PACKAGED_BACKENDS)
    assert rows["torch"]["top10_overlap_vs_torch"] == rows["onnx"]["top10_overlap_vs_torch"] == 1.0
    assert rows["onnx-int8"]["top10_overlap_vs_torch"] < 1.0  # a different embedder is caught
    assert rows["torch"]["speedup_vs_torch"] == 1.0


def test_exports_round_trip_through_their_parsers(run, tmp_path):
    import stix2

    docs = [{"id": f"d{i}", "text": _doc(i)} for i in range(4)]
    source = _jsonl(tmp_path / "in.jsonl", docs)
    _ok(run(source, "--out", tmp_path / "b.stix.json", "--format", "stix", "--top-k", "3"))
    bundle = stix2.parse((tmp_path / "b.stix.json").read_text(), allow_custom=True)
    reports = [o for o in bundle.objects if o.type == "report"]
    assert len(reports) == 4 and len({r.x_disarm_tagger_source for r in reports}) == 4
    assert (tmp_path / "b.stix.json.records.jsonl").exists()

    _ok(run(source, "--out", tmp_path / "layer.json", "--format", "navigator", "--top-k", "3"))
    layer = json.loads((tmp_path / "layer.json").read_text())
    records = _lines(tmp_path / "layer.json.records.jsonl")
    expected = {}
    for r in records:
        for s in r["suggestions"]:
            expected[s["technique_id"]] = expected.get(s["technique_id"], 0) + 1
    assert {t["techniqueID"]: t["score"] for t in layer["techniques"] if "score" in t} == expected

    result = _ok(run(source, "--out", tmp_path / "events.json", "--format", "misp", "--top-k", "3"))
    events = json.loads((tmp_path / "events.json").read_text())["response"]  # what MISP's import reads
    assert len(events) == 4 and all(e["Event"]["Tag"] for e in events)
    assert "have no cluster in MISP's DISARM galaxy" in result.stderr  # the test model's T0001 has none


def test_the_record_writer_writes_an_id_once_whoever_hands_it_back(tmp_path):
    from disarm_tagger.records import Record, RecordWriter, Summary

    out, summary = tmp_path / "out.jsonl", Summary()
    line = lambda ident: Record(ident, False, (json.dumps({"id": ident}) + "\n").encode())  # noqa: E731
    with RecordWriter(out, "jsonl", summary) as writer:
        writer.write([line("a"), line("b")])
        writer.write([line("a"), line("c")])  # an engine returning a record twice
    assert [r["id"] for r in _lines(out)] == ["a", "b", "c"]
    assert summary.succeeded == 3 and summary.notes == ["dropped a second record for 'a'"]
    with RecordWriter(out, "jsonl", Summary()) as writer:  # and across runs: OUT's ids are done
        assert writer.done == {"a", "b", "c"}
        writer.write([line("b")])
    assert out.read_text().count('"b"') == 1
