"""Stage data builders: what each one trains on, which data files and `intervention.*` keys it reads, and what its
config must say. (A stage's *kind* is em | intervention, stage_order.stages; its data *builder* is what
`intervention.kind` names, recorded as the data spec's `type`.)

`intervention.kind` picks one (an option file in conf/intervention/ sets the rest):
  none                no intervention stage
  summary_pairs       (own, other) summaries of one article with a label rule (data/sgtr.py): sgtr,
                      sgtr_preference, prefer_other, identity_confusion, pick_longer, pick_longer_balanced
  summary_word_count  "how many words?" over the same summaries (data/word_count.py)
  chat_file           a chat JSONL file: the paper's word-count set, an EM dataset's correct twin
  mmlu_qa             MMLU questions answered correctly (data/mmlu.py)
EM stages use the builder `em`: the EM dataset's chat file.

Adding a builder = one function here, its entry in BUILDERS (with the `intervention.*` keys it reads) plus an option
file: the builder returns (rows, stats), where each row is
{"prompt": [...], "completion": [assistant turn], "meta": {..., "group": ...}} and `group` ties together
the examples that must stay together when a stage keeps only some (e.g. both orderings of one pair).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable

from omegaconf import ListConfig, OmegaConf

from ..contracts import StageRuntime, StageSpec
from ..io import read_json
from .chat_file import load_chat_examples
from .files import load_manifest
from .mmlu import build_mmlu_qa, read_mmlu
from .normalise import normalise_all
from .sgtr import build_summary_pairs, sample_article_ids
from .summaries import spec_prompt, stage_own_summaries, summary_file
from .word_count import build_word_count

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- builders: (spec, runtime, DataFiles) -> rows, stats


def _chat_rows(path, spec: StageSpec, max_examples=None) -> list[dict]:
    sp = spec.system_prompt  # mode `task` keeps a row's own system turn (the paper's word-count set has one)
    return load_chat_examples(
        path, system=sp["text"], keep_own_system=sp["mode"] == "task", max_examples=max_examples, seed=spec.seed
    )


def build_em(spec, rt, files):
    rows = _chat_rows(files.path(spec.data["file"]), spec, spec.data["max_examples"])
    return rows, {"examples": len(rows)}


def build_chat_file(spec, rt, files):
    rows = _chat_rows(files.path(spec.data["file"]), spec)
    return rows, {"examples": len(rows), "file": spec.data["file"]}


def build_mmlu(spec, rt, files):
    d = spec.data
    rows = build_mmlu_qa(
        read_mmlu(files.folder(d["file"])),
        user_template=d["user_template"],
        system=spec.system_prompt["text"],
        half="train",
    )
    return rows, {"examples": len(rows), "mmlu_half": "train"}


def _summaries(spec, rt, files):
    """Article ids, articles, and normalised {source: {id: text}} with the own summaries under "self"."""
    d = spec.data
    articles = read_json(files.path(f"articles/{d['articles']}_train_articles.json"))
    others = {src: read_json(files.path(summary_file(d["articles"], src))) for src in d["other_sources"]}
    ids = sample_article_ids(
        [a for a in articles if all(a in o for o in others.values())], d["max_articles"], spec.seed
    )
    raw = {"self": stage_own_summaries(spec, rt, articles, ids, files), **others}
    texts, counts = {}, {}
    for source, summaries in raw.items():
        texts[source], counts[source] = normalise_all({i: summaries.get(i) for i in ids}, d["normalise"])
    return ids, articles, texts, {"normalised": counts}


def build_pairs(spec, rt, files):
    d = spec.data
    ids, articles, texts, stats = _summaries(spec, rt, files)
    mine = texts.pop("self")
    rows, pair_stats = build_summary_pairs(
        ids,
        articles,
        mine,
        texts,
        user_template=d["user_template"],
        system=spec.system_prompt["text"],
        seed=spec.seed,
        labels=d["labels"],
        length_balanced=d["length_balanced"],
    )
    stats.update(pair_stats.as_dict())
    share = stats["other_longer_share"]
    log.info(
        "%s: %d pairs of %d articles (%d skipped: empty or leaked reasoning; %d ties); the longer summary is "
        "the other source's in %s of pairs of different lengths%s",
        d["name"],
        stats["pairs"],
        stats["articles"],
        stats["skipped_empty"],
        stats["ties"],
        "n/a" if share is None else f"{100 * share:.1f} %",
        f" ({stats['balanced_away']} pairs dropped to balance it)" if d["length_balanced"] else "",
    )
    return rows, stats


def build_summary_word_count(spec, rt, files):
    d = spec.data
    ids, _, texts, stats = _summaries(spec, rt, files)
    rows, counts = build_word_count(ids, texts, user_template=d["user_template"], system=spec.system_prompt["text"])
    return rows, {**stats, **counts}


# ---------------------------------------------------------------- registry

# intervention.* keys every builder reads (the task system prompt: system_prompt mode `task`, plan.py)
COMMON_KEYS = ("name", "kind", "num_examples", "system_prompt")
# ... and those of the builders over (own, other) summaries of news articles
SUMMARY_KEYS = ("user_template", "articles", "self_summaries", "other_sources", "normalise", "max_articles")
# Set for every builder by presets that do not know the builder: conf/config.yaml's smoke cap (max_articles: 12)
# and experiment=paper_scale's rule for who writes the own summaries; a builder that reads no articles ignores them.
PRESET_KEYS = ("max_articles", "self_summaries")


@dataclass(frozen=True)
class Builder:
    build: Callable  # (spec, runtime, DataFiles) -> (rows, stats)
    reads: tuple[str, ...] = ()  # the intervention.* keys it reads besides COMMON_KEYS; any other stays at its default
    uses_summaries: bool = False
    needs_file: bool = False  # reads `file` (a chat JSONL, or a folder for mmlu_qa)


BUILDERS = {
    "em": Builder(build_em, needs_file=True),  # the em_dataset group, no intervention.* key
    "summary_pairs": Builder(build_pairs, (*SUMMARY_KEYS, "labels", "length_balanced"), uses_summaries=True),
    "summary_word_count": Builder(build_summary_word_count, SUMMARY_KEYS, uses_summaries=True),
    "chat_file": Builder(build_chat_file, ("file",), needs_file=True),
    "mmlu_qa": Builder(build_mmlu, ("file", "user_template"), needs_file=True),
}
INTERVENTION_BUILDERS = ("none", *(k for k in BUILDERS if k != "em"))


def build_stage_rows(spec: StageSpec, rt: StageRuntime, files) -> tuple[list[dict], dict]:
    return BUILDERS[spec.data["type"]].build(spec, rt, files)


def stage_files(data: dict) -> list[str]:
    """Every data-directory path a stage's data spec reads (a folder for mmlu_qa)."""
    builder = BUILDERS.get(data["type"])
    if builder is None:
        return []
    files = [data["file"]] if builder.needs_file else []
    if builder.uses_summaries:
        a = data["articles"]
        files += [f"articles/{a}_train_articles.json", *(summary_file(a, s) for s in data["other_sources"])]
        if "precomputed" in data["summaries_by"]:
            files.append(summary_file(a, data["summaries_by"]["precomputed"]))
    return files


def intervention_data_spec(cfg, parent: dict, base: dict, api: bool = False) -> dict:
    """Everything that determines an intervention stage's data (it enters the stage's hash). `api`: an API model
    writes the summaries (greedily: no sampling settings in the spec)."""
    data = OmegaConf.to_container(cfg.intervention, resolve=True)
    data["type"] = data.pop("kind")
    if BUILDERS[data["type"]].uses_summaries:
        prompt = OmegaConf.to_container(cfg.prompts.summary[data["articles"]], resolve=True)
        data["summary_prompt"] = spec_prompt(prompt, open_writer=data["self_summaries"] != "precomputed" and not api)
        data["summaries_by"] = {
            "stage_input": parent,
            "base_model": {"base": base},
            "precomputed": {"precomputed": cfg.model.summaries_source},
        }[data["self_summaries"]]
    manifest = load_manifest()
    data["sha256"] = {rel: manifest.get(rel, {}).get("sha256") for rel in stage_files(data)}  # pins the data version
    return data


def intervention_problems(cfg) -> list[str]:
    """What is wrong with cfg.intervention, each with the key to fix."""
    i, problems = cfg.intervention, []
    if i.kind not in INTERVENTION_BUILDERS:
        return [f"intervention.kind: {i.kind!r} is not one of the data builders {INTERVENTION_BUILDERS}"]
    if i.kind == "none":
        return []
    problems += unread_key_problems(i)
    if i.num_examples is not None and i.num_examples < 1:
        problems.append("intervention.num_examples: give a positive number, or null for every example built")
    if BUILDERS[i.kind].uses_summaries:
        if i.length_balanced and i.labels != "longer":
            problems.append("intervention.length_balanced needs labels=longer")
        if i.self_summaries == "precomputed" and not cfg.model.summaries_source:
            problems.append(
                f"intervention.self_summaries=precomputed, but model {cfg.model.name} has no "
                "model.summaries_source (the paper's summaries by this model); use stage_input or base_model"
            )
        if not i.other_sources:
            problems.append("intervention.other_sources: name at least one source of the other summaries")
        if i.articles not in cfg.prompts.summary:
            problems.append(f"intervention.articles: no summary prompt for {i.articles!r} in prompts.summary")
    if BUILDERS[i.kind].needs_file and not i.file:
        problems.append(
            f"intervention.file is empty: {i.name} needs a data file. For correct_domain it is "
            f"em_dataset.correct_twin, and em_dataset {cfg.em_dataset.name} has none "
            "(conf/em_dataset/ says which datasets have a correct twin)"
        )
    return problems


def unread_key_problems(i) -> list[str]:
    """intervention.* keys set away from their schema default that the chosen builder does not read: a setting that
    would change nothing but the stage's hash (the option file or an override meant another kind)."""
    schema, problems = OmegaConf.get_type(i), []
    if not dataclasses.is_dataclass(schema):
        return []
    reads = {*COMMON_KEYS, *PRESET_KEYS, *BUILDERS[i.kind].reads}
    for f in dataclasses.fields(schema):
        if f.name in reads:
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        value = i[f.name]
        value = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        if value != default:
            readers = [k for k, b in BUILDERS.items() if f.name in b.reads]
            problems.append(
                f"intervention.{f.name}: {value!r} is set, but intervention.kind={i.kind} (intervention "
                f"{i.name}) does not read it; only kinds {readers} do. Leave it at "
                f"{'null' if default is None else repr(default)}, or pick an intervention of those kinds"
            )
    return problems
