"""Config files as YAML: a mapping of sections, with `--set key.sub=value` overrides."""

from typing import Any, Dict, List, Optional

import yaml

from .errors import ConfigError


def read_yaml(path: str, overrides: Optional[List[str]] = None) -> Dict[str, Any]:
    """A YAML mapping of sections, with `key.sub=value` overrides applied. A missing,
    unreadable or malformed file is a ConfigError (with line and column for YAML errors)."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError([f"config file not found: {path}"]) from None
    except OSError as e:
        raise ConfigError([f"cannot read config file {path}: {e.strerror or e}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: not valid YAML: {_yaml_problem(e)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections, got {type(data).__name__}"])
    return apply_overrides(data, overrides or [])


def _yaml_problem(error: yaml.YAMLError) -> str:
    """'line L, column C: problem' (1-based) for a parser error, else its text."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is None:
        return problem
    context = getattr(error, "context", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")


def apply_overrides(data: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    """`data` with each `key.sub=value` of `overrides` set (values parsed as YAML)."""
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append(f"--set {item!r}: expected key.sub=value")
            continue
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"--set {item!r}: {part} is not a section")
                break
        else:
            try:
                node[leaf] = yaml.safe_load(raw)
            except yaml.YAMLError as e:
                problems.append(f"--set {item!r}: the value is not valid YAML: {_yaml_problem(e)}")
    if problems:
        raise ConfigError(problems)
    return data
