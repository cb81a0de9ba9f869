"""Suggestions -> JSON, markdown and terminal tables. Presentation only: no scoring here."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .formats import EXPORT_FORMATS, export_article
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


def suggestion_document(source: str, model: str, suggestions: Sequence[Suggestion], warnings: Sequence[str] = (),
                        ) -> dict:  # fmt: skip
    """The JSON contract of `suggest --format json` (and of the web API's /api/suggest)."""
    doc = {"input": source, "model": model, "suggestions": [suggestion_record(s) for s in suggestions]}
    if warnings:
        doc["warnings"] = list(warnings)
    return doc


def to_json(source: str, model: str, suggestions: Sequence[Suggestion], warnings: Sequence[str] = ()) -> str:
    return json.dumps(suggestion_document(source, model, suggestions, warnings), ensure_ascii=False, indent=2)


FORMATS = ("table", "json", "markdown", *EXPORT_FORMATS)  # what `suggest --format` writes


def article(fmt: str, art, *, source: str, model: str, threshold: float, techniques_by_id,
            disarm_objects=None) -> str:  # fmt: skip
    """One article's suggestions as text in any format but "table" (see ``print_table``). ``disarm_objects``:
    DISARM's STIX objects to include in a STIX bundle (else they are referenced by id)."""
    if fmt == "json":
        return to_json(source, model, art.suggestions, art.warnings)
    if fmt == "markdown":
        return to_markdown(source, model, art.suggestions, threshold)
    doc = export_article(fmt, art, techniques_by_id, source=source, model=model, disarm_objects=disarm_objects)
    return json.dumps(doc, ensure_ascii=False, indent=2)


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


def print_bench(result: dict, file=None) -> None:
    """`disarm-tagger bench`'s tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file)
    if "pipeline" not in result:
        return _print_suggest_timing(console, result["suggest"])
    p, e = result["pipeline"], result["encoder"]
    table = Table(title=f"{result['docs']} synthetic documents, {result['units']:,} units, {result['backend']}, "
                  f"batch {result['batch_size']}, load average {result['load_average']}")  # fmt: skip
    for col in ("measure", "seconds", "docs/s"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    table.add_row("batch pipeline", f"{p['seconds']:.2f}", f"{p['docs_per_s']:.1f}")
    table.add_row("encoder alone, same units (mean of 2)", f"{e['seconds']:.2f}", f"{e['docs_per_s']:.1f}")
    table.add_row("ratio (target >= 0.90)", "", f"{result['ratio']:.2f}")
    console.print(table)
    if "backends" in result:
        table = Table(title="embedding backends: encoder over the same units; top-10 on the training passages")
        for col in ("backend", "seconds", "docs/s", "speed-up vs torch", "top-10 overlap vs torch"):
            table.add_column(col, justify="left" if col == "backend" else "right")
        for name, row in result["backends"].items():
            if "error" in row:
                table.add_row(name, row["error"], "", "", "")
                continue
            table.add_row(name, f"{row['seconds']:.2f}", f"{row['docs_per_s']:.1f}",
                          f"{row.get('speedup_vs_torch', float('nan')):.2f}",
                          f"{row.get('top10_overlap_vs_torch', float('nan')):.3f}")  # fmt: skip
        console.print(table)


def _print_suggest_timing(console, s: dict) -> None:
    cold, warm = s["cold_seconds"], s["warm_seconds"]
    console.print(f"suggest on {s['article']} ({s['backend']}, load average {s['load_average']}):\n"
                  f"  cold CLI `disarm-tagger suggest`: median {cold['median']:.2f} s "
                  f"(runs {', '.join(f'{x:.2f}' for x in cold['runs'])})\n"
                  f"  warm suggest_article: median {warm['median']:.3f} s "
                  f"(runs {', '.join(f'{x:.3f}' for x in warm['runs'])})")
