"""The DISARM importer on invented fixture pages, and guards over the committed training data."""

from __future__ import annotations

import json
import shutil
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import shared
from disarm_tagger import corpus, disarm
from disarm_tagger.cli import app
from disarm_tagger.schema import Technique
from fixture_disarm import INCIDENTS, STIX_IDENTITY, STIX_MARKING, STIX_UNUSED, TECHNIQUES, write_checkout

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    return write_checkout(tmp_path / "disarm")


def _by_text(examples):
    return {e.text: e for e in examples}


def test_techniques_carry_hierarchy_tactic_and_stix(checkout):
    fw = disarm.read_framework(checkout)
    tech = {t.id: t for t in fw.techniques}
    deepfake = tech["T0086.002"]
    assert deepfake.name == "Develop AI-Generated Images (Deepfakes)"
    assert (deepfake.tactic_id, deepfake.tactic, deepfake.phase_id) == ("TA06", "Develop Content", "P02")
    assert deepfake.parent_id == "T0086" and tech["T0086"].parent_id is None
    assert deepfake.stix_id.startswith("attack-pattern--")
    assert [t.id for t in fw.tactics] == ["TA06", "TA07", "TA15", "TA16"]


def test_repeated_passage_merges_labels(checkout):
    examples, report = disarm.read_examples(checkout, disarm.read_framework(checkout).techniques)
    ex = _by_text(examples)["A bot on a messaging app made fake pictures of people."]
    assert ex.labels == ("T0086.002", "T0151.004")
    assert report.merged_duplicates == 1
    assert len(examples) == 4


def test_upper_case_tag_opener_as_closer_and_pipe_in_quote(checkout):
    examples, _ = disarm.read_examples(checkout, disarm.read_framework(checkout).techniques)
    ex = _by_text(examples)["Users paid | per picture with a card."]
    assert ex.labels == ("T0148.004",)
    assert "payments" not in ex.text


def test_markdown_italics_odd_id_and_repair_by_name(checkout):
    examples, report = disarm.read_examples(checkout, disarm.read_framework(checkout).techniques)
    ex = _by_text(examples)['"A reporter who never existed wrote for a lobby."']
    # T0097:109 is an odd form of T0097.109; T0097.003 is unknown but its written name is Journalist Persona
    assert ex.labels == ("T0097.102", "T0097.109")
    assert any("T0097:109 -> T0097.109" in r for r in report.repaired)
    assert any("T0097.003 -> T0097.102 (by name)" in r for r in report.repaired)


def test_unknown_id_with_unknown_name_is_dropped_and_reported(checkout):
    examples, report = disarm.read_examples(checkout, disarm.read_framework(checkout).techniques)
    ex = _by_text(examples)["Profile photos were made by a computer."]
    assert ex.labels == ("T0145.002",)
    assert report.dropped == ["I00902: T0999.999 (not in catalogue, name not matched)"]


def test_inline_annotation_inside_quote_becomes_labels_not_text(tmp_path):
    rows = [("T0086", "<i>Images were posted (T0086.002: Develop AI-Generated Images (Deepfakes)) daily.</i>")]
    root = write_checkout(tmp_path / "d", incidents=[("I00903", "Inline", rows)])
    examples, _ = disarm.read_examples(root, disarm.read_framework(root).techniques)
    assert [(e.text, e.labels) for e in examples] == [("Images were posted daily.", ("T0086", "T0086.002"))]


def test_import_writes_files_manifest_and_no_ids_in_text(checkout, tmp_path):
    out = tmp_path / "td"
    summary = corpus.import_disarm(checkout, out)
    assert (summary.examples, summary.incidents, summary.techniques) == (4, 2, 7)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["licence"] == "CC BY-SA 4.0" and "DISARM Foundation" in manifest["attribution"]
    for name, digest in manifest["sha256"].items():
        assert corpus.sha256_file(out / name) == digest
    for line in (out / "examples.jsonl").read_text().splitlines():
        assert not disarm.ID_PATTERN.search(json.loads(line)["text"])


def test_reimport_keeps_local_annotations(checkout, tmp_path):
    out = tmp_path / "td"
    out.mkdir()
    (out / "annotations.jsonl").write_text("keep me\n")
    corpus.import_disarm(checkout, out)
    assert (out / "annotations.jsonl").read_text() == "keep me\n"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_import_is_deterministic_and_order_independent(tmp_path_factory, seed):
    rng = random.Random(seed)
    shuffled = [(iid, name, rng.sample(rows, len(rows))) for iid, name, rows in INCIDENTS]
    rng.shuffle(shuffled)
    a = tmp_path_factory.mktemp("a")
    b = tmp_path_factory.mktemp("b")
    corpus.import_disarm(write_checkout(a / "src"), a / "out")
    corpus.import_disarm(write_checkout(b / "src", incidents=shuffled), b / "out")
    for name in ("examples.jsonl", "techniques.jsonl", "tactics.jsonl", "phases.jsonl", corpus.DISARM_STIX,
                 "manifest.json"):
        assert (a / "out" / name).read_bytes() == (b / "out" / name).read_bytes(), name


def test_not_a_checkout_is_a_clear_error(tmp_path):
    with pytest.raises(disarm.DisarmFormatError, match="generated_pages"):
        disarm.read_framework(tmp_path)


def test_cli_import_prints_summary(checkout, tmp_path):
    result = CliRunner().invoke(app, ["import-disarm", str(checkout), "--out", str(tmp_path / "td")])
    assert result.exit_code == 0, result.output
    assert "4 examples from 2 incidents" in result.output
    assert "ids repaired: 2; ids dropped: 1" in result.output


@pytest.mark.parametrize("layout", disarm.STIX_BUNDLES)
def test_import_reads_the_stix_bundle_in_either_layout(tmp_path, layout):
    out = tmp_path / "td"
    corpus.import_disarm(write_checkout(tmp_path / "src", stix_bundle=layout), out)
    techniques = [json.loads(line) for line in (out / "techniques.jsonl").read_text().splitlines()]
    assert all(t["stix_id"].startswith("attack-pattern--") for t in techniques)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stix_bundle"] == layout


def test_import_keeps_disarms_stix_objects_verbatim_for_the_exports(tmp_path):
    root = write_checkout(tmp_path / "src")
    corpus.import_disarm(root, tmp_path / "td")
    bundle = json.loads((root / disarm.STIX_BUNDLES[0]).read_text())["objects"]
    kept = corpus.read_stix_objects(tmp_path / "td" / corpus.DISARM_STIX)
    patterns = [o for o in bundle if o["type"] == "attack-pattern"]
    assert len(patterns) == len(TECHNIQUES)
    for obj in patterns + [STIX_IDENTITY, STIX_MARKING]:  # what the attack-patterns reference comes along
        assert kept[obj["id"]] == obj
    assert STIX_UNUSED["id"] not in kept and len(kept) == len(patterns) + 2
    manifest = json.loads((tmp_path / "td" / "manifest.json").read_text())
    assert manifest["sha256"][corpus.DISARM_STIX] == corpus.sha256_file(tmp_path / "td" / corpus.DISARM_STIX)


def test_checkout_without_stix_bundle_exits_4_naming_both_paths(tmp_path):
    root = write_checkout(tmp_path / "src", stix_bundle=None)
    result = CliRunner().invoke(app, ["import-disarm", str(root), "--out", str(tmp_path / "td")])
    assert result.exit_code == 4, result.output
    for rel in disarm.STIX_BUNDLES:
        assert str(root / rel) in result.output
    assert not (tmp_path / "td").exists()


def test_no_stix_imports_and_the_manifest_says_ids_are_not_disarms(tmp_path):
    root = write_checkout(tmp_path / "src", stix_bundle=None)
    (tmp_path / "td").mkdir()
    (tmp_path / "td" / corpus.DISARM_STIX).write_text("{}\n")  # left by an earlier import with the bundle
    result = CliRunner().invoke(app, ["import-disarm", str(root), "--out", str(tmp_path / "td"), "--no-stix"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "td" / corpus.DISARM_STIX).exists()
    manifest = json.loads((tmp_path / "td" / "manifest.json").read_text())
    assert manifest["stix_bundle"] == corpus.NO_STIX
    techniques = [json.loads(line) for line in (tmp_path / "td" / "techniques.jsonl").read_text().splitlines()]
    assert techniques and not any(t["stix_id"] for t in techniques)


def test_cli_import_bad_path_exits_with_data_error(tmp_path):
    result = CliRunner().invoke(app, ["import-disarm", str(tmp_path / "nope")])
    assert result.exit_code == 4
    assert "error:" in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------------- the committed training data


def test_committed_examples_never_contain_technique_ids():
    lines = (REPO / "training_data" / "examples.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) > 50
    for line in lines:
        ex = json.loads(line)
        assert not re.search(r"T\s?\d{4}", ex["text"]), ex["id"]
        assert ex["labels"], ex["id"]


def test_committed_manifest_matches_files():
    manifest = json.loads((REPO / "training_data" / "manifest.json").read_text())
    for name, digest in manifest["sha256"].items():
        assert corpus.sha256_file(REPO / "training_data" / name) == digest, name
    assert manifest["counts"]["techniques.jsonl"] == 391


def test_import_of_shared_snapshot_reproduces_committed_files(tmp_path):
    # authored.jsonl is the project's own text, not imported: the importer only describes it in the manifest
    for own in (corpus.AUTHORED, corpus.NAMED_EXAMPLES):
        shutil.copyfile(REPO / "training_data" / own, tmp_path / own)
    corpus.import_disarm(shared("disarm"), tmp_path)
    names = ("examples.jsonl", "techniques.jsonl", "tactics.jsonl", "phases.jsonl", corpus.DISARM_STIX, "manifest.json")
    for name in names:
        assert (tmp_path / name).read_bytes() == (REPO / "training_data" / name).read_bytes(), name


def test_named_examples_are_read_checked_and_counted(tmp_path):
    techniques = [Technique("T0001", "Chat Platform", "", "TA07", "Channels")]
    path = tmp_path / corpus.NAMED_EXAMPLES
    path.write_text('{"technique_id": "T0001", "names": ["Viber"]}\n{"technique_id": "T0001", "names": ["Zalo"]}\n')
    assert corpus.read_named_examples(path, techniques) == {"T0001": ("Viber", "Zalo")}
    for bad, why in [('{"technique_id": "T9999", "names": ["X"]}', "not in the technique catalogue"),
                     ('{"technique_id": "T0001", "names": "Viber"}', "list of non-empty strings"),
                     ('{"technique_id": "T0001", "names": [""]}', "list of non-empty strings"),
                     ('{"names": ["Viber"]}', "technique_id, names"), ("not json", "technique_id, names")]:
        path.write_text(bad + "\n")
        with pytest.raises(corpus.CorpusError, match=why):
            corpus.read_named_examples(path, techniques)


def test_committed_named_examples_load_with_the_corpus_and_shape_its_hash():
    data = corpus.load_corpus(REPO / "training_data", include_local=False)
    assert sum(map(len, data.named_examples.values())) == data.manifest["named_examples"]["names"] > 0
    without = corpus.load_corpus(REPO / "training_data", include_local=False, include_authored=False)
    assert without.named_examples == data.named_examples  # names are not passages: --no-authored keeps them
