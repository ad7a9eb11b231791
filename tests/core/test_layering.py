"""The seams between and within the packages: samhq_core is a library that never imports the
job (pipeline); no module of either imports itself through others (no import cycles, imports
for type checkers included); and pipeline's packages stand in layers, each importing only
from itself and the layers below it."""

import ast
import os
import subprocess
import sys
from typing import Dict, Iterator, List, Set

from helpers.paths import ROOT

PACKAGES = ("samhq_core", "pipeline")
# pipeline's packages (and top-level modules), top layer first: `python -m pipeline`, the command line, the demo
# that strings commands together, the commands, what the job is built from, what reads and
# writes data, and the floor.
LAYERS = [
    ["pipeline", "pipeline.__main__"],
    ["pipeline.cli"],
    ["pipeline.demo"],
    ["pipeline.job", "pipeline.status", "pipeline.exports", "pipeline.imports", "pipeline.review",
     "pipeline.evaluation", "pipeline.finetune"],
    ["pipeline.checks", "pipeline.stages"],
    ["pipeline.output", "pipeline.inputs"],
    ["pipeline.masks", "pipeline.storage"],
    ["pipeline.config"],
    ["pipeline.schema", "pipeline.ids", "pipeline.text"],
]


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


def imports(module: str, path: str, known: Set[str], type_only: bool = False) -> Iterator[str]:
    """The project modules `module` imports when it runs (at module level or inside functions),
    and with `type_only` also those it imports for type checkers only."""
    tree = ast.parse(open(path).read(), path)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if not type_only and _type_checking_only(node, parents):
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


def import_graph(type_only: bool = False) -> Dict[str, Set[str]]:
    files = {name: path for package in PACKAGES for name, path in modules(package).items()}
    return {name: set(imports(name, path, set(files), type_only)) for name, path in files.items()}


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
    graph = import_graph(type_only=True)
    assert len(graph) > 30 and graph["samhq_core.modeling.sam_hq"]  # the scan sees the packages
    assert not cycles(graph), cycles(graph)


def unit_of(module: str) -> str:
    """The package of LAYERS a pipeline module belongs to (its top-level subpackage or module)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def layer_of(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def upward_imports(graph: Dict[str, Set[str]]) -> List[str]:
    """"module -> target" for each import of a pipeline module from its own layer (another
    package of it) or a higher one."""
    found = []
    for module, targets in graph.items():
        if module.split(".")[0] != "pipeline":
            continue
        unit = unit_of(module)
        for target in sorted(targets):
            other = unit_of(target) if target.split(".")[0] == "pipeline" else None
            if other is not None and other != unit and layer_of(other) <= layer_of(unit):
                found.append(f"{module} -> {target}")
    return found


def test_pipeline_packages_import_only_downwards():
    graph = import_graph(type_only=True)
    units = {unit_of(m) for m in graph if m.split(".")[0] == "pipeline"}
    assert units == {u for layer in LAYERS for u in layer}, "a package of pipeline/ is missing from LAYERS, or gone"
    assert not upward_imports(graph), upward_imports(graph)


def test_the_layer_check_finds_upward_and_sideways_imports():
    graph = {"pipeline.storage.location": {"pipeline.output.handle", "pipeline.config.base"},
             "pipeline.exports.coco": {"pipeline.review.page", "pipeline.exports.yolo", "samhq_core.config"}}
    assert upward_imports(graph) == ["pipeline.storage.location -> pipeline.output.handle",
                                     "pipeline.exports.coco -> pipeline.review.page"]


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


def readme_tree() -> Dict[str, Set[str]]:
    """The README's layout tree: package → the names listed under it ("modeling/", "cli.py")."""
    text = open(os.path.join(ROOT, "README.md")).read()
    block = text[text.index("## Layout"):]
    block = block[block.index("```text\n") + len("```text\n"):block.index("```", block.index("```text\n") + 8)]
    tree: Dict[str, Set[str]] = {}
    package = None
    for line in block.splitlines():
        name = line.split()[0]
        if not line.startswith(" "):
            package = name.rstrip("/")
            tree[package] = set()
        else:
            assert package is not None, line
            tree[package].add(name)
    return tree


def test_the_readme_layout_tree_matches_the_folders():
    tree = readme_tree()
    assert set(tree) == set(PACKAGES)
    for package, listed in tree.items():
        root = os.path.join(ROOT, package)
        present = {f"{name}/" for name in os.listdir(root) if os.path.isfile(os.path.join(root, name, "__init__.py"))}
        present |= {name for name in os.listdir(root) if name.endswith(".py") and name not in ("__init__.py", "__main__.py")}
        assert listed == present, (package, sorted(listed - present), sorted(present - listed))
