"""What a dask worker runs for `batch --engine dask` (dask_engine.py is the client side).

``ModelPlugin`` carries the model folder's files to every worker, the ones that join later or replace a
lost one included, and loads the model once per worker process when the worker starts it; ``tag_partition``
tags one partition with that model and the local batch's own code (batch.tag_records) and returns its
records, formatted, for the client to append to OUT. Imports dask.distributed: only dask_engine imports this.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from distributed import WorkerPlugin, get_worker

from . import persist
from .batch import single_threaded_blas, tag_records
from .records import Pending, Record

PLUGIN_PREFIX = "disarm-tagger-model-"


class ModelPlugin(WorkerPlugin):
    """The model, written into the worker's local directory and loaded there once (``setup``). ``name`` is
    the model's digest and backend, so a second run with the same model reuses the loaded one."""

    idempotent = True  # registering the same name again leaves the loaded model in place

    def __init__(self, files: dict[str, bytes], backend: str | None, digest: str):
        self.files, self.backend = files, backend
        self.name = f"{PLUGIN_PREFIX}{digest[:16]}-{backend or 'default'}"
        self.tagger = None
        self.loads = 0

    def setup(self, worker) -> None:
        self.folder = Path(worker.local_directory) / self.name
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (self.folder / name).write_bytes(data)
        self.files = {}
        self.tagger = persist.load(self.folder, backend=self.backend)  # verifies every file's sha256 again
        self.lock = threading.Lock()  # a worker with several threads tags one partition at a time
        self.loads += 1

    def teardown(self, worker) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def tag_partition(plugin_name: str, docs: list[Pending], *, fmt: str, top_k: int, min_score: float,
                  anything_done: bool) -> list[Record]:  # fmt: skip
    """The records of one partition, tagged with the model this worker loaded."""
    plugin = get_worker().plugins.get(plugin_name)
    if not isinstance(plugin, ModelPlugin) or plugin.tagger is None:
        raise RuntimeError(f"this dask worker has no {plugin_name} (its setup failed: see the worker's log)")
    with plugin.lock, single_threaded_blas():
        return tag_records(plugin.tagger, docs, fmt=fmt, top_k=top_k, min_score=min_score,
                           anything_done=anything_done)  # fmt: skip
