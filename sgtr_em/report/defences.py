"""The defences comparison (sweep=defences): per arm (defence, or SGTR prevention) and EM dataset, Kaczér et al.'s
axes side by side with the compute each arm trained: `defences.md` and `figures/defences.png`. Written when the
report's jobs differ in `defence`."""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_write_text
from .aggregate import Row
from .figures import _pyplot, _save, draw_bars, label_without
from .metrics import BY_KEY
from .tables import cell, markdown_table

# (metric key, column): broad EM, the narrow task still learnt, a benign task still learnt (the SGTR stage trained
# with the defence, sweep=defences_benign), coherence, the persona shift, then compute
AXES = (
    ("em/misaligned_rate_mo", "broad EM (misaligned, MO)"),
    ("em/misaligned_rate", "broad EM (Betley)"),
    ("in_domain/narrow_rate", "narrow task learnt (in-domain)"),
    ("self_recognition/headline", "benign task learnt (SR)"),
    ("em/share_coherent", "coherent share"),
    ("persona/shift", "persona shift vs base"),
    ("compute/optimizer_steps", "optimizer steps"),
    ("compute/train_tokens", "tokens trained"),
)
FIGURE_AXES = (
    "em/misaligned_rate_mo",
    "in_domain/narrow_rate",
    "self_recognition/headline",
    "em/share_coherent",
    "persona/shift",
)


def _by_condition(table: dict[str, list[Row]]) -> tuple[list, dict]:
    keys = [k for k, _ in AXES if k in table]
    order = list({r.condition.label: r for k in keys for r in table[k]}.values())  # an EM arm or a benign-task arm
    return keys, {k: {r.condition.label: r for r in table[k]} for k in keys} | {"_order": order}


def defences_markdown(table: dict[str, list[Row]]) -> str:
    keys, rows = _by_condition(table)
    conditions = rows["_order"]
    fields = list(conditions[0].condition.columns) if conditions else []
    header = [*fields, *(label for k, label in AXES if k in keys)]
    lines = [
        [
            *r.condition.columns.values(),
            *(cell(rows[k][r.condition.label]) if r.condition.label in rows[k] else "n/a" for k in keys),
        ]
        for r in conditions
    ]
    return (
        "# Defences vs SGTR prevention\n\nmean [95 % interval] (n seeds) per arm; Kaczér et al.'s axes: broad EM "
        "(lower is better), the narrow task and a benign task (self-recognition, the SGTR stage trained with the "
        "defence) still learnt and coherence (higher is better), the persona shift "
        "(lower is better); compute: optimizer steps and tokens over all of a job's stages.\n\n"
        + markdown_table(header, lines)
        + "\n"
    )


def defences_figure(table: dict[str, list[Row]], path: Path) -> Path:
    plt = _pyplot()
    keys = [k for k in FIGURE_AXES if any(r.mean is not None for r in table.get(k, []))]
    n_x = len({r.condition.fields.get("defence") for r in table[keys[0]]})
    fig, axes = plt.subplots(
        1, len(keys), figsize=(len(keys) * max(3.5, 0.6 * n_x + 1.5), 3.8), squeeze=False, layout="constrained"
    )
    for ax, key in zip(axes[0], keys):
        draw_bars(
            ax,
            BY_KEY[key],
            table[key],
            x_of=lambda r: r.condition.fields.get("defence", ""),
            hue_of=lambda r: label_without(r, "defence"),
        )
    fig.suptitle("Defences vs SGTR prevention: bars by arm, colour by the other fields", fontsize=9)
    return _save(fig, path)


def write_defences(out: Path, table: dict[str, list[Row]], fields: list[str]) -> dict[str, Path]:
    """defences.md and figures/defences.png when the jobs differ in their defence; {} otherwise."""
    if "defence" not in fields or not any(k in table for k, _ in AXES):
        return {}
    atomic_write_text(out / "defences.md", defences_markdown(table))
    written = {"table": out / "defences.md"}
    if any(any(r.mean is not None for r in table.get(k, [])) for k in FIGURE_AXES):
        written["figure"] = defences_figure(table, out / "figures" / "defences.png")
    return written
