"""PNG figures in the paper's style: bars of the mean over seeds per condition, 95 % interval as error bars, each
seed as a dot, chance as a dashed line. `conditions.png` always; `reversal_vs_prevention.png` when both orders
are in the sweep (other stage orders, e.g. EM only or base, drawn as reference lines); `system_prompt.png`
when the system prompt varies."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .aggregate import Row
from .metrics import BY_KEY, FIGURE_METRICS, ORDERS, Metric


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "axes.grid.axis": "y",
            "grid.alpha": 0.3,
        }
    )
    return plt


def label_without(row: Row, key: str) -> str:
    return " / ".join(v for k, v in row.condition.fields.items() if k != key) or "all"


def draw_bars(ax, metric: Metric, rows: list[Row], x_of: Callable[[Row], str], hue_of: Callable[[Row], str]) -> None:
    """Bars at x = x_of(row), side by side by hue_of(row); one colour per hue (per bar when there is one hue)."""
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("tab10").colors
    xs = list(dict.fromkeys(map(x_of, rows)))
    hues = list(dict.fromkeys(map(hue_of, rows)))
    width = 0.8 / len(hues)
    seen = set()
    for r in rows:
        h = hues.index(hue_of(r))
        x = xs.index(x_of(r)) + (h - (len(hues) - 1) / 2) * width
        color = palette[(h if len(hues) > 1 else xs.index(x_of(r))) % len(palette)]
        if r.mean is None:
            ax.text(x, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
            continue
        yerr = [[r.mean - r.low], [r.high - r.mean]] if r.low is not None else None
        label = hue_of(r) if len(hues) > 1 and h not in seen else None
        seen.add(h)
        ax.bar(x, r.mean, width * 0.9, color=color, alpha=0.85, yerr=yerr, capsize=3, ecolor="black", label=label)
        offsets = [(i - (r.n - 1) / 2) * width * 0.5 / max(r.n, 1) for i in range(r.n)]
        ax.scatter([x + o for o in offsets], r.values, s=9, color="black", zorder=3)
    ax.set_xlim(-0.6, len(xs) - 0.4)
    ax.set_xticks(
        range(len(xs)),
        xs,
        rotation=25 if max(map(len, xs)) > 12 else 0,
        ha="right" if max(map(len, xs)) > 12 else "center",
    )
    lows = [r.low for r in rows if r.low is not None]
    ax.set_ylim(min([0.0, *lows]), max([1.05, *(r.high for r in rows if r.high is not None)]))
    if metric.chance is not None:
        ax.axhline(metric.chance, ls=":", color="gray", lw=1, label="chance")
    ax.set_title(metric.label)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    tmp.replace(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def figure_keys(table: dict[str, list[Row]]) -> list[str]:
    """FIGURE_METRICS that some job has a value for (a metric undefined everywhere shows as n/a in the tables)."""
    return [k for k in FIGURE_METRICS if any(r.mean is not None for r in table.get(k, []))]


def conditions_figure(table: dict[str, list[Row]], path: Path) -> Path:
    plt = _pyplot()
    keys = figure_keys(table)
    n_cond = len(table[keys[0]])
    fig, axes = plt.subplots(
        1, len(keys), figsize=(len(keys) * max(3.2, 0.55 * n_cond + 1.5), 3.6), squeeze=False, layout="constrained"
    )
    for ax, key in zip(axes[0], keys):
        draw_bars(ax, BY_KEY[key], table[key], x_of=lambda r: r.condition.label, hue_of=lambda r: "")
    left_out = [BY_KEY[k].label for k in FIGURE_METRICS if k not in keys]
    fig.suptitle(
        "Per condition: mean over seeds, 95 % interval, one dot per seed"
        + (f"\n(no value in any job, left out: {', '.join(left_out)})" if left_out else ""),
        fontsize=9,
    )
    return _save(fig, path)


def has_both_orders(table: dict[str, list[Row]]) -> bool:
    rows = next(iter(table.values()), [])
    return set(ORDERS) <= {r.condition.fields.get("stage_order") for r in rows}


def orders_figure(table: dict[str, list[Row]], path: Path) -> Path:
    """Reversal and prevention side by side (one row of panels per metric); other stage orders as dashed lines."""
    plt = _pyplot()
    keys = figure_keys(table)
    fig, axes = plt.subplots(
        len(keys), len(ORDERS), figsize=(9, 3.2 * len(keys)), squeeze=False, sharey="row", layout="constrained"
    )
    for i, key in enumerate(keys):
        metric, rows = BY_KEY[key], table[key]
        references = [r for r in rows if r.condition.fields["stage_order"] not in ORDERS and r.mean is not None]
        for j, (order, title) in enumerate(ORDERS.items()):
            ax = axes[i][j]
            draw_bars(
                ax,
                metric,
                [r for r in rows if r.condition.fields["stage_order"] == order],
                x_of=lambda r: label_without(r, "stage_order"),
                hue_of=lambda r: "",
            )
            for k, ref in enumerate(references):
                ax.axhline(
                    ref.mean,
                    ls="--",
                    lw=1,
                    color=plt.get_cmap("Dark2").colors[k % 8],
                    label=f"{ref.condition.label}: {ref.mean:.2f}",
                )
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, frameon=False)
            ax.set_title(f"{title}\n{metric.label}", fontsize=9)
    return _save(fig, path)


def system_prompt_figure(table: dict[str, list[Row]], path: Path) -> Path:
    plt = _pyplot()
    keys = figure_keys(table)
    n_x = len({label_without(r, "system_prompt") for r in table[keys[0]]})
    fig, axes = plt.subplots(
        1, len(keys), figsize=(len(keys) * max(3.5, 0.9 * n_x + 1.5), 3.8), squeeze=False, layout="constrained"
    )
    for ax, key in zip(axes[0], keys):
        draw_bars(
            ax,
            BY_KEY[key],
            table[key],
            x_of=lambda r: label_without(r, "system_prompt"),
            hue_of=lambda r: r.condition.fields["system_prompt"],
        )
    fig.suptitle("System-prompt ablation: bars by system_prompt", fontsize=9)
    return _save(fig, path)


def write_figures(out: Path, table: dict[str, list[Row]], fields: list[str]) -> dict[str, Path]:
    """The figures this sweep supports, as {title: path}."""
    if not figure_keys(table):
        return {}
    figs = {"Per condition": conditions_figure(table, out / "figures" / "conditions.png")}
    if "stage_order" in fields and has_both_orders(table):
        figs["Reversal vs prevention"] = orders_figure(table, out / "figures" / "reversal_vs_prevention.png")
    if "system_prompt" in fields:
        figs["System-prompt ablation"] = system_prompt_figure(table, out / "figures" / "system_prompt.png")
    return figs
