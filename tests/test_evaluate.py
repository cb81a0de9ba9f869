"""Evaluation harness: incident splits, no leakage, baselines, outputs, --test, CI gates (fake embedder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from disarm_tagger.metrics import parent_id
from disarm_tagger import baselines, evalrun, evaluate, persist, report, summaries
from disarm_tagger.cli import EXIT_GATE, EXIT_USAGE, app
from disarm_tagger.corpus import write_jsonl
from disarm_tagger import metrics
from disarm_tagger.schema import Example, Prediction, Tactic, Technique
from disarm_tagger.signals import SIGNALS
from disarm_tagger.tagger import DEFAULT_WEIGHTS, Tagger

TECHNIQUES = [
    Technique("T0001", "Create fake accounts", "Operators create inauthentic social media accounts.",
              "TA01", "Plan"),
    Technique("T0002", "Buy advertising", "Operators pay for adverts that promote the narrative.",
              "TA01", "Plan"),
    Technique("T0003", "Deepfake video", "Synthetic video of a public figure saying false things.",
              "TA02", "Make"),
    Technique("T0003.001", "Deepfake audio", "Synthetic voice recordings.", "TA02", "Make",
              parent_id="T0003"),
    Technique("T0005", "Hack and leak", "Stolen documents are published to embarrass a target.",
              "TA02", "Make"),
    Technique("T0006", "Bribe journalists", "Reporters are paid to publish friendly stories.",
              "TA03", "Spread"),
]  # fmt: skip
TACTICS = [Tactic("TA01", "Plan"), Tactic("TA02", "Make"), Tactic("TA03", "Spread")]


def ex(i: str, incident: str, text: str, *labels: str) -> Example:
    return Example(f"{incident}-{i}", incident_id=incident, incident_name=incident, text=text, labels=labels)


# T0001 is the most frequent label outside I05, T0005 the most frequent overall (3 of its 4 uses are in
# I05); T0006 occurs only in I05, T0002 only in I01, T0003.001 only in I04.
EXAMPLES = [
    ex("a", "I01", "The network created hundreds of fake accounts on social media.", "T0001"),
    ex("b", "I01", "They paid for adverts promoting the narrative to voters.", "T0002"),
    ex("a", "I02", "Fake accounts amplified the story with inauthentic profiles.", "T0001", "T0003"),
    ex("a", "I03", "A synthetic video of the minister was shared by fake accounts.", "T0003", "T0001"),
    ex("b", "I03", "Stolen emails were published on a leak site to embarrass the minister.", "T0005"),
    ex("a", "I04", "A deepfake voice recording of the mayor circulated.", "T0003.001"),
    ex("a", "I05", "Hackers leaked stolen documents from the ministry.", "T0005"),
    ex("b", "I05", "The leaked documents were published; journalists were paid to cover them.", "T0005",
       "T0006"),
    ex("c", "I05", "More stolen files appeared on the leak site.", "T0005"),
]


@pytest.fixture(scope="module")
def loio():
    from conftest import FakeEmbedder

    return evaluate.evaluate(EXAMPLES, TECHNIQUES, embedder=FakeEmbedder(), ablations=False, n_resamples=50)


def test_loio_one_fold_per_incident_and_folds_never_share_an_incident(loio):
    incidents_by_fold: dict[int, set[str]] = {}
    for p in loio.predictions:
        incidents_by_fold.setdefault(p.fold, set()).add(p.incident_id)
    assert len(incidents_by_fold) == 5 == loio.config["folds"]
    assert all(len(v) == 1 for v in incidents_by_fold.values())
    assert sorted(i for v in incidents_by_fold.values() for i in v) == ["I01", "I02", "I03", "I04", "I05"]
    for method, preds in evaluate.by_method(loio.predictions).items():  # every passage scored once per method
        assert sorted(p.example_id for p in preds) == sorted(e.id for e in EXAMPLES), method
    assert {p.method for p in loio.predictions} == {summaries.OURS, baselines.PRIOR, baselines.TFIDF}


def test_label_only_in_the_test_incident_is_unseen(loio):
    for p in loio.predictions:
        held_out = {lab for e in EXAMPLES if e.incident_id == p.incident_id for lab in e.labels}
        trained = {lab for e in EXAMPLES if e.incident_id != p.incident_id for lab in e.labels}
        assert p.seen == frozenset(trained), (p.method, p.example_id)
        assert ("T0006" in p.seen) == (p.incident_id != "I05")
        assert held_out - trained <= set(held_out) - p.seen
    # gold labels used by one incident only: T0002 (I01), T0003.001 (I04), T0006 (I05)
    for m in loio.methods.values():
        assert m["seen_unseen"]["unseen"]["support"] == 3
        assert m["seen_unseen"]["seen"]["support"] == sum(len(e.labels) for e in EXAMPLES) - 3


def test_prior_ranks_by_training_fold_frequency(loio):
    prior = [p for p in loio.predictions if p.method == baselines.PRIOR]
    i05 = [p for p in prior if p.incident_id == "I05"]
    # over all data T0005 (4 uses) beats T0001 (3); without I05 T0001 (3) beats T0005 (1)
    assert all(p.ranked[0] == "T0001" for p in i05)
    assert all(p.ranked.index("T0001") < p.ranked.index("T0005") for p in i05)
    rows, info = baselines.prior_method(EXAMPLES[:5], ["x"], TECHNIQUES)
    assert rows[0][0][:2] == ("T0001", "T0003") and info["m"] == 1 and rows[0][2] == ("T0001",)


def test_group_kfold_option():
    folds = evaluate.incident_folds(EXAMPLES, n_folds=2)
    assert len(folds) == 2
    groups = [{EXAMPLES[i].incident_id for i in f.test} for f in folds]
    assert not groups[0] & groups[1] and groups[0] | groups[1] == {"I01", "I02", "I03", "I04", "I05"}
    for f in folds:
        assert not {EXAMPLES[i].incident_id for i in f.train} & {EXAMPLES[i].incident_id for i in f.test}
    with pytest.raises(evaluate.EvalError):
        evaluate.incident_folds(EXAMPLES, n_folds=6)


def test_metrics_are_consistent_with_the_predictions(loio):
    ours = loio.methods[summaries.OURS]
    assert ours["n_documents"] == len(EXAMPLES)
    for key in ("p@1", "p@3", "p@5", "r@1", "r@3", "r@5", "r@10", "map", "mrr"):
        assert 0.0 <= ours["ranking"][key] <= 1.0
    assert ours["ranking"]["r@10"] == ours["r_at_k"][9]
    lo, hi = ours["intervals"]["map"]
    assert lo <= ours["ranking"]["map"] <= hi
    assert set(loio.margins) == {baselines.PRIOR, baselines.TFIDF}
    prior = loio.methods[baselines.PRIOR]["ranking"]["map"]
    expected = ours["ranking"]["map"] - prior
    assert loio.margins[baselines.PRIOR]["map"]["margin"] == pytest.approx(expected, abs=1e-9)
    assert sum(t["support"] for t in ours["per_tactic"]) == sum(len(e.labels) for e in EXAMPLES)
    mine = [p for p in loio.predictions if p.method == summaries.OURS]

    def parent_recall_at_10(p) -> float:  # labels rolled up to parents, each parent ranked at its first place
        gold, ranked = {parent_id(g) for g in p.gold}, list(dict.fromkeys(parent_id(r) for r in p.ranked))[:10]
        return len(gold & set(ranked)) / len(gold)

    expected_r10 = np.mean([parent_recall_at_10(p) for p in mine])
    assert ours["parent"]["ranking"]["r@10"] == pytest.approx(expected_r10)
    assert set(loio.headline()) == set(summaries.GATE_METRICS)  # every gate name can be checked


def test_outputs_written_and_deterministic(loio, tmp_path):
    kw = {"command": "disarm-tagger eval --data td --out ev", "provenance": {"training_data_sha256": "abc"},
          "date": "2000-01-01 00:00 UTC"}
    first = report.write(loio, tmp_path / "a", **kw)
    second = report.write(loio, tmp_path / "b", **kw)
    assert [p.name for p in first] == ["metrics.json", *report.PLOTS.values(), "report.md"]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
    md = (tmp_path / "a" / "report.md").read_text()
    assert "disarm-tagger eval --data td --out ev" in md and "## Ablations" not in md
    doc = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert doc["data"]["training_data_sha256"] == "abc" and doc["generated"]["command"].endswith("--out ev")
    assert set(doc["methods"]) == {summaries.OURS, baselines.PRIOR, baselines.TFIDF}


def test_ablation_removes_a_signal_and_keeps_it_out(fake_embedder):
    variants = evaluate.ablation_variants(fake_embedder, {})
    expected = [f"without {s}" if w else f"with {s} forced to 1" for s, w in DEFAULT_WEIGHTS.items()
                if s != "ridge_text"]  # off by default: its row switches it on instead
    assert list(variants)[1:len(expected) + 1] == expected
    assert evaluate.WITH_TEXT_RIDGE in variants
    with_it = evaluate.ablation_variants(fake_embedder, {"text_ridge": True})
    assert "without ridge_text" in with_it and evaluate.WITH_TEXT_RIDGE not in with_it
    assert set(SIGNALS) <= set(DEFAULT_WEIGHTS)
    _rows, info = variants["without knn"](EXAMPLES[:6], ["fake accounts"], TECHNIQUES)
    assert info["weights"]["knn"] == 0.0  # held out of tuning: the tuner may move the others, never this


def test_test_set_with_saved_model(fake_embedder, tmp_path):
    train = [e for e in EXAMPLES if e.incident_id != "I05"]
    persist.save(Tagger(fake_embedder).fit(train, TECHNIQUES), tmp_path / "model")
    model = persist.load(tmp_path / "model", embedder=fake_embedder)
    test = [e for e in EXAMPLES if e.incident_id == "I05"] + [EXAMPLES[0]]
    result = evaluate.evaluate_model(model, test, n_resamples=50)
    assert set(result.methods) == {summaries.OURS, baselines.PRIOR}
    su = result.methods[summaries.OURS]["seen_unseen"]
    assert su["unseen"]["support"] == 1 and su["seen"]["support"] == 4  # T0006 never in the model's data
    assert result.config["warnings"] and "I01" in result.config["warnings"][0]  # I01 was trained on
    prior = [p for p in result.predictions if p.method == baselines.PRIOR]
    assert prior[0].ranked[0] == "T0001"


@pytest.fixture()
def training_data(tmp_path, monkeypatch, fake_embedder):
    folder = tmp_path / "td"
    folder.mkdir()
    write_jsonl(folder / "techniques.jsonl", TECHNIQUES)
    write_jsonl(folder / "tactics.jsonl", TACTICS)
    write_jsonl(folder / "examples.jsonl", EXAMPLES)
    return folder


def _eval(tmp_path, folder, *extra):
    args = ["eval", "--data", str(folder), "--out", str(tmp_path / "out"), "--folds", "2", "--no-ablations",
            "--cache", str(tmp_path / "cache.npz"), "--backend", "fake", *extra]  # fmt: skip
    return CliRunner().invoke(app, args)


def test_cli_eval_writes_report_and_gates(training_data, tmp_path, fake_embedder):
    ok = _eval(tmp_path, training_data, "--fail-under", "map=0.0")
    assert ok.exit_code == 0, ok.output
    md = (tmp_path / "out" / "report.md").read_text()
    command = (f"disarm-tagger eval --data {training_data} --folds 2 --no-ablations --backend fake --out "
               f"{tmp_path / 'out'}")
    assert command in md
    assert "[2/2]" in ok.output and "ETA" in ok.output  # progress on stderr (mixed in by CliRunner)

    committed = json.loads((tmp_path / "out" / "metrics.json").read_text())
    committed["methods"]["ours"]["headline"]["p@1"] += 0.5
    (tmp_path / "committed.json").write_text(json.dumps(committed))
    gated = _eval(tmp_path, training_data, "--fail-under", "map=1.01", "--fail-under", "r@10=0.0",
                  "--compare", str(tmp_path / "committed.json"))  # fmt: skip
    assert gated.exit_code == EXIT_GATE
    assert "gate failed: map" in gated.output and "gate failed: r@10" not in gated.output
    assert "gate failed: p@1" in gated.output and "below the committed" in gated.output

    for key, value in (("data", {"training_data_sha256": "other"}), ("config", {"split": "other split"})):
        apples = json.loads((tmp_path / "out" / "metrics.json").read_text())
        apples[key] |= value
        (tmp_path / "apples.json").write_text(json.dumps(apples))
        refused = _eval(tmp_path, training_data, "--compare", str(tmp_path / "apples.json"))
        assert refused.exit_code == EXIT_GATE and "refusing to compare" in refused.output

    train = [e for e in EXAMPLES if e.incident_id != "I05"]
    persist.save(Tagger(fake_embedder).fit(train, TECHNIQUES), tmp_path / "model")
    write_jsonl(tmp_path / "test.jsonl", [e for e in EXAMPLES if e.incident_id == "I05"])
    args = ["eval", "--test", str(tmp_path / "test.jsonl"), "--model", str(tmp_path / "model"),
            "--out", str(tmp_path / "heldout"), "--fail-under", "unseen_r@10=0.0"]  # fmt: skip
    held = CliRunner().invoke(app, args)
    assert held.exit_code == 0, held.output
    doc = json.loads((tmp_path / "heldout" / "metrics.json").read_text())
    assert doc["config"]["mode"] == "held-out test set" and doc["data"]["test_file"].endswith("test.jsonl")
    assert "disarm-tagger eval --test" in (tmp_path / "heldout" / "report.md").read_text()

    bad = _eval(tmp_path, training_data, "--fail-under", "nonsense=1")
    assert bad.exit_code == EXIT_USAGE and "unknown metric" in bad.output
    assert _eval(tmp_path, training_data, "--model", str(tmp_path / "model")).exit_code == EXIT_USAGE


def test_gate_helpers():
    assert summaries.parse_gates(["map=0.3", "R@10=0.45"]) == {"map": 0.3, "r@10": 0.45}
    with pytest.raises(ValueError):
        summaries.parse_gates(["map"])
    assert summaries.check_gates({"map": 0.3}, {"map": 0.3}) == []
    missing = summaries.check_gates({"unseen_r@10": None}, {"unseen_r@10": 0.1})
    assert missing[0].startswith("unseen_r@10 was not measured")
    committed = {"methods": {"ours": {"headline": {"map": 0.40, "r@10": 0.5}}}}
    assert summaries.compare_headline({"map": 0.385, "r@10": 0.5}, committed, tolerance=0.02) == []
    assert len(summaries.compare_headline({"map": 0.37, "r@10": 0.5}, committed, tolerance=0.02)) == 1


def test_local_annotations_are_reported_as_their_own_slice(fake_embedder):
    from dataclasses import replace

    local = [replace(e, origin="local") for e in EXAMPLES if e.incident_id == "I05"]
    examples = [e for e in EXAMPLES if e.incident_id != "I05"] + local
    result = evaluate.evaluate(examples, TECHNIQUES, embedder=fake_embedder, n_folds=3, ablations=False,
                               n_resamples=20)  # fmt: skip
    slices = result.config["by_origin"]
    assert set(slices) == {"disarm", "local"}
    assert slices["local"]["n_examples"] == len(local)
    assert slices["disarm"]["n_examples"] == len(examples) - len(local)


def test_data_variants_change_only_the_authored_passages(fake_embedder):
    authored = tuple(Example(f"A-T000{t}-{k:02d}", f"AUTHORED-T000{t}", "a", f"text {t} {k}", (f"T000{t}",),
                             origin="authored") for t in (1, 2) for k in range(1, 6))  # fmt: skip
    assert [e.id for e in evaluate.per_technique_subset(authored, 2)] == [
        "A-T0001-01", "A-T0001-02", "A-T0002-01", "A-T0002-02"]
    variants = evaluate.ablation_variants(fake_embedder, {"authored": authored}, encoders={"other": fake_embedder})
    assert {"without authored passages", "authored: 1 per technique", "authored: 2 per technique",
            "authored: 4 per technique", "authored: 8 per technique", "prior over real passages only, forced to 1",
            "tuned for every gold label alike", "isotonic steps (no interpolation)", "without the hub cap",
            "encoder: other"} <= set(variants)  # fmt: skip
    assert "without authored passages" not in evaluate.ablation_variants(fake_embedder, {})


def test_named_examples_ablation_row_runs_without_them(fake_embedder):
    variants = evaluate.ablation_variants(fake_embedder, {"named_examples": {"T0001": ["Boosty"]}})
    assert evaluate.WITHOUT_NAMES in variants
    assert evaluate.WITHOUT_NAMES not in evaluate.ablation_variants(fake_embedder, {})
    params = evaluate.params_of(Tagger(None, named_examples={"T0001": ["Boosty", "Ko-fi"], "T0002": ["Wix"]}))
    assert params["named_examples"] == "3 names for 2 techniques"


def test_unseen_means_no_real_passage_in_the_fold_even_with_authored_ones(fake_embedder):
    authored = [Example(f"A-{t.id}-01", f"AUTHORED-{t.id}", "a", f"{t.name}. {t.summary}", (t.id,), origin="authored")
                for t in TECHNIQUES]  # fmt: skip
    report = evaluate.evaluate(EXAMPLES, TECHNIQUES, embedder=fake_embedder, authored=authored, ablations=False,
                               n_resamples=50)  # fmt: skip
    ours = [p for p in report.predictions if p.method == summaries.OURS]
    for p in ours:
        train_labels = {lab for e in EXAMPLES if e.incident_id != p.incident_id for lab in e.labels}
        assert p.seen == frozenset(train_labels)  # authored passages exist for every label, yet do not count
    unseen = report.methods[summaries.OURS]["seen_unseen"]["unseen"]["support"]
    assert unseen == sum(lab not in p.seen for p in ours for lab in p.gold) > 0
    assert report.config["n_authored"] == len(authored) and report.config["n_examples"] == len(EXAMPLES)


def test_calibration_and_hub_summaries():
    p = Prediction("ours", 0, "e", "I1", ("a",), ("a", "b", "c"), (0.9, 0.2, 0.1), ("a",), frozenset({"a"}))
    q = Prediction("ours", 0, "f", "I2", ("c",), ("a", "c", "b"), (0.8, 0.6, 0.1), ("a",), frozenset({"a", "b"}))
    cal = summaries.calibration([p, q])
    assert cal["ece_all"] == pytest.approx(
        metrics.expected_calibration_error([0.9, 0.2, 0.1, 0.8, 0.6, 0.1], [1, 0, 0, 0, 1, 0]))
    hub = {row["id"]: row for row in summaries.hubs([p.ranked, q.ranked], [p.gold, q.gold])}
    assert hub["a"]["share"] == 1.0 and hub["a"]["gold_rate"] == 0.5 and not hub["a"]["hub"]  # gold half the time
    tactics = {row["id"]: row for row in summaries.per_tactic([p, q], [Technique("a", "A", "", "TA1", "x"),
                                                                         Technique("b", "B", "", "TA1", "x"),
                                                                         Technique("c", "C", "", "TA2", "y")])}
    assert tactics["TA2"]["unseen_support"] == 1 and tactics["TA2"]["unseen_r@10"] == 1.0
    assert tactics["TA1"]["unseen_support"] == 0 and tactics["TA1"]["unseen_r@10"] is None


def test_long_document_rows_pool_gold_labels_by_size():
    seen = {"a", "b"}
    filler = list("CDEFGHIJK")  # never gold
    # (size, gold, seen, ranking, labels at the threshold); x is 11th: outside the top 10 of 1 passage, and
    # x, a are in a 2-passage text's top 20 only
    docs = [(1, {"a", "x"}, seen, ["a", *filler, "x"], ("a", "C")),
            (2, {"a", "b", "x"}, seen, ["b", *filler, "x", "a"], ())]
    one, two = evalrun.long_document_rows(docs)
    marks = ("marked", "p_at_threshold", "r_at_threshold")
    assert [one[k] for k in marks] == [2.0, 0.5, 0.5]  # a right of (a, C); a found of (a, x)
    assert [two[k] for k in marks] == [0.0, None, 0.0]
    assert (one["size"], one["documents"], one["gold"]) == (1, 1, 2.0)
    keys = ("r@10", "r@10_per_passage", "seen_r@10", "unseen_r@10")
    assert [one[k] for k in keys] == [0.5, 0.5, 1.0, 0.0]
    assert one["unseen_gold"] == 1 and one["map"] == pytest.approx((1 + 2 / 11) / 2)
    assert [two[k] for k in keys] == [1 / 3, 1.0, 0.5, 0.0]
    assert two["map"] == pytest.approx((1 + 2 / 11 + 3 / 12) / 3)


def test_long_documents_join_held_out_incidents_only(fake_embedder, monkeypatch):
    from types import SimpleNamespace

    fitted, scored = [], []
    fit, proba = Tagger.fit, Tagger.predict_proba

    def recording_fit(self, examples, techniques):
        fitted.append({e.incident_id for e in examples})
        return fit(self, examples, techniques)

    def recording_proba(self, texts):
        scored.append(list(texts))
        return proba(self, texts)

    monkeypatch.setattr(Tagger, "fit", recording_fit)
    monkeypatch.setattr(Tagger, "predict_proba", recording_proba)
    data = SimpleNamespace(examples=EXAMPLES, authored=[], techniques=TECHNIQUES, tagger_params={})
    steps = []
    out = evalrun.long_document_recall(data, fake_embedder, folds=2, per_fold=3,
                                       progress=lambda *step: steps.append(step))  # fmt: skip
    assert steps[-1] == (2, 2, "long documents, fold 2/2") and out["folds"] == 2
    incident_of = {e.text: e.incident_id for e in EXAMPLES}
    for train_incidents, texts in zip(fitted, scored):
        for text in texts:
            parts = [incident_of[p] for p in text.split("\n\n")]
            assert len(parts) == len(set(parts)) and not set(parts) & train_incidents
    sizes = {r["size"]: r["documents"] for r in out["rows"]}
    assert sizes[1] == len(EXAMPLES) and sizes[2] == 2 * 3 and 5 not in sizes  # no fold holds 5 incidents


def test_cli_eval_long_documents_section(training_data, tmp_path):
    result = _eval(tmp_path, training_data, "--long-documents")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Long documents (ours)" in md and "--long-documents" in md
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["config"]["long_documents"]["rows"]
