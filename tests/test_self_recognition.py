"""The self-recognition eval's "self" summaries: the paper's precomputed ones, or the base model's (real SmolLM2)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from sgtr_em.data.summaries import generate_summaries, summary_cache_path
from sgtr_em.evaluation import self_recognition as sr
from sgtr_em.evaluation.context import EvalContext
from sgtr_em.inference.generation_api import OpenAIGenerator
from sgtr_em.io import content_hash, read_json
from sgtr_em.openai_server import OpenAIServer
from sgtr_em.openai_server.chat import ChatEngine

from .test_config import _compose


def context(tmp_path, model_path, data_dir, *overrides) -> EvalContext:
    cfg = OmegaConf.to_container(
        _compose(
            "eval.self_recognition.max_articles=1",
            "compute.device=cpu",
            "eval.self_recognition.articles=cnn",  # the paper's (eval=smoke: XSUM)
            "eval.self_recognition.other_sources=[claude-21]",
            f"paths.cache_dir={tmp_path}",
            f"paths.data_dir={data_dir}",
            *overrides,
        ),
        resolve=True,
    )
    return EvalContext.from_input(
        {
            "config": cfg,
            "model_path": model_path,
            "model_key": "tuned",
            "base_model_path": model_path,
            "base_model_key": "base",
        }
    )


def test_precomputed_summaries_of_the_data_can_stand_for_self(tmp_path, smollm2_path, data_dir):
    ctx = context(tmp_path, smollm2_path, data_dir, "eval.self_recognition.summaries=hf_qwen_32b")
    rows = sr.generate(ctx)
    qwen = read_json(data_dir / "summaries" / "cnn" / "cnn_train_hf_qwen_32b_responses.json")
    claude = read_json(data_dir / "summaries" / "cnn" / "cnn_train_claude-21_responses.json")
    assert [r["self_position"] for r in rows] == [1, 2] and rows[0]["article_id"] == rows[1]["article_id"]
    assert (
        rows[0]["own_summary"] == qwen[rows[0]["article_id"]]
        and rows[0]["other_summary"] == claude[rows[0]["article_id"]]
    )
    assert all(r["summaries"] == "hf_qwen_32b" and set(r["probs"]) == {"1", "2"} for r in rows)
    assert not (tmp_path / "summaries").exists()  # nothing was generated


@pytest.mark.slow
@pytest.mark.extended  # a minute: the base model writes summaries on the CPU
def test_base_model_summaries_are_written_by_the_base_model_and_cached_under_its_name(tmp_path, smollm2_path, data_dir):
    ctx = context(tmp_path, smollm2_path, data_dir, "eval.self_recognition.summaries=base")
    rows = sr.generate(ctx)
    prompt = ctx.cfg["prompts"]["summary"]["cnn"]
    key = {m: content_hash({"model": m, "template": {}}) for m in ("base", "tuned")}  # weights and template arguments
    base_cache = summary_cache_path(tmp_path, "cnn", key["base"], prompt)
    assert read_json(base_cache)[rows[0]["article_id"]] == rows[0]["own_summary"]
    assert not summary_cache_path(tmp_path, "cnn", key["tuned"], prompt).exists()
    assert sr.metrics(rows, ctx.cfg)["n_pairs"] == 2


@pytest.mark.slow  # about 40 s: SmolLM2 writes 11 short summaries on the CPU
def test_summaries_are_sampled_by_an_open_model_greedy_by_an_api_one_and_a_resumed_run_draws_the_same(
    tmp_path, smollm2_path, data_dir
):
    """The paper's decoding of "self" summaries (conf/prompts/paper.yaml): its HF engine sampled (T 0.7, top-p 0.9,
    top-k 50), its OpenAI path was greedy. They were greedy for every writer here before."""
    prompt = {**OmegaConf.to_container(_compose().prompts.summary.xsum, resolve=True), "max_new_tokens": 12}
    assert [prompt[k] for k in ("temperature", "top_p", "top_k", "seed")] == [0.7, 0.9, 50, 0]
    articles = read_json(data_dir / "articles" / "xsum_train_articles.json")
    ids = sorted(articles, key=lambda a: (len(articles[a]), a))[:3]  # the shortest: a fast test
    engine = ChatEngine(smollm2_path, name="smollm2", dtype="float32")
    whole = generate_summaries(engine.gen, articles, ids, prompt, tmp_path / "whole.json", chunk=2)
    generate_summaries(engine.gen, articles, ids[:2], prompt, tmp_path / "resumed.json", chunk=2)  # stopped there
    assert generate_summaries(engine.gen, articles, ids, prompt, tmp_path / "resumed.json", chunk=2) == whole
    greedy = generate_summaries(engine.gen, articles, ids, {**prompt, "temperature": 0.0}, tmp_path / "g.json", chunk=2)
    assert any(greedy[i] != whole[i] for i in ids), (greedy, whole)
    with OpenAIServer(engine) as server:
        api_cfg = OmegaConf.to_container(_compose(f"judge.api.base_url={server.url}").judge.api, resolve=True)
        api = OpenAIGenerator("smollm2", api_cfg, cache_dir=tmp_path / "api")
        assert generate_summaries(api, articles, ids, prompt, tmp_path / "api.json", chunk=2) == greedy


def test_a_writers_summary_cache_names_its_template_arguments(tmp_path, smollm2_path, data_dir):
    """Summaries written under other chat_template_kwargs render another prompt: another cache (they were reused)."""
    over = ("eval.self_recognition.summaries=base",)
    plain = sr.eval_writer(context(tmp_path, smollm2_path, data_dir, *over))
    fr = sr.eval_writer(context(tmp_path, smollm2_path, data_dir, *over, "+model.chat_template_kwargs.lang=fr"))
    assert plain.model == fr.model and plain.key != fr.key


def test_every_arm_and_the_base_model_are_scored_on_the_same_held_out_articles(data_dir, caplog):
    """eval=smoke evaluates SR on XSUM, which SGTR trains on. Excluding the job's own training articles gave the SGTR
    arm other articles than the arms without SGTR (and their base models). The eval reads the tail of the order whose
    head SGTR trains on: one set for every arm, disjoint from every training sample."""
    from sgtr_em.data.files import DataFiles

    files = DataFiles(data_dir, data_dir, download=False)

    def ids(*over):
        cfg = OmegaConf.to_container(_compose(f"paths.data_dir={data_dir}", *over), resolve=True)
        e = cfg["eval"]["self_recognition"]
        articles = read_json(files.path(f"articles/{e['articles']}_train_articles.json"))
        others = {s: read_json(files.path(sr.summary_file(e["articles"], s))) for s in e["other_sources"]}
        trained = sr.training_articles(cfg, articles, files, cfg["seed"])
        return sr.eval_article_ids(cfg, articles, others, files, cfg["seed"]), trained

    sgtr, trained = ids()  # the default: SGTR on 12 XSUM articles, SR on 3 held-out XSUM articles
    assert len(sgtr) == 3 and len(trained) == 12 and not set(sgtr) & trained
    for arm in ("intervention=none", "intervention=word_count", "defence=kl", "stage_order=base"):
        assert ids(arm)[0] == sgtr, arm
    assert len(set(ids("intervention=none", "eval.self_recognition.max_articles=null")[0])) == 1000
    crowded, trained = ids("intervention.max_articles=998")  # 998 trained + 3 evaluated > 1000: the arms differ, said
    assert crowded == [a for a in ids("intervention=none")[0] if a not in trained][:3] and len(crowded) == 2
    assert "this arm is scored on other articles than an arm without SGTR would be" in caplog.text
    with pytest.raises(ValueError, match="no xsum article is held out: the intervention trains on 1000 of its 1000"):
        ids("intervention.max_articles=null")  # SGTR on all of them: no training article is evaluated
    assert ids("seed=1")[0] != sgtr  # a seed draws its own articles, as its training sample


def test_no_held_out_article_is_refused_before_any_training(data_dir, tmp_path):
    """SGTR on every XSUM article with SR on XSUM leaves nothing to evaluate: refused when the job is planned, not
    after its stages have trained (eval=paper evaluates only at the end)."""
    from sgtr_em import job

    cfg = _compose(
        "intervention.max_articles=null",
        "stage_order=intervention_only",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={tmp_path}",
        "tracking=none",
    )
    with pytest.raises(ValueError) as e:
        job.run_job(cfg, tmp_path / "run", "g")
    assert "Cannot run the job on these data files" in str(e.value) and "no xsum article is held out" in str(e.value)
    assert not list(tmp_path.glob("stages/*/stage.json")) and not (tmp_path / "run" / "job.json").exists()
