"""The authored coverage set: the committed file obeys every rule, and every rule catches what it is for."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import FakeEmbedder
from typer.testing import CliRunner

from disarm_tagger import corpus, coverage
from disarm_tagger.cli import EXIT_DATA, app
from disarm_tagger.schema import Example, Technique

REPO = Path(__file__).resolve().parents[1]
TRAINING_DATA = REPO / "training_data"
CATALOGUE = [
    Technique("T0001", "Flood Information Space", "Flooding feeds with inauthentic content.", "TA17", "Exposure"),
    Technique("T0002", "Chat Platform", "Messaging apps.", "TA07", "Channels"),
]
GOOD = {  # one technique each, written by hand: varied wording, no names or ids
    "T0001": ["Thousands of near-identical posts swamped the tag within an hour of the verdict.",
              "Overnight, the county's hashtag was buried under a deluge of copied slogans.",
              "Researchers counted 40,000 posts in two days, most from accounts created that week.",
              "A wave of spam drowned out local reporting on the flood relief effort."],
    "T0002": ["Voice notes forwarded between family groups on WhatsApp claimed the polls would close early.",
              "The rumour travelled through Telegram groups used by market traders in Kano.",
              "Screenshots of a Signal conversation were passed off as leaked police orders.",
              "Members of a Viber community received the same forged letter within minutes."],
}


def authored(texts: dict[str, list[str]], extra_labels: dict[int, tuple[str, ...]] | None = None) -> list[Example]:
    out = []
    for tid, items in texts.items():
        for n, text in enumerate(items, 1):
            out.append(Example(f"A-{tid}-{n:02d}", f"AUTHORED-{tid}", "a", text, (tid,), origin="authored"))
    for i, labels in (extra_labels or {}).items():
        out[i] = Example(out[i].id, out[i].incident_id, "a", out[i].text, labels, origin="authored")
    return out


def test_the_committed_authored_set_obeys_every_text_rule_and_the_manifest_describes_it():
    report = corpus.check_authored(TRAINING_DATA)
    assert report.problems == []
    assert min(report.per_technique.values()) >= coverage.MIN_PASSAGES
    assert len(report.per_technique) == 391
    records = [json.loads(line) for line in (TRAINING_DATA / corpus.AUTHORED).read_text().splitlines()]
    assert all(r["written_for"] == r["id"].split("-")[1] and r["origin"] == "authored" for r in records)
    manifest = json.loads((TRAINING_DATA / "manifest.json").read_text())["authored"]
    assert manifest["passages"] == len(records) and sum(t["passages"] for t in manifest["per_tactic"].values()) \
        == len(records)


@pytest.mark.slow
def test_the_committed_authored_set_is_far_from_disarm_passages_and_from_itself(real_embedder):
    report = corpus.check_authored(TRAINING_DATA, embedder=real_embedder)
    assert report.problems == []
    assert report.max_cosine_to_disarm["q100"] < coverage.NEAR_DISARM
    assert report.max_cosine_between_authored < coverage.NEAR_IDENTICAL


def test_a_clean_set_passes():
    assert coverage.check(authored(GOOD), CATALOGUE).problems == []


@pytest.mark.parametrize(("change", "expected"), [
    (lambda t: t["T0001"].__setitem__(0, "T0002 was used: posts swamped the tag."), "a technique id"),
    (lambda t: t["T0001"].__setitem__(0, "The aim was to flood information space with posts."), "names technique T0001"),
    (lambda t: t["T0002"].__setitem__(1, "Rumours moved from one chat platform to the next."), "names technique T0002"),
    (lambda t: t["T0002"].pop(), "T0002: 3 passages written for it"),
    (lambda t: t["T0002"].__setitem__(3, t["T0001"][0].upper()), "the same text as"),
])  # fmt: skip
def test_each_text_rule_catches_its_violation(change, expected):
    texts = {k: list(v) for k, v in GOOD.items()}
    change(texts)
    problems = coverage.check(authored(texts), CATALOGUE).problems
    assert any(expected in p for p in problems), problems


def test_labels_must_be_known_and_include_the_technique_written_for():
    problems = coverage.check(authored(GOOD, {0: ("T0001", "T9999"), 5: ("T0001",)}), CATALOGUE).problems
    assert any("not in the catalogue: T9999" in p for p in problems)
    assert any("A-T0002-02: the technique it was written for is not among its labels" in p for p in problems)


def test_the_social_media_phrase_is_allowed():
    texts = {k: list(v) for k, v in GOOD.items()}
    texts["T0001"][0] = "Social media feeds were swamped with copies of one slogan."
    catalogue = CATALOGUE + [Technique("T0003", "Social Media", "Platforms.", "TA07", "Channels")]
    assert [p for p in coverage.check(authored(texts), catalogue).problems if "names" in p] == []


def _templated(rng: random.Random, template: str, n: int = 10) -> list[str]:
    slots = {"actor": ["pro-government accounts", "a PR firm", "state media", "far-right groups", "scammers",
                       "the network", "bots"], "place": ["Kenya", "Brazil", "Poland", "India", "Mexico"],
             "act": ["flooded the hashtag", "posted identical claims", "bought ads", "created fake pages",
                     "spread rumours"], "topic": ["the election", "vaccines", "migration", "the war", "a minister"]}
    return [template.format(**{k: rng.choice(v) for k, v in slots.items()}) for _ in range(n)]


@pytest.mark.parametrize("template", [
    "In {place}, {actor} {act} about {topic} for weeks, researchers at a university in {place} said in a report.",
    "{actor} {act} about {topic} in {place}.",
    "According to a report, {actor} in {place} {act} to target voters ahead of {topic}.",
])  # fmt: skip
def test_templated_passages_are_caught_by_their_shared_skeleton(template):
    texts = _templated(random.Random(0), template)
    assert coverage.shared_skeletons(texts)
    problems = coverage.check(authored({"T0001": texts, "T0002": GOOD["T0002"]}), CATALOGUE).problems
    assert any("share a sentence skeleton" in p for p in problems)


def test_similarity_rules_catch_a_near_copy_of_disarm_and_of_another_passage():
    texts = {k: list(v) for k, v in GOOD.items()}
    disarm = "Investigators found the bot network posted the same praise for the governor every morning."
    texts["T0001"][3] = disarm.replace("found the", "found that the")  # a near-copy of an evaluation passage
    texts["T0002"][3] = texts["T0002"][0].replace("between", "between the")  # one word apart from another
    report = coverage.check(authored(texts), CATALOGUE, embedder=FakeEmbedder(), disarm_texts=[disarm])
    assert any("A-T0001-04: cosine" in p and "DISARM" in p for p in report.problems)
    assert any("A-T0002-01 and A-T0002-04 are near-identical" in p for p in report.problems)
    assert report.max_cosine_to_disarm["q100"] >= coverage.NEAR_DISARM


def _training_data(tmp_path):
    """A training_data folder with the test catalogue, no DISARM passages and the good authored set."""
    folder = tmp_path / "td"
    folder.mkdir()
    corpus.write_jsonl(folder / corpus.TECHNIQUES, CATALOGUE)
    corpus.write_jsonl(folder / corpus.EXAMPLES, [])
    corpus.write_jsonl(folder / corpus.AUTHORED, authored(GOOD))
    return folder


def test_cli_check_authored_reports_and_exits_4_on_a_problem(tmp_path):
    folder = _training_data(tmp_path)
    (folder / "manifest.json").write_text(json.dumps({"authored": corpus.authored_manifest(folder, CATALOGUE)}))
    ok = CliRunner().invoke(app, ["check-authored", "--data", str(folder), "--no-similarity"])
    assert ok.exit_code == 0, ok.output
    assert "8 authored passages for 2 of 2 techniques" in ok.stdout and "every rule holds" in ok.stdout
    corpus.write_jsonl(folder / corpus.AUTHORED, authored(GOOD)[:-1])
    bad = CliRunner().invoke(app, ["check-authored", "--data", str(folder), "--no-similarity"])
    assert bad.exit_code == EXIT_DATA
    assert "T0002: 3 passages written for it" in bad.stderr and "'authored' section does not describe" in bad.stderr


def test_label_density_compares_passages_of_one_length_and_is_not_a_rule(tmp_path):
    long_real = Example("I1-1", "I1", "i", "word " * 120, ("T0001", "T0002"))
    density = coverage.label_density(authored(GOOD, {0: ("T0001", "T0002")}), [long_real])
    short, *_, longest = density
    assert (short["words"], short["authored"], short["authored_labels"], short["real"]) == ("0-59", 8, 1.12, 0)
    row = next(r for r in density if r["words"] == "100-149")
    assert (row["authored"], row["real"], row["real_labels"]) == (0, 1, 2.0)
    assert longest["words"] == f"{coverage.LENGTH_BINS[-1]}+"
    assert sum(r["authored"] for r in density) == 8
    folder = _training_data(tmp_path)
    corpus.write_jsonl(folder / corpus.EXAMPLES, [long_real])
    (folder / "manifest.json").write_text(json.dumps({"authored": corpus.authored_manifest(folder, CATALOGUE)}))
    out = CliRunner().invoke(app, ["check-authored", "--data", str(folder), "--no-similarity"])
    assert out.exit_code == 0, out.output  # a description only: a long real passage is not a problem
    assert "0-59: 1.00 (n=8) | none; 60-99: none | none; 100-149: none | 2.00 (n=1)" in out.stdout, out.output


def test_check_authored_also_holds_the_manifest_to_the_named_examples(tmp_path):
    folder = _training_data(tmp_path)
    (folder / corpus.NAMED_EXAMPLES).write_text('{"technique_id": "T0001", "names": ["Viber"]}\n')
    manifest = {"authored": corpus.authored_manifest(folder, CATALOGUE),
                "named_examples": corpus.named_examples_manifest(folder, CATALOGUE)}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert corpus.check_authored(folder).problems == []
    (folder / corpus.NAMED_EXAMPLES).write_text('{"technique_id": "T0001", "names": ["Viber", "Zalo"]}\n')
    assert any("'named_examples' section does not describe" in p for p in corpus.check_authored(folder).problems)
