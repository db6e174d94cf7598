"""Paper-style tables and figures from a sweep, and the W&B dashboard.

python -m sgtr_em.report outputs/multiruns/<date>/<time>    # offline, from the job folders; writes <dir>/report/
python -m sgtr_em.report <W&B group> --entity E --project P  # online, the group's runs; outputs/reports/<group>/
python -m sgtr_em.report <dir> --interval bootstrap --out DIR
python -m sgtr_em.report --dashboard --entity E --project sgtr-em [--group G] [--print]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .aggregate import INTERVALS
from .build import write_report
from .collect import collect_wandb, jobs_from_folder, unfinished_job_dirs
from .dashboard import definition, workspace


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sgtr_em.report", description=__doc__.splitlines()[0])
    p.add_argument("source", nargs="?", help="a sweep (or run) folder, or a W&B group name")
    p.add_argument("--out", help="where to write (default: <folder>/report, or outputs/reports/<group>)")
    p.add_argument("--interval", choices=sorted(INTERVALS), default="t", help="95 %% interval over seeds (default t)")
    p.add_argument("--entity", default=os.environ.get("WANDB_ENTITY"))
    p.add_argument("--project", default=os.environ.get("WANDB_PROJECT", "sgtr-em"))
    p.add_argument("--dashboard", action="store_true", help="create the W&B workspace view (online)")
    p.add_argument("--group", help="--dashboard: only this W&B group (one sweep)")
    p.add_argument("--print", action="store_true", help="--dashboard: print its definition; send nothing")
    args = p.parse_args(argv)
    if not args.dashboard and not args.source:
        p.error("give a sweep folder or a W&B group (or --dashboard)")
    if args.dashboard and not args.print and not args.entity:
        p.error("--dashboard needs --entity (or WANDB_ENTITY)")
    if args.source and not Path(args.source).exists() and ("/" in args.source or args.source.startswith(".")):
        p.error(f"{args.source}: no such folder (a W&B group name has no '/')")
    return args


def dashboard(args) -> None:
    w = workspace(args.entity or "<entity>", args.project, args.group)
    if args.print:
        print(json.dumps(definition(w), indent=1))
        return
    w.save()
    print(f"W&B workspace view saved: {w.url}")


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.dashboard:
        dashboard(args)
        return 0

    if Path(args.source).exists():
        jobs, unfinished = jobs_from_folder(args.source), unfinished_job_dirs(args.source)
        out = Path(args.out or Path(args.source) / "report")
    else:
        jobs, unfinished = collect_wandb(args.source, entity=args.entity, project=args.project)
        out = Path(args.out or Path(os.environ.get("SGTR_EM_OUTPUT_DIR", "outputs")) / "reports" / args.source)
    written = write_report(jobs, out, source=args.source, interval=args.interval, unfinished=unfinished)
    print(
        f"{len(jobs)} jobs, {len(written['conditions'])} conditions -> {written['markdown']}, {written['html']}, "
        f"{len(written['table'])} metric tables (tables/*.md, *.csv), {len(written['figures'])} figures"
    )
    if unfinished:
        print(
            f"warning: {len(unfinished)} more jobs have no results (failed or still running), left out:",
            file=sys.stderr,
        )
        print("  " + "\n  ".join(unfinished), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
