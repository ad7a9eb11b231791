"""Typed job configuration, read from YAML and validated before any work starts.

Every problem in a config (unknown keys, wrong types, missing required keys, bad values) is
reported at once in one `ConfigError`. Reachability of the input and the checkpoint is
checked separately (`pipeline.preflight`), since it needs the network.
"""

import dataclasses
import typing
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Type, TypeVar, Union

import yaml

from .schema import RESULT_COLUMNS

T = TypeVar("T")
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
DTYPES = ("float32", "bfloat16")
# Keys that would put credentials into a config file.
_CREDENTIAL_KEYS = {"key", "secret", "token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                    "access_key", "secret_key", "password"}


class ConfigError(ValueError):
    """A config with one or more problems; `problems` lists them all."""

    def __init__(self, problems: List[str]) -> None:
        self.problems = problems
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class InputConfig:
    path: str  # Parquet file, directory or glob; local or any fsspec URL
    id_column: str
    boxes_column: str  # per row, a list of boxes in absolute pixels
    image_column: Optional[str] = None  # encoded image bytes (PNG, JPEG, ...)
    image_uri_column: Optional[str] = None  # image URIs, read through fsspec
    box_format: str = "xyxy"  # xyxy | xywh | cxcywh
    passthrough_columns: List[str] = field(default_factory=list)
    category_column: Optional[str] = None  # per row, a category per box (for COCO export)
    num_blocks: Optional[int] = None  # read parallelism; default: 4 blocks per model actor


@dataclass
class OutputConfig:
    path: str  # directory for the result Parquet files; local or any fsspec URL
    include_image_bytes: bool = False  # copy the image column into the output
    overwrite: bool = False  # replace existing Parquet files at output.path


@dataclass
class ModelConfig:
    checkpoint: str  # as SamHQModel.from_pretrained accepts: .pth or HF directory, path or URL
    variant: Optional[str] = None  # vit_b | vit_l | vit_h | vit_tiny; inferred when omitted
    sha256: Optional[str] = None
    hq_token_only: bool = False  # the HQ token's mask alone (default: SAM's mask plus the HQ term)
    sam_only: bool = False  # SAM's mask without the HQ term: the baseline to compare HQ against
    multimask_output: bool = False  # keep the best of 3 candidates per box (by predicted IoU)
    mask_threshold: float = 0.0  # on the mask logits
    dtype: str = "float32"  # float32 | bfloat16 (autocast; prompt encoder stays fp32)
    box_chunk_size: Optional[int] = None  # boxes decoded at once; default 64 on GPU, 1 on CPU


@dataclass
class ComputeConfig:
    num_actors: int = 1  # model replicas (actor pool size)
    num_gpus_per_actor: Optional[float] = None  # fractional allowed; default 1 if the cluster has GPUs, else 0
    num_cpus_per_actor: float = 1.0
    torch_threads: Optional[int] = None  # intra-op threads per actor on CPU; default: Ray's (num_cpus_per_actor)
    batch_size: int = 4  # images per model batch
    decode_batch_size: int = 8  # images per CPU decode task batch


@dataclass
class StorageConfig:
    """Object-store settings; credentials come only from the standard AWS environment
    variables or instance roles."""

    endpoint_url: Optional[str] = None  # S3-compatible endpoint (MinIO, SeaweedFS, R2, ...)
    region: Optional[str] = None
    anonymous: bool = False  # unsigned requests (public buckets)


@dataclass
class JobConfig:
    input: InputConfig
    output: OutputConfig
    model: ModelConfig
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str, overrides: Optional[List[str]] = None) -> JobConfig:
    """Read a YAML job config and apply `key.sub=value` overrides (values parsed as YAML)."""
    return parse_config(read_yaml(path, overrides))


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


def parse_config(data: Dict[str, Any]) -> JobConfig:
    """Build a JobConfig from plain data, collecting every problem."""
    return parse_sections(JobConfig, data, _check_values)


def parse_sections(config_cls: Type[T], data: Dict[str, Any], check_values: Callable[[Dict[str, Any]], List[str]]) -> T:
    """Build a config dataclass whose fields are section dataclasses from plain data: every
    unknown or missing key, wrong type, and problem `check_values` finds in the parsed
    sections is collected into one ConfigError."""
    problems: List[str] = []
    sections = {}
    hints = typing.get_type_hints(config_cls)
    for name in data:
        if name not in hints:
            problems.append(f"unknown section {name!r} (known: {', '.join(hints)})")
    for name, section_cls in hints.items():
        section_data = data.get(name)
        if section_data is None:
            if _required_fields(section_cls):
                problems.append(f"missing section {name!r} (required keys: {', '.join(_required_fields(section_cls))})")
                continue
            section_data = {}
        if not isinstance(section_data, dict):
            problems.append(f"{name}: must be a mapping, got {type(section_data).__name__}")
            continue
        sections[name] = _parse_section(name, section_cls, section_data, problems)
    problems += check_values(sections)
    if problems:
        raise ConfigError(problems)
    return config_cls(**sections)


def _required_fields(cls: type) -> List[str]:
    return [f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def _parse_section(name: str, cls: type, data: Dict[str, Any], problems: List[str]) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        if name == "storage" and key.lower() in _CREDENTIAL_KEYS:
            problems.append(f"storage.{key}: credentials must not be in the config; set AWS_ACCESS_KEY_ID / "
                            "AWS_SECRET_ACCESS_KEY in the environment or use an instance role")
        elif key not in hints:
            problems.append(f"{name}: unknown key {key!r} (known: {', '.join(hints)})")
        elif not _type_ok(value, hints[key]):
            problems.append(f"{name}.{key}: expected {_type_name(hints[key])}, got {value!r}")
        else:
            values[key] = float(value) if hints[key] in (float, Optional[float]) and value is not None else value
    for key in _required_fields(cls):
        if key not in data:
            problems.append(f"{name}: missing required key {key!r}")
    # Missing required keys (already reported) become None so the value checks still run.
    return cls(**{**{key: None for key in _required_fields(cls)}, **values})


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Union:
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, List):
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is Union:
        return f"{_type_name(args[0])} or null"
    if typing.get_origin(hint) in (list, List):
        return f"a list of {_type_name(args[0])}"
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(hint, str(hint))


def _check_values(sections: Dict[str, Any]) -> List[str]:
    """Value checks of every section that is a mapping."""
    problems: List[str] = []
    inp, model, compute, storage = (sections.get(name) for name in ("input", "model", "compute", "storage"))
    if storage is not None:
        problems += check_storage(storage)
    if inp is not None:
        problems += _check_input(inp)
    if model is not None:
        problems += _check_model(model)
    if compute is not None:
        problems += _check_compute(compute)
    return problems


def check_image_source(inp: InputConfig, section: str) -> List[str]:
    """Problems with where an input's images and boxes come from, reported under `section`."""
    problems = []
    if (inp.image_column is None) == (inp.image_uri_column is None):
        problems.append(f"{section}: set exactly one of image_column (encoded bytes) or image_uri_column (URIs)")
    if inp.box_format not in BOX_FORMATS:
        problems.append(f"{section}.box_format: must be one of {', '.join(BOX_FORMATS)}, got {inp.box_format!r}")
    return problems


def check_storage(storage: StorageConfig) -> List[str]:
    """Problems with the object-store settings: an endpoint URL that is not http(s) or that
    carries credentials (user:password@host, which would end up in logs and job metadata)."""
    problems: List[str] = []
    if storage.endpoint_url is None:
        return problems
    parts = urllib.parse.urlsplit(storage.endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"storage.endpoint_url: expected http://host[:port] or https://host[:port], got "
                        f"{_without_userinfo(parts)!r}")
    if parts.username is not None or parts.password is not None:
        problems.append("storage.endpoint_url: holds credentials (user:password@...); remove them and set "
                        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment or use an instance role")
    return problems


def _without_userinfo(parts: urllib.parse.SplitResult) -> str:
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _check_input(inp: InputConfig) -> List[str]:
    problems = check_image_source(inp, "input")
    if inp.num_blocks is not None and inp.num_blocks < 1:
        problems.append("input.num_blocks: must be >= 1")
    clashes = sorted(set(RESULT_COLUMNS) & set(inp.passthrough_columns))
    if clashes:
        problems.append(f"input.passthrough_columns: {', '.join(clashes)} clash with output columns")
    return problems


def _check_model(model: ModelConfig) -> List[str]:
    problems = []
    if model.dtype not in DTYPES:
        problems.append(f"model.dtype: must be one of {', '.join(DTYPES)}, got {model.dtype!r}")
    if model.variant is not None and model.variant not in ("vit_b", "vit_l", "vit_h", "vit_tiny"):
        problems.append(f"model.variant: must be vit_b, vit_l, vit_h or vit_tiny, got {model.variant!r}")
    if model.box_chunk_size is not None and model.box_chunk_size < 1:
        problems.append("model.box_chunk_size: must be >= 1")
    if model.hq_token_only and model.sam_only:
        problems.append("model: hq_token_only and sam_only exclude each other; set at most one")
    return problems


def _check_compute(compute: ComputeConfig) -> List[str]:
    problems = []
    for key in ("num_actors", "batch_size", "decode_batch_size"):
        if getattr(compute, key) < 1:
            problems.append(f"compute.{key}: must be >= 1")
    if compute.torch_threads is not None and compute.torch_threads < 1:
        problems.append("compute.torch_threads: must be >= 1")
    if compute.num_gpus_per_actor is not None and compute.num_gpus_per_actor < 0:
        problems.append("compute.num_gpus_per_actor: must be >= 0")
    return problems
