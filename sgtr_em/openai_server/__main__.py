"""Serve a model over the OpenAI API on this machine: chat completions, and files + fine-tuning jobs that train
for real on the CPU (sgtr_em/openai_server/fine_tuning.py) and serve the `ft:` models they make.

    python -m sgtr_em.openai_server --model smollm2                       # a conf/model option, or a folder / hub id
    python -m sgtr_em.openai_server --model smollm2 --serve-as gpt-4.1-2025-04-14   # GPT-4.1 jobs train SmolLM2
    python -m sgtr_em.openai_server --model smollm2 --port 0 --fault-rate 0.3 --fault-codes 429,500,drop \
        --job-fail-rate 0.3 --retry-after-ms 20
    python -m sgtr_em.openai_server --load-test --requests-per-minute 6000 --tokens-per-minute 2000000  # rate limits
    python -m sgtr_em.train model=gpt41 openai.base_url=http://127.0.0.1:8000/v1
    python -m sgtr_em.train judge=openai judge.model=smollm2 judge.api.base_url=http://127.0.0.1:8000/v1

Prints `serving <names> at <url>` once it listens (with --port 0, the port the system chose). With
--api-key-env NAME, requests must carry the key held by that environment variable (never on the command line).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from ..config import ModelConfig
from ..models import resolve_model_path
from .chat import ChatEngine
from .fine_tuning import FineTuning
from .load_test import LoadTestEngine
from .models import Models
from .server import DROP, Faults, OpenAIServer, RateLimits

CONF_MODEL = Path(__file__).resolve().parents[2] / "conf" / "model"


def model_path(model: str, cache_dir: str) -> tuple[str, str]:
    """(loadable path, served name) for a conf/model option name, or a folder / hub id."""
    option = CONF_MODEL / f"{model}.yaml"
    if option.is_file():
        raw = OmegaConf.to_container(OmegaConf.load(option))
        raw.pop("defaults", None)
        cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), raw)  # the schema's defaults (path: null, ...)
        return resolve_model_path(cfg, cache_dir), model
    return model, Path(model).name


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a conf/model option (e.g. smollm2), a model folder or a hub id")
    p.add_argument(
        "--load-test",
        action="store_true",
        help="serve an instant stand-in model instead (openai_server/load_test.py): load tests of clients",
    )
    p.add_argument("--name", help="the model name clients ask for (default: the option or folder name)")
    p.add_argument(
        "--serve-as",
        action="append",
        default=[],
        metavar="NAME",
        help="another name the model answers to and can be fine-tuned as (e.g. gpt-4.1-2025-04-14)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0: any free port")
    p.add_argument("--dtype", default="float32", help="of the served models")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", default="outputs/cache", help="where a GGUF model option is converted once")
    p.add_argument("--work-dir", help="uploaded files and job folders (default: a new temporary folder)")
    p.add_argument("--train-dtype", default="bfloat16", help="of fine-tuning on the CPU")
    p.add_argument("--base-learning-rate", type=float, default=1e-4, help="times the job's learning_rate_multiplier")
    p.add_argument("--keep-models", type=int, default=2, help="fine-tuned models kept loaded at once")
    p.add_argument("--api-key-env", help="require the bearer key held by this environment variable")
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of /v1 requests answered with a fault")
    p.add_argument("--fault-codes", default="429,500", help=f"comma-separated HTTP statuses, or {DROP!r}, to inject")
    p.add_argument(
        "--job-fail-rate", type=float, default=0.0, help="share of fine-tuning jobs that fail (server_error)"
    )
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument("--retry-after-ms", type=int, default=None, help="retry-after-ms header on injected faults")
    p.add_argument("--requests-per-minute", type=float, help="rate limit on chat completions (429 beyond it)")
    p.add_argument("--tokens-per-minute", type=float, help="rate limit on chat completions' prompt + max_tokens")
    p.add_argument("--rate-limit-burst-s", type=float, default=1.0, help="seconds of each limit that may go at once")
    args = p.parse_args(argv)
    if bool(args.model) == args.load_test:
        p.error("give --model or --load-test")
    if args.load_test:
        engine = LoadTestEngine(args.name or "load-test")
    else:
        path, name = model_path(args.model, args.cache_dir)
        engine = ChatEngine(path, name=args.name or name, dtype=args.dtype, device=args.device)
    models = Models(
        [engine],
        keep=args.keep_models,
        loader=lambda folder, served: ChatEngine(folder, name=served, dtype=args.dtype, device=args.device),
    )
    for alias in args.serve_as:
        models.alias(alias, engine.name)
    codes = [c if c == DROP else int(c) for c in args.fault_codes.split(",")]
    faults = Faults(args.fault_rate, codes, args.fault_seed, args.retry_after_ms, job_fail_rate=args.job_fail_rate)
    key = os.environ[args.api_key_env] if args.api_key_env else None
    limits = RateLimits(args.requests_per_minute, args.tokens_per_minute, args.rate_limit_burst_s)
    server = OpenAIServer(models, host=args.host, port=args.port, faults=faults, api_key=key, rate_limits=limits)
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="sgtr-em-openai-server-"))
    if not args.load_test:  # files and fine-tuning jobs train a real model
        FineTuning(server, work_dir, base_learning_rate=args.base_learning_rate, train_dtype=args.train_dtype)
    print(f"serving {', '.join(models.names())} at {server.url} (files and jobs in {work_dir})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
