"""The seam between the packages: samhq_core is a library that never imports the job
(pipeline), and no module of either imports itself through others (no import cycles)."""

import ast
import os
import subprocess
import sys
from typing import Dict, Iterator, List, Set

from helpers.paths import ROOT

PACKAGES = ("samhq_core", "pipeline")


def modules(package: str) -> Dict[str, str]:
    """Dotted module name -> file, for every module of a package (packages as their __init__)."""
    found = {}
    for directory, _, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if not name.endswith(".py"):
                continue
            parts = os.path.relpath(os.path.join(directory, name), ROOT)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = os.path.join(directory, name)
    return found


def _type_checking_only(node: ast.AST, parents: Dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(module: str, path: str, known: Set[str]) -> Iterator[str]:
    """The project modules `module` imports when it runs (at module level or inside functions;
    imports for type checkers only are left out)."""
    tree = ast.parse(open(path).read(), path)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from x import y` imports the module x.y when there is one, else a name of x
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a name in a.b
                target = target.rpartition(".")[0]
            if target and target != module:
                yield target


def import_graph() -> Dict[str, Set[str]]:
    files = {name: path for package in PACKAGES for name, path in modules(package).items()}
    return {name: set(imports(name, path, set(files))) for name, path in files.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_samhq_core_never_imports_the_job():
    graph = import_graph()
    reaching = {m: sorted(t for t in targets if t.split(".")[0] == "pipeline")
                for m, targets in graph.items() if m.split(".")[0] == "samhq_core"}
    assert not {m: t for m, t in reaching.items() if t}, reaching
    # ... and really imports, every module of it, where `pipeline` cannot be imported at all.
    names = sorted(m for m in modules("samhq_core"))
    code = ("import importlib, sys\nsys.modules['pipeline'] = None\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\nprint('imported', len({names!r}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"imported {len(names)}" in proc.stdout


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30 and graph["samhq_core.modeling.sam_hq"]  # the scan sees the packages
    assert not cycles(graph), cycles(graph)


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_column_names_are_spelled_only_in_the_schema():
    """No module of the job but pipeline/schema.py writes a column's name as a string (the
    values of a config key's Literal type, such as output.mode's "error", are not names)."""
    from pipeline import schema

    names = set(schema.COLUMN_TYPES)
    found = []
    for module, path in modules("pipeline").items():
        if module == "pipeline.schema":
            continue
        tree = ast.parse(open(path).read(), path)
        literal_values = {id(arg) for node in ast.walk(tree)
                          if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
                          and node.value.id == "Literal"
                          for arg in ast.walk(node.slice) if isinstance(arg, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in literal_values:
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, found
