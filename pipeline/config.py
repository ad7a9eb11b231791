"""Typed job configuration (pydantic), read from YAML and validated before any work starts.

Every problem in a config (unknown sections or keys, wrong types, missing required keys, bad
values, keys that contradict each other, credentials) is reported at once in one
`ConfigError`, each as `section.key: what is wrong`. Reachability of the input and the
checkpoint is checked separately (`pipeline.preflight`), since it needs the network. Every
key carries a description, which `python -m pipeline schema` turns into a JSON Schema for
editors (`configs/*.schema.json`).

The sections that say where images and boxes come from (`ImageSourceConfig`) and how to
reach object storage (`StorageConfig`) are shared with fine-tuning (`pipeline.finetune`).
"""

import urllib.parse
from typing import Any, ClassVar, Dict, List, Literal, Mapping, Optional, Tuple, Type, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from samhq_core.config import VARIANTS

from .schema import RESULT_COLUMNS

S = TypeVar("S", bound="Section")
C = TypeVar("C", bound="Sections")
BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
OutputMode = Literal["error", "overwrite", "resume"]  # the first is the default
OnBadFile = Literal["fail", "skip"]
DType = Literal["float32", "bfloat16"]
# Keys that would put credentials into a config file.
_CREDENTIAL_KEYS = {"key", "secret", "token", "hf_token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                    "access_key", "secret_key", "password"}
_CROSS_CHECK = "cross_check"
_EXPECTED = {"string_type": "a string", "int_type": "an integer", "float_type": "a number", "bool_type": "true/false",
             "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping"}


class ConfigError(ValueError):
    """A config with one or more problems; `problems` lists them all."""

    def __init__(self, problems: List[str]) -> None:
        self.problems = problems
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


class Section(BaseModel):
    """One section of a config file (`section` names it there). Keys are strictly typed (no
    "4" for 4) and unknown keys are errors. `cross_checks` finds what single keys cannot say
    (keys that contradict each other); it also runs on the raw mapping when some keys are
    wrong, so that every problem is reported at once."""

    model_config = ConfigDict(extra="forbid", strict=True)
    section: ClassVar[str]
    replaced_keys: ClassVar[Dict[str, str]] = {}  # keys of earlier versions, with what replaces them
    # Where the credentials of a section that reaches a service come from instead of the
    # config: a credential key there (_CREDENTIAL_KEYS) is refused with this hint.
    credentials_from: ClassVar[Optional[str]] = None

    @classmethod
    def cross_checks(cls, values: Mapping[str, Any]) -> List[str]:
        return []

    @model_validator(mode="after")
    def _check_together(self: S) -> S:
        problems = type(self).cross_checks(self.model_dump())
        if problems:
            raise PydanticCustomError(_CROSS_CHECK, "; ".join(problems))
        return self


class ImageSourceConfig(Section):
    """Where a Parquet input's images and boxes are (shared by the job's input and
    fine-tuning's data)."""

    id_column: str = Field(description="Column identifying each row; copied to the output.")
    boxes_column: str = Field(description="Column with a list of boxes per row, in absolute pixels.")
    image_column: Optional[str] = Field(None, description="Column of encoded image bytes (PNG, JPEG, ...), or a "
                                                          "datasets Image column (struct<bytes, path>: the bytes, "
                                                          "else the path read as an image URI); set this or "
                                                          "image_uri_column.")
    image_uri_column: Optional[str] = Field(None, description="Column of image paths or URIs (any fsspec URL), read "
                                                              "by the decode tasks; set this or image_column.")
    box_format: BoxFormat = Field("xyxy", description="Box coordinates: xyxy (x1, y1, x2, y2), xywh (x, y, width, "
                                                      "height) or cxcywh (centre x, centre y, width, height).")
    max_image_bytes: int = Field(64 << 20, ge=1, description="Largest encoded image a row may have, in bytes; a "
                                                             "larger one is that row's error (image_read).")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest decoded image (width x height); a larger "
                                                                "one is that row's error before it is decoded. The "
                                                                "decode tasks' memory reservation grows with it.")
    read_timeout_s: float = Field(60.0, gt=0, description="Seconds an image read (image_uri_column) may take; a "
                                                          "slower one is that row's error.")
    jpeg_draft: bool = Field(False, description="Decode JPEGs of twice the model's input size or more at a "
                                                 "power-of-two reduction in the DCT domain: several times less CPU for "
                                                 "4K images, with pixels that differ from the official preprocessing "
                                                 "(mask IoU in bench/results/data_plane.md). Off: exact.")
    allowed_uri_prefixes: Optional[List[str]] = Field(
        None, description="Where image URIs (and a datasets Image column's paths) may point (URL or local path "
                          "prefixes). Default: the bucket of an "
                          "object-store input, or, for a local input, the directory above the input's "
                          "directory. A URI elsewhere is that row's error, so data cannot make the workers read "
                          "arbitrary local files or internal URLs.")

    @property
    def image_source_column(self) -> str:
        """The column the images come from (encoded bytes or URIs)."""
        column = self.image_column or self.image_uri_column
        assert column is not None  # exactly one is set (cross_checks)
        return column

    @classmethod
    def cross_checks(cls, values: Mapping[str, Any]) -> List[str]:
        if (values.get("image_column") is None) == (values.get("image_uri_column") is None):
            return [f"{cls.section}: set exactly one of image_column (encoded bytes) or image_uri_column (URIs)"]
        return []


class InputConfig(ImageSourceConfig):
    section: ClassVar[str] = "input"
    path: str = Field(description="Parquet file, directory (read recursively) or glob; local path or any fsspec URL "
                                  "(hf://datasets/org/name/... for a Hugging Face Hub dataset).")
    passthrough_columns: List[str] = Field(default_factory=list, description="Input columns copied unchanged to the "
                                                                             "output.")
    category_column: Optional[str] = Field(None, description="Column with a category per box (names or integer ids), "
                                                             "copied to the output and used by export-coco.")
    num_blocks: Optional[int] = Field(None, ge=1, description="Blocks the input is cut into (each becomes one result "
                                                              "file and one checkpoint entry); default 4 per model "
                                                              "actor, more for large inputs: at most 1000 rows and "
                                                              "256 MiB of input per block.")
    on_bad_file: OnBadFile = Field("fail", description="An input file that is not readable Parquet or lacks a "
                                                       "configured column: fail (refuse to start) or skip it (listed, "
                                                       "with the reason, in the summary and the _SUCCESS manifest).")

    @classmethod
    def cross_checks(cls, values: Mapping[str, Any]) -> List[str]:
        problems = super().cross_checks(values)
        passthrough = values.get("passthrough_columns")
        if isinstance(passthrough, list):
            clashes = sorted(set(RESULT_COLUMNS) & {c for c in passthrough if isinstance(c, str)})
            if clashes:
                problems.append(f"input.passthrough_columns: {', '.join(clashes)} clash with output columns")
        return problems


class OutputConfig(Section):
    section: ClassVar[str] = "output"
    replaced_keys: ClassVar[Dict[str, str]] = {
        "overwrite": "replaced by output.mode: write mode: overwrite for overwrite: true, or mode: resume to continue "
                     "an interrupted run"}
    path: str = Field(description="Directory for the result Parquet files; local path or any fsspec URL.")
    include_image_bytes: bool = Field(False, description="Copy the image bytes column into the output (with "
                                                         "input.image_column).")
    mode: OutputMode = Field(get_args(OutputMode)[0],
                             description="A non-empty path: error (refuse to start), overwrite (replace the files an "
                                         "earlier run wrote there, never any other file) or resume (continue an "
                                         "interrupted run: rows already written are not processed again).")
    checkpoint_path: Optional[str] = Field(None, description="Where Ray Data's checkpoint of written ids goes; default "
                                                             "<path>/_checkpoint (same storage settings).")
    keep_checkpoint: bool = Field(False, description="Keep the checkpoint after the job completes (default: removed).")


HUB_CREDENTIALS = "set HF_TOKEN in the environment or run `hf auth login` (a Hugging Face Hub token)"


class ModelConfig(Section):
    section: ClassVar[str] = "model"
    credentials_from: ClassVar[Optional[str]] = HUB_CREDENTIALS
    checkpoint: str = Field(description="Official .pth or HF-layout directory (config.json + model.safetensors); "
                                        "local path, any fsspec URL, or a Hugging Face Hub model id org/name or "
                                        "org/name@revision (when no such local path exists), downloaded into each "
                                        "node's Hugging Face cache (HF_HOME; HF_HUB_OFFLINE, HF_TOKEN from the "
                                        "environment).")
    variant: Optional[str] = Field(None, description=f"One of {', '.join(VARIANTS)}; inferred from the checkpoint's "
                                                     "tensor shapes when omitted.")
    sha256: Optional[str] = Field(None, description="Expected hex digest of the weights file, checked before loading.")
    hq_token_only: bool = Field(False, description="The HQ token's mask alone (default: SAM's mask plus the HQ term, "
                                                   "as official).")
    sam_only: bool = Field(False, description="SAM's mask without the HQ term: the baseline to compare HQ against.")
    multimask_output: bool = Field(False, description="Keep the best of 3 candidate masks per box by predicted IoU.")
    mask_threshold: float = Field(0.0, description="Threshold on the mask logits.")
    dtype: DType = Field("float32", description="float32, or bfloat16 autocast (the prompt encoder stays in fp32).")
    box_chunk_size: Optional[int] = Field(None, ge=1, description="Boxes decoded at once, from all images of a model "
                                                                  "batch; default 64 on a GPU, 4 on CPU.")
    compile: bool = Field(False, description="torch.compile the encoder and the decoder once per actor (the first "
                                             "batches take minutes longer; image and box counts are padded to "
                                             "powers of two, so that new counts reuse a few compiled graphs).")

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and value not in VARIANTS:
            raise PydanticCustomError("variant", "must be one of {variants}, got {value!r}",
                                      {"variants": ", ".join(VARIANTS), "value": value})
        return value

    @classmethod
    def cross_checks(cls, values: Mapping[str, Any]) -> List[str]:
        if values.get("hq_token_only") is True and values.get("sam_only") is True:
            return ["model: hq_token_only and sam_only exclude each other; set at most one"]
        return []


class ComputeConfig(Section):
    section: ClassVar[str] = "compute"
    num_actors: int = Field(1, ge=1, description="Model replicas (the actor pool's size).")
    num_gpus_per_actor: Optional[float] = Field(None, ge=0, description="GPUs per model actor, fractions allowed; "
                                                                        "default 1 when the cluster has GPUs, else 0.")
    num_cpus_per_actor: float = Field(1.0, ge=0, description="CPUs each model actor reserves.")
    torch_threads: Optional[int] = Field(None, ge=1, description="Intra-op threads per actor on CPU; default: Ray's "
                                                                 "(num_cpus_per_actor).")
    batch_size: int = Field(4, ge=1, description="Images per model call.")
    concurrent_batches_per_actor: int = Field(
        1, ge=1, le=8, description="Batches a model actor works on at once, each in a thread of its own (on a GPU "
                                   "with a CUDA stream of its own): one batch's model call runs while another's "
                                   "inputs are read and copied and its masks are run-length coded and copied back. "
                                   "The model calls themselves take turns. Device memory grows with it; on CPU "
                                   "leave it at 1 (the threads would share the actor's cores).")
    decode_batch_size: int = Field(8, ge=1, description="Images per CPU decode task.")
    max_worker_crashes: int = Field(3, ge=2, description="Times a row may be in flight when its worker process dies "
                                                         "(a native crash, an out-of-memory kill) before it is written "
                                                         "with a 'stage' error instead of run again; after the first "
                                                         "death its batch runs one row at a time. Counted per node.")


class StorageConfig(Section):
    """Object-store settings; credentials come only from the standard AWS environment
    variables, shared config files or instance roles, never from a config."""

    section: ClassVar[str] = "storage"
    credentials_from: ClassVar[Optional[str]] = ("set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment or "
                                                 "use an instance role")
    endpoint_url: Optional[str] = Field(None, description="S3-compatible endpoint (MinIO, SeaweedFS, R2, ...), "
                                                          "http(s)://host[:port], without credentials.")
    region: Optional[str] = Field(None, description="Object-store region.")
    anonymous: bool = Field(False, description="Unsigned requests (public buckets).")

    @classmethod
    def cross_checks(cls, values: Mapping[str, Any]) -> List[str]:
        endpoint = values.get("endpoint_url")
        if not isinstance(endpoint, str):
            return []
        problems = []
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            host = parts.netloc.rsplit("@", 1)[-1]
            shown = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
            problems.append(f"storage.endpoint_url: expected http://host[:port] or https://host[:port], got {shown!r}")
        if parts.username is not None or parts.password is not None:
            problems.append("storage.endpoint_url: holds credentials (user:password@...); remove them and set "
                            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment or use an instance role")
        return problems


class Sections(BaseModel):
    """A config file: a mapping of sections (each a `Section` field)."""

    model_config = ConfigDict(extra="forbid")

    def to_dict(self) -> Dict[str, Any]:
        return self.model_dump()

    @classmethod
    def parse(cls: Type[C], data: Mapping[str, Any]) -> C:
        """From plain data (as read from YAML), with every problem collected into one ConfigError."""
        problems: List[str] = []
        sections: Dict[str, Section] = {}
        known = cls.model_fields
        for name in data:
            if name not in known:
                problems.append(f"unknown section {name!r} (known: {', '.join(known)})")
        for name, info in known.items():
            section_cls = info.annotation
            assert isinstance(section_cls, type) and issubclass(section_cls, Section)
            raw = data.get(name)
            if raw is None:
                if info.is_required():
                    required = [k for k, f in section_cls.model_fields.items() if f.is_required()]
                    problems.append(f"missing section {name!r} (required keys: {', '.join(required)})")
                    continue
                raw = {}
            if not isinstance(raw, dict):
                problems.append(f"{name}: must be a mapping, got {type(raw).__name__}")
                continue
            parsed, found = _parse_section(section_cls, raw)
            problems += found
            if parsed is not None:
                sections[name] = parsed
        if problems:
            raise ConfigError(problems)
        return cls(**sections)


def _parse_section(cls: Type[Section], raw: Dict[str, Any]) -> Tuple[Optional[Section], List[str]]:
    problems = []
    if cls.credentials_from is not None:
        for key in [k for k in raw if isinstance(k, str) and k.lower() in _CREDENTIAL_KEYS]:
            problems.append(f"{cls.section}.{key}: credentials must not be in the config; {cls.credentials_from}")
            raw = {k: v for k, v in raw.items() if k != key}
    try:
        parsed: Optional[Section] = cls.model_validate(raw)
    except ValidationError as e:
        parsed = None
        problems += [_problem(cls, error) for error in e.errors() if error["type"] != _CROSS_CHECK]
    return parsed, problems + cls.cross_checks(raw)


def _problem(cls: Type[Section], error: Any) -> str:
    """One pydantic error as `section.key: what is wrong`."""
    loc, kind, section = error["loc"], error["type"], cls.section
    where = f"{section}.{loc[0]}" + "".join(f"[{part}]" for part in loc[1:]) if loc else section
    if kind == "missing":
        return f"{section}: missing required key {loc[0]!r}"
    if kind == "extra_forbidden" and loc[0] in cls.replaced_keys:
        return f"{section}.{loc[0]}: {cls.replaced_keys[loc[0]]}"
    if kind == "extra_forbidden":
        return f"{section}: unknown key {loc[0]!r} (known: {', '.join(cls.model_fields)})"
    if kind in _EXPECTED:
        return f"{where}: expected {_EXPECTED[kind]}, got {error['input']!r}"
    if kind == "literal_error":
        return f"{where}: must be one of {error['ctx']['expected']}, got {error['input']!r}"
    if kind == "greater_than_equal":
        return f"{where}: must be >= {error['ctx']['ge']}"
    if kind == "greater_than":
        return f"{where}: must be > {error['ctx']['gt']}"
    return f"{where}: {error['msg']}"


class JobConfig(Sections):
    input: InputConfig = Field(description="Where the images and boxes are.")
    output: OutputConfig = Field(description="Where the results go.")
    model: ModelConfig = Field(description="The SAM-HQ checkpoint and how its masks are made.")
    compute: ComputeConfig = Field(default_factory=ComputeConfig, description="Actors, GPUs, CPUs and batch sizes.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object-store settings.")


def load_config(path: str, overrides: Optional[List[str]] = None) -> JobConfig:
    """Read a YAML job config and apply `key.sub=value` overrides (values parsed as YAML)."""
    return parse_config(read_yaml(path, overrides))


def parse_config(data: Mapping[str, Any]) -> JobConfig:
    """Build a JobConfig from plain data, collecting every problem."""
    return JobConfig.parse(data)


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
