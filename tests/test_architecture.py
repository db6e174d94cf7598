"""The package's layers (docs/ARCHITECTURE.md), checked on the source: every import of every module of sgtr_em, at the
top of a file or inside a function, points down or sideways in LAYERS, never up, and no chain of imports comes back to
where it started. Read from the files with `ast` (nothing is imported), so it runs in a fraction of a second.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "sgtr_em"
DOC = REPO / "docs" / "ARCHITECTURE.md"

# Lowest first. A module belongs to the layer of the longest prefix that names it (a package names its submodules).
# A module may import its own layer and those below, never one above. docs/ARCHITECTURE.md shows this same table.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "sgtr_em",
            "sgtr_em.io",
            "sgtr_em.models",
            "sgtr_em.compute",
            "sgtr_em.workers",
            "sgtr_em.openai_limits",
            "sgtr_em.contracts",
            "sgtr_em.choices",
        ),
    ),
    ("inference", ("sgtr_em.inference",)),
    ("data", ("sgtr_em.data",)),
    ("training", ("sgtr_em.training",)),
    ("evaluation", ("sgtr_em.evaluation",)),
    (
        "job",
        (
            "sgtr_em.backend",
            "sgtr_em.defences",
            "sgtr_em.plan",
            "sgtr_em.config",
            "sgtr_em.preflight",
            "sgtr_em.cost",
            "sgtr_em.tracking",
            "sgtr_em.multinode",
            "sgtr_em.job",
        ),
    ),
    ("cli", ("sgtr_em.train", "sgtr_em.grid", "sgtr_em.report", "sgtr_em.openai_server")),
]

# Third-party packages heavy enough to import inside a function (seconds, or GPU-only), so that the CLI process, the
# data worker and an API model's workers start without them. Any other import belongs at the top of its module.
HEAVY = {
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "safetensors",
    "deepspeed",
    "bitsandbytes",
    "vllm",
    "openai",
    "wandb",
    "wandb_workspaces",
    "matplotlib",
}


# ------------------------------------------------------------------------------------------------ the checker


def parse(path: Path) -> ast.Module:
    return _parse(path.read_text(encoding="utf-8"), str(path))


@functools.cache
def _parse(text: str, filename: str) -> ast.Module:  # each file is read by several checks
    return ast.parse(text, filename=filename)


def module_files(root: Path, package: str) -> dict[str, Path]:
    """{dotted module name: file} of every .py file under root (root is the package `package`)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(module: str, path: Path, known: set[str], top_only: bool = False) -> list[tuple[str, int]]:
    """(imported module of `known`, line) for every import statement in the file, however deeply nested (or only
    those at the module's top level)."""
    is_package = path.name == "__init__.py"
    out = []
    tree = parse(path)
    for node in tree.body if top_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import name`: the submodule pkg.name where there is one, else pkg itself
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c as x` of a package-level name: its nearest module
                t = t.rpartition(".")[0]
            if t and t != module:
                out.append((t, node.lineno))
    return out


def import_graph(root: Path, package: str) -> dict[str, list[tuple[str, int]]]:
    files = module_files(root, package)
    return {m: imports_of(m, p, set(files)) for m, p in files.items()}


def function_level_imports(root: Path, package: str) -> list[tuple[str, int, str]]:
    """(module, line, imported name) of every import inside a function or class body (module-level `if`/`try`
    blocks count as top level)."""
    out = []
    for mod, path in module_files(root, package).items():
        tree = parse(path)
        top = set()
        for node in tree.body:  # the module's own statements, and those of its top-level if/try blocks
            top.update(
                id(n)
                for n in ast.walk(node)
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            )
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    names = [("." * node.level) + (node.module or "")]
                out += [(mod, node.lineno, n) for n in names]
    return out


def heavy_modules(root: Path, package: str) -> set[str]:
    """Modules of the package that load a HEAVY package when imported: at their top, or through such a module."""
    files = module_files(root, package)
    direct = set()
    for mod, path in files.items():
        tree = parse(path)
        for node in tree.body:
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] in HEAVY for a in node.names):
                direct.add(mod)
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in HEAVY:
                direct.add(mod)
    top_edges = {m: {t for t, _ in imports_of(m, p, set(files), top_only=True)} for m, p in files.items()}
    heavy, changed = set(direct), True
    while changed:
        changed = False
        for m, targets in top_edges.items():
            if m not in heavy and targets & heavy:
                heavy.add(m)
                changed = True
    return heavy


def misplaced_imports(root: Path, package: str) -> list[str]:
    """Imports inside a function that load nothing HEAVY, as `module:line imports name`."""
    files = module_files(root, package)
    heavy = heavy_modules(root, package)
    bad = []
    for mod, line, name in function_level_imports(root, package):
        if name.split(".")[0] in HEAVY:
            continue
        targets = [t for t, ln in imports_of(mod, files[mod], set(files)) if ln == line]
        if targets and all(t in heavy for t in targets):
            continue
        bad.append(f"{mod}:{line} imports {name}")
    return bad


def layer_of(module: str, layers=LAYERS) -> int | None:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(layers):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def upward_imports(graph: dict[str, list[tuple[str, int]]], layers=LAYERS) -> list[str]:
    """Every import from a lower layer into a higher one, as `module:line (layer) -> module (layer)`."""
    names = [n for n, _ in layers]
    out = []
    for mod, edges in sorted(graph.items()):
        lo = layer_of(mod, layers)
        for target, line in edges:
            hi = layer_of(target, layers)
            if lo is not None and hi is not None and hi > lo:
                out.append(f"{mod}:{line} ({names[lo]}) imports {target} ({names[hi]})")
    return list(dict.fromkeys(out))  # `from x import a, b` is one import


def import_cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Each strongly connected group of modules that import one another, as one cycle through it: [a, b, ..., a]."""
    adj = {m: sorted({t for t, _ in edges if t in graph}) for m, edges in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan; the package has ~100 modules, recursion depth is no concern
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adj[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(adj):
        if v not in index:
            strongconnect(v)

    cycles = []
    for group in groups:  # one concrete cycle: a shortest path back to the group's first module
        start, members = group[0], set(group)
        paths, seen = {start: [start]}, {start}
        frontier, cycle = [start], None
        while frontier and cycle is None:
            nxt = []
            for v in frontier:
                for w in adj[v]:
                    if w == start:
                        cycle = paths[v] + [start]
                        break
                    if w in members and w not in seen:
                        seen.add(w)
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
                if cycle:
                    break
            frontier = nxt
        cycles.append(cycle)
    return cycles


def doc_layers(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """The layer table of docs/ARCHITECTURE.md: rows `| n | name | `mod`, `mod` |` under '## Layers'."""
    section = text.split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|\s*(\w+)\s*\|(.*)\|", line)
        if m:
            rows.append((int(m[1]), m[2], tuple(re.findall(r"`([\w.]+)`", m[3]))))
    assert [r[0] for r in rows] == list(range(len(rows))), f"{DOC}: the layer rows are not numbered 0, 1, 2, ..."
    return [(name, mods) for _, name, mods in rows]


# ------------------------------------------------------------------------------------------------ the package


@pytest.fixture(scope="module")
def graph():
    return import_graph(PACKAGE, "sgtr_em")


def test_every_module_has_a_layer_and_every_layer_entry_a_module(graph):
    missing = [m for m in graph if layer_of(m) is None]
    assert not missing, (
        f"modules in no layer: {missing}. Add each to LAYERS in tests/test_architecture.py and to "
        "the table in docs/ARCHITECTURE.md"
    )
    stale = [p for _, prefixes in LAYERS for p in prefixes if p not in graph]
    assert not stale, f"LAYERS names modules that do not exist (moved or removed?): {stale}"


def test_no_lower_layer_imports_a_higher_one(graph):
    assert len(graph) > 80 and sum(len(e) for e in graph.values()) > 200  # the parser sees the package
    bad = upward_imports(graph)
    assert not bad, (
        "imports against the layers (docs/ARCHITECTURE.md; move the code down, or pass what it needs "
        "in):\n  " + "\n  ".join(bad)
    )


def test_no_import_cycle(graph):
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


def test_imports_inside_functions_are_only_heavy_optional_ones():
    """An import sits at the top of its module unless it loads a HEAVY package (directly, or through a module of the
    package that does): deliberately deferred to keep the CLI and the light workers fast to start."""
    bad = misplaced_imports(PACKAGE, "sgtr_em")
    assert not bad, "\n  ".join(["imports that belong at the top of their module:", *bad])


def test_the_documented_layers_are_the_tested_ones():
    assert doc_layers(DOC.read_text(encoding="utf-8")) == LAYERS, (
        f"the layer table of {DOC.relative_to(REPO)} differs from LAYERS in tests/test_architecture.py: "
        "change both together"
    )


# ------------------------------------------------------------------------------------------------ the checker checks


def test_a_planted_upward_import_and_cycle_are_found(tmp_path):
    """A synthetic package on disk: a function-level import from a low layer into a high one, a relative
    `from . import` cycle, and a package-level import; the same parser and checks must report each."""
    pkg = tmp_path / "toy"
    (pkg / "low").mkdir(parents=True)
    (pkg / "high").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "high" / "__init__.py").write_text("from .b import thing\n")
    (pkg / "low" / "a.py").write_text("import os\n\n\ndef f():\n    from ..high.b import thing\n    return thing\n")
    (pkg / "high" / "b.py").write_text("from . import c\nthing = 1\n")
    (pkg / "high" / "c.py").write_text("import toy.high.b as b\n")
    (pkg / "high" / "d.py").write_text("from toy.low import a\nfrom toy import high\n")
    layers = [("low", ("toy", "toy.low")), ("high", ("toy.high",))]
    g = import_graph(pkg, "toy")
    assert g["toy.low.a"] == [("toy.high.b", 5)]
    assert upward_imports(g, layers) == ["toy.low.a:5 (low) imports toy.high.b (high)"]
    assert import_cycles(g) == [["toy.high.b", "toy.high.c", "toy.high.b"]]
    assert {t for t, _ in g["toy.high.d"]} == {"toy.low.a", "toy.high"}

    (pkg / "high" / "c.py").write_text("x = 1\n")  # the cycle broken, the upward import moved: both checks pass
    (pkg / "low" / "a.py").write_text("import os\n")
    g = import_graph(pkg, "toy")
    assert upward_imports(g, layers) == [] and import_cycles(g) == []


def test_a_light_import_inside_a_function_is_found(tmp_path):
    pkg = tmp_path / "toy2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "gpu.py").write_text("import torch\n")  # heavy: loads torch at its top
    (pkg / "light.py").write_text("import json\n")
    (pkg / "user.py").write_text(
        "def f():\n    import torch\n    from . import gpu\n    from .light import json\n"
        "    import os\n\n\nclass C:\n    import re\n"
    )
    (pkg / "guarded.py").write_text("try:\n    import yaml\nexcept ImportError:\n    yaml = None\n")
    assert heavy_modules(pkg, "toy2") == {"toy2.gpu"}
    assert misplaced_imports(pkg, "toy2") == [
        "toy2.user:4 imports .light",
        "toy2.user:5 imports os",
        "toy2.user:9 imports re",
    ]


def test_a_synthetic_graph_reports_every_cycle_and_violation():
    g = {
        "p.base.x": [("p.top.y", 3)],
        "p.top.y": [("p.top.z", 1)],
        "p.top.z": [("p.top.y", 2)],
        "p.mid.m": [("p.mid.n", 1)],
        "p.mid.n": [("p.mid.o", 1)],
        "p.mid.o": [("p.mid.m", 9), ("p.base.x", 1)],
    }
    layers = [("base", ("p.base",)), ("mid", ("p.mid",)), ("top", ("p.top",))]
    assert upward_imports(g, layers) == ["p.base.x:3 (base) imports p.top.y (top)"]
    assert sorted(import_cycles(g)) == [["p.mid.m", "p.mid.n", "p.mid.o", "p.mid.m"], ["p.top.y", "p.top.z", "p.top.y"]]
    assert layer_of("p.mid.deep.er", layers) == 1 and layer_of("q", layers) is None


def test_the_doc_table_parser_reads_rows_in_order():
    text = (
        "# A\n\n## Layers\n\n| # | layer | modules |\n|---|---|---|\n| 0 | base | `p`, `p.io` |\n"
        "| 1 | top | `p.cli` (the CLI) |\n\n## Next\n| 5 | no | `p.x` |\n"
    )
    assert doc_layers(text) == [("base", ("p", "p.io")), ("top", ("p.cli",))]
