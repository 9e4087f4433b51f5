"""The import graph of the ``edgert`` Python package, its layer rules, and its picture in the docs.

Layers (``docs/design/layers.md``): a floor imports only from the floors below it, and applications never
import each other::

    entry points   cli, __main__
    applications   mimo, ams, srvc (recl, adapt)
    foundation     ops, vision, updates, transport, harness, data, infer
    core           edgert (the package root), _info, _edgert / _edgert_cuda (C++)

Every ``import`` counts, including those inside functions (a lazy import is still a dependency); only
imports under ``if TYPE_CHECKING:`` are left out, since they never run.

    python tools/import_graph.py            # check the rules, print violations and the package graph
    python tools/import_graph.py --write    # also rewrite the graph block in docs/design/layers.md
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Iterable, Optional

CORE = ("edgert", "_info", "_edgert", "_edgert_cuda")
FOUNDATION = ("ops", "vision", "updates", "transport", "harness", "data", "infer")
APPLICATIONS = ("mimo", "ams", "srvc", "recl", "adapt")
ENTRY = ("cli", "__main__")
FLOOR = {**{p: 0 for p in CORE}, **{p: 1 for p in FOUNDATION}, **{p: 2 for p in APPLICATIONS},
         **{p: 3 for p in ENTRY}}
BEGIN, END = "<!-- import-graph:begin (tools/import_graph.py --write) -->", "<!-- import-graph:end -->"
ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """Absolute names of the ``edgert`` modules ``path`` imports (runtime imports only); ``from P import m`` of a
    submodule ``P.m`` counts as an import of ``P.m`` alone."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(nodes: Iterable[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "edgert")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] == "edgert":
                    for a in node.names:
                        sub = f"{target}.{a.name}"
                        found.add(sub if sub in modules else target)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])
                elif isinstance(child, (ast.ExceptHandler,)):
                    visit(child.body)

    visit(tree.body)
    return found


def module_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (names that are not modules map to their parent)."""
    files = {module_name(p, package_dir): p for p in package_dir.rglob("*.py")}
    modules = set(files) | {"edgert._edgert", "edgert._edgert_cuda"}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps = set()
        for target in imports_of(path, name, path.name == "__init__.py", modules):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def unit(module: str) -> str:
    """The layer unit of a module: its top-level subpackage or module below ``edgert``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "edgert"


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        u = unit(mod)
        out.setdefault(u, set()).update(unit(d) for d in deps if unit(d) != u)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a layer rule, and every import cycle (between modules or between packages)."""
    out = []
    for mod, deps in sorted(graph.items()):
        src = unit(mod)
        if src not in FLOOR:
            out.append(f"{mod}: package {src!r} is in no layer (add it to tools/import_graph.py)")
            continue
        for dep in sorted(deps):
            dst = unit(dep)
            if dst == src or dst not in FLOOR:
                continue
            if src in APPLICATIONS and dst in APPLICATIONS:
                out.append(f"{mod} imports {dep}: applications never import each other")
            elif FLOOR[dst] > FLOOR[src]:
                out.append(f"{mod} imports {dep}: a {_floor_name(src)} module imports from an {_floor_name(dst)}"
                           if dst in APPLICATIONS else
                           f"{mod} imports {dep}: a {_floor_name(src)} module imports from {_floor_name(dst)}")
    for comp in cycles(graph):
        out.append(f"import cycle between modules: {' <-> '.join(comp)}")
    for comp in cycles(package_graph(graph)):
        out.append(f"import cycle between packages: {' <-> '.join(comp)}")
    return out


def _floor_name(u: str) -> str:
    return ("core", "foundation", "application", "entry-point")[FLOOR[u]]


def mermaid(graph: dict[str, set[str]]) -> str:
    """The package graph as a Mermaid flowchart, one subgraph per floor (top: entry points)."""
    pkgs = package_graph(graph)
    present = set(pkgs) | {d for ds in pkgs.values() for d in ds}
    lines = ["```mermaid", "flowchart TB"]
    for title, members in (("entry points", ENTRY), ("applications", APPLICATIONS), ("foundation", FOUNDATION),
                           ("core", CORE)):
        shown = [m for m in members if m in present]
        if shown:
            lines.append(f'  subgraph {title.replace(" ", "_")}["{title}"]')
            lines.extend(f'    {_node(m)}["{_label(m)}"]' for m in shown)
            lines.append("  end")
    for src in sorted(pkgs):
        for dst in sorted(pkgs[src]):
            lines.append(f"  {_node(src)} --> {_node(dst)}")
    lines.append("```")
    return "\n".join(lines)


def _node(u: str) -> str:
    return "root" if u == "edgert" else u.strip("_") or u


def _label(u: str) -> str:
    return {"edgert": "edgert (root)", "_edgert": "_edgert (C++)", "_edgert_cuda": "_edgert_cuda (CUDA)"}.get(u, u)


def docs_block(graph: dict[str, set[str]]) -> str:
    return f"{BEGIN}\n{mermaid(graph)}\n{END}"


def check_docs(graph: dict[str, set[str]], doc: Path) -> Optional[str]:
    """None when ``doc`` holds the current picture, else what is wrong."""
    text = doc.read_text() if doc.is_file() else ""
    if BEGIN not in text or END not in text:
        return f"{doc} has no generated import-graph block"
    current = text[text.index(BEGIN):text.index(END) + len(END)]
    if current == docs_block(graph):
        return None
    return f"{doc}: the import graph is stale; run tools/import_graph.py --write"


def write_docs(graph: dict[str, set[str]], doc: Path) -> None:
    text = doc.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    doc.write_text(text[:start] + docs_block(graph) + text[end:])


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=ROOT / "python" / "edgert")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "design" / "layers.md")
    parser.add_argument("--write", action="store_true", help="rewrite the graph block in --doc")
    args = parser.parse_args(argv)
    graph = module_graph(args.package)
    problems = violations(graph)
    if args.write:
        write_docs(graph, args.doc)
    else:
        stale = check_docs(graph, args.doc)
        if stale:
            problems.append(stale)
    for p in problems:
        print(p)
    print(mermaid(graph))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
