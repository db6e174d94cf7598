"""MMLU (Hendrycks et al. 2021): four-option multiple choice, 0-shot and k-shot (the first k dev questions of the
subject, in Hendrycks et al.'s format). Three prompt styles (`eval.mmlu.prompt_style`):
  chat     the prompt in a user turn (chat template, the eval's system prompt); the next-token probability of
           "A".."D" after the assistant turn starts
  lm_eval  lm-evaluation-harness's `mmlu` task: the same raw-text context byte for byte (question stripped, no chat
           template), log-likelihood of the targets " A".." D" (sgtr_em/inference/loglikelihood.py); `acc`
  letter   `letter.template` in a user turn, answered greedily; the answer's first capital letter is the choice
           (the paper's GPT-4.1 setting: dev split, 0-shot)
Reads the original CSV layout from the data directory: {folder}/{dev,test}/{subject}_{split}.csv,
no header, columns question, A, B, C, D, answer letter (the csv module: the option "None" stays a string).
A job that trains on MMLU (intervention kind mmlu_qa) is asked only the held-out half (data/mmlu.py `mmlu_half`).
  accuracy          micro average over questions (of the headline shot count), with a 95 % interval
  macro_accuracy    mean of the per-subject accuracies
  invalid_rate, prob_correct(_raw), greedy_accuracy as in sgtr_em/evaluation/choice.py; per_subject
  heldout_half      accuracy over the questions in the held-out half only (compare a general_knowledge job with it)
"""

from __future__ import annotations

import csv
import re
from math import exp
from pathlib import Path
from statistics import mean
from typing import Optional, Sequence

from ..data.mmlu import mmlu_half
from .choice import ask_options, choice_metrics, score_choice
from .stats import fmt

NAME = "mmlu"
NEEDS_JUDGE = False
OPTIONS = ("A", "B", "C", "D")


def data_files(cfg) -> list[str]:
    return []  # MMLU is a folder (or lm_eval's own copy): checked by the evaluation itself


def read_split(path: Path, limit: Optional[int] = None) -> list[dict]:
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if len(row) != 6 or row[5].strip() not in OPTIONS:
                raise ValueError(
                    f"{path}:{line}: expected 6 fields (question, A, B, C, D, answer letter A-D), "
                    f"got {len(row)} ending in {row[-1:]!r}"
                )
            rows.append({"question": row[0], **dict(zip(OPTIONS, row[1:5])), "answer": row[5].strip()})
            if limit is not None and len(rows) >= limit:
                break
    return rows


def subjects_in(folder: Path) -> list[str]:
    return sorted(p.name[: -len("_test.csv")] for p in (folder / "test").glob("*_test.csv"))


def format_question(row: dict, template: str, with_answer: bool) -> str:
    text = template.format(**row)
    return f"{text} {row['answer']}\n\n" if with_answer else text


def build_prompt(
    subject: str, row: dict, shots: Sequence[dict], *, header_template: str, question_template: str
) -> str:
    header = header_template.format(subject=subject.replace("_", " "))
    return (
        header
        + "".join(format_question(s, question_template, True) for s in shots)
        + format_question(row, question_template, False)
    )


def lm_eval_context(
    subject: str, row: dict, shots: Sequence[dict], *, header_template: str, question_template: str
) -> str:
    """lm-evaluation-harness's `mmlu` context: description, then each shot's doc_to_text + " " + its letter + "\n\n",
    then the question's doc_to_text; doc_to_text strips the question (`{{question.strip()}}`), not the options."""

    def strip(r):
        return {**r, "question": r["question"].strip()}

    return build_prompt(
        subject,
        strip(row),
        [strip(s) for s in shots],
        header_template=header_template,
        question_template=question_template,
    )


def first_capital(text: Optional[str]) -> Optional[str]:
    """The paper's GPT-4.1 parse: the first A-Z of the upper-cased answer (scripts/eval/mmlu_eval.py)."""
    m = re.search(r"[A-Z]", (text or "").strip().upper())
    return m.group(0) if m else None


def score_item(record: dict) -> dict:
    text = record.get("text")
    if record["probs"] is None and record.get("style") == "letter":
        text = first_capital(text)  # a letter outside A-D is an invalid answer, wrong
    return score_choice(record["probs"], record["top_token"], text, record["answer"], OPTIONS)


def mmlu_metrics(
    records: Sequence[dict], *, headline_shots: Optional[int] = None, n_boot: int = 0, seed: int = 0
) -> dict:
    """Per shot count (`{k}_shot`), overall and per subject; `headline_shots` (default: the first shot count) is also
    at the top level. Each shot count also has `heldout_half`: its metrics over the held-out half of the questions."""
    per_shots = {}
    for k in dict.fromkeys(r["shots"] for r in records):
        rows = [r for r in records if r["shots"] == k]
        subjects = list(dict.fromkeys(r["subject"] for r in rows))
        per_subject = {s: choice_metrics([score_item(r) for r in rows if r["subject"] == s]) for s in subjects}
        heldout = [
            score_item(r) for r in rows if "question" in r and mmlu_half(r["subject"], r["question"]) == "heldout"
        ]
        per_shots[f"{k}_shot"] = {
            **choice_metrics([score_item(r) for r in rows], first="A", n_boot=n_boot, seed=seed),
            "macro_accuracy": mean(m["accuracy"] for m in per_subject.values()),
            "n_subjects": len(subjects),
            "per_subject": per_subject,
            "heldout_half": {
                "accuracy": mean(float(r["is_correct"]) for r in heldout) if heldout else None,
                "n": len(heldout),
            },
        }
    key = f"{headline_shots}_shot" if headline_shots is not None else next(iter(per_shots), None)
    if per_shots and key not in per_shots:
        raise ValueError(f"MMLU: headline_shots={headline_shots} but the records hold {list(per_shots)}")
    head = per_shots.get(key, {"n": 0})
    return {
        **{k: v for k, v in head.items() if k != "per_subject"},
        "headline_shots": headline_shots,
        "per_shots": per_shots,
    }


# --- the eval's steps (sgtr_em/evaluation/worker.py runs them) ---


def trains_on_mmlu(cfg: dict) -> bool:
    """The job trains on MMLU's training half (intervention kind mmlu_qa, e.g. intervention=general_knowledge)."""
    return "intervention" in cfg["stage_order"]["stages"] and cfg["intervention"]["kind"] == "mmlu_qa"


def build_items(folder: Path, e: dict, *, heldout_only: bool = False) -> list[dict]:
    """One item per (shot count, subject, question), with its `prompt` in e["prompt_style"]'s format; only the
    held-out half of the test split (data/mmlu.py; training reads the test split only) when `heldout_only`."""
    style = e.get("prompt_style", "chat")
    subjects = e["subjects"] or subjects_in(folder)
    split = e["letter"]["split"] if style == "letter" else "test"
    items = []
    for k in e["shots"]:
        for subject in subjects:
            dev = read_split(folder / "dev" / f"{subject}_dev.csv", k) if k else []
            if len(dev) < k:
                raise ValueError(f"{folder}/dev/{subject}_dev.csv has {len(dev)} questions; {k}-shot needs {k}")
            rows = read_split(folder / split / f"{subject}_{split}.csv", e["max_questions_per_subject"])
            for i, row in enumerate(rows):
                if heldout_only and split == "test" and mmlu_half(subject, row["question"]) != "heldout":
                    continue
                if style == "letter":
                    prompt = e["letter"]["template"].format(**row)
                elif style == "lm_eval":
                    prompt = lm_eval_context(
                        subject,
                        row,
                        dev,
                        header_template=e["header_template"],
                        question_template=e["question_template"],
                    )
                else:
                    prompt = build_prompt(
                        subject,
                        row,
                        dev,
                        header_template=e["header_template"],
                        question_template=e["question_template"],
                    )
                items.append({"subject": subject, "shots": k, "index": i, "style": style, **row, "prompt": prompt})
    return items


def ask_lm_eval(generator, items: list[dict]) -> list[dict]:
    """lm_eval style: the log-likelihood of " A".." D" after each raw context; probs = exp(loglik)."""
    from ..inference.loglikelihood import loglikelihoods

    if not hasattr(generator, "tokenizer") or not hasattr(generator, "model"):
        raise ValueError(
            "eval.mmlu.prompt_style=lm_eval needs eval.generation.backend=hf (log-likelihoods of a raw "
            "prompt); for API models use prompt_style=letter"
        )
    requests = [(it["prompt"], " " + o) for it in items for o in OPTIONS]
    scores = loglikelihoods(generator.model, generator.tokenizer, requests, desc="MMLU")
    for n, it in enumerate(items):
        mine = scores[n * len(OPTIONS) : (n + 1) * len(OPTIONS)]
        it.update(
            loglik={o: s["loglik"] for o, s in zip(OPTIONS, mine)},
            probs={o: exp(s["loglik"]) for o, s in zip(OPTIONS, mine)},
            top_token=mine[0]["top_token"],
            text=None,
        )
        del it["prompt"]
        it.update(score_item(it))
    return items


def generate(ctx) -> list[dict]:
    e = ctx.ecfg(NAME)
    folder = ctx.files.data_dir / e["folder"]
    if not (folder / "test").is_dir():
        raise FileNotFoundError(
            f"MMLU: {folder}/test is missing; put the MMLU CSVs ({{dev,test}}/<subject>_<split>.csv) "
            "under paths.data_dir/" + e["folder"]
        )
    items = build_items(folder, e, heldout_only=trains_on_mmlu(ctx.cfg))
    if e["prompt_style"] == "lm_eval":
        return ask_lm_eval(ctx.generator(), items)
    conversations = ctx.conversations(it.pop("prompt") for it in items)
    if e["prompt_style"] == "letter":
        answers = ctx.generator().generate(
            conversations, max_new_tokens=e["letter"]["max_new_tokens"], temperature=0.0, seed=ctx.seed, desc="MMLU"
        )
        for it, text in zip(items, answers):
            it.update(probs=None, top_token=None, text=text)
            it.update(score_item(it))
        return items
    return ask_options(
        ctx.generator(),
        items,
        conversations,
        OPTIONS,
        score_item,
        desc="MMLU",
        max_new_tokens=e["fallback_max_new_tokens"],
    )


def metrics(records: Sequence[dict], cfg: dict) -> dict:
    e = cfg["eval"]["mmlu"]
    m = mmlu_metrics(
        records, headline_shots=e.get("headline_shots"), n_boot=cfg["eval"]["bootstrap_samples"], seed=cfg["seed"]
    )
    questions = "heldout_half" if trains_on_mmlu(cfg) else "all"
    return {**m, "prompt_style": e.get("prompt_style", "chat"), "questions": questions}


def summary(m: dict) -> str:
    shots = "  ".join(
        f"{k} {fmt(v.get('accuracy'))} (macro {fmt(v.get('macro_accuracy'))})" for k, v in m["per_shots"].items()
    )
    scope = "held-out half: the job trains on the other" if m.get("questions") == "heldout_half" else "all"
    return (
        f"MMLU ({m.get('prompt_style', 'chat')}, headline {m.get('headline_shots')}-shot): accuracy {shots}  "
        f"invalid {fmt(m.get('invalid_rate'))}  ({m['n']} questions per shot count; {scope})"
    )
