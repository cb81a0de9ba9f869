"""Micro-batching: requests that arrive together share one ``Tagger.suggest_articles`` call.

One worker thread owns the tagger. It takes the oldest waiting request, waits a few milliseconds for
others, and tags every waiting request with the same ``top_k``/``min_score`` in one batched encoder call.
Requests that arrive while a batch runs form the next batch, so N concurrent clients cost about one
batch of N instead of N calls queued one behind another, and the two cores are not fought over by
threads scoring in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field


class BusyError(RuntimeError):
    """More requests are waiting than the queue admits."""


@dataclass
class _Job:
    raw: str
    top_k: int
    min_score: float
    future: Future = field(default_factory=Future)


_STOP = object()


class MicroBatcher:
    """Collects suggest requests from any thread or event loop and tags them in batches on one thread."""

    def __init__(self, tagger, *, max_batch: int = 32, max_wait: float = 0.005, max_queue: int = 512):
        self.tagger = tagger
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.batches = 0  # how many suggest_articles calls were made (the tests read it)
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> MicroBatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="disarm-tagger-batcher", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Finish the batch in progress, fail what is still queued, stop the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def submit(self, raw: str, *, top_k: int = 10, min_score: float = 0.0) -> Future:
        if self._thread is None:
            raise RuntimeError("the batcher is not running")
        if self._queue.qsize() >= self.max_queue:
            raise BusyError(f"{self.max_queue} requests are already waiting; try again shortly")
        job = _Job(raw, top_k, min_score)
        self._queue.put(job)
        return job.future

    async def suggest(self, raw: str, *, top_k: int = 10, min_score: float = 0.0):
        """The ``tagger.Article`` for ``raw``; raises text.InputError for input that cannot be tagged."""
        return await asyncio.wrap_future(self.submit(raw, top_k=top_k, min_score=min_score))

    # ------------------------------------------------------------------------------------ worker thread
    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` and whatever else arrives within max_wait (everything already queued is taken)."""
        jobs, stop = [first], False
        deadline = time.monotonic() + self.max_wait
        while len(jobs) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is _STOP:
                stop = True
                break
            jobs.append(job)
        return jobs, stop

    def _run(self) -> None:
        from threadpoolctl import threadpool_limits

        # Scoring is many small matrix products: multi-threaded BLAS only makes them wait for each other
        # (the encoder has its own thread pool). As in `disarm-tagger batch`.
        with threadpool_limits(limits=1, user_api="blas"):
            stop = False
            while not stop:
                first = self._queue.get()
                if first is _STOP:
                    break
                jobs, stop = self._collect(first)
                groups: dict[tuple[int, float], list[_Job]] = {}
                for job in jobs:
                    groups.setdefault((job.top_k, job.min_score), []).append(job)
                for (top_k, min_score), group in groups.items():
                    self._tag(group, top_k, min_score)
        while True:  # fail anything submitted after the stop
            with contextlib.suppress(queue.Empty):
                job = self._queue.get_nowait()
                if job is not _STOP:
                    job.future.set_exception(BusyError("the server is shutting down"))
                continue
            break

    def _tag(self, jobs: list[_Job], top_k: int, min_score: float) -> None:
        live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self.tagger.suggest_articles([job.raw for job in live], top_k=top_k, min_score=min_score)
            self.batches += 1
        except Exception as exc:  # noqa: BLE001 - a failure is the requests' answer, the worker lives on
            for job in live:
                job.future.set_exception(exc)
            return
        for job, result in zip(live, results):
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
