"""Checks that run before any work starts, shared by `validate`, `run` and fine-tuning.

A job that would fail once Ray is up (a misspelt column, a checkpoint that is not a model, an
output that would overwrite someone's files or its own input, more actors than the cluster
can place) fails here instead, with every problem named at once in one `ConfigError`.

What is read: each input file's Parquet footer (its last 64 KiB, all files' requests in flight
together, from object stores; in parallel threads from local disk; the row counts and column
sizes also size the read blocks), the first rows of the boxes column of one file (the
box-format check), the checkpoint's header (no weights are downloaded), and a listing of the
output directory.
"""

import concurrent.futures
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from samhq_core import SamHQConfig, SamHQModel
from samhq_core.checkpoint import hub_model, pin_hub_revision

from .config import ConfigError, ImageSourceConfig, JobConfig, Section, StorageConfig
from .ids import repeated_ids
from .output_files import (
    CHECKPOINT_DIR,
    JOB_FILE,
    SUCCESS_FILE,
    checkpoint_path,
    committed_checkpoint_files,
    config_digest,
    decisive_settings,
    is_job_file,
    job_files,
    read_job_description,
    read_manifest,
    result_files,
)
from .schema import ERROR, error_kind, is_image_struct
from .storage import (
    basename,
    filesystem,
    is_local,
    is_transient,
    list_parquet_files,
    local_path,
    read_tables,
    storage_options,
    store_root,
    uri_allowed,
    within,
)

# Set by `ray job submit` in the driver's environment: the job runs in a temporary copy of the
# submitted working directory, so relative local paths would point into it.
_JOB_SUBMIT_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
_FOOTER_THREADS = 32
_FOOTER_TAIL_BYTES = 64 << 10  # a file's last bytes, fetched in one request: its footer, most often
ImageSource = TypeVar("ImageSource", bound=ImageSourceConfig)

if TYPE_CHECKING:
    from .finetune import FinetuneConfig
_SAMPLE_ROWS = 1000


@dataclass(frozen=True)
class InputFile:
    """One input Parquet file, from its footer."""

    path: str  # within the input's filesystem
    url: str  # for messages: the local path, or the URL with its protocol
    num_rows: int
    read_bytes: int  # uncompressed bytes of the columns the job reads
    schema: pa.Schema


@dataclass(frozen=True)
class SkippedFile:
    """An input file left out under `input.on_bad_file: skip`, and why."""

    url: str
    reason: str


@dataclass
class InputScan:
    url: str
    files: List[InputFile]
    skipped: List[SkippedFile] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.files)

    @property
    def read_bytes(self) -> int:
        return sum(f.read_bytes for f in self.files)


@dataclass(frozen=True)
class ColumnRule:
    """A column a config names, and what it must hold."""

    key: str  # the config key that names it, e.g. "input.boxes_column"
    column: str
    kind: str  # see _KIND_CHECKS


@dataclass(frozen=True)
class ResumeState:
    """What an earlier run at the output left (`output.mode: resume`)."""

    rows_done: int = 0  # rows the checkpoint holds as written
    complete: bool = False  # the earlier run finished (its _SUCCESS manifest is there)

    @property
    def filters_rows(self) -> bool:
        """Whether Ray Data will filter the input against the checkpoint (an actor of its own)."""
        return self.rows_done > 0 and not self.complete


@dataclass
class RetryState:
    """The rows of a completed output whose errors another try may not meet (`--retry-errors`)."""

    files: Dict[str, List[Any]] = field(default_factory=dict)  # result file (path in its filesystem) → ids
    examples: List[str] = field(default_factory=list)  # some of their errors

    @property
    def ids(self) -> List[Any]:
        return [row_id for ids in self.files.values() for row_id in ids]


# Errors that come from the row's data: another try meets them again.
_DATA_ERROR_KINDS = ("id", "boxes", "image_decode")


def retryable(error: Optional[str]) -> bool:
    """Whether a row's `error` is a transient failure (a store's or network's, or a read that
    timed out) rather than one of its data."""
    return error is not None and error_kind(error) not in _DATA_ERROR_KINDS and is_transient(error)


@dataclass
class JobPlan:
    """What the checks found: the input's files, the model's architecture, what an earlier
    run left (resume), and warnings (things that look wrong but may be intended)."""

    config: JobConfig
    scan: InputScan
    model_config: SamHQConfig
    warnings: List[str] = field(default_factory=list)
    resume: ResumeState = field(default_factory=ResumeState)
    retry: Optional[RetryState] = None  # set for a --retry-errors pass

    @property
    def image_size(self) -> int:
        return self.model_config.vision_config.image_size


def plan_job(config: JobConfig, relative_to: Optional[str] = None, retry_errors: bool = False) -> JobPlan:
    """Every check that needs no Ray cluster; ConfigError listing every problem found.
    Relative local paths are resolved (see `resolve_local_paths`) in the returned plan.
    `retry_errors`: plan a second pass over the completed output at output.path that runs
    again only its rows with transient errors (`RetryState`)."""
    config, problems = resolve_job_paths(config, relative_to)
    unresolved = {problem.split(":", 1)[0] for problem in problems}
    scan: Optional[InputScan] = None
    warnings: List[str] = []
    skip_bad = config.input.on_bad_file == "skip"
    if "input.path" not in unresolved:
        try:
            scan = scan_input(config.input.path, config.storage, "input.path", read_columns(config), skip_bad)
        except ConfigError as e:
            problems += e.problems
    if scan is not None:
        rules = input_rules(config)
        if skip_bad:
            scan = skip_files_with_bad_columns(scan, rules)
        if not scan.files:
            problems.append(f"input.path: no usable input file (all {len(scan.skipped)} skipped under "
                            f"input.on_bad_file: skip; e.g. {scan.skipped[0].url}: {scan.skipped[0].reason})")
        column_problems = check_columns(scan, rules, "input.path")
        problems += column_problems
        if not column_problems and scan.files:
            warnings += box_format_warnings(scan, config.input.boxes_column, config.input.box_format, config.storage)
            problems += check_uri_sample(scan, config)
            if config.output.mode == "resume":
                problems += check_ids_unique(scan, config.input.id_column, config.storage)
    model_config: Optional[SamHQConfig] = None
    if "model.checkpoint" not in unresolved:
        model_config, found = check_checkpoint(config.model.checkpoint, config.model.variant, config.storage,
                                               "model.checkpoint")
        problems += found
    resume, retry = ResumeState(), None
    if not unresolved & {"input.path", "output.path"}:
        mode = "resume" if retry_errors else config.output.mode  # both work on the job's own files
        problems += check_output(config.output.path, config.input.path, mode, config.storage)
        if retry_errors and not problems:
            retry, found = check_retry(config)
            problems += found
        elif config.output.mode == "resume" and not problems:
            resume, found = check_resume(config)
            problems += found
    if problems:
        raise ConfigError(problems)
    assert scan is not None and model_config is not None
    return JobPlan(config, scan, model_config, warnings, resume, retry)


def read_columns(config: JobConfig) -> List[str]:
    """The input columns the job reads, each once: id, passthrough, category, image, boxes."""
    inp = config.input
    return list(dict.fromkeys([inp.id_column, *inp.passthrough_columns,
                               *([inp.category_column] if inp.category_column else []), inp.image_source_column,
                               inp.boxes_column]))


def input_rules(config: JobConfig) -> List[ColumnRule]:
    inp = config.input
    rules = [ColumnRule("input.id_column", inp.id_column, "id"), ColumnRule("input.boxes_column", inp.boxes_column, "boxes")]
    if inp.image_column:
        rules.append(ColumnRule("input.image_column", inp.image_column, "image_bytes"))
    if inp.image_uri_column:
        rules.append(ColumnRule("input.image_uri_column", inp.image_uri_column, "image_uri"))
    if inp.category_column:
        rules.append(ColumnRule("input.category_column", inp.category_column, "categories"))
    rules += [ColumnRule("input.passthrough_columns", name, "any") for name in inp.passthrough_columns]
    return rules


# --- paths ------------------------------------------------------------------------------

def resolve_local_path(value: str, key: str, relative_to: Optional[str]) -> Tuple[str, List[str]]:
    """An absolute form of a local path (URLs are returned as they are), or a problem.

    Relative paths resolve against `relative_to` when given, else against the working
    directory, except under `ray job submit`: the driver then runs in Ray's temporary copy of
    the submitted working directory, deleted with the job, so a relative path is refused."""
    if not is_local(value):
        return value, []
    path = value[len("file://"):] if value.startswith("file://") else value
    if os.path.isabs(path):
        return value, []
    if relative_to is not None:
        return os.path.normpath(os.path.join(os.path.abspath(relative_to), path)), []
    if _JOB_SUBMIT_ENV in os.environ:
        return value, [f"{key}: the relative path {value!r} would resolve inside Ray's temporary copy of the "
                       "working directory under `ray job submit` (deleted with the job); use an absolute path on a "
                       "filesystem every node sees, object storage (s3://...), or add --relative-to \"$PWD\" to the "
                       "entrypoint when the cluster runs on this machine"]
    return os.path.abspath(path), []


def resolve_checkpoint(value: str, key: str, relative_to: Optional[str]) -> Tuple[str, List[str]]:
    """A checkpoint source with its local path made absolute (`resolve_local_path`), or, when
    it is a Hugging Face Hub model id (`org/name[@revision]` that is no existing local path
    against the same directory: `samhq_core.checkpoint.hub_model` has the rule), pinned to the
    commit its revision points to now, so that every model actor, each through its own node's
    Hugging Face cache, loads the same weights and a resumed job sees when they changed."""
    if hub_model(value, relative_to) is not None:
        try:
            return pin_hub_revision(value, relative_to), []
        except FileNotFoundError:
            return value, []  # the checkpoint check names what is missing
    return resolve_local_path(value, key, relative_to)


def resolve_job_paths(config: JobConfig, relative_to: Optional[str]) -> Tuple[JobConfig, List[str]]:
    """The config with its local input, output and checkpoint paths made absolute."""
    problems: List[str] = []
    resolved: Dict[str, Section] = {}
    for key, section, name in (("input.path", "input", "path"), ("output.path", "output", "path"),
                               ("model.checkpoint", "model", "checkpoint")):
        resolve = resolve_checkpoint if key == "model.checkpoint" else resolve_local_path
        value, found = resolve(getattr(getattr(config, section), name), key, relative_to)
        problems += found
        resolved[section] = resolved.get(section, getattr(config, section)).model_copy(update={name: value})
    config = config.model_copy(update=resolved)
    inputs, found = with_uri_prefixes(config.input, [config.input.path], "input", relative_to)
    return config.model_copy(update={"input": inputs}), problems + found


def with_uri_prefixes(source: ImageSource, urls: Sequence[str], section: str,
                      relative_to: Optional[str]) -> Tuple[ImageSource, List[str]]:
    """An image source whose allowed_uri_prefixes are set (the default of `urls`, the data it
    is read from) and made absolute; with the problems of relative prefixes that cannot be
    resolved. Also for an image_column, which may be a `datasets` Image column whose rows
    without bytes are read from their paths."""
    key = f"{section}.allowed_uri_prefixes"
    if source.allowed_uri_prefixes is None:
        return source.model_copy(update={"allowed_uri_prefixes": [p for u in urls for p in default_uri_prefixes(u)]}), []
    problems: List[str] = []
    prefixes = []
    for prefix in source.allowed_uri_prefixes:
        value, found = resolve_local_path(prefix, key, relative_to)
        prefixes.append(value)
        problems += found
    return source.model_copy(update={"allowed_uri_prefixes": prefixes}), problems


def default_uri_prefixes(input_url: str) -> List[str]:
    """Where image URIs may point unless input.allowed_uri_prefixes says otherwise: the bucket
    (or host) of an object-store input, the Hub repository of an hf:// input (`store_root`);
    for a local input, the directory above the input's directory (so that sibling folders
    such as images/ next to boxes/ work), or the input's directory itself when that would be
    the filesystem's root."""
    if not is_local(input_url):
        return [store_root(input_url)]
    path = local_path(_root_of(input_url))
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    parent = os.path.dirname(directory)
    return [directory if parent == os.path.dirname(parent) else parent]


def _location(url: str, storage: StorageConfig) -> Tuple[str, str]:
    """(filesystem, normalised path) of a URL, so that two spellings of one place compare equal."""
    fs, path = filesystem(url, storage)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return "file", os.path.realpath(path)
    return protocol, path.rstrip("/")


def _root_of(path: str) -> str:
    """The directory part of a glob (input.path may be one)."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if any(ch in part for ch in "*?["):
            return "/".join(parts[:i]) or "/"
    return path


# --- input ------------------------------------------------------------------------------

def scan_input(scan_url: str, storage: StorageConfig, key: str, columns: Sequence[str],
               skip_bad: bool = False) -> InputScan:
    """The input's files with their footers, read in parallel; ConfigError (under `key`)
    when nothing is there or a file is not readable Parquet (with `skip_bad`, such files are
    listed in the scan's `skipped` instead)."""
    try:
        paths = list_parquet_files(scan_url, storage)
    except FileNotFoundError as e:
        raise ConfigError([f"{key}: {e}"]) from None
    except Exception as e:  # noqa: BLE001 - permissions, endpoints, credentials: report what the store said
        raise ConfigError([f"{key}: cannot list {scan_url}: {type(e).__name__}: {e}"]) from None
    fs, _ = filesystem(scan_url, storage)
    wanted = set(columns)

    def described(path: str, parquet: pq.ParquetFile) -> InputFile:
        metadata = parquet.metadata
        size = sum(group.column(c).total_uncompressed_size
                   for group in (metadata.row_group(g) for g in range(metadata.num_row_groups))
                   for c in range(group.num_columns)
                   if group.column(c).path_in_schema.split(".")[0] in wanted)
        return InputFile(path, url_of(path), metadata.num_rows, size, parquet.schema_arrow)

    def url_of(path: str) -> str:
        return path if is_local(scan_url) else fs.unstrip_protocol(path)

    def footer(path: str) -> Tuple[Optional[InputFile], Optional[SkippedFile]]:
        try:
            with fs.open(path, "rb") as f:
                return described(path, pq.ParquetFile(f)), None
        except Exception as e:  # noqa: BLE001 - a corrupt, truncated or empty file
            return None, SkippedFile(url_of(path), f"not a readable Parquet file: {type(e).__name__}: {e}")

    results: List[Tuple[Optional[InputFile], Optional[SkippedFile]]] = [(None, None)] * len(paths)
    if not is_local(scan_url):
        # One request per file for its last bytes, all in flight together on fsspec's event
        # loop (threads would queue on that one loop); a footer larger than that, or a file
        # that fails here, is read again below, alone.
        tails = fs.cat_ranges(paths, [-_FOOTER_TAIL_BYTES] * len(paths), [None] * len(paths), on_error="return")
        for i, (path, tail) in enumerate(zip(paths, tails, strict=True)):
            if isinstance(tail, bytes) and tail[-4:] == b"PAR1" and int.from_bytes(tail[-8:-4], "little") + 8 <= len(tail):
                try:
                    results[i] = described(path, pq.ParquetFile(pa.BufferReader(tail))), None
                except Exception:  # noqa: BLE001 - read whole below, where the error is reported
                    pass
    again = [i for i, (found, _) in enumerate(results) if found is None]
    if again:
        with concurrent.futures.ThreadPoolExecutor(min(_FOOTER_THREADS, len(again))) as pool:
            for i, result in zip(again, pool.map(footer, [paths[i] for i in again]), strict=True):
                results[i] = result
    skipped = [bad for _, bad in results if bad is not None]
    if skipped and not skip_bad:
        raise ConfigError([f"{key}: {bad.url} is {bad.reason} (input.on_bad_file: skip leaves such files out)"
                           for bad in skipped])
    return InputScan(scan_url, [f for f, _ in results if f is not None], skipped)


def skip_files_with_bad_columns(scan: InputScan, rules: Sequence[ColumnRule]) -> InputScan:
    """The scan without the files whose own columns fail `rules` (each listed as skipped)."""
    kept, skipped = [], list(scan.skipped)
    for file in scan.files:
        problems = check_columns(InputScan(scan.url, [file]), rules, "input.path")
        if problems:
            skipped.append(SkippedFile(file.url, "; ".join(p.split(": ", 1)[1] for p in problems)))
        else:
            kept.append(file)
    return InputScan(scan.url, kept, skipped)


def first_rows(scan: InputScan, column: str, storage: StorageConfig) -> Optional[Tuple[InputFile, List[Any]]]:
    """The first file with rows, and the values of `column` in its first rows (the sample the
    box-format and URI checks look at); None when no file has rows."""
    first = next((f for f in scan.files if f.num_rows), None)
    if first is None:
        return None
    fs, _ = filesystem(scan.url, storage)
    with fs.open(first.path, "rb") as f:
        batch = next(pq.ParquetFile(f).iter_batches(batch_size=_SAMPLE_ROWS, columns=[column]), None)
    return first, batch.column(0).to_pylist() if batch is not None else []


def check_uri_sample(scan: InputScan, config: JobConfig) -> List[str]:
    """The first rows' image URIs of one file all lying outside input.allowed_uri_prefixes:
    a config that would fail every row, refused before work starts."""
    inp = config.input
    if inp.image_uri_column is None or inp.allowed_uri_prefixes is None:
        return []
    sample = first_rows(scan, inp.image_uri_column, config.storage)
    if sample is None:
        return []
    first, values = sample
    uris = [u for u in values if isinstance(u, str) and u]
    outside = [u for u in uris if not uri_allowed(u, inp.allowed_uri_prefixes)]
    if not outside or len(outside) < len(uris):  # a few hostile rows are those rows' errors, not the job's
        return []
    return [f"input.allowed_uri_prefixes: all {len(uris)} of the first image URIs of {first.url} lie "
            f"outside {', '.join(inp.allowed_uri_prefixes)} (e.g. {outside[0]}); list where the images are in "
            "input.allowed_uri_prefixes"]


def check_ids_unique(scan: InputScan, id_column: str, storage: StorageConfig) -> List[str]:
    """Null and duplicate ids, from the id column of every input file (read in parallel):
    resuming skips rows by id, so it needs one distinct id per row."""
    fs, _ = filesystem(scan.url, storage)
    columns = [table.column(0) for _, table in read_tables(fs, [f.path for f in scan.files], [id_column])]
    nulls, repeated, examples = repeated_ids(columns)
    problems = []
    if nulls:
        problems.append(f"input.id_column: {nulls} rows have a null {id_column!r}; output.mode: resume skips rows "
                        "already written by id, so every row needs an id")
    if repeated:
        problems.append(f"input.id_column: {repeated} ids appear more than once (e.g. "
                        f"{', '.join(map(repr, examples))}); output.mode: resume skips rows already written by id, so "
                        "ids must be unique")
    return problems


def type_name(t: pa.DataType) -> str:
    """An Arrow type as a short readable name: list<list<double>>, not Parquet's
    list<element: list<element: double>>."""
    if pa.types.is_fixed_size_list(t):
        return f"list<{type_name(t.value_type)}>[{t.list_size}]"
    if _is_list(t):
        return f"list<{type_name(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{t.field(i).name}: {type_name(t.field(i).type)}" for i in range(t.num_fields)) + ">"
    return str(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def _check_boxes_type(t: pa.DataType) -> Optional[str]:
    if pa.types.is_null(t):
        return None
    if _is_list(t) and _is_list(t.value_type):
        box = t.value_type
        if pa.types.is_fixed_size_list(box) and box.list_size != 4:
            return f"boxes of {box.list_size} values; each box needs 4"
        if _is_number(box.value_type):
            return None
        return f"box values of type {box.value_type}; they must be numbers (integers or floats)"
    return "one box list per row is expected: a list of [4 numbers] (list<list<double>>)"


def _check_masks_type(t: pa.DataType) -> Optional[str]:
    if pa.types.is_null(t):
        return None
    if _is_list(t) and pa.types.is_struct(t.value_type):
        names = {t.value_type.field(i).name for i in range(t.value_type.num_fields)}
        if {"size", "counts"} <= names:
            return None
    return "per row, a list of COCO RLE masks {size: [h, w], counts} (one per box) is expected"


_KIND_CHECKS = {
    "any": lambda t: None,
    "id": lambda t: None if not (pa.types.is_nested(t) or pa.types.is_null(t))
    else "ids must be single values (strings or integers)",
    "image_bytes": lambda t: None if (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_null(t)
                                      or is_image_struct(t))
    else ("it holds strings: if they are image paths or URIs, set image_uri_column instead of image_column"
          if _is_string(t) else "encoded image bytes (binary) or a datasets Image column (struct<bytes: binary, "
                                "path: string>) are expected"),
    "image_uri": lambda t: None if _is_string(t)
    else ("it holds bytes: if they are encoded images, set image_column instead of image_uri_column"
          if pa.types.is_binary(t) or pa.types.is_large_binary(t) else "image paths or URIs (strings) are expected"),
    "boxes": _check_boxes_type,
    "categories": lambda t: None if pa.types.is_null(t) or (_is_list(t) and (_is_string(t.value_type) or
                                                                           _is_number(t.value_type)))
    else "per row, a list of categories (names or integer ids, one per box) is expected",
    "rle_masks": _check_masks_type,
}


def check_columns(scan: InputScan, rules: Iterable[ColumnRule], key: str) -> List[str]:
    """Problems with the configured columns, per distinct schema among the input's files:
    missing columns (with the columns present), wrong types, and a column whose type differs
    between files (Ray Data cannot merge those)."""
    by_schema: Dict[pa.Schema, List[InputFile]] = {}
    for file in scan.files:
        by_schema.setdefault(file.schema, []).append(file)
    total = len(scan.files)

    def where(files: List[InputFile]) -> str:
        return f"in {files[0].url}" if total == 1 else f"in {len(files)} of {total} files (e.g. {files[0].url})"

    problems = []
    for rule in rules:
        types: Dict[str, List[InputFile]] = {}
        for schema, files in by_schema.items():
            if rule.column not in schema.names:
                present = ", ".join(schema.names)
                problems.append(f"{rule.key}: no column {rule.column!r} {where(files)}; columns present: {present}")
                continue
            column_type = schema.field(rule.column).type
            reason = _KIND_CHECKS[rule.kind](column_type)
            if reason:
                problems.append(f"{rule.key}: column {rule.column!r} has type {type_name(column_type)} {where(files)}: "
                                f"{reason}")
            types.setdefault(type_name(column_type), []).extend(files)
        concrete = {t: files for t, files in types.items() if t != "null"}
        if len(concrete) > 1:
            listing = "; ".join(f"{t} {where(files)}" for t, files in concrete.items())
            problems.append(f"{rule.key}: column {rule.column!r} has different types across files ({listing}); "
                            "Ray Data cannot combine them: write the column with one type in every file")
    return problems


def box_format_warnings(scan: InputScan, boxes_column: str, box_format: str, storage: StorageConfig) -> List[str]:
    """Warnings from the first rows of one file: boxes inverted under xyxy (the usual sign of
    xywh boxes read as xyxy), or every coordinate within [0, 1] (normalised boxes, where the
    pipeline takes absolute pixels)."""
    found = first_rows(scan, boxes_column, storage)
    if found is None:
        return []
    first, values = found
    boxes = [box for row in values if isinstance(row, list)
             for box in row if isinstance(box, list) and len(box) == 4
             and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)]
    if not boxes:
        return []
    warnings = []
    sample = f"{len(boxes)} boxes in the first rows of {first.url}"
    if box_format == "xyxy":
        inverted = sum(b[2] < b[0] or b[3] < b[1] for b in boxes)
        if inverted >= max(1, 0.25 * len(boxes)):
            warnings.append(f"input.box_format is xyxy, but {inverted} of {sample} have x2 < x1 or y2 < y1, as "
                            "[x, y, width, height] boxes read as xyxy do; if the boxes are xywh, set "
                            "input.box_format: xywh")
    if all(0.0 <= v <= 1.0 for b in boxes for v in b) and any(v > 0 for b in boxes for v in b):
        warnings.append(f"every coordinate of {sample} lies within [0, 1]: the pipeline takes boxes in absolute "
                        "pixels; scale normalised boxes by the image width and height first")
    return warnings


# --- checkpoint -------------------------------------------------------------------------

def check_checkpoint(checkpoint: str, variant: Optional[str], storage: StorageConfig,
                     key: str) -> Tuple[Optional[SamHQConfig], List[str]]:
    """The checkpoint's architecture from its header (nothing downloaded), or the problem."""
    try:
        return SamHQModel.config_from_pretrained(checkpoint, variant, storage_options=storage_options(storage)), []
    except (FileNotFoundError, ValueError) as e:
        return None, [f"{key}: {e}"]
    except Exception as e:  # noqa: BLE001 - permissions, endpoints, network: report what the store said
        return None, [f"{key}: cannot read {checkpoint}: {type(e).__name__}: {e}"]


# --- output -----------------------------------------------------------------------------

def check_output(output: str, input_url: str, mode: str, storage: StorageConfig,
                 output_key: str = "output.path", input_key: str = "input.path") -> List[str]:
    """Problems with where results go: the input's place (equal, inside or around it), and a
    non-empty directory, which only modes `overwrite` and `resume` may write into and only
    when everything in it is the job's own (`pipeline.output_files`): nothing else is ever
    deleted."""
    out_place, in_place = _location(output, storage), _location(input_url, storage)
    in_root = (in_place[0], _root_of(in_place[1]))
    if out_place[0] == in_root[0] and (within(out_place[1], in_root[1]) or within(in_root[1], out_place[1])):
        relation = ("is" if out_place[1] == in_root[1] else
                    "is inside" if within(out_place[1], in_root[1]) else "contains")
        return [f"{output_key}: {output} {relation} {input_key} {input_url}; the job would read its own results or "
                "replace its input: write the results elsewhere"]
    entries, problems = _directory_entries(output, storage, output_key, "the results go into a directory")
    if problems or not entries:
        return problems
    if mode not in ("overwrite", "resume"):
        return [f"{output_key}: {output} is not empty ({_some(entries)}); set output.mode: resume to continue an "
                "interrupted run there, output.mode: overwrite to replace its results, or choose another path"]
    foreign = [e for e in entries if not is_job_file(e)]
    if foreign:
        return [f"{output_key}: {output} holds {len(foreign)} entries this pipeline did not write ({_some(foreign)}); "
                f"output.mode: {mode} only works on the pipeline's own files (masks-*.parquet, {JOB_FILE}, "
                f"{SUCCESS_FILE}, {CHECKPOINT_DIR}/): move them away or choose another path"]
    return []


def check_resume(config: JobConfig) -> Tuple[ResumeState, List[str]]:
    """What an earlier run at output.path left, or why it cannot be resumed: a different
    config, or results without the checkpoint that says which rows they hold."""
    output, storage = config.output.path, config.storage
    description = read_job_description(output, storage)
    if description is None:
        if job_files(output, storage):
            return ResumeState(), [f"output.mode: resume: {output} holds results but no {JOB_FILE}; it cannot be "
                                   "resumed: use output.mode: overwrite"]
        return ResumeState(), []  # nothing there yet: a first run
    changed = changed_settings(description, config)
    if changed:
        return ResumeState(), [f"output.mode: resume: the config differs from the run being resumed at {output} "
                               f"({changed}); resume with the same input, model and output settings, or use "
                               "output.mode: overwrite"]
    if read_manifest(output, storage) is not None:
        return ResumeState(complete=True), []
    committed = committed_checkpoint_files(config)
    fs, _ = filesystem(checkpoint_path(config), storage)

    def rows(path: str) -> int:
        with fs.open(path, "rb") as f:
            return int(pq.ParquetFile(f).metadata.num_rows)

    with concurrent.futures.ThreadPoolExecutor(_FOOTER_THREADS) as pool:
        done = sum(pool.map(rows, committed))
    if not done and result_files(output, storage).files:
        return ResumeState(), [f"output.mode: resume: {output} holds results but its checkpoint "
                               f"({checkpoint_path(config)}) lists no rows as written; it cannot be resumed: use "
                               "output.mode: overwrite"]
    return ResumeState(rows_done=done), []


def changed_settings(description: Dict[str, Any], config: JobConfig) -> str:
    """The decisive settings (`decisive_settings`) in which `config` differs from the one an
    output's job description holds, as "input.x, model.y"; "" when none does."""
    if description.get("config_digest") == config_digest(config.to_dict()):
        return ""
    earlier, now = decisive_settings(description["config"]), decisive_settings(config.to_dict())
    changed = [f"{name}.{key}" for name in now for key in sorted(set(earlier[name]) | set(now[name]))
               if earlier[name].get(key) != now[name].get(key)]
    return ", ".join(changed) or "its description is from another version"


def check_retry(config: JobConfig) -> Tuple[Optional[RetryState], List[str]]:
    """The rows with transient errors in the completed output at output.path (their id and
    error columns read, file by file in threads), or why there is none to retry."""
    output, storage = config.output.path, config.storage
    description = read_job_description(output, storage)
    if description is None:
        return None, [f"--retry-errors: {output} holds no results of this pipeline (no {JOB_FILE}); run the job first"]
    changed = changed_settings(description, config)
    if changed:
        return None, [f"--retry-errors: the config differs from the one that wrote {output} ({changed}); retry with "
                      "the same input, model and output settings"]
    if read_manifest(output, storage) is None:
        return None, [f"--retry-errors: {output} has no {SUCCESS_FILE}: its run has not finished; complete it with "
                      "output.mode: resume first"]
    fs, _ = filesystem(output, storage)
    retry = RetryState()
    for path, table in read_tables(fs, result_files(output, storage).files, [config.input.id_column, ERROR]):
        rows = [(row_id, error) for row_id, error in zip(*(c.to_pylist() for c in table.columns), strict=True)
                if retryable(error)]
        if rows:
            retry.files[path] = [row_id for row_id, _ in rows]
            retry.examples += [error for _, error in rows][: 3 - len(retry.examples)]
    return retry, []


def _directory_entries(url: str, storage: StorageConfig, key: str, why_directory: str) -> Tuple[List[str], List[str]]:
    """The names in the directory a job writes to ([] when it does not exist yet), or the
    problem: it is a file, or it cannot be listed."""
    fs, path = filesystem(url, storage)
    try:
        if not fs.exists(path):
            return [], []
        if not fs.isdir(path):
            return [], [f"{key}: {url} is a file; {why_directory}"]
        return [basename(e) for e in fs.ls(path, detail=False)], []
    except Exception as e:  # noqa: BLE001 - permissions, endpoints, network
        return [], [f"{key}: cannot list {url}: {type(e).__name__}: {e}"]


def _some(names: List[str], limit: int = 3) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return f"{len(names)} entries: {shown}{', ...' if len(names) > limit else ''}" if len(names) > 1 else shown


# --- cluster ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Resources:
    cpus: float
    gpus: float
    memory: float  # bytes Ray may reserve for tasks and actors
    where: str  # what the numbers describe, for messages

    def describe(self) -> str:
        return f"{self.cpus:g} CPUs, {self.gpus:g} GPUs, {self.memory / 2**30:.1f} GiB of task memory ({self.where})"


def check_resources(config: JobConfig, resources: Resources, decode_memory: float,
                    checkpoint_filter: bool = False) -> List[str]:
    """Problems placing the job's actors and tasks on these resources: actors must leave at
    least one CPU for the read, decode and write tasks, GPU actors need the GPUs, and a decode
    task's memory reservation must fit. Any of these would make Ray wait forever. A resumed
    run (`checkpoint_filter`) also places Ray Data's checkpoint filter actor (1 CPU)."""
    compute = config.compute
    problems = []
    actor_cpus = compute.num_actors * compute.num_cpus_per_actor
    filter_cpus = 1 if checkpoint_filter else 0
    if actor_cpus + filter_cpus + 1 > resources.cpus:
        resumed = ", plus 1 for Ray Data's checkpoint filter (resuming)" if filter_cpus else ""
        problems.append(
            f"compute: {compute.num_actors} model actors x {compute.num_cpus_per_actor:g} CPUs = {actor_cpus:g} CPUs"
            f"{resumed}, plus 1 for the read, decode and write tasks, is more than the cluster's "
            f"{resources.describe()}; lower compute.num_actors or compute.num_cpus_per_actor (on CPU, "
            "compute.torch_threads sets an actor's threads independently)")
    gpus = num_gpus_per_actor(config, resources)
    if gpus * compute.num_actors > resources.gpus:
        problems.append(f"compute: {compute.num_actors} model actors x {gpus:g} GPUs need {gpus * compute.num_actors:g} "
                        f"GPUs; the cluster has {resources.describe()}; lower compute.num_actors or "
                        "compute.num_gpus_per_actor (fractions share a GPU)")
    if decode_memory > resources.memory:
        problems.append(f"compute.decode_batch_size: a decode task of {compute.decode_batch_size} images reserves "
                        f"{decode_memory / 2**20:.0f} MiB, more than the cluster's {resources.describe()}; lower it")
    return problems


def num_gpus_per_actor(config: JobConfig, resources: Resources) -> float:
    """As configured, else 1 when the cluster has GPUs, else 0."""
    if config.compute.num_gpus_per_actor is not None:
        return config.compute.num_gpus_per_actor
    return 1.0 if resources.gpus > 0 else 0.0


def local_resources() -> Resources:
    """What `ray.init()` would start a local cluster with on this machine."""
    import ray._private.utils as ray_utils
    import torch

    try:
        cpus = float(ray_utils.get_num_cpus())
    except Exception:  # noqa: BLE001 - a private helper; the machine's count is the same on most hosts
        cpus = float(os.cpu_count() or 1)
    try:
        memory = float(ray_utils.get_system_memory()) * 0.7  # Ray leaves ~30% to its object store
    except Exception:  # noqa: BLE001
        memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) * 0.7
    return Resources(cpus, float(torch.cuda.device_count()), memory, "a local Ray cluster on this machine")


def cluster_resources() -> Resources:
    """The connected Ray cluster's total resources."""
    import ray

    total = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return Resources(float(total.get("CPU", 0)), float(total.get("GPU", 0)), float(total.get("memory", 0)),
                     f"{nodes} node{'s' if nodes != 1 else ''}")


# --- fine-tuning ------------------------------------------------------------------------

# What a fine-tuning run writes into model.output, the only files it may replace there.
FINETUNE_FILES = ("config.json", "model.safetensors", "finetune_report.md")


def plan_finetune(config: "FinetuneConfig", relative_to: Optional[str] = None) -> Tuple["FinetuneConfig", SamHQConfig]:
    """The checks of `plan_job`, for a fine-tuning config (`pipeline.finetune.FinetuneConfig`)
    under its own key names: the data's files and columns (masks included), the checkpoint,
    and a model.output that replaces neither the checkpoint nor files a fine-tuning run did
    not write. Returns the config with local paths resolved and the model's architecture;
    ConfigError listing every problem."""
    data, model = config.data, config.model
    problems: List[str] = []
    resolved: Dict[str, Any] = {}
    for key, section, name in (("data.train", "data", "train"), ("data.validation", "data", "validation"),
                               ("model.checkpoint", "model", "checkpoint"), ("model.output", "model", "output")):
        value = getattr(getattr(config, section), name)
        if value is None:
            continue
        resolve = resolve_checkpoint if key == "model.checkpoint" else resolve_local_path
        value, found = resolve(value, key, relative_to)
        problems += found
        resolved[section] = resolved.get(section, getattr(config, section)).model_copy(update={name: value})
    config = config.model_copy(update=resolved)
    unresolved = {problem.split(":", 1)[0] for problem in problems}
    data, model = config.data, config.model
    data, found = with_uri_prefixes(data, [u for u in (data.train, data.validation) if u is not None], "data",
                                    relative_to)
    problems += found
    config = config.model_copy(update={"data": data})
    rules = [ColumnRule("data.id_column", data.id_column, "id"), ColumnRule("data.boxes_column", data.boxes_column, "boxes"),
             ColumnRule("data.masks_column", data.masks_column, "rle_masks")]
    if data.image_column:
        rules.append(ColumnRule("data.image_column", data.image_column, "image_bytes"))
    if data.image_uri_column:
        rules.append(ColumnRule("data.image_uri_column", data.image_uri_column, "image_uri"))
    columns = [r.column for r in rules]
    for key, url in (("data.train", data.train), ("data.validation", data.validation)):
        if url is None or key in unresolved:
            continue
        try:
            problems += check_columns(scan_input(url, config.storage, key, columns), rules, key)
        except ConfigError as e:
            problems += e.problems
    model_config: Optional[SamHQConfig] = None
    if "model.checkpoint" not in unresolved:
        model_config, found = check_checkpoint(model.checkpoint, model.variant, config.storage, "model.checkpoint")
        problems += found
    if not unresolved & {"model.checkpoint", "model.output"}:
        problems += _check_finetune_output(model.output, model.checkpoint, config.storage)
    if problems:
        raise ConfigError(problems)
    assert model_config is not None
    return config, model_config


def _check_finetune_output(output: str, checkpoint: str, storage: StorageConfig) -> List[str]:
    out_place, checkpoint_place = _location(output, storage), _location(checkpoint, storage)
    if out_place == checkpoint_place:
        return [f"model.output: {output} is model.checkpoint; the fine-tuned model would replace the one it starts "
                "from: write it elsewhere"]
    entries, problems = _directory_entries(output, storage, "model.output", "the fine-tuned checkpoint is a directory")
    if problems:
        return problems
    foreign = [e for e in entries if e not in FINETUNE_FILES]
    if entries and (foreign or "finetune_report.md" not in entries):
        return [f"model.output: {output} is not empty and not an earlier fine-tuning run's output "
                f"({_some(foreign or entries)}); choose a new directory (nothing there is replaced or deleted)"]
    return []
