"""`batch --engine dask`: the documents are tagged by the workers of a dask.distributed cluster, and this
process, the client, reads INPUT and appends the records to OUT with the local batch's RecordWriter, so a run
keeps its guarantees: OUT.lock, resume after the client is killed, each id written once, a torn last record
cut, error records for bad documents.

Partitions: each pending document goes to one of ``BUCKETS`` buckets by a stable hash of its id (the same on
every run and machine, unlike Python's ``hash``), and a bucket is sent as one task, a partition, when it
holds ``batch_size`` documents (or batch.MAX_BATCH_CHARS of text), and at the end. So a repeated id always
lands in the same bucket, and the same pending documents in the same order make the same partitions. A
partition is one encoder call on a worker, exactly the local batch's micro-batch. At most two partitions per
worker thread are in flight: the client reads on only as finished ones come back, so memory stays bounded on
both sides.

Model: ModelPlugin (dask_worker.py) ships the model folder's files to every worker, later ones included, and
each worker process loads the model once; the workers need the same Python environment, not the model.

Lost workers: a partition only counts when its records come back to the client, so the scheduler re-running
the partitions of a worker that died (up to ``distributed.scheduler.allowed-failures`` times each) loses and
repeats nothing. Past that, or when the scheduler goes away, the run stops with EngineError and a re-run
resumes. Library only: nothing here prints or exits.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError
from pathlib import Path

from . import persist
from . import text as textmod
from .batch import micro_batches, open_input
from .backlog import Item
from .records import BatchError, Pending, RecordWriter, Summary, pending

BUCKETS = 16
INSTALL = "pip install 'disarm-tagger[dask]'"


class EngineError(BatchError):
    """The dask engine cannot run: dask is not installed, or the cluster gave up on a partition."""


def bucket(ident: str, buckets: int = BUCKETS) -> int:
    """The partition bucket of a document id: stable across runs, processes and machines.

    >>> bucket("doc-000001"), bucket("doc-000001") == bucket("doc-000001")
    (14, True)
    """
    return int.from_bytes(hashlib.blake2b(ident.encode("utf-8"), digest_size=8).digest(), "big") % buckets


def _distributed():
    try:
        import distributed

        from . import dask_worker
    except ImportError as exc:
        raise EngineError(f"--engine dask needs dask.distributed, which is not installed ({exc}); install it "
                          f"with: {INSTALL}") from None  # fmt: skip
    return distributed, dask_worker


@contextlib.contextmanager
def _client(distributed, scheduler: str | None, workers: int | None):
    """A client of the cluster at ``scheduler``, else of a LocalCluster of ``workers`` single-threaded worker
    processes on 127.0.0.1, closed with the client."""
    if scheduler:
        try:
            client = distributed.Client(scheduler)
        except OSError as exc:  # refused, timed out (distributed.comm.timeouts.connect), unknown host
            raise EngineError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from None
        with client:
            yield client
        return
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:  # fmt: skip
        yield client


def _key(bucket_no: int, plugin_name: str, docs: list[Pending], options: dict) -> str:
    """A task key naming the partition by its bucket, model, options and content."""
    digest = hashlib.sha1(f"{plugin_name}\0{sorted(options.items())}".encode())
    for doc in docs:
        digest.update(f"\0{doc.id}\0{doc.raw}".encode("utf-8", "surrogatepass"))
    return f"disarm-tag-b{bucket_no:02d}-{digest.hexdigest()[:16]}"


def run_batch(input: Path, out: Path, *, model: Path, backend: str | None = None, scheduler: str | None = None,
              workers: int | None = None, fmt: str = "jsonl", top_k: int = 10, min_score: float = 0.0,
              id_field: str = "id", text_field: str = "text", max_bytes: int = textmod.DEFAULT_MAX_BYTES,
              batch_size: int = 32, progress: Callable[[Summary], None] | None = None) -> Summary:  # fmt: skip
    """batch.run_batch() on a dask cluster: the one at ``scheduler``, else a LocalCluster of ``workers``
    processes (default: one per core). Raises EngineError when dask is missing, persist.ModelError for a bad
    model folder, and what batch.run_batch raises."""
    items = open_input(input, fmt=fmt, id_field=id_field, text_field=text_field, max_bytes=max_bytes)
    return tag_items(items, out, model=model, backend=backend, scheduler=scheduler, workers=workers, fmt=fmt,
                     top_k=top_k, min_score=min_score, batch_size=batch_size, progress=progress)  # fmt: skip


def tag_items(items: Iterable[Item], out: Path, *, model: Path, backend: str | None = None,
              scheduler: str | None = None, workers: int | None = None, fmt: str = "jsonl", top_k: int = 10,
              min_score: float = 0.0, batch_size: int = 32,
              progress: Callable[[Summary], None] | None = None) -> Summary:  # fmt: skip
    """run_batch() over any iterable of Items."""
    distributed, dask_worker = _distributed()
    files = persist.model_files(model)  # a bad model folder fails here, before any cluster starts
    plugin = dask_worker.ModelPlugin(files, backend, hashlib.sha256(files[persist.META]).hexdigest())
    summary, started = Summary(), time.perf_counter()
    with RecordWriter(out, fmt, summary) as writer, _client(distributed, scheduler, workers) as client:
        client.register_plugin(plugin)  # each worker loads the model now; a load error is raised here
        resumed = bool(writer.done)
        options = {"fmt": fmt, "top_k": top_k, "min_score": min_score}
        finished = distributed.as_completed(with_results=True)

        def collect(keep: int) -> None:
            """Append the records of finished partitions until at most ``keep`` are in flight."""
            while finished.count() > keep:
                try:
                    _future, records = next(finished)
                except (distributed.KilledWorker, CancelledError) as exc:  # killed workers; a lost scheduler
                    raise EngineError(f"the cluster lost a partition ({type(exc).__name__}: {exc}); the records "
                                      "written so far are kept: run again to resume") from None  # fmt: skip
                writer.write(records)
                summary.seconds = time.perf_counter() - started
                if progress:
                    progress(summary)

        threads, asked = 0, 0.0
        for docs in micro_batches(pending(items, writer.done, summary, progress), batch_size, key=bucket):
            key = _key(bucket(docs[0].id), plugin.name, docs, options)
            finished.add(client.submit(dask_worker.tag_partition, plugin.name, docs, **options,
                                       anything_done=bool(summary.succeeded) or resumed, key=key))  # fmt: skip
            if time.monotonic() - asked > 1.0:  # workers come and go: ask the scheduler now and then
                threads, asked = sum(client.nthreads().values()), time.monotonic()
            collect(keep=max(2, 2 * threads))
        collect(keep=0)
    summary.seconds = time.perf_counter() - started
    if progress:
        progress(summary)
    return summary
