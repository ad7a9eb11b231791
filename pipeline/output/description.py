"""The two JSON files that describe an output, typed: the job that writes it
(`JobDescription`, `_samhq_job.json`, with the `Fingerprint` of its input files and weights,
and for a shard of a job its `ShardRecord`) and, once its closing check passed, what it wrote
(`Manifest`, `_SUCCESS`); and which of a job's settings decide its results."""

import dataclasses
import hashlib
import json
from typing import Any, Dict, List, Optional

from ..config import ConfigError, JobConfig
from ..text import some
from .layout import JOB_FILE_FORMAT
from .shards import Shard


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
class Fingerprint:
    """What a run's results are made from besides its config: the version of each input file
    (by URL) and of the weights, as their stores report them (`version_stamp`), so that a run
    continuing the output notices data or weights replaced at the same place."""

    input_files: Dict[str, str]
    weights: str

    def changes_since(self, earlier: "Fingerprint") -> List[str]:
        """How the input and weights now differ from `earlier`, one phrase per kind of change."""
        now, then = self.input_files, earlier.input_files
        found = [(f"{len(names)} input file{'s' * (len(names) > 1)} {what} ({some(names)})") for what, names in (
            ("changed", [url for url in now if url in then and now[url] != then[url]]),
            ("added", [url for url in now if url not in then]),
            ("gone", [url for url in then if url not in now])) if names]
        if self.weights != earlier.weights:
            found.append(f"the weights at model.checkpoint replaced (then {earlier.weights}, now {self.weights})")
        return found


@dataclasses.dataclass(frozen=True)
class ShardRecord:
    """Which part of the job a shard's run is: the shard, the input files it was given
    (`shards.assign_files`; those it left out under input.on_bad_file: skip with their reason)
    and every shard's rows, so that `status` knows the whole job from any one shard."""

    shard: Shard
    input_files: List[str]  # URLs, those left out included
    skipped_input_files: Dict[str, str] = dataclasses.field(default_factory=dict)  # url -> reason
    rows_per_shard: List[int] = dataclasses.field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"index": self.shard.index, "count": self.shard.count, "input_files": self.input_files,
                "skipped_input_files": self.skipped_input_files, "rows_per_shard": self.rows_per_shard}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "ShardRecord":
        try:
            return cls(Shard(int(data["index"]), int(data["count"])), [str(url) for url in data["input_files"]],
                       {str(k): str(v) for k, v in data.get("skipped_input_files", {}).items()},
                       [int(n) for n in data.get("rows_per_shard", [])])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(f"{where} holds no shard record this version can read") from None


@dataclasses.dataclass(frozen=True)
class JobDescription:
    """The job that writes an output: its config, its input's row count, and the fingerprint
    of its input files and weights (None in a description that has none)."""

    config: JobConfig
    rows_in: int
    fingerprint: Optional[Fingerprint] = None
    # Input files that failed to read during a run, left out under input.on_bad_file: skip:
    # url -> {"reason": why, "rows_written": how many of its rows were written before}.
    skipped_inputs: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
    shard: Optional[ShardRecord] = None  # a shard's run (`--shard I/N`): which part of the job

    def to_json(self) -> Dict[str, Any]:
        data = {"format": JOB_FILE_FORMAT, "config": self.config.to_dict(), "rows_in": self.rows_in,
                "config_digest": config_digest(self.config)}
        if self.fingerprint is not None:
            data["fingerprint"] = dataclasses.asdict(self.fingerprint)
        if self.skipped_inputs:
            data["skipped_inputs"] = self.skipped_inputs
        if self.shard is not None:
            data["shard"] = self.shard.to_json()
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> "JobDescription":
        """ValueError naming `where` when it is not a description this version wrote."""
        data = _checked(data, where)
        try:
            config = JobConfig.parse(data["config"])
        except (ConfigError, KeyError, TypeError) as e:
            raise ValueError(f"{where} holds no job config this version can read: {e}") from None
        found = data.get("fingerprint")
        fingerprint = None
        if isinstance(found, dict) and isinstance(found.get("input_files"), dict):
            fingerprint = Fingerprint({str(k): str(v) for k, v in found["input_files"].items()},
                                      str(found.get("weights", "")))
        skipped = data.get("skipped_inputs")
        skipped_inputs = {str(url): {"reason": str(entry.get("reason", "")), "rows_written": int(entry.get("rows_written", 0))}
                          for url, entry in skipped.items() if isinstance(entry, dict)} if isinstance(skipped, dict) else {}
        shard = ShardRecord.from_json(data["shard"], where) if data.get("shard") is not None else None
        return cls(config, int(data.get("rows_in", 0)), fingerprint, skipped_inputs, shard)


@dataclasses.dataclass
class Manifest:
    """What a completed job (or shard of a job) wrote (its closing check passed): the config's
    digest, rows in and out, the result files, the input files it skipped, the checkpoint, each
    `--retry-errors` pass, and a shard's record (`ShardRecord.to_json`: its input files)."""

    config_digest: str
    rows_in: int
    rows_out: int
    files: List[str]
    skipped_input_files: List[Dict[str, str]] = dataclasses.field(default_factory=list)
    checkpoint: Dict[str, Any] = dataclasses.field(default_factory=dict)
    retries: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    shard: Optional[Dict[str, Any]] = None

    def to_json(self) -> Dict[str, Any]:
        data = {"format": JOB_FILE_FORMAT, **dataclasses.asdict(self)}
        if self.shard is None:
            del data["shard"]  # an unsharded job's manifest stays as it was
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> "Manifest":
        data = _checked(data, where)
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in fields})
        except TypeError as e:
            raise ValueError(f"{where} is not a manifest this version can read: {e}") from None
