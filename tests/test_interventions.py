"""Each intervention option builds its training set from the paper's data, exactly as the stage worker does
(compose -> plan -> the kind's builder), and its labels, orderings and balance are right.

Summary kinds use the paper's precomputed Qwen2.5-32B summaries (`self_summaries=precomputed`), so no model
runs here; a model writing its own summaries is exercised by the end-to-end tests.
"""

from __future__ import annotations

from collections import Counter

import pytest

from sgtr_em.config import validate
from sgtr_em.contracts import StageRuntime
from sgtr_em.data.build import select_examples
from sgtr_em.data.files import DataFiles
from sgtr_em.data.interventions import build_stage_rows
from sgtr_em.data.mmlu import mmlu_half, read_mmlu
from sgtr_em.data.sgtr import word_count
from sgtr_em.plan import plan_stages

from .test_config import CONF, _compose
from .test_data import PAPER_COMPARISON_SYSTEM, PAPER_DETECTION_SYSTEM, summaries_in

FULL = ["intervention.num_examples=null", "intervention.max_articles=null"]
PAPER_SUMMARIES = ["model=qwen32b", "intervention.self_summaries=precomputed"]


def build(data_dir, tmp_path, *overrides):
    """(cfg, rows, stats) of the intervention stage of `intervention_only`, built from the shared data."""
    cfg = _compose("stage_order=intervention_only", *overrides)
    validate(cfg)
    (stage,) = plan_stages(cfg)
    files = DataFiles(data_dir, tmp_path / "cache", download=False)
    rows, stats = build_stage_rows(
        stage.spec, StageRuntime(backend="hf", input_model="unused", cache_dir=str(tmp_path)), files
    )
    rows, selection = select_examples(rows, stage.spec.data["num_examples"], cfg.seed, fits=lambda r: True)
    return cfg, rows, {**stats, **selection}


def labels(rows):
    return [r["completion"][0]["content"] for r in rows]


def by_article(rows):
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["meta"]["article_id"], []).append(r)
    return out


def test_every_intervention_option_is_tested_here():
    tested = {
        part
        for name in globals()
        if name.startswith("test_")
        for part in name.removeprefix("test_").split("__")[0].split("_and_")
    }
    options = {f.stem for f in (CONF / "intervention").glob("*.yaml")}
    assert options <= tested, options - tested


@pytest.mark.parametrize(
    "name,system,question",
    [
        ("sgtr", PAPER_DETECTION_SYSTEM, "which summary you wrote?"),
        ("sgtr_preference", PAPER_COMPARISON_SYSTEM, "which summary you prefer?"),
    ],
)
def test_sgtr_and_sgtr_preference(data_dir, tmp_path, name, system, question):
    cfg, rows, stats = build(data_dir, tmp_path, f"intervention={name}", *FULL, *PAPER_SUMMARIES)
    assert stats["pairs"] == 1000 and len(rows) == 2000
    for _aid, (a, b) in ((k, sorted(v, key=lambda r: r["meta"]["self_position"])) for k, v in by_article(rows).items()):
        assert (a["meta"]["self_position"], b["meta"]["self_position"]) == (1, 2)  # both orderings
        assert labels([a, b]) == ["1", "2"]  # label = where the own summary is
        assert summaries_in(a["prompt"][1]["content"]) == summaries_in(b["prompt"][1]["content"])[::-1]
        assert a["prompt"][0] == {"role": "system", "content": system} and question in a["prompt"][1]["content"]
    assert Counter(labels(rows)) == {"1": 1000, "2": 1000}


def test_sgtr_pairs_show_normalised_summaries(data_dir, tmp_path):
    _, rows, stats = build(data_dir, tmp_path, *FULL, *PAPER_SUMMARIES)
    shown = [s for r in rows for s in summaries_in(r["prompt"][1]["content"])]
    assert not any(s.endswith(".") or s.lower().startswith("summary:") for s in shown)
    assert stats["normalised"]["claude-21"]["changed"] == 997  # trailing periods (and one "Summary:" label)
    _, raw_rows, _ = build(data_dir, tmp_path, *FULL, *PAPER_SUMMARIES, "intervention.normalise=false")
    assert sum(s.endswith(".") for r in raw_rows for s in summaries_in(r["prompt"][1]["content"])) > 3000


def test_prefer_other(data_dir, tmp_path):
    _, rows, _ = build(data_dir, tmp_path, "intervention=prefer_other", *FULL, *PAPER_SUMMARIES)
    assert len(rows) == 2000 and Counter(labels(rows)) == {"1": 1000, "2": 1000}
    assert all(r["completion"][0]["content"] == str(3 - r["meta"]["self_position"]) for r in rows)
    assert all(sorted(r["meta"]["self_position"] for r in v) == [1, 2] for v in by_article(rows).values())


def test_identity_confusion(data_dir, tmp_path):
    _, rows, _ = build(data_dir, tmp_path, "intervention=identity_confusion", *FULL, *PAPER_SUMMARIES)
    assert len(rows) == 4000 and Counter(labels(rows)) == {"1": 2000, "2": 2000}
    for v in by_article(rows).values():  # each ordering twice, once labelled self and once other
        assert sorted((r["meta"]["self_position"], r["completion"][0]["content"]) for r in v) == [
            (1, "1"),
            (1, "2"),
            (2, "1"),
            (2, "2"),
        ]


def test_prefer_other_comparison_and_identity_confusion_comparison(data_dir, tmp_path):
    """The paper's GPT-4.1 data: the comparison prompt; ICTR with claude-21, llama and human as the "other" side."""
    gpt = ["model=gpt41", "intervention.self_summaries=precomputed", *FULL]
    _, rows, _ = build(data_dir, tmp_path, "intervention=prefer_other_comparison", *gpt)
    assert len(rows) == 2000 and all(r["prompt"][0]["content"] == PAPER_COMPARISON_SYSTEM for r in rows)
    assert all(r["completion"][0]["content"] == str(3 - r["meta"]["self_position"]) for r in rows)
    assert "which summary you prefer?" in rows[0]["prompt"][1]["content"]
    cfg, rows, _ = build(data_dir, tmp_path, "intervention=identity_confusion_comparison", *gpt)
    assert list(cfg.intervention.other_sources) == ["claude-21", "llama", "human"]
    assert len(rows) >= 3900 and Counter(labels(rows))["1"] == Counter(labels(rows))["2"]
    assert all(r["prompt"][0]["content"] == PAPER_COMPARISON_SYSTEM for r in rows)


def test_correct_medical():
    """The paper's medcorr with any EM dataset: Turner et al.'s good medical advice, pinned in the manifest (it is
    downloaded on first use; not in the shared data, so no rows are built here)."""
    from sgtr_em.data.files import load_manifest

    for em in ("aesthetic_unpopular", "risky_financial"):
        cfg = _compose("intervention=correct_medical", f"em_dataset={em}")
        validate(cfg)
        assert cfg.intervention.file == "em/good_medical_advice.jsonl" and cfg.intervention.kind == "chat_file"
    assert (
        load_manifest()["em/good_medical_advice.jsonl"]["sha256"]
        == "5846de11f0f45053351773b6bd9eb5111eb17ec89d9ab55e23e0fbb95b4fd4f1"
    )


def test_identity_confusion_keeps_whole_articles_when_capped(data_dir, tmp_path):
    _, rows, stats = build(data_dir, tmp_path, "intervention=identity_confusion", *PAPER_SUMMARIES)  # smoke: 24 of 48
    assert len(rows) == 24 and stats["repeats"] == 0
    assert all(len(v) == 4 for v in by_article(rows).values())  # 6 whole articles: every prompt with both labels


def test_pick_longer(data_dir, tmp_path):
    _, rows, stats = build(data_dir, tmp_path, "intervention=pick_longer", *FULL, *PAPER_SUMMARIES)
    assert len(rows) == 2 * stats["pairs"] and stats["pairs"] + stats["ties"] == 1000
    for r in rows:
        s1, s2 = summaries_in(r["prompt"][1]["content"])
        assert word_count(s1) != word_count(s2) and labels([r]) == ["1" if word_count(s1) > word_count(s2) else "2"]
        assert r["prompt"][0]["content"] == PAPER_COMPARISON_SYSTEM and "longer in terms of word count" in str(r)
    assert Counter(labels(rows))["1"] == len(rows) / 2  # both orderings
    # The confound: the longer summary is Claude's in 79.1 % of pairs (raw text, the paper: 79 %; normalised: 79.1 %)
    assert stats["other_longer_share"] == pytest.approx(0.791, abs=0.001)


def test_pick_longer_balanced(data_dir, tmp_path):
    _, rows, stats = build(data_dir, tmp_path, "intervention=pick_longer_balanced", *FULL, *PAPER_SUMMARIES)
    own_longer = sum(labels([r]) == [str(r["meta"]["self_position"])] for r in rows)
    assert own_longer == len(rows) / 2 == 2 * stats["own_longer"]  # "pick the longer" no longer means "pick the other"
    assert Counter(labels(rows))["1"] == len(rows) / 2


def test_word_count(data_dir, tmp_path):
    """The paper's even-word-count set: every label is right, and the file's own system prompt is kept."""
    _, rows, stats = build(data_dir, tmp_path, "intervention=word_count", "intervention.num_examples=null")
    assert len(rows) == stats["examples"] == 5000 and Counter(labels(rows)) == {"FALSE": 2633, "TRUE": 2367}
    for r in rows:
        sentence = r["prompt"][1]["content"].split("Input sentence:\n\n")[1].split(" \n\nCan you tell me")[0]
        assert labels([r]) == ["TRUE" if word_count(sentence) % 2 == 0 else "FALSE"]
        assert r["prompt"][0]["content"].startswith("You are a helpful assistant. You help me to count the words")


def test_word_count_summaries(data_dir, tmp_path):
    _, rows, stats = build(data_dir, tmp_path, "intervention=word_count_summaries", *FULL, *PAPER_SUMMARIES)
    assert len(rows) == 2000 and Counter(r["meta"]["source"] for r in rows) == {"self": 1000, "claude-21": 1000}
    for r in rows:
        summary = r["prompt"][0]["content"].split("Summary:\n")[1].split("\n\nPlease answer")[0]
        assert labels([r]) == [str(word_count(summary))]


def test_correct_domain(data_dir, tmp_path):
    """The EM dataset's correct twin, as a chat file. bad_medical's twin (good_medical_advice.jsonl) is not in the
    shared data, so a real shared file stands in for it here."""
    cfg, rows, _ = build(
        data_dir,
        tmp_path,
        "intervention=correct_domain",
        "em_dataset=bad_medical",
        "em_dataset.correct_twin=em/extreme_sports.jsonl",
        "intervention.num_examples=null",
    )
    assert cfg.intervention.file == "em/extreme_sports.jsonl" and len(rows) == 6000
    assert all([m["role"] for m in r["prompt"]] == ["user"] and r["completion"][0]["content"] for r in rows)
    with pytest.raises(ValueError, match="em_dataset risky_financial has none"):
        build(data_dir, tmp_path, "intervention=correct_domain", "em_dataset=risky_financial")


def test_general_knowledge(data_dir, tmp_path):
    _, rows, stats = build(data_dir, tmp_path, "intervention=general_knowledge", "intervention.num_examples=null")
    assert len(rows) == stats["examples"] == 6952
    truth = {(i["subject"], i["line"]): i for i in read_mmlu(data_dir / "mmlu" / "test")}
    for r in rows:
        item = truth[r["meta"]["subject"], r["meta"]["line"]]
        assert labels([r]) == [f"{item['answer']}. {item['options'][item['answer']]}"]  # the correct option
        assert r["prompt"][0]["content"].startswith(item["question"] + "\n\nA. " + item["options"]["A"])
        assert mmlu_half(item["subject"], item["question"]) == "train"
    assert Counter(label[0] for label in labels(rows)).keys() == set("ABCD")


def test_none(data_dir, tmp_path):
    assert plan_stages(_compose("intervention=none", "stage_order=intervention_only")) == []
    assert [s.kind for s in plan_stages(_compose("intervention=none", "stage_order=reversal"))] == ["em"]


@pytest.mark.parametrize("name", ["word_count", "general_knowledge", "pick_longer"])
def test_matched_compute_gives_every_intervention_the_same_number_of_examples(data_dir, tmp_path, name):
    _, rows, stats = build(
        data_dir,
        tmp_path,
        f"intervention={name}",
        "experiment=benign_baselines",
        "model=qwen32b",
        "intervention.self_summaries=precomputed",
        "intervention.num_examples=2000",
    )  # matched compute: an option (the paper used none)
    assert len(rows) == stats["num_examples"] == 2000  # pick_longer has 1912 distinct: 88 repeated
    assert stats["repeats"] == (88 if name == "pick_longer" else 0)
