"""Stage worker, step 1: build a stage's training set into `<stage_dir>/train.jsonl`.

    python -m sgtr_em.data.build <stage_dir>

Reads `<stage_dir>/stage.json` (written by the parent). For an SGTR stage, the stage's input model first
writes its own summaries of the training articles (cached per model). Examples longer than
`training.max_length` tokens are dropped and counted: truncation would cut off an SGTR label.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from ..io import read_json, write_json, write_jsonl
from ..plan import content_hash
from ..workers import worker_logging
from .em import load_em_examples
from .files import DataFiles
from .sgtr import build_detection_pairs, sample_article_ids
from .summaries import generate_summaries, summary_cache_path

log = logging.getLogger("sgtr_em.data.build")


def build_sgtr(spec: dict, rt: dict, files: DataFiles) -> tuple[list[dict], dict]:
    from ..evaluation.generation import HFGenerator

    data = spec["data"]
    articles = read_json(files.path(f"articles/{data['articles']}_train_articles.json"))
    others = {
        src: read_json(files.path(f"summaries/{data['articles']}/{data['articles']}_train_{src}_responses.json"))
        for src in data["other_sources"]
    }
    usable = [a for a in articles if all(a in o for o in others.values())]
    ids = sample_article_ids(usable, data["max_articles"], spec["seed"])
    cache = summary_cache_path(rt["cache_dir"], data["articles"], content_hash(spec["input"]), data["summary_prompt"])
    gen = HFGenerator(rt["input_model"], dtype=rt["dtype"], device=rt["compute"]["device"], batch_size=rt["batch_size"],
                      chat_template_kwargs=rt["chat_template_kwargs"])
    mine = generate_summaries(gen, articles, ids, data["summary_prompt"], cache)
    del gen
    rows, stats = build_detection_pairs(ids, articles, mine, others, user_template=data["user_template"],
                                        system=spec["system_prompt"]["text"], seed=spec["seed"])
    return rows, {"articles": stats.articles, "pairs": stats.pairs, "skipped_empty": stats.skipped_empty,
                  "summaries_cache": str(cache)}


def build_em(spec: dict, files: DataFiles) -> tuple[list[dict], dict]:
    data, sys_prompt = spec["data"], spec["system_prompt"]
    rows = load_em_examples(files.path(data["file"]), system=sys_prompt["text"],
                            keep_own_system=sys_prompt["mode"] == "task", max_examples=data["max_examples"],
                            seed=spec["seed"])
    return rows, {"examples": len(rows)}


def drop_too_long(rows: list[dict], tokenizer, max_length: int, chat_template_kwargs: dict) -> tuple[list[dict], int]:
    kept = []
    for r in rows:
        ids = tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=True,
                                            **chat_template_kwargs)["input_ids"]
        if len(ids) <= max_length:
            kept.append(r)
    return kept, len(rows) - len(kept)


def main(stage_dir: Path) -> None:
    st = read_json(stage_dir / "stage.json")
    spec, rt = st["spec"], st["runtime"]
    files = DataFiles(Path(rt["data_dir"]), Path(rt["cache_dir"]) / "data", download=False)
    rows, stats = build_sgtr(spec, rt, files) if spec["data"]["type"] == "sgtr" else build_em(spec, files)
    from ..models import load_tokenizer

    tok = load_tokenizer(rt["input_model"])
    rows, stats["dropped_too_long"] = drop_too_long(rows, tok, spec["training"]["max_length"], rt["chat_template_kwargs"])
    if not rows:
        raise SystemExit(f"stage {stage_dir.name}: no training examples left ({json.dumps(stats)})")
    stats["train_examples"] = len(rows)
    log.info("stage %s (%s): %s", stage_dir.name, spec["data"]["name"], json.dumps(stats))
    write_json(stage_dir / "data_stats.json", stats)
    write_jsonl(stage_dir / "train.jsonl", rows)  # written last: its presence means the data step is done


if __name__ == "__main__":
    stage_dir = Path(sys.argv[1])
    worker_logging(stage_dir / "worker.log")
    main(stage_dir)
