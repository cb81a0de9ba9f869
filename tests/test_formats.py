"""STIX 2.1, DISARM Navigator and MISP exports, each checked against its consumer's own data and rules:
DISARM's STIX bundle (DISARM.json: attack-pattern objects, kill-chain cells, sub-technique relationships),
ATT&CK Navigator layer format 4.4 (what DISARM Navigator 4.8.2 reads), the official MISP DISARM galaxy
(tag-name resolution, as MISP does it) and PyMISP (its event schema and ``load_file``)."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pymisp
import pytest
import stix2
from typer.testing import CliRunner

from conftest import shared
from disarm_tagger import corpus, formats, persist, render
from disarm_tagger.cli import app
from disarm_tagger.formats import misp
from disarm_tagger.schema import Evidence, Suggestion, Technique
from test_cli import ARTICLE, model_dir  # noqa: F401  (model_dir is a fixture)

REPO = Path(__file__).resolve().parents[1]
WHEN = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
CATALOGUE = {t.id: t for t in corpus.read_jsonl(REPO / "training_data" / "techniques.jsonl", Technique)}


def _suggest(ids, catalogue=CATALOGUE) -> list[Suggestion]:
    """One suggestion per id, in order, with a score and an evidence sentence."""
    out = []
    for rank, tid in enumerate(ids, 1):
        t = catalogue[tid]
        evidence = (Evidence(f"Sentence about {t.name}.", 10 * rank, 10 * rank + 9),)
        out.append(Suggestion(rank, tid, t.name, t.tactic_id, t.tactic, round(1 - rank / (len(ids) + 1), 4), evidence))
    return out


@pytest.fixture(scope="module")
def disarm_json() -> dict[str, dict]:
    """DISARM's own STIX bundle, by id: the data every STIX and Navigator check is made against."""
    bundle = json.loads(shared("disarm/generated_files/DISARM_STIX/DISARM.json").read_text(encoding="utf-8"))
    return {o["id"]: o for o in bundle["objects"]}


def _external_id(obj: dict) -> str:
    return obj["external_references"][0]["external_id"]


def _patterns(disarm_json) -> dict[str, dict]:
    """technique id -> DISARM's attack-pattern."""
    return {_external_id(o): o for o in disarm_json.values() if o["type"] == "attack-pattern"}


# ------------------------------------------------------------------------------------------------ STIX
def test_stix_bundle_references_disarms_attack_patterns_by_id(disarm_json):
    suggestions = _suggest(CATALOGUE)
    bundle = formats.stix_bundle("https://example.org/a", suggestions, CATALOGUE, title="All of DISARM")
    parsed = stix2.parse(json.dumps(bundle), allow_custom=True)  # the JSON text, as a consumer gets it
    assert {o.type for o in parsed.objects} == {"identity", "report", "note"}  # no copy of DISARM's objects
    (report,) = [o for o in parsed.objects if o.type == "report"]
    assert report.external_references[0].url == "https://example.org/a"
    assert len(report.object_refs) == len(CATALOGUE) == 391
    for ref in report.object_refs:
        assert disarm_json[ref]["type"] == "attack-pattern"  # every ref is one of DISARM's objects
    notes = [o for o in parsed.objects if o.type == "note"]
    assert len(notes) == len(suggestions)
    for note, s in zip(notes, suggestions, strict=True):
        report_ref, pattern_ref = note.object_refs
        assert report_ref == report.id and _external_id(disarm_json[pattern_ref]) == s.technique_id
        assert note.confidence == round(s.score * 100) and note.x_disarm_tagger_score == s.score
        assert s.evidence[0].text in note.content


def test_stix_include_disarm_emits_disarms_objects_verbatim(disarm_json):
    model_copy = REPO / "models" / "default" / persist.DISARM_STIX
    assert model_copy.read_bytes() == (REPO / "training_data" / corpus.DISARM_STIX).read_bytes()
    objects = corpus.read_stix_objects(model_copy)  # what suggest/batch --include-disarm read
    bundle = formats.stix_bundle("a.md", _suggest(CATALOGUE), CATALOGUE, disarm_objects=objects)
    stix2.parse(json.dumps(bundle), allow_custom=True)
    ours = {o["id"] for o in bundle["objects"] if o["type"] in ("report", "note") or o == formats.TOOL_IDENTITY}
    theirs = [o for o in bundle["objects"] if o["id"] not in ours]
    assert len(theirs) == 391 + 2  # every attack-pattern, DISARM's identity and its marking-definition
    for obj in theirs:
        assert json.loads(json.dumps(obj)) == disarm_json[obj["id"]]  # DISARM's object, exactly
    ids = {o["id"] for o in bundle["objects"]}
    for obj in bundle["objects"]:  # and whatever an object references travels with it
        assert {obj.get("created_by_ref", formats.TOOL_IDENTITY["id"]), *obj.get("object_marking_refs", [])} <= ids


def test_stix_reexport_is_the_same_version(disarm_json):
    suggestions = _suggest(["T0086.002", "T0151.004"])
    first = formats.stix_bundle("a.md", suggestions, CATALOGUE)
    time.sleep(0.01)  # a clock-based timestamp (millisecond precision) would differ now
    assert formats.stix_bundle("a.md", suggestions, CATALOGUE) == first  # re-import is a no-op
    other = formats.stix_bundle("b.md", suggestions, CATALOGUE)
    report = lambda b: next(o for o in b["objects"] if o["type"] == "report")  # noqa: E731
    assert report(first)["id"] != report(other)["id"]
    pinned = formats.stix_bundle("a.md", suggestions, CATALOGUE, created=WHEN)  # a caller keeping state pins it
    assert report(pinned)["id"] == report(first)["id"]
    assert {o["created"] for o in pinned["objects"] if o["type"] in ("report", "note")} == {
        "2025-03-01T12:00:00.000Z"}


def test_no_stix_catalogue_exports_say_their_ids_are_not_disarms(disarm_json):
    no_stix = {tid: dataclasses.replace(t, stix_id="") for tid, t in CATALOGUE.items()}  # as --no-stix imports
    ids = ["T0086.002", "T0151.004", "T0002"]
    bundle = formats.stix_bundle("a.md", _suggest(ids, no_stix), no_stix)
    parsed = stix2.parse(json.dumps(bundle), allow_custom=True)
    patterns = [o for o in parsed.objects if o.type == "attack-pattern"]
    assert [p.x_mitre_id for p in patterns] == ids
    cells = _patterns(disarm_json)
    for p in patterns:
        assert p.id not in disarm_json and p.x_disarm_tagger_generated_id is True
        assert p.created_by_ref == formats.TOOL_IDENTITY["id"] and "Not DISARM's STIX object" in p.description
        disarm_phase = cells[p.x_mitre_id]["kill_chain_phases"][0]["phase_name"]
        assert [(k.kill_chain_name, k.phase_name) for k in p.kill_chain_phases] == [("disarm", disarm_phase)]
    (report,) = [o for o in parsed.objects if o.type == "report"]
    assert "Not DISARM's ids: T0086.002, T0151.004, T0002" in report.description
    (warning,) = formats.export_warnings("stix", ids, no_stix)
    assert "T0086.002, T0151.004, T0002" in warning and "--no-stix" in warning
    assert formats.export_warnings("stix", ids, CATALOGUE) == []


def test_include_disarm_refuses_an_id_missing_from_disarms_objects():
    with pytest.raises(ValueError, match="not among DISARM's STIX objects"):
        formats.stix_bundle("a.md", _suggest(["T0002"]), CATALOGUE, disarm_objects={})


def test_batch_records_become_one_merged_bundle(tmp_path):
    suggestions = _suggest(["T0086.002", "T0151.004", "T0086"])
    records = [{"id": "d1", "suggestions": [render.suggestion_record(s) for s in suggestions]},
               {"id": "d2", "suggestions": [render.suggestion_record(suggestions[0])]}, {"id": "d3", "error": "x"}]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [formats.suggestion_from_record(r) for r in records[0]["suggestions"]] == suggestions
    objects = corpus.read_stix_objects(REPO / "training_data" / corpus.DISARM_STIX)
    result = formats.export_batch(path, "stix", CATALOGUE, name="backlog.jsonl", disarm_objects=objects)
    merged = stix2.parse(result.text, allow_custom=True)
    types = [o.type for o in merged.objects]
    assert types.count("report") == 2 and types.count("attack-pattern") == 3 and types.count("note") == 4
    assert len({o.id for o in merged.objects}) == len(merged.objects) and result.warnings == []


# ------------------------------------------------------------------------------------------- Navigator
COLOR = {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"}
DIVIDER = {"type": "object", "required": ["divider"], "additionalProperties": False,
           "properties": {"divider": {"type": "boolean"}}}  # fmt: skip
METADATA = {"type": "array", "items": {"oneOf": [DIVIDER, {
    "type": "object", "required": ["name", "value"], "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "value": {"type": "string"}}}]}}  # fmt: skip
LINKS = {"type": "array", "items": {"oneOf": [DIVIDER, {
    "type": "object", "required": ["label", "url"], "additionalProperties": False,
    "properties": {"label": {"type": "string"}, "url": {"type": "string"}}}]}}  # fmt: skip
LAYER_4_4 = {  # ATT&CK Navigator layers/LAYERFORMATv4_4.md: every property 4.4 defines, and nothing else
    "type": "object", "required": ["name", "versions", "domain"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        # Navigator 4.8.2 compares this with its own "4.4" and warns on every upload when they differ
        "versions": {"type": "object", "required": ["layer", "navigator"], "additionalProperties": False,
                     "properties": {"layer": {"const": "4.4"}, "navigator": {"type": "string"},
                                    "attack": {"type": "string"}}},
        "domain": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "filters": {"type": "object", "additionalProperties": False,
                    "properties": {"platforms": {"type": "array", "items": {"type": "string"}}}},
        "sorting": {"enum": [0, 1, 2, 3]},
        "layout": {"type": "object", "additionalProperties": False, "properties": {  # no expandedSubtechniques (4.5)
            "layout": {"enum": ["side", "flat", "mini"]},
            "aggregateFunction": {"enum": ["average", "min", "max", "sum"]},
            "showID": {"type": "boolean"}, "showName": {"type": "boolean"},
            "showAggregateScores": {"type": "boolean"}, "countUnscored": {"type": "boolean"}}},
        "hideDisabled": {"type": "boolean"},
        "techniques": {"type": "array", "items": {
            "type": "object", "required": ["techniqueID"], "additionalProperties": False, "properties": {
                "techniqueID": {"type": "string"}, "tactic": {"type": "string"}, "comment": {"type": "string"},
                "enabled": {"type": "boolean"}, "score": {"type": "number"}, "color": {"type": "string"},
                "metadata": METADATA, "links": LINKS, "showSubtechniques": {"type": "boolean"}}}},
        "gradient": {"type": "object", "required": ["colors", "minValue", "maxValue"], "additionalProperties": False,
                     "properties": {"colors": {"type": "array", "minItems": 2, "items": COLOR},
                                    "minValue": {"type": "number"}, "maxValue": {"type": "number"}}},
        "legendItems": {"type": "array", "items": {"type": "object", "required": ["label", "color"],
                        "additionalProperties": False, "properties": {"label": {"type": "string"}, "color": COLOR}}},
        "showTacticRowBackground": {"type": "boolean"},
        "tacticRowBackground": COLOR,
        "selectTechniquesAcrossTactics": {"type": "boolean"},
        "selectSubtechniquesWithParent": {"type": "boolean"},
        "metadata": METADATA,
        "links": LINKS,
    },
}  # fmt: skip


def _check_layer(layer: dict, disarm_json: dict[str, dict]) -> dict:
    """The layer as the DISARM Navigator gets it: layer format 4.4, domain DISARM (the live DISARM Navigator's
    identifier), platforms DISARM's techniques have, and every row a (technique, tactic) cell of DISARM.json."""
    again = json.loads(json.dumps(layer))
    jsonschema.Draft7Validator(LAYER_4_4).validate(again)
    assert again["domain"] == "DISARM"
    patterns = _patterns(disarm_json)
    assert set(again["filters"]["platforms"]) <= {p for o in patterns.values() for p in o["x_mitre_platforms"]}
    for row in again["techniques"]:
        phases = patterns[row["techniqueID"]]["kill_chain_phases"]
        assert row["tactic"] in {k["phase_name"] for k in phases}, row
    return again


def _parents(disarm_json) -> dict[str, str]:
    """sub-technique id -> parent id, from DISARM.json's subtechnique-of relationships."""
    return {_external_id(disarm_json[r["source_ref"]]): _external_id(disarm_json[r["target_ref"]])
            for r in disarm_json.values() if r["type"] == "relationship" and r["relationship_type"] == "subtechnique-of"}


def _assert_subtechniques_visible(layer: dict, disarm_json) -> None:
    """Navigator 4.8.2 draws a sub-technique only under a parent row (same tactic) with showSubtechniques."""
    rows = {(r["techniqueID"], r["tactic"]): r for r in layer["techniques"]}
    parents = _parents(disarm_json)
    scored_subs = [(tid, tactic) for (tid, tactic), r in rows.items() if "score" in r and tid in parents]
    assert scored_subs
    for tid, tactic in scored_subs:
        assert rows[(parents[tid], tactic)]["showSubtechniques"] is True, tid


def test_navigator_layer_shows_every_scored_subtechnique(disarm_json):
    subs = [tid for tid in CATALOGUE if tid in _parents(disarm_json)]
    layer = _check_layer(formats.navigator_layer(_suggest(subs), CATALOGUE, name="subs", description="d"),
                         disarm_json)  # fmt: skip
    _assert_subtechniques_visible(layer, disarm_json)
    added = [r for r in layer["techniques"] if r["techniqueID"] not in subs]
    assert added and all("score" not in r for r in added)  # the parents were not suggested: no score
    assert len(layer["techniques"]) == len(subs) + len({_parents(disarm_json)[s] for s in subs})


def test_navigator_layer_of_all_of_disarm(disarm_json):
    suggestions = _suggest(CATALOGUE)
    layer = _check_layer(formats.navigator_layer(suggestions, CATALOGUE, name="all"), disarm_json)
    _assert_subtechniques_visible(layer, disarm_json)
    rows = {r["techniqueID"]: r for r in layer["techniques"]}
    assert len(rows) == len(layer["techniques"]) == 391  # a parent suggested itself keeps its one row
    top = suggestions[0]
    assert rows[top.technique_id]["score"] == round(top.score * 100) and top.evidence[0].text in rows[
        top.technique_id]["comment"]


def test_navigator_layer_for_a_batch_counts_documents(disarm_json, tmp_path):
    sugg = _suggest(["T0086.002", "T0151.004", "T0086"])
    sugg[2] = dataclasses.replace(sugg[2], score=0.2)
    docs = [("d1", sugg[:2]), ("d2", sugg[:1]), ("d3", sugg), ("d4", [])]
    counts = formats.count_documents(docs, min_score=0.3, examples=2)
    assert counts["T0086.002"] == formats.TechniqueCount(3, ("d1", "d2"), sugg[0].score)
    assert counts["T0151.004"].documents == 2 and "T0086" not in counts  # 0.2 is below min_score
    layer = _check_layer(formats.navigator_layer(counts, CATALOGUE, name="backlog"), disarm_json)
    _assert_subtechniques_visible(layer, disarm_json)
    rows = {r["techniqueID"]: r for r in layer["techniques"]}
    assert rows["T0086.002"]["score"] == 3 and layer["gradient"]["maxValue"] == 3
    assert rows["T0086.002"]["comment"].startswith("suggested for 3 document(s), e.g. d1, d2, ...")


# ------------------------------------------------------------------------------------------------ MISP
@pytest.fixture(scope="module")
def galaxy() -> tuple[dict, list[dict]]:
    """The official MISP DISARM techniques galaxy and its clusters (../shared/misp-galaxy snapshot)."""
    root = shared("misp-galaxy")
    return (json.loads((root / "galaxies" / "disarm-techniques.json").read_text(encoding="utf-8")),
            json.loads((root / "clusters" / "disarm-techniques.json").read_text(encoding="utf-8"))["values"])


def _resolve(tag: str, galaxy) -> list[dict]:
    """The clusters MISP attaches for a tag: those whose tag name ('misp-galaxy:<galaxy type>="<value>"',
    MISP's GalaxyCluster.tag_name) is exactly the tag."""
    meta, clusters = galaxy
    return [c for c in clusters if f'misp-galaxy:{meta["type"]}="{c["value"]}"' == tag]


def test_pinned_galaxy_table_is_derived_from_the_official_galaxy(galaxy):
    root = shared("misp-galaxy")
    snapshot = json.loads((root / "clusters" / "disarm-techniques.json").read_text(encoding="utf-8"))
    pinned = misp.pinned_galaxy()
    derived = misp.galaxy_table(snapshot)
    assert (pinned["galaxy_type"], pinned["clusters"]) == (derived["galaxy_type"], derived["clusters"]), (
        "regenerate src/disarm_tagger/data/misp_galaxy_disarm_techniques.json with misp.galaxy_table")
    assert pinned["galaxy_type"] == galaxy[0]["type"]
    assert pinned["commit"] in (root / "README.md").read_text(encoding="utf-8")


def test_every_misp_tag_attaches_its_own_cluster_or_none(galaxy):
    ids = list(CATALOGUE)
    event = formats.misp_event("a.md", _suggest(ids), created=WHEN)["Event"]
    texts = [a for a in event["Attribute"] if a["type"] == "text"]
    assert [a["comment"].split()[0] for a in texts] == ids
    resolved, fallback = [], []
    for tid, attribute in zip(ids, texts, strict=True):
        (tag,) = [t["name"] for t in attribute["Tag"]]
        clusters = _resolve(tag, galaxy)
        if clusters:  # a galaxy tag: it must land on this technique's cluster and no other
            assert [c["meta"]["external_id"] for c in clusters] == [tid], (tid, tag)
            assert clusters[0]["uuid"] == formats.misp_cluster_uuid(tid)
            resolved.append(tid)
        else:
            assert not tag.startswith("misp-galaxy:") and tag == f'disarm:technique="{tid}"', tag
            fallback.append(tid)
    in_galaxy = {c["meta"]["external_id"] for c in galaxy[1]}
    assert resolved == [tid for tid in ids if tid in in_galaxy]  # every technique with a cluster gets it
    renamed = [t for t in ids if t in in_galaxy and CATALOGUE[t].name not in {c["value"] for c in galaxy[1]}]
    assert renamed and set(renamed) <= set(resolved)  # resolved by id through the galaxy's own value
    by_value = {c["value"]: c["meta"]["external_id"] for c in galaxy[1]}
    name_clashes = [t for t in ids if by_value.get(CATALOGUE[t].name, t) != t]  # our name is another id's cluster
    assert name_clashes and set(name_clashes) <= set(fallback)
    event_tags = [t["name"] for t in event["Tag"]]
    assert event_tags[0] == 'workflow:state="draft"' and set(event_tags[1:]) == {
        t["name"] for a in texts for t in a["Tag"]}
    (warning,) = formats.export_warnings("misp", ids, CATALOGUE)
    assert warning.startswith(f"{len(fallback)} technique(s) have no cluster") and ", ".join(fallback) in warning


def _schema() -> dict:
    return json.loads((Path(pymisp.__file__).parent / "data" / "schema.json").read_text(encoding="utf-8"))


def test_misp_event_round_trips_through_pymisp_load_file(tmp_path):
    suggestions = _suggest(["T0086.002", "T0143.002", "T0002"])
    event = formats.misp_event("https://example.org/a", suggestions, title="Deepfakes", created=WHEN)
    assert "Galaxy" not in event["Event"]  # MISP attaches clusters from the tags
    jsonschema.validate(event, _schema())  # MISP's event format, as PyMISP ships it
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    loaded = pymisp.MISPEvent()
    loaded.load_file(path)
    assert loaded.uuid == event["Event"]["uuid"] and loaded.info == "DISARM techniques suggested for Deepfakes"
    assert str(loaded.date) == "2025-03-01" and loaded.galaxies == []
    assert [t.name for t in loaded.tags] == ['workflow:state="draft"', *(formats.misp_tag(s.technique_id)
                                                                          for s in suggestions)]  # fmt: skip
    evidence = [a for a in loaded.attributes if a.type == "text"]
    assert [a.tags[0].name for a in evidence] == [formats.misp_tag(s.technique_id) for s in suggestions]
    assert "score" in evidence[0].comment and "no cluster in MISP's DISARM galaxy" in evidence[1].comment
    assert any(a.type == "link" and a.value == "https://example.org/a" for a in loaded.attributes)
    assert loaded.to_dict()["Tag"] == event["Event"]["Tag"]


def test_batch_misp_export_is_a_misp_response(tmp_path):
    records = [{"id": f"d{i}", "source": f"d{i}.txt",
                "suggestions": [render.suggestion_record(s) for s in _suggest(["T0002", "T0143.002"][: i + 1])]}
               for i in range(2)]  # fmt: skip
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = formats.export_batch(path, "misp", CATALOGUE, name="backlog")
    doc = json.loads(result.text)
    assert list(doc) == ["response"] and len(doc["response"]) == 2
    for item in doc["response"]:
        jsonschema.validate(item, _schema())
        pymisp.MISPEvent().load(item)
    (tmp_path / "events.json").write_text(result.text)
    first = pymisp.MISPEvent()
    first.load_file(tmp_path / "events.json")  # PyMISP reads the first event of a response
    assert first.info == "DISARM techniques suggested for d0.txt"
    assert len(result.warnings) == 1 and "T0143.002" in result.warnings[0]


# ------------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("fmt", ["stix", "navigator", "misp"])
def test_suggest_interchange_formats(model_dir, tmp_path, fmt):  # noqa: F811
    article = tmp_path / "a.txt"
    article.write_text(ARTICLE)
    result = CliRunner().invoke(
        app, ["suggest", str(article), "--model", str(model_dir), "-f", fmt, "--top-k", "3"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    if fmt == "stix":  # the test model's techniques have no DISARM STIX id
        bundle = stix2.parse(doc, allow_custom=True)
        assert sum(o.type == "attack-pattern" and o.x_disarm_tagger_generated_id for o in bundle.objects) == 3
        assert "have no DISARM STIX id" in result.stderr
    elif fmt == "navigator":
        assert doc["versions"] == {"layer": "4.4", "navigator": "4.8.2"}
        assert {t["techniqueID"] for t in doc["techniques"][:2]} == {"T0001", "T0004"}
    else:
        tags = [t["name"] for t in doc["Event"]["Tag"]]
        assert len(tags) == 4 and "Galaxy" not in doc["Event"]
        assert 'disarm:technique="T0001"' in tags  # DISARM has no T0001: no cluster, and the CLI says so
        assert re.search(r"technique\(s\) have no cluster in MISP's DISARM galaxy.*T0001", result.stderr)
    again = CliRunner().invoke(
        app, ["suggest", "-", "--model", str(model_dir), "-f", fmt, "--top-k", "3"], input=ARTICLE
    )
    assert again.exit_code == 0 and json.loads(again.stdout)


def test_include_disarm_needs_the_model_folders_copy(model_dir, tmp_path):  # noqa: F811
    article = tmp_path / "a.txt"
    article.write_text(ARTICLE)
    result = CliRunner().invoke(app, ["suggest", str(article), "--model", str(model_dir), "-f", "stix",
                                      "--include-disarm"])  # fmt: skip
    assert result.exit_code == 3 and "has no disarm_stix.jsonl" in result.output
