"""Benchmark `batch --engine dask --workers N` against the local `batch` on the same machine (issue 14).

Writes a synthetic backlog (bench.write_backlog: training passages and technique summaries), then runs, as
separate processes and alternating ``--repeat`` times:

    python -m disarm_tagger batch BACKLOG --out local.jsonl [--backend B]
    python -m disarm_tagger batch BACKLOG --out dask.jsonl  [--backend B] --engine dask --workers N

For each run it reports the end-to-end docs/s (start-up, cluster and model loading included) and the
steady docs/s (from the first record written to the last), the peak resident memory (VmHWM, sampled) of
every process of the run, and the client's own CPU seconds. A last run, on a model with the tests' fake
embedder (near-instant workers, ``--fake-docs`` documents), gives the client's CPU per document while it is
busy (its idle heartbeats included, so an upper bound) and so the fewest documents/s one client can feed.
It checks that the two outputs hold the same lines, and projects the throughput of M machines from the
measured steady docs/s per worker, capped at that client ceiling. Prints JSON.

    python scripts/bench_dask.py --docs 600 --workers 2 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from disarm_tagger import bench


def _peak_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _role(proc: psutil.Process, root: int) -> str:
    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return "gone"
    if proc.pid == root:
        return "client"
    if "resource_tracker" in cmdline:
        return "resource_tracker"
    return "worker" if "multiprocessing" in cmdline else "other"


def run(argv: list[str], out: Path) -> dict:
    """Run one batch command; sample its process tree every 0.1 s until it exits."""
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peaks: dict[int, tuple[str, int]] = {}
    client_cpu, first, last, lines, last_cpu = 0.0, None, None, 0, 0.0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            client_cpu = sum(root.cpu_times()[:2])
        except psutil.Error:
            tree = []
        for p in tree:
            peak = _peak_kib(p.pid)
            if peak:
                peaks[p.pid] = (_role(p, root.pid) if p.pid not in peaks else peaks[p.pid][0], peak)
        try:
            now_lines = out.read_bytes().count(b"\n")
        except FileNotFoundError:
            now_lines = 0
        now = time.perf_counter()
        if now_lines and first is None:
            first = (now, now_lines, client_cpu)
        if now_lines > lines:
            last, lines, last_cpu = now, now_lines, client_cpu
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    stdout, stderr = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{stderr}")
    lines = out.read_bytes().count(b"\n")
    steady = (lines - first[1]) / (last - first[0]) if first and last and last > first[0] else None
    steady_cpu = {"docs": lines - first[1], "seconds": last - first[0], "cpu_s": last_cpu - first[2]} if steady else None
    by_role: dict[str, list[int]] = {}
    for role, peak in peaks.values():
        by_role.setdefault(role, []).append(round(peak / 1024))
    return {"docs": lines, "seconds": round(seconds, 1), "docs_per_s": round(lines / seconds, 2),
            "steady_docs_per_s": round(steady, 2) if steady else None, "client_cpu_s": round(client_cpu, 1),
            "steady_client": steady_cpu,
            "peak_mib": {role: sorted(v) for role, v in by_role.items()}, "summary": stdout.strip()}  # fmt: skip


IDLE = """
import logging, resource, time
import distributed
with distributed.LocalCluster(n_workers={workers}, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                              silence_logs=logging.ERROR) as cluster, distributed.Client(cluster):
    time.sleep(2)
    start, cpu = time.perf_counter(), sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    time.sleep({seconds})
    print((sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu) / (time.perf_counter() - start))
"""


def idle_client_cpu(workers: int, seconds: float = 20.0) -> float:
    """CPU seconds per second that a client with its LocalCluster (scheduler and nannies in-process) spends
    doing nothing: heartbeats and event loops."""
    code = IDLE.format(workers=workers, seconds=seconds)
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def fake_model(folder: Path) -> Path:
    """A model on the tests' fake embedder (tests/conftest.py, near-instant): with it the workers hardly
    work, and what the run costs the client is its own overhead."""
    tests = Path(__file__).resolve().parents[1] / "tests"
    sys.path.insert(0, str(tests))
    from conftest import FakeEmbedder  # registers the "fake" backend
    from test_tagger import TECHNIQUES, _examples

    from disarm_tagger import persist
    from disarm_tagger.tagger import Tagger

    persist.save(Tagger(FakeEmbedder()).fit(_examples(), TECHNIQUES), folder)
    os.environ["DASK_DISTRIBUTED__WORKER__PRELOAD"] = json.dumps([str(tests / "conftest.py")])
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--backend", default=None, help="default: the model's own (models/default: onnx)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--fake-docs", type=int, default=5000, help="backlog of the client-ceiling run")
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default="training_data")
    parser.add_argument("--machines", type=int, nargs="*", default=[1, 4, 16, 64], help="for the projection")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    backlog = folder / "backlog.jsonl"
    bench.write_backlog(backlog, args.docs, data=Path(args.data))
    common = [sys.executable, "-m", "disarm_tagger", "batch", str(backlog)]
    common += ["--backend", args.backend] if args.backend else []
    common += ["--model", args.model] if args.model else []
    local_cmd = common + ["--out", str(folder / "local.jsonl")]
    dask_cmd = common + ["--out", str(folder / "dask.jsonl"), "--engine", "dask", "--workers", str(args.workers)]
    runs: dict[str, list[dict]] = {"local": [], "dask": []}
    for _ in range(args.repeat):
        runs["local"].append(run(local_cmd, folder / "local.jsonl"))
        runs["dask"].append(run(dask_cmd, folder / "dask.jsonl"))
    same = sorted((folder / "local.jsonl").read_text().splitlines()) == sorted(
        (folder / "dask.jsonl").read_text().splitlines())

    def median(engine: str, key: str) -> float:
        values = [r[key] for r in runs[engine] if r[key] is not None]
        if not values:
            raise SystemExit(f"no {key} for {engine}: use more --docs (several batches of 32)")
        return round(statistics.median(values), 2)

    per_worker = median("dask", "steady_docs_per_s") / args.workers
    idle = idle_client_cpu(args.workers)
    big = folder / "big.jsonl"
    bench.write_backlog(big, args.fake_docs, seed=1, data=Path(args.data))
    fake = [sys.executable, "-m", "disarm_tagger", "batch", str(big), "--model", str(fake_model(folder / "fake")),
            "--out", str(folder / "fake.jsonl"), "--engine", "dask", "--workers", str(args.workers)]  # fmt: skip
    runs["dask_fake_embedder"] = [run(fake, folder / "fake.jsonl")]
    busy = runs["dask_fake_embedder"][0]["steady_client"]  # start-up left out, idle time kept in: an upper bound
    client_cpu_per_doc = busy["cpu_s"] / busy["docs"]
    cores = os.cpu_count() or 1
    result = {
        "command": " ".join(sys.argv), "docs": args.docs, "backend": args.backend, "workers": args.workers,
        "cores": cores, "load_average_at_end": [round(x, 1) for x in os.getloadavg()], "outputs_equal": same,
        "local_docs_per_s": median("local", "docs_per_s"), "dask_docs_per_s": median("dask", "docs_per_s"),
        "ratio_end_to_end": round(median("dask", "docs_per_s") / median("local", "docs_per_s"), 2),
        "local_steady_docs_per_s": median("local", "steady_docs_per_s"),
        "dask_steady_docs_per_s": median("dask", "steady_docs_per_s"),
        "ratio_steady": round(median("dask", "steady_docs_per_s") / median("local", "steady_docs_per_s"), 2),
        "steady_docs_per_s_per_worker": round(per_worker, 2),
        "client_idle_cpu_s_per_s": round(idle, 4), "client_cpu_s_per_doc_at_most": round(client_cpu_per_doc, 5),
        "client_ceiling_docs_per_s_at_least": round(1 / client_cpu_per_doc) if client_cpu_per_doc > 0 else None,
        "projection": {f"{m} machines x {cores} workers": round(min(m * cores * per_worker,
                       1 / client_cpu_per_doc if client_cpu_per_doc > 0 else float("inf")), 1)
                       for m in args.machines},  # fmt: skip
        "runs": runs,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
