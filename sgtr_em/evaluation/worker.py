"""Eval worker: run the enabled evaluations on one model and write per-sample JSONL + metrics.json.

    python -m sgtr_em.evaluation.worker <run_dir>

Reads `<run_dir>/eval_input.json` (written by the parent: the resolved config, the model to evaluate,
the judge model). Writes `<run_dir>/eval/<name>/{samples.jsonl,metrics.json}` and `<run_dir>/metrics.json`.
The evaluated model and the judge are loaded one after the other, never both at once.
"""
from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

from ..data.files import DataFiles
from ..data.sgtr import sample_article_ids
from ..data.summaries import generate_summaries, summary_cache_path
from ..data.system_prompt import system_text
from ..io import read_json, write_json, write_jsonl
from ..workers import worker_logging
from . import emergent_misalignment as em
from .generation import HFGenerator
from .judge import LocalJudge
from .self_recognition import run_self_recognition

log = logging.getLogger("sgtr_em.evaluation.worker")


def _write(run_dir: Path, name: str, records: list, metrics: dict) -> None:
    write_jsonl(run_dir / "eval" / name / "samples.jsonl", records)
    write_json(run_dir / "eval" / name / "metrics.json", metrics)


def self_recognition(cfg: dict, inp: dict, gen: HFGenerator, files: DataFiles, run_dir: Path) -> dict:
    sr, prompts, ds = cfg["eval"]["self_recognition"], cfg["prompts"], cfg["eval"]["self_recognition"]["articles"]
    articles = read_json(files.path(f"articles/{ds}_train_articles.json"))
    other = read_json(files.path(f"summaries/{ds}/{ds}_train_{sr['other_source']}_responses.json"))
    ids = sample_article_ids([a for a in articles if a in other], sr["max_articles"], cfg["seed"])
    cache = summary_cache_path(cfg["paths"]["cache_dir"], ds, inp["model_key"], prompts["summary"][ds])
    own = generate_summaries(gen, articles, ids, prompts["summary"][ds], cache)
    sp = cfg["system_prompt"]
    system = system_text(sp["intervention_train"], task=prompts["detection_system"],
                         identity=cfg["model"]["identity_prompt"], custom=sp["custom"])
    records, metrics = run_self_recognition(gen, articles, ids, own, other, sr["other_source"],
                                            user_template=prompts["detection_user"], system=system, seed=cfg["seed"])
    _write(run_dir, "self_recognition", records, metrics)
    return metrics


def main(run_dir: Path) -> None:
    inp = read_json(run_dir / "eval_input.json")
    cfg = inp["config"]
    ev, m = cfg["eval"], cfg["model"]
    files = DataFiles(Path(cfg["paths"]["data_dir"]), Path(cfg["paths"]["cache_dir"]) / "data", download=False)
    gen = HFGenerator(inp["model_path"], dtype=m["dtype"], device=cfg["compute"]["device"], batch_size=ev["batch_size"],
                      chat_template_kwargs=m["chat_template_kwargs"])
    metrics: dict = {"model": inp["model_identity"]}
    if ev["self_recognition"]["enabled"]:
        metrics["self_recognition"] = self_recognition(cfg, inp, gen, files, run_dir)
        log.info("self-recognition: %s", {k: v for k, v in metrics["self_recognition"].items()})
    if ev["em"]["enabled"]:
        e = ev["em"]
        questions = em.load_questions(files.path(e["questions_file"]), e["question_ids"])
        system = system_text(cfg["system_prompt"]["eval"], identity=m["identity_prompt"],
                             custom=cfg["system_prompt"]["custom"])
        answers = em.sample_answers(gen, questions, system=system, samples=e["samples_per_question"],
                                    max_new_tokens=e["max_new_tokens"], temperature=e["temperature"],
                                    top_p=e["top_p"], seed=cfg["seed"])
        del gen
        gc.collect()
        judge_gen = HFGenerator(inp["judge_model_path"], dtype=m["dtype"], device=cfg["compute"]["device"],
                                 batch_size=1)
        judge = LocalJudge(judge_gen, min_number_mass=cfg["judge"]["min_number_mass"])
        records = em.judge_answers(judge, questions, answers)
        em_m = em.em_metrics(records, aligned_below=e["aligned_below"], coherent_at_least=e["coherent_at_least"],
                             min_coherent_per_question=e["min_coherent_per_question"])
        em_m["judge"] = {"backend": "local", "model": inp["judge_model_path"], "number_end_factor": judge.needs_end}
        _write(run_dir, "em", records, em_m)
        metrics["em"] = em_m
        log.info("EM: misaligned_rate=%s mo=%s", em_m["misaligned_rate"], em_m["misaligned_rate_mo"])
    write_json(run_dir / "metrics.json", metrics)


if __name__ == "__main__":
    run_dir = Path(sys.argv[1])
    worker_logging(run_dir / "eval" / "worker.log")
    main(run_dir)
