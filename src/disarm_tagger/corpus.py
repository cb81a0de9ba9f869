"""training_data/: JSONL files of techniques and examples, their manifest, hashes and merging."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterable
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import disarm
from .schema import Example, Phase, Tactic, Technique, from_dict, to_dict

TECHNIQUES = "techniques.jsonl"
TACTICS = "tactics.jsonl"
PHASES = "phases.jsonl"
EXAMPLES = "examples.jsonl"
DISARM_STIX = "disarm_stix.jsonl"  # DISARM's own STIX objects, verbatim, for exports that include them
ANNOTATIONS = "annotations.jsonl"  # analysts' own labels; never written by import-disarm
AUTHORED = "authored.jsonl"  # passages the project wrote from DISARM's definitions (see coverage.py)
NAMED_EXAMPLES = "named_examples.jsonl"  # platform and service names per technique, written by the project
MANIFEST = "manifest.json"
LICENCE = "CC BY-SA 4.0"
ATTRIBUTION = (
    "Derived from DISARM Foundation, DISARMframeworks (https://github.com/DISARMFoundation/DISARMframeworks), "
    "licensed CC BY-SA 4.0. Passages in examples.jsonl quote the sources cited on each DISARM incident page; "
    "authored.jsonl was written by the disarm-tagger project from DISARM's technique definitions, and "
    "named_examples.jsonl (names of platforms and services per technique) from general knowledge, same licence."
)


class CorpusError(ValueError):
    """training_data/ is missing, malformed or inconsistent."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dumps_line(record: dict) -> str:
    """One JSONL line, keys sorted, UTF-8 kept readable: the same record always gives the same bytes."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"


def write_jsonl(path: Path, records: Iterable) -> int:
    """Records (dataclasses, or plain dicts such as STIX objects) as JSONL; returns how many."""
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for rec in records:
            fh.write(dumps_line(rec if isinstance(rec, dict) else to_dict(rec)))
            n += 1
    return n


def read_stix_objects(path: Path) -> dict[str, dict]:
    """A file of STIX objects written by ``write_jsonl`` as {STIX id: object}."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: not found (import-disarm writes it from DISARM's STIX bundle)")
    with open(path, encoding="utf-8") as fh:
        objects = [json.loads(line) for line in fh if line.strip()]
    return {obj["id"]: obj for obj in objects}


def read_jsonl(path: Path, cls: type) -> list:
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: not found (run `disarm-tagger import-disarm PATH` first)")
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(from_dict(cls, json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise CorpusError(f"{path}:{lineno}: not a valid {cls.__name__} record ({exc})") from exc
    return out


def snapshot_id(root: Path) -> str:
    """Identify the DISARM checkout: git commit if it is a repo, else the commit its README names."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and (Path(root) / ".git").exists():
            return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    readme = Path(root) / "README.md"
    if readme.exists():
        m = re.search(r"commit\s+([0-9a-f]{7,40})(?:\s*\(([\d-]+)\))?", readme.read_text(encoding="utf-8"))
        if m:
            return f"commit:{m.group(1)}" + (f" ({m.group(2)})" if m.group(2) else "")
    return "unknown"


@dataclass(frozen=True)
class ImportSummary:
    out: Path
    examples: int
    incidents: int
    techniques: int
    techniques_used: int
    tactics: int
    phases: int
    report: disarm.ImportReport


NO_STIX = "none: imported with --no-stix; technique STIX ids are not DISARM's and exports say so"


def import_disarm(root: Path, out: Path, *, stix: bool = True) -> ImportSummary:
    """Read a DISARMframeworks checkout and write training_data files deterministically. ``stix=False``
    imports a checkout without a STIX bundle (its techniques then carry no DISARM STIX ids)."""
    root, out = Path(root), Path(out)
    framework = disarm.read_framework(root, require_stix=stix)
    examples, report = disarm.read_examples(root, framework.techniques)
    for ex in examples:  # the leakage guard the whole product relies on
        if disarm.ID_PATTERN.search(ex.text):
            raise CorpusError(f"{ex.id}: a technique id remains in the example text")
    out.mkdir(parents=True, exist_ok=True)
    files = {
        PHASES: framework.phases,
        TACTICS: framework.tactics,
        TECHNIQUES: framework.techniques,
        EXAMPLES: examples,
    }
    counts = {name: write_jsonl(out / name, records) for name, records in files.items()}
    if framework.stix_bundle:
        counts[DISARM_STIX] = write_jsonl(out / DISARM_STIX, framework.stix_objects)
    else:  # no DISARM objects this time: a file left by an earlier import would contradict the manifest
        (out / DISARM_STIX).unlink(missing_ok=True)
    summary = ImportSummary(
        out=out,
        examples=len(examples),
        incidents=len({e.incident_id for e in examples}),
        techniques=len(framework.techniques),
        techniques_used=len({label for e in examples for label in e.labels}),
        tactics=len(framework.tactics),
        phases=len(framework.phases),
        report=report,
    )
    manifest = {
        "source": "DISARM Foundation, DISARMframeworks",
        "snapshot": snapshot_id(root),
        "stix_bundle": framework.stix_bundle or NO_STIX,
        "licence": LICENCE,
        "attribution": ATTRIBUTION,
        "counts": counts
        | {"incidents": summary.incidents, "techniques_used": summary.techniques_used, "rows": report.rows},
        "repaired": report.repaired,
        "dropped": report.dropped,
        "sha256": {name: sha256_file(out / name) for name in counts},
    }
    if (out / AUTHORED).exists():  # written by the project, not imported: described here, never rewritten
        manifest["authored"] = authored_manifest(out, framework.techniques)
    if (out / NAMED_EXAMPLES).exists():  # the same
        manifest["named_examples"] = named_examples_manifest(out, framework.techniques)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def authored_manifest(folder: Path, techniques: list[Technique]) -> dict:
    """manifest.json's description of authored.jsonl: counts per tactic, attribution and its sha256."""
    from .coverage import summary

    path = Path(folder) / AUTHORED
    return summary(read_jsonl(path, Example), techniques) | {"file": AUTHORED, "sha256": sha256_file(path)}


def named_examples_manifest(folder: Path, techniques: list[Technique]) -> dict:
    """manifest.json's description of named_examples.jsonl: how many techniques and names, and its sha256."""
    path = Path(folder) / NAMED_EXAMPLES
    names = read_named_examples(path, techniques)
    return {"file": NAMED_EXAMPLES, "techniques": len(names), "names": sum(map(len, names.values())),
            "sha256": sha256_file(path)}  # fmt: skip


def read_named_examples(path: Path, techniques: list[Technique]) -> dict[str, tuple[str, ...]]:
    """named_examples.jsonl: one ``{"technique_id": ..., "names": [...]}`` per line -> {technique id: names}.
    The names join the named examples DISARM's own definitions list (see signals.build_lexicon)."""
    known = {t.id for t in techniques}
    out: dict[str, tuple[str, ...]] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            tid, names = record["technique_id"], record["names"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorpusError(f"{path}:{n}: not a {{technique_id, names}} record ({exc})") from None
        if tid not in known:
            raise CorpusError(f"{path}:{n}: {tid!r} is not in the technique catalogue")
        if not isinstance(names, list) or not all(isinstance(x, str) and x.strip() for x in names):
            raise CorpusError(f"{path}:{n}: names must be a list of non-empty strings")
        out[tid] = tuple(dict.fromkeys([*out.get(tid, ()), *names]))
    return out


def check_authored(folder: Path, *, embedder=None):
    """coverage.check() on a training_data folder's authored.jsonl, plus: manifest.json describes the file as
    it is (re-run import-disarm after editing it). Returns a coverage.CoverageReport."""
    from . import coverage

    data = load_corpus(folder, include_local=False)
    if not data.authored:
        raise CorpusError(f"{folder}: no {AUTHORED}")
    report = coverage.check(data.authored, data.techniques, embedder=embedder,
                            disarm_texts=coverage.disarm_texts(data.examples) if embedder is not None else ())
    report.label_density = coverage.label_density(data.authored, data.examples)
    if data.manifest.get("authored") != authored_manifest(folder, data.techniques):
        report.problems.append(f"{folder / MANIFEST}: its 'authored' section does not describe {AUTHORED}; re-run "
                               "`disarm-tagger import-disarm` (`make import`)")  # fmt: skip
    if (folder / NAMED_EXAMPLES).exists() and data.manifest.get("named_examples") != named_examples_manifest(
            folder, data.techniques):  # fmt: skip
        report.problems.append(f"{folder / MANIFEST}: its 'named_examples' section does not describe "
                               f"{NAMED_EXAMPLES}; re-run `disarm-tagger import-disarm` (`make import`)")
    return report


@dataclass(frozen=True)
class Corpus:
    """Everything training needs, loaded from a training_data folder."""

    techniques: list[Technique]
    tactics: list[Tactic]
    phases: list[Phase]
    examples: list[Example]  # real passages: DISARM examples plus local annotations, deduplicated
    manifest: dict
    sha256: str  # one hash over the files that shape a model
    local_examples: int = 0
    local_duplicates: int = 0
    authored: list[Example] = field(default_factory=list)  # always training data, never evaluated on
    named_examples: dict[str, tuple[str, ...]] = field(default_factory=dict)  # technique id -> names (lexicon)
    text_ridge: bool = False  # fit the opt-in ridge_text signal (train/eval --text-ridge)

    @property
    def tagger_params(self) -> dict:
        """What this training data sets on a Tagger beside its examples: the lexicon's extra names, and the
        opt-in ridge_text signal when asked for."""
        return {"named_examples": self.named_examples or None} | ({"text_ridge": True} if self.text_ridge else {})

    @property
    def training(self) -> list[Example]:
        """Everything a model is fitted on: real passages, then authored ones."""
        return [*self.examples, *self.authored]


def merge_examples(base: list[Example], local: list[Example]) -> tuple[list[Example], int]:
    """Add local annotations to imported examples. A local passage equal to an imported one (after
    normalising case and punctuation) replaces that example's labels: the analyst's word wins."""
    by_key = {disarm.passage_key(e.text): e for e in base}
    duplicates = 0
    for ex in local:
        key = disarm.passage_key(ex.text)
        if key in by_key:
            duplicates += 1
        by_key[key] = ex
    return sorted(by_key.values(), key=lambda e: e.id), duplicates


def load_corpus(folder: Path, *, include_local: bool = True, include_authored: bool = True) -> Corpus:
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusError(f"{folder}: not a training_data folder")
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {}
    techniques = read_jsonl(folder / TECHNIQUES, Technique)
    examples = read_jsonl(folder / EXAMPLES, Example)
    local = read_jsonl(folder / ANNOTATIONS, Example) if include_local and (folder / ANNOTATIONS).exists() else []
    authored = read_jsonl(folder / AUTHORED, Example) if include_authored and (folder / AUTHORED).exists() else []
    known = {t.id for t in techniques}
    for ex in [*examples, *local, *authored]:
        unknown = set(ex.labels) - known
        if unknown:
            raise CorpusError(f"{ex.id}: labels not in the catalogue: {', '.join(sorted(unknown))}")
    merged, duplicates = merge_examples(examples, local)
    named = read_named_examples(folder / NAMED_EXAMPLES, techniques) if (folder / NAMED_EXAMPLES).exists() else {}
    names = [TECHNIQUES, EXAMPLES] + ([ANNOTATIONS] if local else []) + ([AUTHORED] if authored else [])
    names += [NAMED_EXAMPLES] if named else []
    digest = hashlib.sha256("".join(sha256_file(folder / n) for n in names).encode()).hexdigest()
    return Corpus(
        techniques=techniques,
        tactics=read_jsonl(folder / TACTICS, Tactic) if (folder / TACTICS).exists() else [],
        phases=read_jsonl(folder / PHASES, Phase) if (folder / PHASES).exists() else [],
        examples=merged,
        manifest=manifest,
        sha256=digest,
        local_examples=len(local),
        local_duplicates=duplicates,
        authored=authored,
        named_examples=named,
    )


def provenance(data: Corpus, folder: Path) -> dict:
    """What a model was trained on, for its meta.json and model card."""
    return {
        "training_data": str(folder),
        "disarm_snapshot": data.manifest.get("snapshot", "unknown"),
        "training_data_sha256": data.sha256,
        "licence": LICENCE,
        "attribution": ATTRIBUTION,
        "counts": {
            "examples": len(data.training),
            "by_origin": dict(sorted(Counter(e.origin for e in data.training).items())),
            "local_annotations": data.local_examples,
            "incidents": len({e.incident_id for e in data.examples}),
            "techniques": len(data.techniques),
            "techniques_with_examples": len({lab for e in data.training for lab in e.labels}),
            "techniques_with_real_examples": len({lab for e in data.examples for lab in e.labels}),
        },
    }
