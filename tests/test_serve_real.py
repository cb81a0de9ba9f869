"""`disarm-tagger serve` as a process with the committed model (slow: real encoder): it starts, answers,
saves a review, and stops cleanly on SIGTERM and on SIGINT."""

from __future__ import annotations

import shutil
import signal

import pytest

from disarm_tagger import corpus
from disarm_tagger.serve import loadtest
from serve_fixtures import EXAMPLE, REPO, http

pytestmark = pytest.mark.slow


# After its graceful shutdown uvicorn re-raises the signal, so the exit status is the conventional one.
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])  # fmt: skip
def test_serve_answers_with_the_real_model_and_stops_gracefully(tmp_path, sig, status):
    data = tmp_path / "training_data"
    data.mkdir()
    for name in (corpus.TECHNIQUES, corpus.EXAMPLES):
        shutil.copy(REPO / "training_data" / name, data / name)
    model = REPO / "models" / "default"
    log = tmp_path / "serve.log"
    proc, url = loadtest.start_server(["--model", str(model), "--data", str(data)], log=log, timeout=300)
    try:
        code, doc = http("POST", f"{url}/api/suggest", {"text": EXAMPLE.read_text(encoding="utf-8"), "top_k": 5})
        assert code == 200 and doc["model"] == str(model) and len(doc["suggestions"]) == 5
        assert any(s["technique_id"].startswith(("T0086", "T0087", "T0088")) for s in doc["suggestions"][:3])
        ids = [s["technique_id"] for s in doc["suggestions"][:2]]
        code, record = http("POST", f"{url}/api/annotations", {"text": EXAMPLE.read_text(), "labels": ids})
        assert code == 201 and record["labels"] == sorted(ids)
        assert corpus.load_corpus(data).local_examples == 1  # the next `train` uses it
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == status
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shown = log.read_text()
    assert "Application shutdown complete" in shown and "Finished server process" in shown
    assert "Traceback" not in shown
