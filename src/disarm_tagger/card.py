"""The generated model card (README.md inside a model folder)."""

from __future__ import annotations


def render(meta: dict) -> str:
    prov = meta.get("provenance", {})
    counts = prov.get("counts", {})
    cv = meta.get("cv", {})
    emb = meta.get("embedder", {})
    weights = ", ".join(f"{k} {v:g}" for k, v in meta.get("weights", {}).items())
    origins = ", ".join(f"{n:,} {k}" for k, n in counts.get("by_origin", {}).items()) or "?"
    lines = [
        "# disarm-tagger model",
        "",
        "Suggests DISARM Red Framework technique ids for text about influence operations.",
        "",
        "## Intended use",
        "Triage aid for analysts: a ranked shortlist of techniques to consider, each with the sentences that",
        "support it. It does not replace reading the source; every suggestion needs an analyst's judgement.",
        "",
        "## Training data",
        f"- DISARM snapshot: {prov.get('disarm_snapshot', 'unknown')}",
        f"- {counts.get('examples', '?')} passages by origin: {origins}; real passages from "
        f"{counts.get('incidents', '?')} incidents cover {counts.get('techniques_with_real_examples', '?')} of "
        f"{counts.get('techniques', '?')} techniques, all passages {counts.get('techniques_with_examples', '?')}",
        "- *disarm*: quotes from DISARM incident pages; *local*: analysts' own annotations; *authored*: passages",
        "  written by the disarm-tagger project from DISARM's technique definitions (never tested on).",
        f"- training data sha256: `{prov.get('training_data_sha256', '')}`",
        "",
        "## Method",
        f"- Embedder: {emb.get('name', '?')} from `{emb.get('package', '?')}` (dimension {emb.get('dimension', '?')}, "
        f"backend {emb.get('backend', '?')}), never downloaded at run time.",
        "- Signals fused by weighted reciprocal rank: kNN over real passages and over authored passages, each",
        "  sentence's own vote among the authored passages, similarity to each technique's authored passages",
        "  (centroid), ridge regression on passage embeddings, similarity to technique names and definitions,",
        "  TF-IDF against each technique's definition and authored passages, TF-IDF on names, a lexicon of",
        "  named examples, label prior (weight 0 unless tuning finds a clear gain).",
        f"- Tuned weights: {weights}; weight of authored passages {meta.get('authored_weight', 1):g}",
        "- Tuned for (MAP + R@10) / 2, R@10 the mean over labels with and without real passages.",
        f"- Hub cap: {', '.join(meta.get('hub_penalties') or {}) or 'none'} scored high for most passages out of fold,",
        "  more than twice as often as they were gold; each loses the least score that brings its share of top 10s",
        "  under 3/4 of max(30%, twice its gold rate). A technique whose gold rate supports its place is left alone.",
        f"- Scores: isotonic calibration interpolated between block centres; threshold {meta.get('threshold', 0):.3f}",
        "  maximises micro F1 out of fold.",
        "",
        "## Inner cross-validation (leave one incident out, on the training data)",
        "| P@1 | P@3 | R@5 | R@10 | MAP | micro F1 at threshold |",
        "|---|---|---|---|---|---|",
        f"| {cv.get('p@1', 0):.3f} | {cv.get('p@3', 0):.3f} | {cv.get('r@5', 0):.3f} | {cv.get('r@10', 0):.3f} | "
        f"{cv.get('map', 0):.3f} | {cv.get('micro_f1_at_threshold', 0):.3f} |",
        "",
        "These are the numbers used to tune the model; the independent estimate is the nested evaluation in the",
        "project's eval/report.md.",
        "",
        "## Limits",
        "- English only; other languages get a warning and best-effort suggestions.",
        "- Most techniques have no real passage: for them the model relies on the passages this project wrote",
        "  from their definitions (counted in training_data/manifest.json) and the DISARM definition, and finds",
        "  them less reliably (see the evaluation's unseen recall).",
        "- Passages in training are analyst-selected quotes; whole articles are noisier.",
        "",
        "## Licence and attribution",
        f"{prov.get('attribution', 'Derived from DISARM Foundation, DISARMframeworks, CC BY-SA 4.0.')}",
        f"Licence of this model: {prov.get('licence', 'CC BY-SA 4.0')}.",
    ]
    return "\n".join(lines) + "\n"
