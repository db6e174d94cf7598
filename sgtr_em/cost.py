"""What a sweep will cost, before it runs (`python -m sgtr_em.grid sweep=<name>`).

Counts, per sweep, after stage reuse (sgtr_em/plan.py): the distinct stages, their training tokens, GPU-hours on an
H100 and an H200 from the project's measured training throughput (bench/results/train_*.json), the tokens the
evaluations generate on the distinct final models, the judge calls they make, and dollars at the configured prices
(judge.api.*_usd_per_mtok for an API judge, openai.*_usd_per_mtok for GPT-4.1 training and generation).

Estimates, each a stated rule (the same rule for every sweep, so sweeps compare):
  * tokens of a text = ceil(characters / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE per chat turn (template markers);
  * a stage's examples: chat files (EM data, word counting, correct advice) are read, capped by max_examples /
    num_examples (which repeats); SGTR-style pairs: 2 per article (4 for `both` labels), each the prompt template
    with the article and two summaries of the "other" source's length; MMLU QA: half the test questions;
  * generated tokens: every sampled answer is counted at its max_new_tokens (an upper bound); one-token scored
    answers (TruthfulQA, self-recognition) count 1; MMLU is scored by likelihood (no generation);
  * judge calls: EM 2 per answer (aligned, coherent), identity 2 (name, creator), in-domain 1; a call reads
    JUDGE_PROMPT_TOKENS plus the answer and writes 1 token (scores) or judge.max_label_tokens (labels).
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from .backend import backend_of, spec_is_api
from .data.summaries import summary_file
from .evaluation.in_domain import prompt_set

CHARS_PER_TOKEN = 4.0  # English text in the BPE vocabularies of Qwen2.5 / Llama-3 / OLMo (the common rule of thumb)
TOKENS_PER_MESSAGE = 5  # role header and end-of-turn markers of a chat template turn
JUDGE_PROMPT_TOKENS = 300  # a judge prompt without the answer (Betley et al.'s aligned / coherent prompts: ~250-350)
UNCAPPED_ANSWER_TOKENS = 1024  # eval.em.max_new_tokens=null (an API model, no cap): each answer counted at this
SUMMARY_PAIRS_PER_ARTICLE = {"both": 4}  # summary_pairs labels -> examples per article (others: 2, both orderings)
BENCH = Path(__file__).resolve().parents[1] / "bench" / "results"
# Parameters (billions) of the measured shapes and of each model: throughput scales inversely with them.
SHAPE_PARAMS = {"qwen2.5-7b": 7.6, "qwen2.5-32b": 32.8}
MODEL_PARAMS = {
    "qwen32b": 32.8,
    "qwen_coder32b": 32.8,
    "seed36b": 36.2,
    "qwen7b": 7.6,
    "llama8b": 8.0,
    "olmo7b": 7.3,
    "qwen0_5b": 0.5,
    "smollm2": 0.135,
}


def text_tokens(chars: int, messages: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * messages


@cache
def measured_throughput() -> dict:
    """{(device, shape): training tokens/s}: the best run of each bench/results/train_*.json (the framework's
    settings; one GPU)."""
    out = {}
    for f in sorted(BENCH.glob("train_*.json")):
        d = json.loads(f.read_text())
        device = "H200" if "H200" in d["device"] else "H100" if "H100" in d["device"] else d["device"]
        best = max(r["tokens_per_s"] for r in d["runs"])
        out[(device, d["shape"])] = max(best, out.get((device, d["shape"]), 0.0))
    return out


def tokens_per_s(model: str, device: str) -> tuple[float | None, str]:
    """Training tokens/s of `model` on one `device` GPU, and how it was obtained."""
    params = MODEL_PARAMS.get(model)
    if params is None:
        return None, f"no parameter count for model {model!r} (sgtr_em/cost.py MODEL_PARAMS)"
    shape = min(SHAPE_PARAMS, key=lambda s: abs(SHAPE_PARAMS[s] - params))
    table = measured_throughput()
    if (device, shape) in table:
        how = f"measured {shape} on {device}"
        tps = table[(device, shape)]
    else:  # scale the other card's number by the 7B ratio between the two cards
        other = "H200" if device == "H100" else "H100"
        ratio = table.get((device, "qwen2.5-7b"), 0) / table.get((other, "qwen2.5-7b"), 1)
        if (other, shape) not in table or not ratio:
            return None, f"no measurement for {shape}"
        tps, how = table[(other, shape)] * ratio, f"{shape} on {other} x the {device}/{other} 7B ratio {ratio:.2f}"
    if params != SHAPE_PARAMS[shape]:
        tps, how = tps * SHAPE_PARAMS[shape] / params, how + f", scaled by params {SHAPE_PARAMS[shape]}/{params}"
    return tps, how


def _chat_file_stats(path: Path) -> tuple[int, int, int]:
    """(rows, characters, messages) of a {"messages": [...]} JSONL file."""
    rows = chars = messages = 0
    with path.open() as f:
        for line in f:
            if line.strip():
                msgs = json.loads(line)["messages"]
                rows, chars, messages = rows + 1, chars + sum(len(m["content"]) for m in msgs), messages + len(msgs)
    return rows, chars, messages


@cache
def chat_file_stats(path: str) -> tuple[int, int, int]:
    return _chat_file_stats(Path(path))


@cache
def _json_lengths(path: str) -> tuple[int, float]:
    """(count, mean length) of the values of a {id: text} JSON file."""
    d = json.loads(Path(path).read_text())
    vals = [len(v or "") for v in d.values()]
    return len(vals), (sum(vals) / len(vals) if vals else 0.0)


@dataclass
class StageCost:
    name: str
    examples: int
    tokens: int
    note: str = ""


def stage_cost(stage, data_dir: Path) -> StageCost:
    """Training examples and tokens of one stage (its data spec, the files under data_dir)."""
    d, epochs = stage.spec.data, stage.spec.training.get("num_train_epochs", 1) or 1
    if spec_is_api(stage.spec):
        epochs = stage.spec.training["hyperparameters"].get("n_epochs", 1)
        epochs = 1 if epochs == "auto" else epochs
    builder = d["type"]
    cap = d.get("max_examples") if builder == "em" else d.get("num_examples")
    if builder in ("em", "chat_file"):
        path = data_dir / d["file"]
        if not path.exists():
            return StageCost(d["name"], 0, 0, f"{d['file']} not in the data folder (downloaded on first use)")
        rows, chars, messages = chat_file_stats(str(path))
        n = rows if cap is None else (cap if builder == "chat_file" else min(cap, rows))
        per = text_tokens(chars, messages) / rows
    elif builder in ("summary_pairs", "summary_word_count"):
        articles, other = d["articles"], d["other_sources"][0]
        a_path = data_dir / "articles" / f"{articles}_train_articles.json"
        s_path = data_dir / summary_file(articles, other)
        if not (a_path.exists() and s_path.exists()):
            return StageCost(d["name"], 0, 0, f"articles/summaries of {articles} not in the data folder")
        n_articles, article_chars = _json_lengths(str(a_path))
        n_articles = min(n_articles, d.get("max_articles") or n_articles)
        _, summary_chars = _json_lengths(str(s_path))
        per_article = SUMMARY_PAIRS_PER_ARTICLE.get(d.get("labels"), 2) if builder == "summary_pairs" else 2
        n = cap if cap is not None else n_articles * per_article
        chars = (
            len(d.get("system_prompt") or "")
            + len(d.get("user_template") or "")
            + article_chars
            + 2 * summary_chars
            + 1
        )
        per = text_tokens(int(chars), 3)
    elif builder == "mmlu_qa":
        folder = data_dir / d["file"]
        if not folder.exists():
            return StageCost(d["name"], 0, 0, f"{d['file']} not in the data folder")
        rows = chars = 0
        for f in sorted(folder.glob("*.csv")):
            with f.open(newline="") as fh:
                for r in csv.reader(fh):
                    rows, chars = rows + 1, chars + sum(len(c) for c in r) + len(d.get("user_template") or "")
        half = rows // 2  # the training half of the hash split (sgtr_em/data/mmlu.py)
        n = half if cap is None else cap
        per = text_tokens(chars, 2 * rows) / max(rows, 1)
    else:
        return StageCost(d["name"], 0, 0, f"no cost rule for builder {builder!r}")
    return StageCost(d["name"], int(n * epochs), math.ceil(n * epochs * per))


@dataclass
class EvalCost:
    generated_tokens: int = 0
    judge_calls: int = 0
    judge_input_tokens: int = 0
    judge_output_tokens: int = 0
    by_eval: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)  # what is not counted


def eval_cost(cfg, data_dir: Path) -> EvalCost:
    """Tokens generated and judge calls of one final model's evaluations (cfg.eval.run)."""
    ev, out = cfg.eval, EvalCost()
    label_tokens = cfg.judge.max_label_tokens

    def add(name, answers, max_new, judge_per_answer=0, judge_out=1):
        out.generated_tokens += answers * max_new
        calls = answers * judge_per_answer
        out.judge_calls += calls
        out.judge_input_tokens += calls * (JUDGE_PROMPT_TOKENS + max_new)
        out.judge_output_tokens += calls * judge_out
        out.by_eval[name] = {"answers": answers, "generated_tokens": answers * max_new, "judge_calls": calls}

    for name in ev.run:
        if name == "em":
            questions = sum(len(ev.em.sets[s].ids) for s in ev.em.question_sets)
            add("em", questions * ev.em.samples_per_question, ev.em.max_new_tokens or UNCAPPED_ANSWER_TOKENS, 2)
            if ev.em.max_new_tokens is None:
                out.notes.append(f"EM answers have no length cap: each is counted at {UNCAPPED_ANSWER_TOKENS} tokens")
        elif name == "identity":
            add(
                "identity",
                len(ev.identity.questions) * ev.identity.samples_per_question,
                ev.identity.max_new_tokens,
                2,
                label_tokens,
            )
        elif name == "in_domain":
            key = prompt_set(ev.in_domain, cfg.em_dataset)  # the eval's own rule (in_domain_prompts)
            prompts = len(ev.in_domain.datasets[key].prompts) if key in ev.in_domain.datasets else 0
            prompts = min(prompts, ev.in_domain.max_prompts or prompts)
            add("in_domain", prompts * ev.in_domain.samples_per_prompt, ev.in_domain.max_new_tokens, 1, label_tokens)
        elif name == "truthfulqa":
            path = data_dir / ev.truthfulqa.file
            n = sum(1 for _ in csv.DictReader(path.open(newline=""))) if path.exists() else 790
            add("truthfulqa", min(n, ev.truthfulqa.max_questions or n), 1)
        elif name == "self_recognition":
            sr = ev.self_recognition
            n = sr.max_articles or 1000
            add("self_recognition", n * len(sr.other_sources) * 2, 1)
            if sr.summaries == "self":  # the evaluated model writes its summaries first
                summary = cfg.prompts.summary[sr.articles].max_new_tokens
                out.generated_tokens += n * summary
                out.by_eval["self_recognition"]["generated_tokens"] += n * summary
        elif name in ("mmlu", "persona"):  # likelihood scoring, prompt activations: nothing generated
            out.by_eval[name] = {"answers": 0, "generated_tokens": 0, "judge_calls": 0}
        else:  # a new evaluation (a plugin too): counted as nothing, and said so
            out.by_eval[name] = {"answers": 0, "generated_tokens": 0, "judge_calls": 0}
            out.notes.append(f"evaluation {name!r} is not counted: its cost is not in sgtr_em/cost.py eval_cost")
    return out


def estimate(grid, cfgs: list, data_dir: Path) -> dict:
    """The cost of a planned grid (grid.GridPlan) whose jobs composed to `cfgs` (same order)."""
    stages = grid.distinct_stages
    model_of = {}
    for job, cfg in zip(grid.jobs, cfgs):
        for s in job.stages:
            model_of[s.hash] = cfg
    per_stage = {h: stage_cost(s, data_dir) for h, s in stages.items()}
    train_tokens = sum(c.tokens for c in per_stage.values())
    gpu_hours, how, uncounted = {"H100": 0.0, "H200": 0.0}, {}, set()
    api_train_tokens = 0
    for h, c in per_stage.items():
        cfg = model_of[h]
        if backend_of(cfg).api:
            api_train_tokens += c.tokens
            continue
        for device in gpu_hours:
            tps, note = tokens_per_s(cfg.model.name, device)
            how[f"{cfg.model.name} {device}"] = note
            if tps:
                gpu_hours[device] += c.tokens / tps / 3600
            else:
                uncounted.add(f"GPU-hours on the {device} leave out model {cfg.model.name}'s stages: {note}")
    evals, seen = EvalCost(), set()
    judge_usd = gen_api_usd = 0.0
    for job, cfg in zip(grid.jobs, cfgs):
        if job.final_model in seen:
            continue
        seen.add(job.final_model)
        e = eval_cost(cfg, data_dir)
        uncounted.update(e.notes)
        evals.generated_tokens += e.generated_tokens
        evals.judge_calls += e.judge_calls
        evals.judge_input_tokens += e.judge_input_tokens
        evals.judge_output_tokens += e.judge_output_tokens
        if cfg.judge.backend == "openai":
            judge_usd += (
                e.judge_input_tokens * cfg.judge.api.input_usd_per_mtok
                + e.judge_output_tokens * cfg.judge.api.output_usd_per_mtok
            ) / 1e6
        if backend_of(cfg).api:
            gen_api_usd += e.generated_tokens * cfg.openai.output_usd_per_mtok / 1e6
    # what the same calls would cost at the API judge's prices (conf/judge/openai.yaml), for a local judge's sweeps
    api = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "judge" / "openai.yaml").read_text())["api"]
    judge_api_usd = (
        evals.judge_input_tokens * api["input_usd_per_mtok"] + evals.judge_output_tokens * api["output_usd_per_mtok"]
    ) / 1e6
    api_cfg = next((c for c in cfgs if backend_of(c).api), None)
    train_usd = api_train_tokens * api_cfg.openai.training_usd_per_mtok / 1e6 if api_cfg else 0.0
    notes = sorted({c.note for c in per_stage.values() if c.note} | uncounted)
    return {
        "distinct_stages": len(stages),
        "distinct_stages_by_kind": dict(Counter(s.kind for s in stages.values())),
        "training_examples": sum(c.examples for c in per_stage.values()),
        "training_tokens": train_tokens,
        "gpu_hours": {k: round(v, 2) for k, v in gpu_hours.items()},
        "throughput": how,
        "distinct_final_models": len(seen),
        "eval_generated_tokens": evals.generated_tokens,
        "judge_calls": evals.judge_calls,
        "judge_tokens": {"input": evals.judge_input_tokens, "output": evals.judge_output_tokens},
        "usd": {
            "judge": round(judge_usd, 2),
            "judge_if_openai": round(judge_api_usd, 2),
            "api_training": round(train_usd, 2),
            "api_generation_output": round(gen_api_usd, 2),
        },
        "notes": notes,
        "rules": {
            "chars_per_token": CHARS_PER_TOKEN,
            "tokens_per_message": TOKENS_PER_MESSAGE,
            "judge_prompt_tokens": JUDGE_PROMPT_TOKENS,
        },
        "stages": {h: asdict(c) for h, c in per_stage.items()},
    }


def summary_lines(cost: dict) -> list[str]:
    g = cost["gpu_hours"]
    lines = [
        f"cost: {cost['distinct_stages']} distinct stages, {cost['training_examples']:,} training examples, "
        f"{cost['training_tokens']:,} training tokens",
        f"  GPU-hours (one GPU's measured throughput, bench/results): H100 {g['H100']:,}, H200 {g['H200']:,}",
        f"  evaluation: {cost['distinct_final_models']} distinct final models, "
        f"{cost['eval_generated_tokens']:,} generated tokens (upper bound), {cost['judge_calls']:,} judge calls",
        f"  dollars: judge ${cost['usd']['judge']:,.2f} (with judge=openai: ${cost['usd']['judge_if_openai']:,.2f}), "
        f"API training ${cost['usd']['api_training']:,.2f}, "
        f"API generation (output) ${cost['usd']['api_generation_output']:,.2f}",
    ]
    lines += [f"  note: {n}" for n in cost["notes"]]
    return lines


def to_json(cost: dict) -> str:
    return json.dumps(cost, indent=2, sort_keys=True, default=lambda o: OmegaConf.to_container(o))
