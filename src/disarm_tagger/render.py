"""Suggestions -> JSON, markdown and terminal tables. Presentation only: no scoring here."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .schema import Suggestion


def suggestion_record(s: Suggestion) -> dict:
    """The JSON contract for one suggestion (also used by batch output)."""
    return {
        "rank": s.rank,
        "technique_id": s.technique_id,
        "name": s.name,
        "tactic_id": s.tactic_id,
        "tactic": s.tactic,
        "score": s.score,
        "evidence": [{"text": e.text, "start": e.start, "end": e.end} for e in s.evidence],
    }


def to_document(source: str, model: str, suggestions: Sequence[Suggestion], warnings: Sequence[str] = ()) -> dict:
    """The JSON contract of `suggest --format json` (and of the server's POST /api/suggest) as a dict."""
    doc = {"input": source, "model": model, "suggestions": [suggestion_record(s) for s in suggestions]}
    if warnings:
        doc["warnings"] = list(warnings)
    return doc


def to_json(source: str, model: str, suggestions: Sequence[Suggestion], warnings: Sequence[str] = ()) -> str:
    return json.dumps(to_document(source, model, suggestions, warnings), ensure_ascii=False, indent=2)


def _clip(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def to_markdown(source: str, model: str, suggestions: Sequence[Suggestion], threshold: float | None = None) -> str:
    lines = [f"## DISARM technique suggestions for `{source}`", "", f"Model: `{model}`", ""]
    lines += ["| # | Technique | Tactic | Score | Evidence |", "|---|---|---|---|---|"]
    for s in suggestions:
        mark = " ✓" if threshold is not None and s.score >= threshold else ""
        ev = " / ".join(f"“{_clip(e.text, 120)}” ({e.start}–{e.end})" for e in s.evidence)
        lines.append(f"| {s.rank} | {s.technique_id} {s.name} | {s.tactic_id} {s.tactic} | {s.score:.2f}{mark} | "
                     f"{ev.replace('|', '¦')} |")  # fmt: skip
    if threshold is not None:
        lines += ["", f"✓ = score at or above the model's tuned threshold ({threshold:.2f})."]
    return "\n".join(lines) + "\n"


def print_table(source: str, model: str, suggestions: Sequence[Suggestion], threshold: float | None = None,
                file=None) -> None:  # fmt: skip
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file, soft_wrap=False)
    if not console.is_terminal:  # piped or captured: rich would assume 80 columns
        console.width = 140
    table = Table(title=f"DISARM suggestions for {source}", caption=f"model: {model}", show_lines=True)
    for col, kw in (("#", {"justify": "right"}), ("Technique", {"min_width": 28}), ("Tactic", {}),
                    ("Score", {"justify": "right"}), ("Evidence", {"ratio": 1})):  # fmt: skip
        table.add_column(col, **kw)
    for s in suggestions:
        score = f"{s.score:.2f}" + (" ✓" if threshold is not None and s.score >= threshold else "")
        evidence = f"“{_clip(s.evidence[0].text)}”" if s.evidence else ""
        if len(s.evidence) > 1:
            evidence += f" (+{len(s.evidence) - 1} more)"
        table.add_row(str(s.rank), f"[bold]{s.technique_id}[/bold] {s.name}", f"{s.tactic_id} {s.tactic}", score,
                      evidence)  # fmt: skip
    console.print(table)
    if threshold is not None:
        console.print(f"✓ = at or above the tuned threshold {threshold:.2f}. Scores are calibrated estimates of "
                      "the chance an analyst would tag the technique (see README).")  # fmt: skip
