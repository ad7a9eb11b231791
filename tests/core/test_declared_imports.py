"""Every third-party module the repository imports is declared where a fresh machine gets it
from: pyproject's dependencies or extras, or a `pip install` line of scripts/setup.sh.

A package that is only installed by hand makes CI pass on one machine and fail on every new
one (scipy once did), so the check is on declarations, not on what happens to be installed.
"""

import ast
import importlib.metadata as md
import os
import re
import sys
from typing import Dict, Iterator, Set, Tuple

import tomllib
from helpers.paths import ROOT

SOURCE_DIRS = ("samhq_core", "pipeline", "tests", "bench", "scripts")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    return _normalise(re.split(r"[\s\[<>=!~;(@]", spec.strip(), maxsplit=1)[0])


def declared_distributions() -> Set[str]:
    """Distributions named by pyproject (dependencies and every extra) and by setup.sh."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    with open(os.path.join(ROOT, "scripts", "setup.sh")) as f:
        for line in re.findall(r"pip install[^\n]*", f.read()):
            specs += [w.strip("\"'") for w in line.split()[2:] if re.match(r"[\"']?[A-Za-z]", w)]
    return {_requirement_name(s) for s in specs}


def first_party_modules() -> Set[str]:
    """Packages and modules of this repository (test helpers and scripts included)."""
    names = {"samhq_core", "pipeline"}
    for folder in SOURCE_DIRS:
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            names |= {f[:-3] for f in files if f.endswith(".py")}
            if "__init__.py" in files:
                names.add(os.path.basename(directory))
    return names


def _guarded(node: ast.AST, parents: Dict[ast.AST, ast.AST]) -> bool:
    """Inside a `try` whose handlers catch ImportError (an optional import)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try) and any(
            h.type is not None and "ImportError" in ast.unparse(h.type) for h in node.handlers
        ):
            return True
    return False


def third_party_imports() -> Iterator[Tuple[str, str]]:
    """(top-level module, file) for every unguarded import of a module outside the stdlib
    and this repository."""
    local = first_party_modules()
    for folder in SOURCE_DIRS:
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(directory, name)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        modules = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        modules = [node.module]
                    else:
                        continue
                    for module in modules:
                        top = module.split(".")[0]
                        if top not in sys.stdlib_module_names and top not in local and not _guarded(node, parents):
                            yield top, os.path.relpath(path, ROOT)


def undeclared_imports(declared: Set[str]) -> Dict[str, Set[str]]:
    """Imported module (with the distributions installing it here) -> the files importing it,
    for modules that no distribution in `declared` provides."""
    providers = md.packages_distributions()
    found: Dict[str, Set[str]] = {}
    for module, path in third_party_imports():
        # A module that nothing installed here provides (a bench's own environment's) is taken
        # to come from the distribution of its name.
        distributions = {_normalise(d) for d in providers.get(module, [])} or {_normalise(module)}
        if not distributions & declared:
            key = f"{module} (installed from: {', '.join(sorted(distributions)) or 'nothing'})"
            found.setdefault(key, set()).add(path)
    return found


def test_every_imported_package_is_declared():
    undeclared = undeclared_imports(declared_distributions())
    assert not undeclared, "imported but declared nowhere (pyproject.toml or scripts/setup.sh):\n" + "\n".join(
        f"  {module}: {', '.join(sorted(paths))}" for module, paths in sorted(undeclared.items()))


def test_an_undeclared_import_is_found():
    """The scan sees real imports: without its declaration, scipy (used by the evaluation
    tests) would be reported."""
    assert {"torch", "ray", "pyarrow", "pycocotools", "segment_anything_hq"} <= {m for m, _ in third_party_imports()}
    undeclared = undeclared_imports(declared_distributions() - {"scipy"})
    assert [key for key in undeclared if key.startswith("scipy ")], undeclared
