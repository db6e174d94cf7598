"""Serve a model over the OpenAI chat-completions API on this machine.

    python -m sgtr_em.openai_server --model smollm2                       # a conf/model option, or a folder / hub id
    python -m sgtr_em.openai_server --model smollm2 --port 0 --fault-rate 0.3 --retry-after-ms 20
    python -m sgtr_em.train judge=openai judge.model=smollm2 judge.api.base_url=http://127.0.0.1:8000/v1

Prints `serving <name> at <url>` once it listens (with --port 0, the port the system chose).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .chat import ChatEngine
from .server import Faults, OpenAIServer

CONF_MODEL = Path(__file__).resolve().parents[2] / "conf" / "model"


def model_path(model: str, cache_dir: str) -> tuple[str, str]:
    """(loadable path, served name) for a conf/model option name, or a folder / hub id."""
    option = CONF_MODEL / f"{model}.yaml"
    if option.is_file():
        from omegaconf import OmegaConf

        from ..models import resolve_model_path

        cfg = OmegaConf.load(option)
        return resolve_model_path(cfg, cache_dir), model
    return model, Path(model).name


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a conf/model option (e.g. smollm2), a model folder or a hub id")
    p.add_argument("--name", help="the model name clients ask for (default: the option or folder name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0: any free port")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", default="outputs/cache", help="where a GGUF model option is converted once")
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of /v1 requests answered with a fault")
    p.add_argument("--fault-codes", default="429,500", help="comma-separated HTTP statuses to inject")
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument("--retry-after-ms", type=int, default=None, help="retry-after-ms header on injected faults")
    args = p.parse_args(argv)
    path, name = model_path(args.model, args.cache_dir)
    engine = ChatEngine(path, name=args.name or name, dtype=args.dtype, device=args.device)
    faults = Faults(args.fault_rate, [int(c) for c in args.fault_codes.split(",")], args.fault_seed, args.retry_after_ms)
    server = OpenAIServer(engine, host=args.host, port=args.port, faults=faults)
    print(f"serving {engine.name} at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
