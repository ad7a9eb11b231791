"""The two JSON files that describe an output, typed: the job that writes it
(`JobDescription`, `_samhq_job.json`) and, once its closing check passed, what it wrote
(`Manifest`, `_SUCCESS`); and which of a job's settings decide its results."""

import dataclasses
import hashlib
import json
from typing import Any, Dict, List

from ..config import ConfigError, JobConfig
from .layout import JOB_FILE_FORMAT


def decisive_settings(config: JobConfig) -> Dict[str, Dict[str, Any]]:
    """The sections of a config that decide the results: input, model and the output's
    columns; not the mode, checkpoint, compute or `model.compile` settings, which a resumed
    run may change (compiled and eager masks agree, tests/pipeline/test_model_stage.py)."""
    data = config.to_dict()
    output = {k: v for k, v in data["output"].items() if k == "include_image_bytes"}
    model = {k: v for k, v in data["model"].items() if k != "compile"}
    return {"input": data["input"], "model": model, "output": output}


def config_digest(config: JobConfig) -> str:
    """sha256 of the config's `decisive_settings`."""
    return hashlib.sha256(json.dumps(decisive_settings(config), sort_keys=True).encode()).hexdigest()


def changed_settings(earlier: JobConfig, now: JobConfig) -> List[str]:
    """The decisive settings in which `now` differs from `earlier`, as "input.x", "model.y"."""
    before, after = decisive_settings(earlier), decisive_settings(now)
    return [f"{name}.{key}" for name in after for key in sorted(set(before[name]) | set(after[name]))
            if before[name].get(key) != after[name].get(key)]


def _checked(data: Any, where: str) -> Dict[str, Any]:
    if not isinstance(data, dict) or data.get("format") != JOB_FILE_FORMAT:
        raise ValueError(f"{where} is not a file this version can read")
    return data


@dataclasses.dataclass(frozen=True)
class JobDescription:
    """The job that writes an output: its config and its input's row count."""

    config: JobConfig
    rows_in: int

    def to_json(self) -> Dict[str, Any]:
        return {"format": JOB_FILE_FORMAT, "config": self.config.to_dict(), "rows_in": self.rows_in,
                "config_digest": config_digest(self.config)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "JobDescription":
        """ValueError naming `where` when it is not a description this version wrote."""
        data = _checked(data, where)
        try:
            config = JobConfig.parse(data["config"])
        except (ConfigError, KeyError, TypeError) as e:
            raise ValueError(f"{where} holds no job config this version can read: {e}") from None
        return cls(config, int(data.get("rows_in", 0)))


@dataclasses.dataclass
class Manifest:
    """What a completed job wrote (its closing check passed): the config's digest, rows in
    and out, the result files, the input files it skipped, the checkpoint, and each
    `--retry-errors` pass."""

    config_digest: str
    rows_in: int
    rows_out: int
    files: List[str]
    skipped_input_files: List[Dict[str, str]] = dataclasses.field(default_factory=list)
    checkpoint: Dict[str, Any] = dataclasses.field(default_factory=dict)
    retries: List[Dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"format": JOB_FILE_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "Manifest":
        data = _checked(data, where)
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in fields})
        except TypeError as e:
            raise ValueError(f"{where} is not a manifest this version can read: {e}") from None
