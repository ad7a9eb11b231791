"""Config files as YAML: a mapping of sections, with `--set key.sub=value` overrides. Read with
bounds on the file's size and on what its aliases expand to, and with duplicate keys refused."""

from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from ..text import byte_size, clipped
from .errors import ConfigError

# A config is a few KiB; the bounds are far above any real one and far below what hurts.
MAX_FILE_BYTES = 1 << 20
# Once every alias (*name) stands for a copy of its anchor's value: a "billion laughs" document
# of a few hundred bytes expands to billions of values, which must be refused before they exist.
MAX_VALUES = 100_000
MAX_TEXT_CHARS = 4 << 20
# Python refuses decimal integers of over 4300 digits and reads base-60 ones (1:30:00) in time
# quadratic in their length; no setting needs a longer number.
_MAX_NUMBER_CHARS = 100
_MAX_PROBLEM_CHARS = 300
_MERGE_TAG = "tag:yaml.org,2002:merge"


def read_yaml(path: str, overrides: Optional[List[str]] = None) -> Dict[str, Any]:
    """A YAML mapping of sections, with `key.sub=value` overrides applied. A missing,
    unreadable, oversized or malformed file is a ConfigError (with line and column for YAML
    errors), and so is a duplicate key or a document that its aliases expand beyond the bounds."""
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"config file not found: {path}"]) from None
    except OSError as e:
        raise ConfigError([f"cannot read config file {path}: {e.strerror or e}"]) from None
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError([f"{path}: larger than {byte_size(MAX_FILE_BYTES)}, the most a config file may be (a config "
                           "is a few KiB); check that this is the config file"])
    try:
        data = _load(text, path) or {}
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: not valid YAML: {_yaml_problem(e)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections, got {type(data).__name__}"])
    return apply_overrides(data, overrides or [])


def _load(text: Union[str, bytes], source: str) -> Any:
    """One YAML document, read safely (`source` names it in messages): a ConfigError for a
    duplicate key, an expansion beyond the bounds or nesting too deep, a YAMLError when malformed."""
    loader = _Loader(text, source)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise ConfigError([f"{source}: nested hundreds of levels deep; a config needs a few"]) from None
    finally:
        loader.dispose()


class _Loader(yaml.SafeLoader):
    """SafeLoader that checks the composed document (where an alias is a second reference to
    its anchor's node, so checking costs what the text does) before constructing anything."""

    def __init__(self, text: Union[str, bytes], source: str) -> None:
        super().__init__(text)
        self.source = source

    def construct_document(self, node: Any) -> Any:
        _check_expansion(node, self.source)
        problems = self._duplicate_keys(node)
        if problems:
            raise ConfigError(problems)
        return super().construct_document(node)

    def construct_bounded_int(self, node: Any) -> int:
        if len(node.value) > _MAX_NUMBER_CHARS:
            raise yaml.constructor.ConstructorError(
                None, None, f"a number longer than {_MAX_NUMBER_CHARS} characters; quote it if it is text", node.start_mark)
        return int(super().construct_yaml_int(node))

    def _duplicate_keys(self, root: Any) -> List[str]:
        """A problem for each key that a mapping has more than once, with its lines. A key that a
        merge (<<: *name) brings in may be overridden: that is what merges are for."""
        problems = []
        seen = set()
        # A path is a tuple of keys and list indexes, made into text only for a message: a long
        # key is not copied into the path of every value below it.
        stack: List[Tuple[Any, Tuple[Any, ...]]] = [(root, ())]
        while stack:
            node, path = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if isinstance(node, yaml.SequenceNode):
                stack += [(item, (*path, i)) for i, item in enumerate(node.value)]
                continue
            if not isinstance(node, yaml.MappingNode):
                continue
            lines: Dict[Any, List[int]] = {}
            # A key that is a list or a mapping is refused when the document is constructed.
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                    key = self.construct_object(key_node)
                    lines.setdefault(key, []).append(key_node.start_mark.line + 1)
                    stack.append((value_node, (*path, str(key))))
            for key, at in lines.items():
                if len(at) > 1:
                    times = "twice" if len(at) == 2 else f"{len(at)} times"
                    shown = ", ".join(map(str, at[:-1])) + f" and {at[-1]}"
                    name = clipped(_dotted((*path, str(key))))
                    problems.append(f"{name} appears {times} (lines {shown}) in {self.source}: keep one")
        return problems


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_bounded_int)


def _check_expansion(root: Any, source: str) -> None:
    """Refuse a document whose values, with every alias expanded, exceed MAX_VALUES or hold over
    MAX_TEXT_CHARS characters, or that contains itself. Counted on the composed graph, each node
    once (its count is the sum of its children's, reused wherever an alias refers to it), so a
    document that would expand to billions costs no more than its text."""
    counts: Dict[Any, Tuple[int, int]] = {}  # node: (values, characters), each capped just past its bound
    unfinished = set()  # the nodes whose children are being counted: the current node's ancestors
    stack: List[Tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_counted = stack.pop()
        if node in counts:
            continue
        if isinstance(node, yaml.ScalarNode):
            counts[node] = (1, len(node.value))
            continue
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        if children_counted:
            unfinished.discard(node)
            counts[node] = (min(MAX_VALUES + 1, 1 + sum(counts[c][0] for c in children)),
                            min(MAX_TEXT_CHARS + 1, sum(counts[c][1] for c in children)))
        elif node in unfinished:
            raise ConfigError([f"{source}: an alias (*name) inside its own anchor's value, at line "
                               f"{node.start_mark.line + 1}; a config cannot contain itself"])
        else:
            unfinished.add(node)
            stack.append((node, True))
            stack += [(child, False) for child in children if child not in counts]
    values, chars = counts[root]
    if values > MAX_VALUES:
        raise ConfigError([f"{source}: holds over {MAX_VALUES:,} values, counting each alias (*name) as a copy of "
                           "its anchor's value; a config needs a few hundred: check its aliases"])
    if chars > MAX_TEXT_CHARS:
        raise ConfigError([f"{source}: holds over {byte_size(MAX_TEXT_CHARS)} of text, counting each alias (*name) as "
                           "a copy of its anchor's value; a config needs a few KiB: check its aliases"])


def _dotted(path: Tuple[Any, ...]) -> str:
    """('input', 'allowed_uri_prefixes', 0) as 'input.allowed_uri_prefixes[0]'."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).removeprefix(".")


def _yaml_problem(error: yaml.YAMLError) -> str:
    """'line L, column C: problem' (1-based) for a parser error, else its text."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    # PyYAML quotes whole anchor and tag names in its problems.
    problem = problem if len(problem) <= _MAX_PROBLEM_CHARS else f"{problem[:_MAX_PROBLEM_CHARS]}..."
    if mark is None:
        return problem
    context = getattr(error, "context", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")


def apply_overrides(data: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    """`data` with each `key.sub=value` of `overrides` set (values parsed as YAML)."""
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        shown = f"--set {clipped(item)}"
        if not sep or not key:
            problems.append(f"{shown}: expected key.sub=value")
            continue
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"{shown}: {clipped(part)} is not a section")
                break
        else:
            try:
                node[leaf] = _load(raw, shown)
            except yaml.YAMLError as e:
                problems.append(f"{shown}: the value is not valid YAML: {_yaml_problem(e)}")
            except ConfigError as e:
                problems += e.problems
    if problems:
        raise ConfigError(problems)
    return data
