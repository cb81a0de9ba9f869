"""The generated model card (README.md inside a model folder)."""

from __future__ import annotations


def render(meta: dict) -> str:
    prov = meta.get("provenance", {})
    counts = prov.get("counts", {})
    cv = meta.get("cv", {})
    emb = meta.get("embedder", {})
    weights = ", ".join(f"{k} {v:g}" for k, v in meta.get("weights", {}).items())
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
        f"- {counts.get('examples', '?')} passages from {counts.get('incidents', '?')} incidents "
        f"({counts.get('local_annotations', 0)} local analyst annotations), covering "
        f"{counts.get('techniques_with_examples', '?')} of {counts.get('techniques', '?')} techniques",
        f"- training data sha256: `{prov.get('training_data_sha256', '')}`",
        "",
        "## Method",
        f"- Embedder: {emb.get('name', '?')} from `{emb.get('package', '?')}` (dimension {emb.get('dimension', '?')}, "
        f"backend {emb.get('backend', '?')}), never downloaded at run time.",
        "- Signals fused by weighted reciprocal rank: kNN over training passages, ridge regression on passage",
        "  embeddings, similarity to technique names and summaries, TF-IDF, named-example lexicon, label prior.",
        f"- Tuned weights: {weights}",
        f"- Scores are isotonic-calibrated; threshold {meta.get('threshold', 0):.3f} maximises micro F1 out of fold.",
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
        "- Most techniques have no or one training passage; rare techniques rely on their DISARM description.",
        "- Passages in training are analyst-selected quotes; whole articles are noisier.",
        "",
        "## Licence and attribution",
        f"{prov.get('attribution', 'Derived from DISARM Foundation, DISARMframeworks, CC BY-SA 4.0.')}",
        f"Licence of this model: {prov.get('licence', 'CC BY-SA 4.0')}.",
    ]
    return "\n".join(lines) + "\n"
