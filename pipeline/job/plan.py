"""The job's plan: every check that needs no Ray cluster, run by `validate` and before `run`
does anything. A job that would fail once Ray is up (a misspelt column, a checkpoint that is
not a model, an output that would overwrite someone's files or its own input) fails here
instead, with every problem named at once in one `ConfigError`.

What is read: each input file's Parquet footer (`pipeline.checks.input_files`), the first
rows of one file's boxes and image URI columns (`pipeline.checks.samples`), every input id
(the id column alone: they must be unique), the checkpoint's header (no weights are
downloaded) and its version, a listing of the output directory and its lease."""

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from samhq_core import SamHQConfig
from samhq_core.checkpoint_sources import checkpoint_version

from ..checks.checkpoint import check_checkpoint
from ..checks.columns import ColumnRule, check_columns, skip_files_with_bad_columns
from ..checks.input_files import InputScan, read_ids, read_pages, scan_input
from ..checks.output_dir import check_lease, check_output
from ..checks.paths import resolve_checkpoint, resolve_local_path, with_uri_prefixes
from ..checks.samples import box_format_evidence, check_ids_unique, check_per_box_lengths, check_uri_sample
from ..config import DEMO_WORKDIR, ConfigError, JobConfig, Section
from ..ids import InputIdKeys
from ..output import Fingerprint, JobOutput, Shard, ShardRecord
from ..storage import Location, is_local, plain_path, s3_options, store_problem
from ..text import plural
from .resume import ResumeState, RetryState, check_resume, check_retry
from .shard_checks import check_shard_layout, check_shard_output, select_shard


@dataclass
class JobPlan:
    """What the checks found: the input's files, the model's architecture, what an earlier
    run left (resume), and warnings (things that look wrong but may be intended)."""

    config: JobConfig
    scan: InputScan
    model_config: SamHQConfig
    output: JobOutput
    fingerprint: Fingerprint  # of the input files and weights, for the description and a resume's check
    warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # what the plan decided that the config left open
    resume: ResumeState = field(default_factory=ResumeState)
    retry: Optional[RetryState] = None  # set for a --retry-errors pass
    shard: Optional[ShardRecord] = None  # set for a shard's run (--shard I/N): `scan` is its part of the input

    @property
    def rows_in(self) -> int:
        """The rows the output is to hold: the input's, plus those of files left out during an
        earlier run that were written before they failed."""
        return self.scan.num_rows + self.resume.rows_from_skipped

    @property
    def image_size(self) -> int:
        return self.model_config.vision_config.image_size


def continues_output(config: JobConfig, retry_errors: bool) -> bool:
    """Whether a run continues what an earlier run wrote at the output (output.mode resume or
    overwrite, which touch the job's own files only, or a --retry-errors pass), and so may take
    over a stopped run's lease there."""
    return retry_errors or config.output.mode in ("resume", "overwrite")


def plan_job(config: JobConfig, relative_to: Optional[str] = None, retry_errors: bool = False,
             force_box_format: bool = False, shard: Optional[Shard] = None) -> JobPlan:
    """Every check that needs no Ray cluster; ConfigError listing every problem found.
    Relative local paths are resolved (`pipeline.checks.paths`) in the returned plan.
    `retry_errors`: plan a second pass over the completed output at output.path that runs
    again only its rows with transient errors (`RetryState`). `force_box_format`: boxes that
    look like another box format than the configured one are a warning, not a problem.
    `shard`: plan that shard's run (`pipeline.output.shards`): its part of the input, into
    its own files at the output; the fingerprint is the whole input's, which every shard
    shares."""
    written = {"input.path": config.input.path, "model.checkpoint": config.model.checkpoint}
    config, problems = resolve_job_paths(config, relative_to)
    unresolved = {problem.split(":", 1)[0] for problem in problems}
    scan: Optional[InputScan] = None
    input_ids: Optional[InputIdKeys] = None
    warnings: List[str] = []
    skip_bad = config.input.on_bad_file == "skip"
    input_location = Location(config.input.path, config.storage)
    if "input.path" not in unresolved:
        try:
            scan = scan_input(input_location, "input.path", read_columns(config), skip_bad)
        except ConfigError as e:
            problems += [_where_from(problem, "input.path", written["input.path"], relative_to) for problem in e.problems]
    whole_input: Dict[str, str] = {}
    record: Optional[ShardRecord] = None
    if scan is not None and shard is not None:
        whole_input = {f.url: f.version for f in scan.files}
        scan, record, found = select_shard(scan, shard)
        problems += found
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
            if config.input.boxes_column is not None:
                found, suspicious = box_format_evidence(scan, config.input.boxes_column, config.input.box_format)
                problems, warnings = (problems, warnings + found) if force_box_format else (problems + found, warnings)
                warnings += suspicious
            found, suspicious = check_per_box_lengths(scan, config)
            problems, warnings = problems + found, warnings + suspicious
            problems += check_uri_sample(scan, config)
            try:
                scan, input_ids = read_pages(scan, "input.path", config.input.id_column,
                                             [c for c in read_columns(config) if c != config.input.image_column],
                                             skip_bad)
                kept = scan
                found, suspicious = check_ids_unique(input_ids, lambda: read_ids(kept, config.input.id_column),
                                                     config.input.id_column, resuming=config.output.mode == "resume")
                problems, warnings = problems + found, warnings + suspicious
            except ConfigError as e:
                problems += e.problems
    model_config: Optional[SamHQConfig] = None
    if "model.checkpoint" not in unresolved:
        model_config, found = check_checkpoint(config.model.checkpoint, config.model.variant, config.storage,
                                               "model.checkpoint", sha256=config.model.sha256)
        problems += [_where_from(problem, "model.checkpoint", written["model.checkpoint"], relative_to)
                     for problem in found]
    notes = []
    if model_config is not None and config.model.mask_source is None:  # resolved before a resume compares configs
        source = model_config.default_mask_source
        config = config.model_copy(update={"model": config.model.model_copy(update={"mask_source": source})})
        notes.append(f"model.mask_source: {source.value}, " + ("as the checkpoint's config.json recommends"
                                                              if model_config.mask_source else "the official output"))
    fingerprint = None
    if scan is not None and model_config is not None:
        try:
            weights = checkpoint_version(config.model.checkpoint, s3_options(config.storage))
            fingerprint = Fingerprint(whole_input or {f.url: f.version for f in scan.files}, weights)
        except Exception as e:  # noqa: BLE001 - the header was read a moment ago: a store's hiccup
            problems.append(f"model.checkpoint: cannot read {config.model.checkpoint}: "
                            f"{store_problem(e, config.model.checkpoint)}")
    resume, retry = ResumeState(), None
    output = JobOutput.of(config, shard)
    if not unresolved & {"input.path", "output.path"}:
        # A retry pass works on the job's own files, as resume does; a shard may find the
        # other shards' files in every mode, never anything else.
        mode = "resume" if retry_errors or shard is not None else config.output.mode
        # Shards of another N, or a run without --shard and shards, said first: more to the
        # point than "not empty".
        problems += check_shard_layout(output, config, fingerprint) or check_output(output.location, input_location,
                                                                                  mode)
        if not problems:
            problems += check_shard_output(output, continues=continues_output(config, retry_errors))
        if not problems:
            problems += check_lease(output.location, take_over=continues_output(config, retry_errors),
                                    file_name=output.lease_name)
        if retry_errors and not problems:
            retry, found = check_retry(config, output, fingerprint)
            problems += found
        elif config.output.mode == "resume" and not problems:
            resume, found = check_resume(config, output, fingerprint, input_ids)
            problems += found
            if scan is not None and resume.skipped_inputs:
                scan = scan.leaving_out({url: f"left out by the run resumed: {entry['reason']}"
                                         for url, entry in resume.skipped_inputs.items()})
    if problems:
        raise ConfigError(problems)
    assert scan is not None and model_config is not None and fingerprint is not None
    if record is not None:
        record = dataclasses.replace(record, skipped_input_files={s.url: s.reason for s in scan.skipped})
        notes.append(f"shard:   {record.shard}: {plural(len(scan.files), 'input file')} of the input's "
                     f"{len(whole_input)}, {plural(scan.num_rows, 'row')} of {sum(record.rows_per_shard)}")
    return JobPlan(config, scan, model_config, output, fingerprint, warnings, notes, resume, retry, record)


def _where_from(problem: str, key: str, written: str, relative_to: Optional[str]) -> str:
    """A problem of a missing path under `key`, with where the relative path the config wrote
    was resolved and, for the example configs' data, which command writes it."""
    if not (problem.startswith(f"{key}: ") and "not found" in problem):
        return problem
    if is_local(written) and not os.path.isabs(plain_path(written)):
        problem += (f" (the relative path {written!r}, resolved against "
                    f"{os.path.abspath(relative_to) if relative_to else 'the working directory ' + os.getcwd()})")
    if DEMO_WORKDIR in written.split("/"):
        problem += f"; the example configs read the data `python -m pipeline demo` writes into {DEMO_WORKDIR}/: run it first"
    return problem


def read_columns(config: JobConfig) -> List[str]:
    """The input columns the job reads, each once: id, passthrough, category, image, prompts."""
    inp = config.input
    return list(dict.fromkeys([inp.id_column, *inp.passthrough_columns,
                               *([inp.category_column] if inp.category_column else []), inp.image_source_column,
                               *(column for _, column in inp.prompt_columns().named())]))


# What each prompt column must hold, by its config key.
_PROMPT_KINDS = {"input.boxes_column": "boxes", "input.points_column": "points",
                 "input.point_labels_column": "point_labels", "input.mask_prompts_column": "mask_prompts"}


def input_rules(config: JobConfig) -> List[ColumnRule]:
    """What each input column the config names must hold."""
    inp = config.input
    rules = [ColumnRule("input.id_column", inp.id_column, "id")]
    rules += [ColumnRule(key, column, _PROMPT_KINDS[key]) for key, column in inp.prompt_columns().named()]
    if inp.image_column:
        rules.append(ColumnRule("input.image_column", inp.image_column, "image_bytes"))
    if inp.image_uri_column:
        rules.append(ColumnRule("input.image_uri_column", inp.image_uri_column, "image_uri"))
    if inp.category_column:
        rules.append(ColumnRule("input.category_column", inp.category_column, "categories"))
    rules += [ColumnRule("input.passthrough_columns", name, "any") for name in inp.passthrough_columns]
    return rules


def resolve_job_paths(config: JobConfig, relative_to: Optional[str]) -> Tuple[JobConfig, List[str]]:
    """The config with its local input, output and checkpoint paths made absolute, and the
    input's allowed URI prefixes filled in."""
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
