"""Checks that need no model, run when the job is composed (before Hydra writes anything, for the command line) or
planned (before any training): secrets, API keys, numeric ranges, non-empty data, writable folders with room.

Secrets: API keys are read only from the environment (the variable `api_key_env` names). A command-line override or a
config value that looks like a key is refused with the key's name, never its value, so it reaches no file (.hydra/,
eval_input.json, logs, W&B) and no error text.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

from huggingface_hub import constants as hub_constants, try_to_load_from_cache
from omegaconf import OmegaConf

from .backend import backend_of
from .data.interventions import BUILDERS
from .data.summaries import summary_file
from .io import read_json

# Values shaped like API keys and tokens (OpenAI, Anthropic, Hugging Face, W&B, GitHub, AWS, Google, Slack, bearer).
SECRET_VALUE = re.compile(
    r"(?<![A-Za-z0-9])(sk-[A-Za-z0-9_\-]{16,}|sk-ant-[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{30,}"
    r"|xox[abpr]-[A-Za-z0-9\-]{10,}|[Bb]earer\s+[A-Za-z0-9._\-]{16,})"
)
# Config keys that would hold a secret itself (api_key_env holds a variable's name, and is allowed).
SECRET_KEY = re.compile(r"(^|[._])(api_?key|secret|password|passwd|token|access_token|auth_token|credentials?)$", re.I)
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
REDACTED = "<redacted>"


def redact(text: str) -> str:
    """`text` with every secret-looking part replaced (error text, W&B summaries)."""
    return SECRET_VALUE.sub(REDACTED, text)


def _secret_problem(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if SECRET_KEY.search(key) or (isinstance(value, str) and SECRET_VALUE.search(value)):
        return (
            f"{key}: its value looks like a secret (an API key or token), and configs are written to the run's "
            f"folder and W&B. Remove it and give the key through the environment only: export OPENAI_API_KEY=... "
            f"(or the variable that judge.api.api_key_env / openai.api_key_env names)."
        )
    return None


def _interpolated_secret(cfg, key: str, value: Any) -> str | None:
    """A value that becomes a secret only when resolved (`${oc.env:OPENAI_API_KEY}`): the run's W&B config is the
    resolved one."""
    if not (isinstance(value, str) and "${" in value) or "[" in key:
        return None
    try:
        resolved = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except Exception:  # noqa: BLE001 - resolvable only inside the job (${hydra:...}): nothing to check here
        return None
    if isinstance(resolved, str) and SECRET_VALUE.search(resolved):
        return (
            f"{key}: its interpolation resolves to a secret (an API key or token), and the resolved config is written "
            "to W&B. Remove it: the key belongs in the environment only."
        )
    return None


def argv_problems(argv: Iterable[str]) -> list[str]:
    """Command-line overrides (`key=value`, `+key=value`) that carry a secret; never echoes the value."""
    problems = []
    for arg in argv:
        if arg.startswith("-") and "=" not in arg:
            continue
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~").removeprefix("--")
        if not sep and SECRET_VALUE.search(arg):
            problems.append("an argument of the command line looks like a secret (an API key or token): remove it")
            continue
        problem = _secret_problem(key, value) if sep else None
        if problem:
            problems.append(problem)
    return problems


def _walk(node: Any, prefix: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{prefix}[{i}]")
    else:
        yield prefix, node


def config_problems(cfg) -> list[str]:
    """Secrets in the composed config, api_key_env values that are not variable names, a missing API key, numbers
    out of range, data caps that leave nothing to train on. Each names the key and the fix."""
    c = OmegaConf.to_container(cfg, resolve=False)
    c.pop("hydra", None)
    problems = [p for key, value in _walk(c) if (p := _secret_problem(key, value))]
    problems += [p for key, value in _walk(c) if (p := _interpolated_secret(cfg, key, value))]
    for where in ("judge.api", "openai"):
        name = OmegaConf.select(cfg, f"{where}.api_key_env")
        if not isinstance(name, str) or not ENV_NAME.match(name):
            problems.append(
                f"{where}.api_key_env must name an environment variable (upper case, e.g. OPENAI_API_KEY) "
                "that holds the key, never the key itself"
            )
    problems += _range_problems(cfg)
    return problems


def _api_uses(cfg, judged: Iterable[str] | None = None) -> list[tuple[str, Any]]:
    """The API endpoints a job will call: (config key, its api block). `judged`: the evaluations of `eval.run` that call
    the judge (the registry's NEEDS_JUDGE; job.py passes them); None counts every evaluation as judged."""
    uses = []
    if cfg.judge.backend == "openai" and list(cfg.eval.run if judged is None else judged):
        uses.append(("judge.api", cfg.judge.api))
    if backend_of(cfg).api:
        uses.append(("openai", cfg.openai))
    return uses


def api_key_problems(cfg, judged: Iterable[str] | None = None) -> list[str]:
    """The API keys a job will need are in the environment (checked when the job is planned, before any work)."""
    problems = []
    for where, api in _api_uses(cfg, judged):
        name = api.api_key_env
        if not ENV_NAME.match(name):
            continue  # config_problems says so
        base_url = api.base_url or os.environ.get("OPENAI_BASE_URL")
        official = base_url is None or base_url.startswith("https://api.openai.com")
        if official and not os.environ.get(name):
            problems.append(
                f"{where}: the OpenAI API needs a key and the environment variable {name} is not set "
                f"(it is read before any training): export {name}=..., or point {where}.base_url at a "
                "server that needs none"
            )
    return problems


def _range_problems(cfg) -> list[str]:
    t, problems = cfg.training, []
    trains = bool(cfg.stage_order.stages) and not backend_of(cfg).api
    if trains:
        checks = [
            ("training.learning_rate", t.learning_rate > 0, "a positive number (the paper: 1e-5)"),
            ("training.batch_size", t.batch_size >= 1, "at least 1"),
            ("training.max_length", t.max_length >= 1, "at least 1 token"),
            ("training.warmup_steps", t.warmup_steps >= 0, "0 or more"),
            ("training.weight_decay", t.weight_decay >= 0, "0 or more"),
            (
                "training.num_train_epochs",
                t.num_train_epochs > 0 or t.max_steps > 0,
                "positive (or set training.max_steps)",
            ),
            ("training.max_steps", t.max_steps == -1 or t.max_steps >= 1, "-1 (epochs decide) or at least 1"),
            ("training.logging_steps", t.logging_steps >= 1, "at least 1"),
            ("training.save_steps", t.save_steps >= 1, "at least 1"),
            ("lora.r", cfg.lora.r >= 1, "at least 1"),
            ("lora.dropout", 0 <= cfg.lora.dropout < 1, "in [0, 1)"),
        ]
        problems += [f"{key}: {OmegaConf.select(cfg, key)} must be {want}" for key, ok, want in checks if not ok]
    m = cfg.em_dataset.max_examples
    if "em" in cfg.stage_order.stages and m is not None and m < 1:
        problems.append(
            f"em_dataset.max_examples: {m} leaves no training examples; give a positive number, or null "
            "for the whole file"
        )
    return problems


def folder_problems(cfg, min_free_gib: float = 1.0) -> list[str]:
    """The output, stage and cache folders exist (or can be made), are writable, and have `min_free_gib` free."""
    problems = []
    for key in ("output_dir", "stages_dir", "cache_dir"):
        d = Path(cfg.paths[key])
        try:
            d.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=d, prefix=".write-test-"):
                pass
        except OSError as e:
            problems.append(
                f"paths.{key}: cannot write to {d} ({e.strerror or e}); fix its permissions or set "
                f"paths.{key} (or SGTR_EM_OUTPUT_DIR) to a writable folder"
            )
            continue
        free = shutil.disk_usage(d).free / 2**30
        if free < min_free_gib:
            problems.append(
                f"paths.{key}: {d} has {free:.2f} GiB free, less than the {min_free_gib} GiB a job needs "
                f"at least: free some space or point paths.{key} at a larger disk"
            )
    return problems


def model_folder_problems(cfg) -> list[str]:
    """The local model folders the job loads (model.path, a local judge's judge.model) hold a transformers model
    (config.json). A value that is no local path (`Qwen/Qwen2.5-32B-Instruct`) is a hub id, downloaded on first use;
    with HF_HUB_OFFLINE set it must be in the hub cache already."""
    uses = [] if backend_of(cfg).api else [("model.path", cfg.model.path)]
    if cfg.judge.backend == "local":
        uses.append(("judge.model", cfg.judge.model))
    problems = []
    for key, value in uses:
        if not value:  # model.gguf_package (converted on first use); the judge: the base model
            continue
        path = Path(str(value)).expanduser()
        in_a_folder = path.parent != Path(".") and path.parent.is_dir()  # models/mylm beside an existing models/
        local = path.is_absolute() or str(value).startswith((".", "~")) or path.exists() or in_a_folder
        if local and not (path / "config.json").is_file():
            what = "has no config.json" if path.is_dir() else "does not exist"
            problems.append(
                f"{key}: {value} {what}, so it is no model folder: point {key} at a folder that "
                "save_pretrained wrote, or at a hub id such as Qwen/Qwen2.5-32B-Instruct"
            )
        elif (
            not local
            and hub_constants.HF_HUB_OFFLINE
            and not isinstance(try_to_load_from_cache(str(value), "config.json"), str)
        ):
            problems.append(
                f"{key}: {value} is not a local folder, and as a hub id it is not in the hub cache while "
                "HF_HUB_OFFLINE is set: download it first (huggingface-cli download) or give its folder"
            )
    return problems


def data_problems(files, stages) -> list[str]:
    """Stages whose data would come out empty, known from the files alone: summary pairs need articles that every
    other source summarised."""
    problems = []
    for st in stages:
        d = st.spec.data
        builder = BUILDERS.get(d["type"])
        if builder is None or not builder.uses_summaries:
            continue
        rel = f"articles/{d['articles']}_train_articles.json"
        ids = set(read_json(files.path(rel)))
        for src in d["other_sources"]:
            other = summary_file(d["articles"], src)
            ids &= set(read_json(files.path(other)))
            if not ids:
                problems.append(
                    f"intervention {d['name']}: no article of {rel} has a summary in {other} (their ids "
                    f"do not overlap), so no summary pair can be built: fix the file, or remove {src!r} "
                    "from intervention.other_sources"
                )
                break
    return problems


def probe(url: str, timeout_s: float, attempts: int = 3) -> object | None:
    """None when `url` answers (any HTTP status counts), else why not. A connection refused is final; one dropped
    or reset is tried again, so a flaky server is not taken for an absent one."""
    for attempt in range(attempts):
        try:
            urllib.request.urlopen(url, timeout=timeout_s).close()
            return None
        except urllib.error.HTTPError:
            return None  # it answered
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, ConnectionRefusedError) or attempt == attempts - 1:
                return reason
            time.sleep(0.2 * (attempt + 1))
    return None


def endpoint_problems(cfg, timeout_s: float = 10.0, judged: Iterable[str] | None = None) -> list[str]:
    """API endpoints the job will call that refuse connections now (a judge server not started, a wrong port): found
    before any training rather than after it. An answer of any kind (401, 404) counts as reachable."""
    problems = []
    for where, api in _api_uses(cfg, judged):
        key, url = f"{where}.base_url", api.base_url
        url = url or os.environ.get("OPENAI_BASE_URL")
        if not url or url.startswith("https://api.openai.com"):
            continue
        reason = probe(url.rstrip("/") + "/models", timeout_s)
        if reason is not None:
            problems.append(
                f"{key}: {url} cannot be reached ({reason}): start the server there, or fix {key} "
                f"(null: $OPENAI_BASE_URL, else api.openai.com)"
            )
    return problems
