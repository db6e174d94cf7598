"""MMLU: this framework's `eval.mmlu.prompt_style=lm_eval` against lm-evaluation-harness itself, question by question.

Both read the same local Hendrycks CSVs and the same weights (SmolLM2-135M-Instruct converted from its GGUF, fp32).
Per question and shot count it compares the context string (byte for byte), the chosen letter (`acc`'s argmax) and
the four log-likelihoods of " A".." D". Pass: >= 99 % same letter, every log-likelihood within 1e-4, every context
identical.

The harness never reaches the hub: this script writes one task per subject from the harness's OWN installed `mmlu`
task yamls (lm_eval/tasks/mmlu/default/_default_template_yaml + mmlu_<subject>.yaml: description, doc_to_text,
doc_to_choice, target, few-shot split and sampler unchanged) with only the data source replaced: `dataset_path: json`
over JSONL files written from the CSVs in cais/mmlu's schema (question, subject, choices, answer index).

Install the harness in its own venv (it pins versions of its own; the project's venv stays as it is):
    python3 -m venv "${LMEVAL_VENV:-.venv-lmeval}"
    "${LMEVAL_VENV:-.venv-lmeval}"/bin/pip install torch==2.13.0 lm_eval==0.4.13     # CPU; any torch build works
Run (CPU: about 365k tokens per side for the default subjects, hours on 2 shared cores; a GPU takes seconds):
    python bench/lm_eval_mmlu.py --model <HF folder of SmolLM2-135M-Instruct> --data <data>/mmlu \\
        --lm-eval-python "${LMEVAL_VENV:-.venv-lmeval}"/bin/python --out bench/results/lm_eval_mmlu.json
    (the project side runs in the calling python; the harness side in --lm-eval-python, which may be the same
    interpreter when both are installed in it). The model folder: `resolve_model_path` of model=smollm2
    (sgtr_em/models.py), e.g. python -c "from sgtr_em.models import resolve_model_path; ..." (see --convert).
Steps can run alone: `--step harness|project|compare` (each writes/reads <work>/<step>_<k>shot.json).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Short-context subjects, >= 900 test questions together (998): world_religions 171, management 103,
# conceptual_physics 235, human_aging 223, virology 166, medical_genetics 100
SUBJECTS = ["world_religions", "management", "conceptual_physics", "human_aging", "virology", "medical_genetics"]
LETTERS = "ABCD"


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


# --- the harness's side (runs in the lm_eval venv) ---


def write_tasks(data: Path, subjects: list[str], work: Path) -> list[str]:
    """Per subject: JSONL files in cais/mmlu's schema and a task yaml built from the harness's own mmlu yamls."""
    import lm_eval
    import yaml

    default = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    template = yaml.safe_load((default / "_default_template_yaml").read_text())
    names = []
    for s in subjects:
        files = {}
        for split in ("test", "dev"):
            out = work / "data" / f"{s}_{split}.jsonl"
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "w", encoding="utf-8") as f:
                for row in read_csv(data / split / f"{s}_{split}.csv"):
                    f.write(
                        json.dumps(
                            {
                                "question": row[0],
                                "subject": s,
                                "choices": row[1:5],
                                "answer": LETTERS.index(row[5].strip()),
                            }
                        )
                        + "\n"
                    )
            files[split] = str(out)
        own = yaml.safe_load((default / f"mmlu_{s}.yaml").read_text())
        task = {**template, **{k: v for k, v in own.items() if k not in ("include", "tag", "task", "task_alias")}}
        task.update(task=f"local_mmlu_{s}", dataset_path="json", dataset_kwargs={"data_files": files})
        task.pop("dataset_name", None)
        (work / "tasks").mkdir(parents=True, exist_ok=True)
        (work / "tasks" / f"local_mmlu_{s}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
        names.append(task["task"])
    return names


def run_harness(
    model: str, data: Path, subjects: list[str], shots: int, work: Path, device: str, batch: int, limit=None
) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    names = write_tasks(data, subjects, work)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    start = time.time()
    res = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model},dtype=float32",
        tasks=names,
        num_fewshot=shots,
        batch_size=batch,
        device=device,
        log_samples=True,
        task_manager=TaskManager(include_path=str(work / "tasks")),
        limit=limit,
    )
    rows = []
    for name in names:
        for smp in res["samples"][name]:
            args = [_pair(a) for a in smp["arguments"]]
            lls = [float(r[0]) for r in smp["filtered_resps"]]  # (log-likelihood, is_greedy) per choice
            rows.append(
                {
                    "subject": name[len("local_mmlu_") :],
                    "index": smp["doc_id"],
                    "contexts": sorted({c for c, _ in args}),
                    "targets": [t for _, t in args],
                    "loglik": lls,
                    "acc": smp["acc"],
                }
            )
    acc = {n[len("local_mmlu_") :]: res["results"][n]["acc,none"] for n in names}
    return {
        "side": "lm-evaluation-harness",
        "version": lm_eval.__version__,
        "shots": shots,
        "seconds": time.time() - start,
        "acc": acc,
        "rows": rows,
    }


def _pair(arg) -> tuple[str, str]:
    """(context, continuation) of a logged request: a pair, or {"gen_args_0": {"arg_0": ..., "arg_1": ...}}."""
    if isinstance(arg, dict):
        return arg["gen_args_0"]["arg_0"], arg["gen_args_0"]["arg_1"]
    return arg[0], arg[1]


# --- the project's side ---


def run_project(model: str, data: Path, subjects: list[str], shots: int, device: str, batch: int, limit=None) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sgtr_em.evaluation.mmlu import build_items
    from sgtr_em.inference.loglikelihood import loglikelihoods

    e = yaml.safe_load((ROOT / "conf" / "eval" / "paper.yaml").read_text())["mmlu"]
    e.update(subjects=subjects, shots=[shots], max_questions_per_subject=limit, prompt_style="lm_eval")
    items = build_items(data, e)
    tok = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).to(device).eval()
    start = time.time()
    scores = loglikelihoods(lm, tok, [(it["prompt"], " " + o) for it in items for o in LETTERS])
    rows = []
    for n, it in enumerate(items):
        ll = [s["loglik"] for s in scores[4 * n : 4 * n + 4]]
        rows.append(
            {
                "subject": it["subject"],
                "index": it["index"],
                "contexts": [it["prompt"]],
                "loglik": ll,
                "acc": float(LETTERS[max(range(4), key=ll.__getitem__)] == it["answer"]),
            }
        )
    import transformers

    return {
        "side": "sgtr_em prompt_style=lm_eval",
        "shots": shots,
        "seconds": time.time() - start,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "rows": rows,
    }


# --- the comparison ---


def compare(harness: dict, project: dict) -> dict:
    ours = {(r["subject"], r["index"]): r for r in project["rows"]}
    same_letter = same_context = n = 0
    max_diff, first_diff = 0.0, None
    for h in harness["rows"]:
        p = ours[(h["subject"], h["index"])]
        n += 1
        same_context += h["contexts"] == p["contexts"]
        if h["contexts"] != p["contexts"] and first_diff is None:
            first_diff = {"key": [h["subject"], h["index"]], "harness": h["contexts"], "project": p["contexts"]}
        hl, pl = h["loglik"], p["loglik"]
        same_letter += max(range(4), key=hl.__getitem__) == max(range(4), key=pl.__getitem__)
        max_diff = max(max_diff, max(abs(a - b) for a, b in zip(hl, pl)))
    acc_h = sum(r["acc"] for r in harness["rows"]) / n
    acc_p = sum(r["acc"] for r in project["rows"]) / len(project["rows"])
    return {
        "shots": harness["shots"],
        "questions": n,
        "project_questions": len(project["rows"]),
        "same_letter": same_letter / n,
        "same_context": same_context / n,
        "max_abs_loglik_diff": max_diff,
        "acc_harness": acc_h,
        "acc_project": acc_p,
        "acc_harness_per_subject": harness["acc"],
        "seconds_harness": round(harness["seconds"], 1),
        "seconds_project": round(project["seconds"], 1),
        "pass": n == len(project["rows"]) and same_letter / n >= 0.99 and max_diff <= 1e-4 and same_context == n,
        **({"first_context_difference": first_diff} if first_diff else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF folder (fp32 safetensors) of SmolLM2-135M-Instruct")
    ap.add_argument("--data", required=True, type=Path, help="the MMLU folder: {dev,test}/<subject>_<split>.csv")
    ap.add_argument("--subjects", nargs="+", default=SUBJECTS)
    ap.add_argument("--shots", nargs="+", type=int, default=[0, 5])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lm_eval_mmlu")
    ap.add_argument("--out", type=Path, default=None, help="the results JSON (default: <work>/results.json)")
    ap.add_argument("--device", default="cuda" if _cuda() else "cpu")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lm-eval-python", default=sys.executable, help="the interpreter that has lm_eval installed")
    ap.add_argument("--limit", type=int, default=None, help="questions per subject (a smoke run; default all)")
    ap.add_argument("--step", choices=["all", "harness", "project", "compare"], default="all")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    for k in a.shots:
        if a.step == "harness":
            _dump(
                a.work / f"harness_{k}shot.json",
                run_harness(a.model, a.data, a.subjects, k, a.work / f"h{k}", a.device, a.batch_size, a.limit),
            )
        if a.step == "project":
            _dump(
                a.work / f"project_{k}shot.json",
                run_project(a.model, a.data, a.subjects, k, a.device, a.batch_size, a.limit),
            )
    if a.step != "all":
        if a.step != "compare":
            return
    else:
        common = [
            "--model",
            a.model,
            "--data",
            str(a.data),
            "--subjects",
            *a.subjects,
            "--shots",
            *map(str, a.shots),
            "--work",
            str(a.work),
            "--device",
            a.device,
            "--batch-size",
            str(a.batch_size),
            *(["--limit", str(a.limit)] if a.limit else []),
        ]
        subprocess.run([a.lm_eval_python, __file__, *common, "--step", "harness"], check=True)
        subprocess.run([sys.executable, __file__, *common, "--step", "project"], check=True)
    results = {
        "command": "python bench/lm_eval_mmlu.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "device": a.device,
            "gpu": _gpu_name(),
        },
        "model": Path(a.model).name,
        "dtype": "float32",
        "subjects": a.subjects,
        "criteria": ">= 99 % same letter, |log-likelihood difference| <= 1e-4, contexts identical",
        "per_shots": {},
    }
    for k in a.shots:
        h, p = (
            json.loads((a.work / f"harness_{k}shot.json").read_text()),
            json.loads((a.work / f"project_{k}shot.json").read_text()),
        )
        results["lm_eval_version"] = h["version"]
        results["torch"], results["transformers"] = p["torch"], p["transformers"]
        results["per_shots"][f"{k}_shot"] = compare(h, p)
        results[f"example_context_{k}shot"] = {
            "subject": h["rows"][0]["subject"],
            "index": h["rows"][0]["index"],
            "context": h["rows"][0]["contexts"][0],
        }
    results["pass"] = all(v["pass"] for v in results["per_shots"].values())
    out = a.out or a.work / "results.json"
    _dump(out, results)
    print(
        json.dumps(
            {
                k: {kk: vv for kk, vv in v.items() if kk != "acc_harness_per_subject"}
                for k, v in results["per_shots"].items()
            },
            indent=1,
        )
    )


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _gpu_name():
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        return None


if __name__ == "__main__":
    main()
