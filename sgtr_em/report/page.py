"""The report as one Markdown file and one static HTML page beside it (tables + the PNGs, relative links)."""

from __future__ import annotations

import html
from pathlib import Path

from .aggregate import Row
from .metrics import METRICS
from .tables import markdown_table, metric_markdown, metric_rows, summary_rows

# Each figure records whether it loaded (data-state, data-width): a reader sees a broken figure named, and the
# headless-browser test reads the same attributes.
ONLOAD = "this.dataset.state='loaded';this.dataset.width=this.naturalWidth"
ONERROR = (
    "this.dataset.state='error';this.insertAdjacentText('afterend','(figure missing: '+this.getAttribute('src')+')')"
)

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3}td{text-align:right}td:first-child{text-align:left}img{max-width:100%}code{font-size:.9em}"""


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def render_markdown(meta: dict, table: dict[str, list[Row]], figures: dict[str, Path], out: Path) -> str:
    parts = [f"# Report: {meta['source']}", "", *(f"- {k}: {v}" for k, v in meta["facts"].items()), ""]
    parts += ["## Headline metrics", "", "mean [95 % interval] (n seeds)", "", markdown_table(*summary_rows(table)), ""]
    if figures:
        parts += ["## Figures", ""] + [f"### {t}\n\n![{t}]({_rel(p, out)})\n" for t, p in figures.items()]
    parts += ["## Every metric", ""] + [metric_markdown(m, table[m.key]) for m in METRICS if m.key in table]
    return "\n".join(parts)


def html_table(header: list[str], lines: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in lines)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(meta: dict, table: dict[str, list[Row]], figures: dict[str, Path], out: Path) -> str:
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Report: {e(meta['source'])}</title>",
        f"<style>{STYLE}</style></head><body><h1>Report: {e(meta['source'])}</h1><ul>",
        *(f"<li>{e(k)}: {e(str(v))}</li>" for k, v in meta["facts"].items()),
        "</ul>",
        "<h2>Headline metrics</h2><p>mean [95 % interval] (n seeds)</p>",
        html_table(*summary_rows(table)),
    ]
    if figures:
        parts.append("<h2>Figures</h2>")
        for title, path in figures.items():
            parts.append(
                f"<h3>{e(title)}</h3><img class='figure' src='{e(_rel(path, out))}' alt='{e(title)}' "
                f'onload="{ONLOAD}" onerror="{ONERROR}">'
            )
    parts.append("<h2>Every metric</h2>")
    for m in METRICS:
        if m.key in table:
            parts += [f"<h3>{e(m.label)} <code>{e(m.key)}</code></h3>", html_table(*metric_rows(table[m.key]))]
    return "\n".join(parts + ["</body></html>"])
