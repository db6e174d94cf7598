"""The W&B comparison as code (W&B's `wandb-workspaces`): a saved workspace view whose runs are grouped by the
config groups (so seeds aggregate), with panels for the headline metrics, training loss per stage, and the
evaluations after each stage.

    python -m sgtr_em.report --dashboard --entity E --project sgtr-em [--group G]    # creates it (online)
    python -m sgtr_em.report --dashboard --entity E --project sgtr-em --print        # the definition, offline
"""

from __future__ import annotations

from typing import Optional

from ..tracking import CONDITION_KEYS
from .metrics import BY_KEY

# Bar charts of each run group's summary: mean +/- standard error over the group's runs (the seeds).
BAR_METRICS = (
    "em/misaligned_rate",
    "em/misaligned_rate_mo",
    "self_recognition/headline",
    "truthfulqa/headline",
    "identity/entropy_identity",
    "identity/share_own_identity",
    "identity/distinct_identities",
    "mmlu/accuracy",
)
# Stage i of kind k logs train/<i>_<k>/loss against train/<i>_<k>/step (sgtr_em/tracking.py log_stage).
STAGES = ((1, "em"), (1, "intervention"), (2, "em"), (2, "intervention"))
# eval.after_each_stage=true logs eval/<name>/... against eval/stage (stages the evaluated model went through).
PER_STAGE_METRICS = ("em/misaligned_rate_mo", "self_recognition/headline")


def workspace(entity: str, project: str, group: Optional[str] = None):
    """The workspace definition (nothing is sent until `.save()`)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    bars = [
        wr.BarPlot(
            title=BY_KEY[k].label,
            metrics=[f"eval/{k}"],
            orientation="v",
            groupby_aggfunc="mean",
            groupby_rangefunc="stderr",
        )
        for k in BAR_METRICS
    ]
    losses = [
        wr.LinePlot(
            title=f"Training loss, stage {i} ({kind})",
            x=f"train/{i}_{kind}/step",
            y=[f"train/{i}_{kind}/loss"],
            groupby_aggfunc="mean",
            groupby_rangefunc="stderr",
        )
        for i, kind in STAGES
    ]
    per_stage = [
        wr.LinePlot(
            title=f"{BY_KEY[k].label} after each stage",
            x="eval/stage",
            y=[f"eval/{k}"],
            groupby_aggfunc="mean",
            groupby_rangefunc="stderr",
        )
        for k in PER_STAGE_METRICS
    ]
    return ws.Workspace(
        entity=entity,
        project=project,
        name=f"sgtr-em: {group or 'every sweep'} by condition",
        sections=[
            ws.Section(name="Results by condition (mean +/- s.e. over seeds)", panels=bars, is_open=True),
            ws.Section(name="Training loss per stage", panels=losses, is_open=True),
            ws.Section(name="Evaluations after each stage", panels=per_stage, is_open=False),
        ],
        runset_settings=ws.RunsetSettings(
            groupby=[ws.Config(k) for k in (*CONDITION_KEYS, "condition_overrides")],
            filters=ws.And(ws.Metric("Group") == group) if group else "",
        ),
        settings=ws.WorkspaceSettings(max_runs=100),
    )


def definition(w) -> dict:
    """The view W&B would store (its JSON spec), for printing and tests."""
    return w._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")
