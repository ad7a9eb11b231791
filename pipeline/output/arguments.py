"""The command-line arguments that name a job's output (`export`, `review`), and what they
give: the output's handle, the job's config (from `--config`, else the description the job
wrote beside its results) and a warning for an unfinished output."""

import argparse
import sys
from dataclasses import dataclass
from typing import Optional

from ..config import JobConfig, StorageConfig, load_config
from .handle import JobOutput
from .layout import JOB_FILE


def add_output_arguments(cmd: argparse.ArgumentParser) -> None:
    """The arguments that name a job's output and the job's columns and storage."""
    cmd.add_argument("--input", required=True, help="the job's output Parquet (file, directory or glob)")
    cmd.add_argument("--config", default=None,
                     help="the job's YAML, for its columns and storage (default: the _samhq_job.json the job wrote "
                          "next to its results)")
    cmd.add_argument("--id-column", default=None, help="the job's input.id_column (default: from the job)")
    cmd.add_argument("--category-column", default=None, help="the job's input.category_column (default: from the job)")
    add_storage_arguments(cmd)


def add_storage_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint, as storage.endpoint_url")
    cmd.add_argument("--region", default=None)


def storage_of(args: argparse.Namespace) -> StorageConfig:
    return StorageConfig(endpoint_url=args.endpoint_url, region=args.region)


@dataclass
class NamedOutput:
    """A job's output as the arguments name it."""

    output: JobOutput
    config: Optional[JobConfig]  # the job's config, when known
    config_source: str  # where it came from, for messages


def named_output(args: argparse.Namespace) -> NamedOutput:
    """The output `--input` names, with the job's config from `--config`, else from the
    description next to the results (None when there is none; a job run in shards: the
    lowest shard's); a warning on stderr when the output has no `_SUCCESS` manifest, or when a
    shard of a job run in shards is not complete."""
    if args.config:
        config = load_config(args.config)
        named = NamedOutput(JobOutput(args.input, config.storage), config, args.config)
    else:
        output = JobOutput(args.input, storage_of(args))
        description = output.read_description()
        named = NamedOutput(output, description.config if description else None,
                            f"{args.input.rstrip('/')}/{output.description_name if description else JOB_FILE}")
    warn_if_unfinished(named.output)
    return named


def warn_if_unfinished(output: JobOutput) -> None:
    """A warning on stderr when `output` is a job's output without its _SUCCESS manifest (a
    job run in shards: when one of them is not complete)."""
    try:
        warning = output.result_files().warning
    except FileNotFoundError:
        return  # the reader itself says what is missing
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
