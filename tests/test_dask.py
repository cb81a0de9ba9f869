"""`batch --engine dask` on LocalClusters of 2 worker processes on 127.0.0.1, with the fake embedder (the
workers preload conftest.py to have it): the records equal the local batch's, exports too; a worker killed
mid-partition and a client killed mid-run still give each id exactly once. dask is part of the test extra:
a missing one fails these tests, it never skips them."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import distributed
import psutil
import pytest
from typer.testing import CliRunner

from disarm_tagger import batch, dask_engine, persist
from disarm_tagger.cli import app
from disarm_tagger.records import Pending
from test_batch import RUNNER, _count_lines, _doc, _jsonl, _lines, model_dir  # noqa: F401 - model_dir: a fixture

CONFTEST = Path(__file__).with_name("conftest.py")
PRELOAD = {"DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(CONFTEST)])}


@pytest.fixture(autouse=True)
def deadline():
    """No test here waits forever on a cluster: SIGALRM fails it after 120 s."""

    def expire(*_):
        raise TimeoutError("dask test over 120 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def client():
    """A client of a LocalCluster of 2 single-threaded worker processes, closed after the module's tests."""
    with dask.config.set({"distributed.worker.preload": [str(CONFTEST)]}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:  # fmt: skip
        client.wait_for_workers(2, timeout=60)
        yield client


def _backlog(path: Path, n: int) -> Path:
    """n documents, some bad (empty, no text, not an object) and some ids repeated."""
    lines = [json.dumps({"id": f"doc-{i:04d}", "text": _doc(i)}) for i in range(n)]
    lines[3] = json.dumps({"id": "doc-0003", "text": ""})
    lines[5] = json.dumps({"id": "doc-0005"})
    lines[8] = "[1, 2]"
    lines += [json.dumps({"id": "doc-0001", "text": "again"}), json.dumps({"id": "doc-0002", "text": "again"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _sorted_lines(path: Path) -> list[str]:
    return sorted(path.read_text(encoding="utf-8").splitlines())


def _cli(*args):
    return CliRunner().invoke(app, ["batch", *map(str, args)])


def _local(source: Path, out: Path, model: Path, *args) -> Path:
    result = _cli(source, "--out", out, "--model", model, "--top-k", "3", *args)
    assert result.exit_code == 0, result.output
    return out


def test_partitions_hold_one_bucket_each_and_every_document_once():
    docs = [Pending(f"doc-{i}", "s", "word " * (i % 7)) for i in range(500)]
    parts = list(batch.micro_batches(docs, 8, key=dask_engine.bucket))
    assert sorted(d.id for p in parts for d in p) == sorted(d.id for d in docs)
    assert all(len({dask_engine.bucket(d.id) for d in p}) == 1 and 1 <= len(p) <= 8 for p in parts)
    assert sum(len(p) == 8 for p in parts) >= len(parts) - dask_engine.BUCKETS  # only the tails are short
    assert parts == list(batch.micro_batches(docs, 8, key=dask_engine.bucket))  # a re-run rebuilds them


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_dask_records_equal_the_local_batch(client, model_dir, tmp_path, suffix):
    source = _backlog(tmp_path / "in.jsonl", 150)
    expected = _local(source, tmp_path / f"local.{suffix}", model_dir)
    out = tmp_path / f"dask.{suffix}"
    result = _cli(source, "--out", out, "--model", model_dir, "--top-k", "3", "--engine", "dask", "--scheduler",
                  client.scheduler.address, "--batch-size", "8")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "147 tagged, 3 errors, 0 already in" in result.stdout
    assert "2 repeated ids in the input, tagged once: doc-0001, doc-0002" in result.stdout
    assert _sorted_lines(out) == _sorted_lines(expected)  # the same file content, up to line order
    if suffix == "csv":
        assert out.read_text().splitlines()[0] == ",".join(batch.CSV_COLUMNS)
    assert not Path(f"{out}.lock").exists()


def _normalised(path: Path, fmt: str):
    """An export with its objects sorted; MISP's event time ("now" when written) left out."""
    untimed = (lambda d: {k: v for k, v in d.items() if k not in ("timestamp", "date")}) if fmt == "misp" else None
    data = json.loads(path.read_text(encoding="utf-8"), object_hook=untimed)
    if fmt == "stix":
        return data["type"], sorted(json.dumps(o, sort_keys=True) for o in data["objects"])
    if fmt == "misp":
        return sorted(json.dumps(e, sort_keys=True) for e in data["response"])
    return data


@pytest.mark.parametrize("fmt", ["stix", "navigator", "misp"])
def test_dask_exports_equal_the_local_batch(client, model_dir, tmp_path, fmt):
    source = _backlog(tmp_path / "in.jsonl", 40)
    expected = _local(source, tmp_path / f"local.{fmt}.json", model_dir, "--format", fmt)
    out = tmp_path / f"dask.{fmt}.json"
    result = _cli(source, "--out", out, "--model", model_dir, "--top-k", "3", "--format", fmt, "--engine", "dask",
                  "--scheduler", client.scheduler.address)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _normalised(out, fmt) == _normalised(expected, fmt)
    records = Path(f"{out}.records.jsonl")
    assert _sorted_lines(records) == _sorted_lines(Path(f"{expected}.records.jsonl"))


def test_each_worker_loads_the_model_once(client, model_dir, tmp_path):
    source = _backlog(tmp_path / "in.jsonl", 120)
    for n in range(2):  # the second run finds the model loaded
        summary = dask_engine.run_batch(source, tmp_path / f"out{n}.jsonl", model=model_dir, top_k=3, batch_size=4,
                                        scheduler=client.scheduler.address)  # fmt: skip
        assert summary.processed == 120

    def loads(dask_worker):
        models = [p for p in dask_worker.plugins if p.startswith("disarm-tagger-model-")]
        return len(models), sys.modules["conftest"].FakeEmbedder.made

    per_worker = client.run(loads)
    assert len(per_worker) == 2
    for models, made in per_worker.values():
        assert models >= 1 and made == models  # one embedder per model: not one per partition (30 of them)


def test_a_worker_killed_mid_partition_costs_only_a_retry(client, model_dir, tmp_path):
    source = _backlog(tmp_path / "in.jsonl", 200)
    expected = _local(source, tmp_path / "local.jsonl", model_dir)
    before = set(client.run(os.getpid).values())
    death = tmp_path / "death.json"  # the worker that kills itself writes its pid and task key here

    def arm(path):
        sys.modules["conftest"].DyingFakeEmbedder.armed = path

    client.run(arm, str(death))
    try:
        out = tmp_path / "dask.jsonl"
        summary = dask_engine.run_batch(source, out, model=model_dir, backend="fake-dying", top_k=3, batch_size=4,
                                        scheduler=client.scheduler.address)  # fmt: skip
    finally:
        client.run(arm, None)
    died = json.loads(death.read_text())
    assert died["pid"] in before and died["key"].startswith("disarm-tag-")  # a worker of this cluster, mid-partition
    assert summary.succeeded == 197 and summary.errors == 3
    assert _sorted_lines(out) == _sorted_lines(expected)  # nothing lost, nothing written twice

    def runs(dask_scheduler, key):  # how often the scheduler sent the partition to a worker
        return sum(event[2] == "processing" for event in dask_scheduler.story(key))

    assert client.run_on_scheduler(runs, key=died["key"]) == 2  # the partition it died in ran again, once
    client.wait_for_workers(2, timeout=60)  # the nanny replaced it
    assert died["pid"] not in client.run(os.getpid).values()


def test_torn_record_is_cut_and_the_lock_is_the_same(client, model_dir, tmp_path):
    source = _backlog(tmp_path / "in.jsonl", 30)
    out = tmp_path / "dask.jsonl"
    run = dict(model=model_dir, top_k=3, scheduler=client.scheduler.address)
    dask_engine.run_batch(source, out, **run)
    complete = _sorted_lines(out)
    out.write_bytes(out.read_bytes()[:-25])
    summary = dask_engine.run_batch(source, out, **run)
    assert summary.processed == 1 and summary.skipped == 29 and "torn last record" in summary.notes[0]
    assert _sorted_lines(out) == complete
    with batch.OutputLock(out), pytest.raises(batch.LockedError):
        dask_engine.run_batch(source, out, **run)


def _run_until(argv: list[str], out: Path, target: int) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """Start a client; once OUT has ``target`` lines (or it ended), return it with its child processes."""
    proc = subprocess.Popen(argv, env={**os.environ, **PRELOAD}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and _count_lines(out) < target and time.monotonic() < deadline:
        time.sleep(0.005)
    return proc, psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []


def test_client_killed_then_rerun_completes_exactly(client, model_dir, tmp_path):
    """`--workers 2` (its own LocalCluster) killed, then a client of the module's cluster killed, then the
    re-run: every id exactly once, and the killed client's worker processes do not outlive it."""
    source = _backlog(tmp_path / "in.jsonl", 300)
    expected = _local(source, tmp_path / "local.jsonl", model_dir)
    out = tmp_path / "dask.jsonl"
    argv = [sys.executable, "-c", RUNNER.format(tests=str(Path(__file__).parent)), "batch", str(source), "--out",
            str(out), "--model", str(model_dir), "--top-k", "3", "--backend", "fake-slow", "--batch-size", "4",
            "--engine", "dask"]  # fmt: skip
    rng = random.Random(14)
    for cluster in (["--workers", "2"], ["--scheduler", client.scheduler.address]):
        proc, children = _run_until(argv + cluster, out, _count_lines(out) + rng.randint(5, 60))
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.kill()  # SIGKILL: the lock stays; a --workers cluster loses its scheduler and nannies
        proc.wait()
        _gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"processes outlived their killed client: {alive}"
    assert 0 < _count_lines(out) < 300
    final = subprocess.run(argv + ["--scheduler", client.scheduler.address], env={**os.environ, **PRELOAD},
                           capture_output=True, text=True, timeout=90)  # fmt: skip
    assert final.returncode == 0, final.stderr
    assert "took over the stale lock" in final.stderr
    records = _lines(out)  # every line is valid JSON
    assert len(records) == len({r["id"] for r in records}) == 300  # each id once
    assert _sorted_lines(out) == _sorted_lines(expected)


def test_usage_errors_and_a_missing_dask(model_dir, tmp_path, monkeypatch):
    source = _backlog(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out.jsonl"
    result = _cli(source, "--out", out, "--model", model_dir, "--workers", "2")
    assert result.exit_code == 2 and "need --engine dask" in result.output
    result = _cli(source, "--out", out, "--model", model_dir, "--engine", "dask", "--workers", "2", "--scheduler",
                  "tcp://127.0.0.1:1")  # fmt: skip
    assert result.exit_code == 2
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        result = _cli(source, "--out", out, "--model", model_dir, "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9")
    assert result.exit_code == 1 and "cannot reach the dask scheduler at tcp://127.0.0.1:9" in result.stderr
    assert not Path(f"{out}.lock").exists()
    result = _cli(source, "--out", out, "--model", tmp_path / "no-model", "--engine", "dask")
    assert result.exit_code == 3 and "no such model folder" in result.stderr
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if dask were not installed
    result = _cli(source, "--out", out, "--model", model_dir, "--engine", "dask")
    assert result.exit_code == 1 and "pip install 'disarm-tagger[dask]'" in result.stderr
    assert persist.model_files(model_dir).keys() >= {"meta.json", "config.json", "arrays.npz", "techniques.jsonl"}
