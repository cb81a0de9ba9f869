"""STIX 2.1, DISARM Navigator and MISP output, each round-tripped through its reference parser or schema."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from disarm_tagger import formats
from disarm_tagger.cli import app
from disarm_tagger.schema import Evidence, Suggestion, Tactic, Technique
from test_cli import ARTICLE, model_dir  # noqa: F401  (model_dir is a fixture)

WHEN = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
AP_STIX_ID = "attack-pattern--7b6c328e-b050-4d76-8e11-ff3b3fe7dea3"
TACTICS = {
    "TA06": Tactic("TA06", "Develop Content", shortname="develop-content"),
    "TA07": Tactic("TA07", "Select Channels and Affordances", shortname="select-channels-and-affordances"),
}
TECHNIQUES = {
    t.id: t
    for t in [
        Technique(
            "T0086",
            "Develop Image-Based Content",
            "Images.",
            "TA06",
            "Develop Content",
            stix_id="attack-pattern--0ec8c0d7-d1d0-4f1f-9f0c-2f3b6b0a7f10",
        ),
        Technique(
            "T0086.002",
            "Develop AI-Generated Images (Deepfakes)",
            "Deepfakes are AI-generated.",
            "TA06",
            "Develop Content",
            parent_id="T0086",
            stix_id=AP_STIX_ID,
        ),
        Technique(
            "T0151.004", "Chat Platform", "Messaging apps.", "TA07", "Select Channels and Affordances"
        ),  # no id
    ]
}


def _suggestion(rank: int, tid: str, score: float, evidence: tuple[Evidence, ...] = ()) -> Suggestion:
    t = TECHNIQUES[tid]
    return Suggestion(rank, tid, t.name, t.tactic_id, t.tactic, score, evidence)


SUGGESTIONS = [
    _suggestion(
        1, "T0086.002", 0.834, (Evidence("The videos were made with face-swapping software.", 10, 60),)
    ),
    _suggestion(2, "T0151.004", 0.41, (Evidence("A network of channels on a messaging app.", 0, 9),)),
    _suggestion(3, "T0086", 0.2),
]


# ------------------------------------------------------------------------------------------------ STIX
def test_stix_bundle_parses_with_stix2_and_links_report_patterns_and_notes():
    stix2 = pytest.importorskip("stix2")
    bundle = formats.stix_bundle(
        "https://example.org/a",
        SUGGESTIONS,
        TECHNIQUES,
        title="Deepfakes",
        created=WHEN,
        tactics_by_id=TACTICS,
    )
    parsed = stix2.parse(json.dumps(bundle), allow_custom=True)  # the JSON text, as a consumer gets it
    by_type: dict[str, list] = {}
    for obj in parsed.objects:
        by_type.setdefault(obj.type, []).append(obj)
    assert sorted(by_type) == ["attack-pattern", "identity", "marking-definition", "note", "report"]
    (report,) = by_type["report"]
    patterns = {ap.id: ap for ap in by_type["attack-pattern"]}
    assert report.report_types == ["threat-report"] and report.name == "Deepfakes"
    assert report.created_by_ref == formats.TOOL_IDENTITY["id"] and report.published == WHEN
    assert list(report.object_refs) == list(patterns) and len(patterns) == 3
    assert report.external_references[0].url == "https://example.org/a"
    deepfake = patterns[AP_STIX_ID]  # DISARM's own STIX id, from the catalogue
    assert deepfake.name == "Develop AI-Generated Images (Deepfakes)" and deepfake.x_mitre_is_subtechnique
    assert deepfake.external_references[0].source_name == "DISARM"
    assert deepfake.external_references[0].external_id == "T0086.002"
    assert [(k.kill_chain_name, k.phase_name) for k in deepfake.kill_chain_phases] == [
        ("disarm", "develop-content")
    ]
    generated = next(ap for ap in patterns.values() if ap.x_mitre_id == "T0151.004")
    assert generated.x_disarm_tagger_generated_id is True
    assert (
        generated.id
        == f"attack-pattern--{uuid.uuid5(formats.NAMESPACE, 'attack-pattern' + chr(31) + 'T0151.004')}"
    )
    assert generated.kill_chain_phases[0].phase_name == "select-channels-and-affordances"
    notes = {n.object_refs[1]: n for n in by_type["note"]}
    assert {n.object_refs[0] for n in notes.values()} == {report.id}
    assert notes[AP_STIX_ID].confidence == 83 and notes[AP_STIX_ID].x_disarm_tagger_score == 0.834
    assert "face-swapping software" in notes[AP_STIX_ID].content
    assert notes[AP_STIX_ID].x_disarm_tagger_evidence[0]["start"] == 10
    assert all(0 <= n.confidence <= 100 and isinstance(n.confidence, int) for n in notes.values())


def test_stix_ids_are_deterministic():
    one = formats.stix_bundle("a.md", SUGGESTIONS, TECHNIQUES, created=WHEN)
    assert one == formats.stix_bundle("a.md", SUGGESTIONS, TECHNIQUES, created=WHEN)
    later = formats.stix_bundle(
        "a.md", SUGGESTIONS, TECHNIQUES, created=datetime(2026, 1, 1, tzinfo=timezone.utc)
    )
    ids = lambda b: [o["id"] for o in b["objects"]]  # noqa: E731
    assert ids(one) == ids(later)  # a re-run is a new version of the same report and notes
    other = formats.stix_bundle("b.md", SUGGESTIONS, TECHNIQUES, created=WHEN)
    report_id = lambda b: next(o["id"] for o in b["objects"] if o["type"] == "report")  # noqa: E731
    assert report_id(one) != report_id(other)
    assert one["objects"][3]["created"] == "2025-03-01T12:00:00.000Z"


def test_stix_bundle_without_suggestions_is_still_valid():
    stix2 = pytest.importorskip("stix2")
    bundle = stix2.parse(formats.stix_bundle("a.md", [], TECHNIQUES, created=WHEN), allow_custom=True)
    (report,) = [o for o in bundle.objects if o.type == "report"]
    assert report.object_refs == [formats.TOOL_IDENTITY["id"]]


def test_batch_records_become_one_merged_bundle():
    stix2 = pytest.importorskip("stix2")
    from disarm_tagger import render

    records = [{"id": "d1", "suggestions": [render.suggestion_record(s) for s in SUGGESTIONS]},
               {"id": "d2", "suggestions": [render.suggestion_record(SUGGESTIONS[0])]}]  # fmt: skip
    per_doc = [[formats.suggestion_from_record(s) for s in r["suggestions"]] for r in records]
    assert per_doc[0] == SUGGESTIONS  # the JSON contract round-trips to the same suggestions
    bundles = [formats.stix_bundle(r["id"], sugg, TECHNIQUES, created=WHEN)
               for r, sugg in zip(records, per_doc, strict=True)]
    merged = stix2.parse(formats.merge_bundles(bundles, key="backlog.jsonl"), allow_custom=True)
    types = [o.type for o in merged.objects]
    assert types.count("report") == 2 and types.count("attack-pattern") == 3 and types.count("identity") == 2
    assert len({o.id for o in merged.objects}) == len(merged.objects)


# ------------------------------------------------------------------------------------------- Navigator
NAVIGATOR_LAYER_SCHEMA = {  # the parts of ATT&CK Navigator layer format 4.x that the Navigator checks
    "type": "object",
    "required": ["name", "versions", "domain", "techniques"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "domain": {"type": "string", "minLength": 1},
        "versions": {
            "type": "object",
            "required": ["layer"],
            "properties": {
                "layer": {"type": "string", "pattern": r"^4\.\d+$"},
                "navigator": {"type": "string"},
                "attack": {"type": "string"},
            },
        },
        "sorting": {"type": "integer", "enum": [0, 1, 2, 3]},
        "hideDisabled": {"type": "boolean"},
        "layout": {
            "type": "object",
            "properties": {
                "layout": {"enum": ["side", "flat", "mini"]},
                "showID": {"type": "boolean"},
                "showName": {"type": "boolean"},
                "expandedSubtechniques": {"enum": ["none", "annotated", "all"]},
            },
        },
        "filters": {
            "type": "object",
            "properties": {"platforms": {"type": "array", "items": {"type": "string"}}},
        },
        "techniques": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["techniqueID", "tactic", "score", "comment"],
                "properties": {
                    "techniqueID": {"type": "string", "pattern": r"^T\d{4}(\.\d{3})?$"},
                    "tactic": {"type": "string", "pattern": r"^[a-z0-9-]+$"},
                    "score": {"type": "number"},
                    "comment": {"type": "string"},
                    "color": {"type": "string"},
                    "enabled": {"type": "boolean"},
                    "showSubtechniques": {"type": "boolean"},
                    "metadata": {"type": "array", "items": {"type": "object", "required": ["name", "value"]}},
                    "links": {"type": "array"},
                },
            },
        },
        "gradient": {
            "type": "object",
            "required": ["colors", "minValue", "maxValue"],
            "properties": {
                "colors": {
                    "type": "array",
                    "minItems": 2,
                    "items": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
                },
                "minValue": {"type": "number"},
                "maxValue": {"type": "number"},
            },
        },
        "legendItems": {"type": "array", "items": {"type": "object", "required": ["label", "color"]}},
        "metadata": {"type": "array", "items": {"type": "object", "required": ["name", "value"]}},
    },
}


def _check_layer(layer: dict) -> dict:
    jsonschema = pytest.importorskip("jsonschema")
    again = json.loads(json.dumps(layer))
    assert again == layer
    jsonschema.Draft7Validator(NAVIGATOR_LAYER_SCHEMA).validate(again)
    return again


def test_navigator_layer_for_one_article():
    layer = _check_layer(
        formats.navigator_layer(SUGGESTIONS, TECHNIQUES, TACTICS, name="a.md", description="d")
    )
    assert layer["domain"] == "DISARM" and layer["versions"]["layer"] == "4.5"
    rows = {t["techniqueID"]: t for t in layer["techniques"]}
    assert rows["T0086.002"]["score"] == 83 and rows["T0086.002"]["tactic"] == "develop-content"
    assert "face-swapping software" in rows["T0086.002"]["comment"]
    assert rows["T0086"]["showSubtechniques"] and not rows["T0086.002"]["showSubtechniques"]
    assert layer["gradient"]["maxValue"] == 100


def test_navigator_layer_for_a_batch_counts_documents():
    docs = [("d1", SUGGESTIONS[:2]), ("d2", SUGGESTIONS[:1]), ("d3", SUGGESTIONS), ("d4", [])]
    counts = formats.count_documents(docs, min_score=0.3, examples=2)
    assert counts["T0086.002"] == formats.TechniqueCount(3, ("d1", "d2"), 0.834)
    assert counts["T0151.004"].documents == 2 and "T0086" not in counts  # 0.2 is below min_score
    layer = _check_layer(formats.navigator_layer(counts, TECHNIQUES, {}, name="backlog"))  # tactics by slug
    rows = {t["techniqueID"]: t for t in layer["techniques"]}
    assert rows["T0086.002"]["score"] == 3 and layer["gradient"]["maxValue"] == 3
    assert rows["T0086.002"]["comment"].startswith("suggested for 3 document(s), e.g. d1, d2, ...")
    assert rows["T0151.004"]["tactic"] == "select-channels-and-affordances"


# ------------------------------------------------------------------------------------------------ MISP
def test_misp_tags_follow_the_disarm_galaxy():
    tags = formats.misp_tags(SUGGESTIONS[:1])
    assert tags == [
        {
            "name": 'misp-galaxy:disarm-techniques="Develop AI-Generated Images (Deepfakes)"',
            "galaxy_type": "disarm-techniques",
            "value": "Develop AI-Generated Images (Deepfakes)",
            "uuid": str(uuid.uuid5(uuid.UUID("9d6bd9d2-2cd3-4900-b61a-06cd64df3996"), "T0086.002")),
            "technique_id": "T0086.002",
            "score": 0.834,
        }
    ]


def test_misp_event_matches_the_misp_schema_and_loads_in_pymisp():
    pymisp = pytest.importorskip("pymisp")
    jsonschema = pytest.importorskip("jsonschema")
    twin = Suggestion(4, "T0151.005", "Chat Platform", "TA07", "x", 0.1)  # DISARM repeats a few names
    event = formats.misp_event(
        "https://example.org/a", [*SUGGESTIONS, twin], TECHNIQUES, title="Deepfakes", created=WHEN
    )
    schema = json.loads((Path(pymisp.__file__).parent / "data" / "schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(event, schema)  # MISP's strict event format
    loaded = pymisp.MISPEvent()
    loaded.from_dict(**json.loads(json.dumps(event)))
    assert loaded.info == "DISARM techniques suggested for Deepfakes" and str(loaded.date) == "2025-03-01"
    tags = [t.name for t in loaded.tags]
    assert tags[0] == 'workflow:state="draft"' and len(tags) == len(set(tags)) == 4
    assert 'misp-galaxy:disarm-techniques="Develop AI-Generated Images (Deepfakes)"' in tags
    evidence = [a for a in loaded.attributes if a.type == "text"]
    assert [a.tags[0].name for a in evidence][0] == tags[1] and "score 0.83" in evidence[0].comment
    assert any(a.type == "link" and a.value == "https://example.org/a" for a in loaded.attributes)
    (galaxy,) = loaded.galaxies
    assert galaxy.type == "disarm-techniques"
    assert galaxy.clusters[0].uuid == str(uuid.uuid5(formats.MISP_NAMESPACE, "T0086.002"))
    assert event == formats.misp_event(
        "https://example.org/a", [*SUGGESTIONS, twin], TECHNIQUES, title="Deepfakes", created=WHEN
    )


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
    if fmt == "stix":
        stix2 = pytest.importorskip("stix2")
        bundle = stix2.parse(doc, allow_custom=True)
        assert sum(o.type == "attack-pattern" for o in bundle.objects) == 3
    elif fmt == "navigator":
        assert {t["techniqueID"] for t in _check_layer(doc)["techniques"][:2]} == {"T0001", "T0004"}
    else:
        assert len(doc["Event"]["Galaxy"][0]["GalaxyCluster"]) == 3
    again = CliRunner().invoke(
        app, ["suggest", "-", "--model", str(model_dir), "-f", fmt, "--top-k", "3"], input=ARTICLE
    )
    assert again.exit_code == 0 and json.loads(again.stdout)
