"""An EvalReport on disk: metrics.json (machine-readable), report.md (rendered from the same dict) and plots.

Everything is deterministic for identical inputs except the date line: floats are rounded, rows sorted,
plots drawn with matplotlib's Agg canvas without pyplot's global state.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from .version import __version__
from .evaluate import EvalReport
from .summaries import HUB_SHARE, OURS

METRICS, REPORT = "metrics.json", "report.md"
PLOTS = {"r_at_k": "recall_at_k.png", "pr": "precision_recall.png", "tactic": "tactic_recall_at_10.png"}
TOP_TECHNIQUES = 40


def git_commit(cwd: Path | None = None) -> str:
    """HEAD of the repository holding this code (``+dirty`` with uncommitted changes), else "unknown". Read it
    when a run starts: the code that ran is the code of that moment."""
    cwd = cwd or Path(__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=False)  # fmt: skip

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _round(obj, nd: int = 6):
    if isinstance(obj, float):
        return round(obj, nd)
    if isinstance(obj, dict):
        return {k: _round(v, nd) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v, nd) for v in obj]
    return obj


def to_json(report: EvalReport, *, command: str, provenance: dict, date: str | None = None,
            commit: str | None = None) -> dict:  # fmt: skip
    """The metrics.json document: provenance, config, method -> metrics, margins, ablations, folds and
    our per-passage results (top 10 and predicted set)."""
    docs = [{"fold": p.fold, "example_id": p.example_id, "incident_id": p.incident_id, "gold": sorted(p.gold),
             "top10": list(p.ranked[:10]), "predicted": list(p.predicted)}
            for p in sorted(report.predictions, key=lambda p: p.example_id) if p.method == OURS]  # fmt: skip
    return _round({
        "generated": {"date": date or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                      "command": command, "git_commit": commit or git_commit(), "disarm_tagger": __version__},
        "data": provenance,
        "config": report.config,
        "methods": report.methods,
        "margins": report.margins,
        "ablations": report.ablations,
        "folds": report.folds,
        "documents": docs,
    })  # fmt: skip


def write(report: EvalReport, out: Path, *, command: str, provenance: dict, date: str | None = None,
          commit: str | None = None) -> list[Path]:  # fmt: skip
    """Write metrics.json, report.md and the plots into ``out``; return the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = to_json(report, command=command, provenance=provenance, date=date, commit=commit)
    (out / METRICS).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    written = [out / METRICS, *draw_plots(doc, out)]
    (out / REPORT).write_text(markdown(doc), encoding="utf-8")
    return [*written, out / REPORT]


# ---------------------------------------------------------------------------------------------- plots
def draw_plots(doc: dict, out: Path) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = doc["methods"]

    def save(fig: Figure, name: str) -> Path:
        FigureCanvasAgg(fig)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100, bbox_inches="tight", metadata={"Software": None})
        return out / name

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for name, m in methods.items():
        ax.plot(range(1, len(m["r_at_k"]) + 1), m["r_at_k"], marker="o", markersize=3, label=name)
    ax.set(xlabel="k (suggestions shown)", ylabel="recall@k", ylim=(0, 1), xticks=range(0, 21, 2),
           title="Recall at k, held-out incidents")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths = [save(fig, PLOTS["r_at_k"])]

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for name, m in methods.items():
        pts = [(r, p) for _t, p, r in m["pr_curve"] if p > 0 or r > 0]
        line = ax.plot([r for r, _ in pts], [p for _, p in pts], label=name)[0]
        ax.plot([m["micro"]["recall"]], [m["micro"]["precision"]], marker="*", markersize=12,
                color=line.get_color())  # fmt: skip
    ax.set(xlabel="micro recall", ylabel="micro precision", xlim=(0, 1), ylim=(0, 1),
           title="Precision-recall over a threshold sweep (* = tuned threshold)")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(save(fig, PLOTS["pr"]))

    tactics = [t for t in methods[OURS]["per_tactic"] if t["support"]]
    fig = Figure(figsize=(7, 0.35 * len(tactics) + 1.5))
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    for i, (name, m) in enumerate(methods.items()):
        r10 = {t["id"]: t["r@10"] or 0.0 for t in m["per_tactic"]}
        ax.barh([j + i * width for j in range(len(tactics))], [r10.get(t["id"], 0.0) for t in tactics],
                height=width, label=name)  # fmt: skip
    ax.set_yticks([j + 0.4 - width / 2 for j in range(len(tactics))])
    ax.set_yticklabels([f"{t['id']} {t['name'][:40]} (n={t['support']})" for t in tactics], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="recall@10", xlim=(0, 1), title="Recall@10 by tactic (n = gold labels)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(methods))
    paths.append(save(fig, PLOTS["tactic"]))
    return paths


# ---------------------------------------------------------------------------------------------- markdown
def _f(v, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def _ci(v, iv) -> str:
    return f"{_f(v)} [{_f(iv[0], 2)}, {_f(iv[1], 2)}]"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(c) for c in r) + " |" for r in rows
    ]


def _headline_rows(methods: dict) -> list[list]:
    rows = []
    for name, m in methods.items():
        r, iv, micro = m["ranking"], m["intervals"], m["micro"]
        rows.append([f"**{name}**" if name == OURS else name, _ci(r["p@1"], iv["p@1"]),
                     _ci(r["r@10"], iv["r@10"]), _ci(r["map"], iv["map"]), _ci(micro["f1"], iv["micro_f1"]),
                     *(_f(r[k]) for k in ("p@3", "p@5", "r@1", "r@3", "r@5", "mrr")),
                     _f(micro["precision"]), _f(micro["recall"]), _f(m["macro"]["f1"])])  # fmt: skip
    return rows


def _margin(mg: dict) -> str:
    return f"{mg['margin']:+.3f} [{mg['interval'][0]:+.2f}, {mg['interval'][1]:+.2f}]"


HOW_TO_READ = """\
## How to read this

- Every number comes from passages whose whole incident was held out of everything fitted (fusion
  weights, calibration, threshold, baselines): passages of one incident never straddle a split.
- **P@k**: share of the top k suggestions that are gold labels. **R@k**: share of a passage's gold labels
  found in its top k. **MAP**, **MRR**: mean average precision and reciprocal rank of the whole ranking.
  The ranking is the one users see (a few siblings of one parent at most in the top 10).
- **At threshold**: the label set the tool would assert, the labels scoring at or above the threshold
  tuned inside that fold's training data. Micro pools all (passage, label) pairs; macro averages over
  the techniques that occur in the gold labels.
- Brackets are 95% bootstrap intervals resampling incidents ({n} resamples). With few incidents they
  are wide: a difference inside them is not evidence.
- **Unseen** labels had no real (DISARM or annotated) passage in that fold's training side. Authored
  passages (written by the project from DISARM's definitions) are always training data and never make a
  label seen: they are how unseen labels can still be found, with the technique descriptions.
- **ECE**: expected calibration error of the scores (10 equal-width bins), over every (passage, technique)
  pair and over each passage's top 10; lower is better.
"""


def markdown(doc: dict) -> str:
    cfg, data, gen, methods = doc["config"], doc["data"], doc["generated"], doc["methods"]
    ours = methods[OURS]
    out = ["# disarm-tagger evaluation", "",
           (f"Generated {gen['date']} by disarm-tagger {gen['disarm_tagger']} (git `{gen['git_commit']}`), "
            "with:"),
           "", "```bash", gen["command"], "```", ""]  # fmt: skip
    out += [f"- **{k.replace('_', ' ')}**: `{v}`" for k, v in data.items() if not isinstance(v, (dict, list))]
    out += [(f"- **evaluation**: {cfg['mode']}; split: {cfg['split']}; {cfg['n_examples']} passages from "
             f"{cfg['n_incidents']} incidents; {cfg['n_techniques']} techniques ranked; "
             f"embedder `{cfg['embedder']}`"), ""]  # fmt: skip
    if cfg.get("n_authored"):
        out[-1:] = [(f"- **authored passages**: {cfg['n_authored']:,}, in every training fold, never tested on "
                     "(ours only; the baselines see the real passages)"), ""]  # fmt: skip
    out += [f"> **warning**: {w}" for w in cfg.get("warnings", [])] + [""] * bool(cfg.get("warnings"))
    out += [HOW_TO_READ.format(n=cfg["bootstrap_resamples"])]

    out += ["## Headline", "", f"Split: {cfg['split']}.", ""]
    out += _table(["method", "P@1", "R@10", "MAP", "micro F1", "P@3", "P@5", "R@1", "R@3", "R@5", "MRR",
                   "micro P", "micro R", "macro F1"], _headline_rows(methods)) + [""]  # fmt: skip
    if doc["margins"]:
        out += [("Margin of ours over each baseline: ours minus baseline on the same passages, with a "
                 "paired bootstrap interval over incidents."), ""]  # fmt: skip
        rows = [[b, *(_margin(mg[k]) for k in ("p@1", "r@10", "map", "micro_f1"))]
                for b, mg in doc["margins"].items()]  # fmt: skip
        out += _table(["baseline", "ΔP@1", "ΔR@10", "ΔMAP", "Δmicro F1"], rows) + [""]
    out += [f"- *{name}*: {text}." for name, text in cfg.get("baselines", {}).items()]
    out += ["", f"![recall at k]({PLOTS['r_at_k']})", "", f"![precision-recall]({PLOTS['pr']})", ""]

    if doc.get("ablations"):
        ab = doc["ablations"]
        ref = ab["rows"][ab["reference"]]["headline"]
        out += ["## Ablations", "",
                (f"Split: {ab['split']}, not the headline split. Each row removes one signal (its weight "
                 "held at 0) and re-tunes the other weights inside every training fold, exactly as ours is "
                 f"tuned; deltas are against *{ab['reference']}*. The untuned row shows what tuning adds."),
                ""]  # fmt: skip
        rows = [[name, *(_f(h[k]) for k in ("p@1", "r@10", "map", "micro_f1", "seen_r@10", "unseen_r@10")),
                 f"{h['map'] - ref['map']:+.3f}", f"{h['r@10'] - ref['r@10']:+.3f}",
                 f"{h['unseen_r@10'] - ref['unseen_r@10']:+.3f}" if h.get("unseen_r@10") is not None
                 and ref.get("unseen_r@10") is not None else "–",
                 _f(r.get("calibration", {}).get("ece_top10"))]
                for name, h, r in ((n, r["headline"], r) for n, r in ab["rows"].items())]  # fmt: skip
        out += _table(["variant", "P@1", "R@10", "MAP", "micro F1", "seen R@10", "unseen R@10", "ΔMAP", "ΔR@10",
                       "Δunseen R@10", "ECE top 10"], rows) + [""]  # fmt: skip
        out += [("Rows: *without X* holds signal X at weight 0; *authored: n per technique* trains with only the "
                 "first n authored passages written for each technique (the learning curve; ours uses all); "
                 "*with prior forced to 1* turns on the label prior (default weight 0: it carries DISARM's annotation "
                 "skew) counted over every origin, authored passages weighted; *prior over real passages only, forced "
                 "to 1* counts labels on DISARM and annotated passages only; *tuned for every gold label alike* tunes for R@10 over all gold labels instead of the "
                 "mean of seen and unseen labels; *isotonic steps* is plain isotonic calibration, whose plateaus "
                 "tie scores; *without the hub cap* leaves techniques that crowd every top 10 unpenalised; "
                 "*encoder: X* embeds with another encoder."), ""]  # fmt: skip

    origins = cfg.get("by_origin", {})
    if len(origins) > 1:
        out += ["## DISARM passages and local annotations", "",
                "Our metrics on each origin separately (local = `training_data/annotations.jsonl`).", ""]
        rows = [[name, o["n_examples"], *(_f(o[k]) for k in ("p@1", "r@10", "map", "micro_f1"))]
                for name, o in origins.items()]  # fmt: skip
        out += _table(["origin", "passages", "P@1", "R@10", "MAP", "micro F1"], rows) + [""]

    out += ["## Seen and unseen labels", "",
            ("Pooled over gold labels; a label is *seen* when the training side had at least one real passage "
             "(DISARM or annotated) of it; authored passages do not count."), ""]  # fmt: skip
    rows = [[name, bucket, s["support"], _f(s["r@10"]), _f(s["precision_at_threshold"]),
             _f(s["recall_at_threshold"]), _f(s["f1_at_threshold"])]
            for name, m in methods.items() for bucket, s in m["seen_unseen"].items()]  # fmt: skip
    out += _table(["method", "labels", "gold", "R@10", "P at thr.", "R at thr.", "F1 at thr."], rows) + [""]

    out += ["## Parent-technique level", "",
            ("Sub-techniques rolled up to their parent (T0086.002 -> T0086); the ranking keeps each "
             "parent's first occurrence."), ""]  # fmt: skip
    rows = [[name, *(_f(m["parent"]["ranking"][k]) for k in ("p@1", "r@10", "map", "mrr")),
             *(_f(m["parent"]["micro"][k]) for k in ("precision", "recall", "f1"))]
            for name, m in methods.items()]  # fmt: skip
    out += _table(["method", "P@1", "R@10", "MAP", "MRR", "micro P", "micro R", "micro F1"], rows) + [""]

    out += ["## Per tactic (ours)", "", f"![recall@10 by tactic]({PLOTS['tactic']})", ""]
    rows = [[t["id"], t["name"], t["support"], _f(t["r@10"]), t.get("unseen_support", 0), _f(t.get("unseen_r@10")),
             _f(t["precision"]), _f(t["recall"]), _f(t["f1"])] for t in ours["per_tactic"]]  # fmt: skip
    out += _table(["tactic", "name", "gold", "R@10", "unseen gold", "unseen R@10", "P", "R", "F1"], rows) + [""]

    cal = ours.get("calibration")
    if cal:
        out += ["## Calibration (ours)", "",
                (f"ECE over every (passage, technique) pair {_f(cal['ece_all'])}; over the top 10 each passage "
                 f"shows {_f(cal['ece_top10'])}. The ablations give the same for plain isotonic steps."), ""]

    hub_rows = ours.get("hubs", [])
    out += ["## Hub techniques (ours)", "",
            ("Techniques in the top 10 of at least 20% of the held-out passages, with how often they are gold. "
             f"A *hub* is in more than {int(HUB_SHARE * 100)}% of top 10s and more than twice as often as it is "
             "gold: a suggestion that comes regardless of content."), ""]  # fmt: skip
    rows = [[h["id"], _f(h["share"], 2), _f(h["gold_rate"], 2), "yes" if h["hub"] else "no"] for h in hub_rows]
    out += (_table(["technique", "share of top 10s", "gold rate", "hub"], rows) if rows else ["None."]) + [""]
    art = cfg.get("article_hubs")
    if art:
        out += [(f"Over the {art['passages']} held-out passages and {art['articles']} article(s) of `{art['folder']}` "
                 "(tagged by a model fitted on all the data), without gold labels:"), ""]  # fmt: skip
        rows = [[h["id"], _f(h["share"], 2), "yes" if h["hub"] else "no"] for h in art["rows"]]
        out += (_table(["technique", "share of top 10s", "over 30%"], rows) if rows else ["None."]) + [""]

    out += _long_documents(cfg.get("long_documents"))

    techs = ours["per_technique"]
    out += ["## Per technique (ours)", "",
            (f"The {min(TOP_TECHNIQUES, len(techs))} techniques with the most gold labels, of the "
             f"{len(techs)} that are gold or predicted somewhere; all of them are in {METRICS}."), ""]
    rows = [[t["id"], t["name"], t["tactic_id"], t["support"], t["predicted"], _f(t["precision"]),
             _f(t["recall"]), _f(t["f1"]), _f(t["r@10"])] for t in techs[:TOP_TECHNIQUES]]  # fmt: skip
    out += _table(["technique", "name", "tactic", "gold", "predicted", "P", "R", "F1", "R@10"], rows) + [""]

    thresholds = sorted(f["threshold"] for f in doc["folds"] if "threshold" in f)
    if thresholds:
        out += ["## Tuned per fold (ours)", "",
                (f"Threshold: min {thresholds[0]:.3f}, median {thresholds[len(thresholds) // 2]:.3f}, "
                 f"max {thresholds[-1]:.3f} over {len(thresholds)} fold(s); the per-fold thresholds and "
                 f"fusion weights are in {METRICS}."), ""]  # fmt: skip
    capped: dict[str, int] = {}
    for f in doc["folds"]:
        for tid in f.get("hubs_penalised", ()):
            capped[tid] = capped.get(tid, 0) + 1
    if capped:
        out += [("Hub cap: techniques penalised as hubs in the training side of each fold (folds): "
                 + ", ".join(f"{t} ({n})" for t, n in sorted(capped.items(), key=lambda kv: (-kv[1], kv[0])))
                 + "."), ""]  # fmt: skip
    return "\n".join(out)


def _long_documents(long: dict | None) -> list[str]:
    """The --long-documents section: recall as held-out passages are joined into longer texts."""
    if not long:
        return []
    out = ["## Long documents (ours)", "",
           (f"Split: GroupKFold by incident ({long['folds']} folds), not the headline split. Each "
            "fold's tagger is fitted as `train` fits it; a pseudo-article joins held-out passages of *size* "
            f"different held-out incidents as paragraphs ({long['per_fold']} per size and fold, seed "
            f"{long['seed']}), and its gold labels are the union of theirs. Size 1 is every held-out "
            "passage alone. *R@10 per passage* reads 10 suggestions per joined passage (the top 30 for "
            "3 passages). Recalls here pool the gold labels of every text of a size; the headline's R@10 "
            "is a mean over passages. *✓ per text*, *P ✓* and *R ✓*: the suggestions at or above the "
            "fold's tuned threshold, their number per text, precision and recall."), ""]  # fmt: skip
    rows = [[r["size"], r["documents"], _f(r["gold"], 1), _f(r["r@10"]), _f(r["r@10_per_passage"]),
             _f(r["seen_r@10"]), f"{_f(r['unseen_r@10'])} ({r['unseen_gold']})", _f(r["map"]),
             _f(r.get("marked"), 1), _f(r.get("p_at_threshold")), _f(r.get("r_at_threshold"))]
            for r in long["rows"]]  # fmt: skip
    return out + _table(["size", "documents", "gold labels", "R@10", "R@10 per passage", "seen R@10",
                         "unseen R@10 (gold)", "MAP", "✓ per text", "P ✓", "R ✓"], rows) + [""]  # fmt: skip
