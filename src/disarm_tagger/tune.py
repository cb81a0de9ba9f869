"""Contrastive tuning of the packaged all-MiniLM-L6-v2 on the authored coverage set (SetFit-style).

Pairs are (authored passage, "name: definition" of the technique it was written for), trained with
MultipleNegativesRankingLoss: every other definition in the batch is a negative, and a batch never holds two
passages of one technique. Only authored passages and DISARM's definitions are used, never a DISARM incident
passage, so cross-validation on DISARM passages stays leak-free without nesting. Imports torch: not on the
suggest path. Returns data; the CLI prints.
"""

from __future__ import annotations

import json
import random
import resource
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .schema import Example, Technique

SUMMARY = "tuning.json"


def pairs(authored: Sequence[Example], techniques: Sequence[Technique]) -> list[tuple[str, str, str]]:
    """(passage, definition, technique id) for every authored passage (ids ``A-<technique>-<n>``)."""
    definition = {t.id: f"{t.name}: {t.summary}" for t in techniques}
    return [(e.text, definition[e.id.split("-")[1]], e.id.split("-")[1]) for e in authored]


def batches(items: list[tuple[str, str, str]], size: int, rng: random.Random) -> Iterator[list]:
    """Shuffled batches in which no technique appears twice (its definition would be a false negative)."""
    pending = rng.sample(items, len(items))
    while pending:
        batch, used, rest = [], set(), []
        for item in pending:
            if len(batch) < size and item[2] not in used:
                batch.append(item)
                used.add(item[2])
            else:
                rest.append(item)
        pending = rest
        yield batch


def tune_encoder(authored: Sequence[Example], techniques: Sequence[Technique], out: Path, *, epochs: int = 1,
                 batch_size: int = 32, learning_rate: float = 2e-5, seed: int = 0, progress=None) -> dict:  # fmt: skip
    """Fine-tune the packaged encoder and save it (a sentence-transformers folder) to ``out``; return and
    write the run's summary (``tuning.json``): data, settings, loss per epoch, seconds, peak memory."""
    import torch
    from sentence_transformers import SentenceTransformer, losses

    from .embed import model_path

    torch.manual_seed(seed)
    rng = random.Random(seed)
    items = pairs(authored, techniques)
    model = SentenceTransformer(str(model_path()), device="cpu", local_files_only=True)
    loss = losses.MultipleNegativesRankingLoss(model)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    steps = epochs * sum(1 for _ in batches(items, batch_size, random.Random(seed)))
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min(1.0, (s + 1) / warmup) * (steps - s) / steps)
    started, step, losses_per_epoch = time.perf_counter(), 0, []
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for batch in batches(items, batch_size, rng):
            features = [model.tokenize([a for a, _, _ in batch]), model.tokenize([b for _, b, _ in batch])]
            value = loss(features, None)
            value.backward()
            optimiser.step()
            schedule.step()
            optimiser.zero_grad()
            total += float(value)
            step += 1
            if progress:
                progress(step, steps, f"epoch {epoch + 1}, loss {float(value):.3f}")
        losses_per_epoch.append(round(total / max(1, step - epoch * (steps // epochs)), 4))
    out = Path(out)
    model.save(str(out))
    summary = {"pairs": len(items), "techniques": len({t for _, _, t in items}), "epochs": epochs,
               "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed, "steps": steps,
               "mean_loss_per_epoch": losses_per_epoch, "seconds": round(time.perf_counter() - started, 1),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "data": "authored passages paired with DISARM technique definitions; no DISARM incident passage"}
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
