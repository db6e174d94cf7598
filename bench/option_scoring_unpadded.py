"""Option scoring, padded batches (before issue 15's fix) vs one unpadded prompt per forward pass (now), on SmolLM2.

For SR (detection prompts: article + two summaries), TruthfulQA (A/B) and MMLU (lm_eval 5-shot contexts) it times
both paths on the same prompts in the same process, and reports how far padding moves the numbers from scoring each
prompt alone (the unpadded path: tests/test_estimators.py shows it equals one prompt alone, bit for bit): max relative
change of an option probability (SR, TruthfulQA), max |change| of a log-likelihood (MMLU), and how many choices flip.
The padded path is the code as it was (left padding, batch 8 sorted by length; MMLU with explicit position ids); the
unpadded one is the framework's (`HFGenerator.option_probs`, `loglikelihoods`).

    python bench/option_scoring_unpadded.py --model <SmolLM2 folder> --data <data> \\
        --out bench/results/option_scoring_unpadded_cpu.json

The machine is shared: the JSON records the load average before and after; compare only times of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def padded_option_probs(gen, conversations, options, batch_size=8):
    """The pre-fix HFGenerator.option_probs: left-padded batches of `batch_size`, sorted by length."""
    import torch

    ids = gen.single_token_ids(options)
    texts = [gen.render(c) for c in conversations]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [None] * len(texts)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        enc = gen.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        p = torch.softmax(gen.next_token_logits(enc), -1)
        for row, i in enumerate(idx):
            out[i] = {o: p[row, t].item() for o, t in zip(options, ids)}
    return out


def padded_loglikelihoods(model, tokenizer, requests, batch_size=8):
    """The pre-fix loglikelihoods: left padding with explicit position ids; one-token continuations only."""
    import torch

    from sgtr_em.inference.loglikelihood import encode_pair

    pairs = [encode_pair(tokenizer, c, x) for c, x in requests]
    inputs = list(dict.fromkeys(tuple(c) for c, _ in pairs))
    inputs.sort(key=len, reverse=True)
    rows = {}
    with torch.no_grad():
        for s in range(0, len(inputs), batch_size):
            batch = inputs[s : s + batch_size]
            width = max(map(len, batch))
            ids = torch.full((len(batch), width), tokenizer.pad_token_id or 0)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, b in enumerate(batch):
                ids[i, width - len(b) :], mask[i, width - len(b) :] = torch.tensor(b), 1
            logits = (
                model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    logits_to_keep=1,
                )
                .logits[:, -1]
                .float()
            )
            for i, b in enumerate(batch):
                rows[b] = torch.log_softmax(logits[i], -1)
    return [rows[tuple(c)][x[0]].item() for c, x in pairs]


def prompts(data: Path, n_sr: int, n_tqa: int, n_mmlu: int):
    import yaml

    from sgtr_em.data.sgtr import build_detection_pairs
    from sgtr_em.evaluation import mmlu, truthfulqa

    p = yaml.safe_load((ROOT / "conf" / "prompts" / "paper.yaml").read_text())
    articles = json.loads((data / "articles" / "cnn_train_articles.json").read_text())
    own, other = (
        json.loads((data / "summaries" / "cnn" / f"cnn_train_{s}_responses.json").read_text())
        for s in ("hf_qwen_0.5b", "claude-21")
    )
    ids = sorted(a for a in articles if a in own and a in other)[: n_sr // 2]
    sr, _ = build_detection_pairs(
        ids,
        articles,
        own,
        {"claude-21": other},
        user_template=p["detection_user"],
        system=p["detection_system"],
        seed=0,
    )
    e = yaml.safe_load((ROOT / "conf" / "eval" / "paper.yaml").read_text())
    tqa = truthfulqa.build_items(
        truthfulqa.load_questions(data / "eval" / "TruthfulQA.csv", n_tqa), e["truthfulqa"]["prompt_template"], seed=0
    )
    m = dict(e["mmlu"], subjects=["management"], shots=[5], max_questions_per_subject=n_mmlu, prompt_style="lm_eval")
    mm = mmlu.build_items(data / "mmlu", m)
    return (
        [x["prompt"] for x in sr],
        [[{"role": "user", "content": it["prompt"]}] for it in tqa],
        [(it["prompt"], " " + o) for it in mm for o in "ABCD"],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--n-sr", type=int, default=8, help="SR prompts (n/2 articles x 2 orderings)")
    ap.add_argument("--n-truthfulqa", type=int, default=16)
    ap.add_argument("--n-mmlu", type=int, default=8, help="MMLU 5-shot questions (management), 4 requests each")
    ap.add_argument("--dtypes", default="bfloat16", help="the CPU default (model=smollm2) is bfloat16")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's default); on a shared, "
        "loaded CPU use 1: with 2 threads each forward pass waits on OpenMP barriers, which swamps timings",
    )
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from sgtr_em.inference.generation import HFGenerator
    from sgtr_em.inference.loglikelihood import loglikelihoods

    if a.threads:
        torch.set_num_threads(a.threads)
    sr, tqa, mm = prompts(a.data, a.n_sr, a.n_truthfulqa, a.n_mmlu)
    result = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_before": os.getloadavg(),
        "runs": {},
    }
    for dtype in a.dtypes.split(","):
        gen = HFGenerator(a.model, dtype=dtype, device="cpu", batch_size=8)
        padded_option_probs(gen, tqa[:8], ("A", "B"))  # warm-up, so neither path pays the first call's set-up
        gen.option_probs(tqa[:1], ("A", "B"))
        for name, convs, opts in (("truthfulqa", tqa, ("A", "B")), ("sr", sr, ("1", "2"))):
            t0 = time.perf_counter()
            unpadded = [r["probs"] for r in gen.option_probs(convs, opts)]
            t1 = time.perf_counter()
            padded = padded_option_probs(gen, convs, opts)
            t2 = time.perf_counter()
            result["runs"][f"{name}_{dtype}"] = r = {
                "prompts": len(convs),
                "padded_batch8_s": t2 - t1,
                "unpadded_s": t1 - t0,
                "padded_max_rel_change": max(abs(x[o] - y[o]) / y[o] for x, y in zip(padded, unpadded) for o in opts),
                "padded_choices_flipped": sum(
                    (x[opts[0]] > x[opts[1]]) != (y[opts[0]] > y[opts[1]]) for x, y in zip(padded, unpadded)
                ),
            }
            print(name, dtype, r, os.getloadavg(), flush=True)
        t0 = time.perf_counter()
        unpadded = [s["loglik"] for s in loglikelihoods(gen.model, gen.tokenizer, mm)]
        t1 = time.perf_counter()
        padded = padded_loglikelihoods(gen.model, gen.tokenizer, mm)
        t2 = time.perf_counter()

        def letters(ll):
            return [max(range(4), key=lambda k: ll[4 * q + k]) for q in range(len(ll) // 4)]

        result["runs"][f"mmlu_5shot_{dtype}"] = r = {
            "questions": len(mm) // 4,
            "padded_batch8_s": t2 - t1,
            "unpadded_s": t1 - t0,
            "padded_max_abs_loglik_change": max(abs(x - y) for x, y in zip(padded, unpadded)),
            "padded_choices_flipped": sum(x != y for x, y in zip(letters(padded), letters(unpadded))),
        }
        print("mmlu", dtype, r, os.getloadavg(), flush=True)
    result["load_after"] = os.getloadavg()
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
