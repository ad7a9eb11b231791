"""The checks a fine-tuning run makes before it loads anything: the data's files and columns
(masks included), the checkpoint, and a model.output that replaces neither the checkpoint nor
files a fine-tuning run did not write; there, an unfinished Ray Train run of the same settings
is resumed."""

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from samhq_core import SamHQConfig

from ..checks.checkpoint import check_checkpoint
from ..checks.columns import ColumnRule, check_columns
from ..checks.input_files import scan_input
from ..checks.output_dir import directory_entries, place
from ..checks.paths import resolve_checkpoint, resolve_local_path, with_uri_prefixes
from ..config import ConfigError, FinetuneConfig
from ..storage import Location
from ..text import some

# What a fine-tuning run writes into model.output, the only files it may replace there, and
# only when told to.
FINETUNE_FILES = ("config.json", "model.safetensors", "finetune_report.md")
REPLACE_OUTPUT = "--replace-output"
# A Ray Train run's training checkpoints, under model.output until the run has written its
# result; with the settings that a run resuming them must share (RUN_SETTINGS_FILE).
TRAINING_DIR = "_training"
RUN_SETTINGS_FILE = "finetune_run.json"
_RESUMED_KEYS = (("model", ("checkpoint", "variant")), ("data", ("train", "validation", "validation_fraction")),
                 ("training", ("trainable", "steps", "batch_size", "lr", "weight_decay", "warmup_steps", "seed")))


@dataclass(frozen=True)
class FinetunePlan:
    """A checked fine-tuning run: the config with its local paths resolved, the model's
    architecture, whether it resumes the unfinished Ray Train run at model.output (`resume`)
    or first deletes that run's training checkpoints (`restart`, with --replace-output), and
    what to tell the user about that (`notes`)."""

    config: FinetuneConfig
    model_config: SamHQConfig
    resume: bool = False
    restart: bool = False
    notes: List[str] = field(default_factory=list)


def run_settings(config: FinetuneConfig) -> Dict[str, Any]:
    """The keys a run resuming another's training checkpoints must share with it, by name."""
    return {f"{section}.{key}": getattr(getattr(config, section), key)
            for section, keys in _RESUMED_KEYS for key in keys}


def plan_finetune(config: FinetuneConfig, relative_to: Optional[str] = None,
                  replace_output: bool = False) -> FinetunePlan:
    """The checked run; ConfigError listing every problem. `replace_output`: an earlier
    fine-tuning run's output at model.output may be replaced (its own files only), and an
    unfinished run's training checkpoints there are deleted instead of resumed."""
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
            problems += check_columns(scan_input(Location(url, config.storage), key, columns), rules, key)
        except ConfigError as e:
            problems += e.problems
    model_config: Optional[SamHQConfig] = None
    if "model.checkpoint" not in unresolved:
        model_config, found = check_checkpoint(model.checkpoint, model.variant, config.storage, "model.checkpoint")
        problems += found
    output_state = _OutputState()
    if not unresolved & {"model.checkpoint", "model.output"}:
        output_state = _check_output(config, replace_output)
        problems += output_state.problems
    if problems:
        raise ConfigError(problems)
    assert model_config is not None
    return FinetunePlan(config, model_config, output_state.resume, output_state.restart, output_state.notes)


@dataclass
class _OutputState:
    """What model.output's check found: the problems, or whether the run resumes or restarts."""

    problems: List[str] = field(default_factory=list)
    resume: bool = False
    restart: bool = False
    notes: List[str] = field(default_factory=list)


def _check_output(config: FinetuneConfig, replace: bool) -> _OutputState:
    output, checkpoint = Location(config.model.output, config.storage), Location(config.model.checkpoint, config.storage)
    if place(output) == place(checkpoint):
        return _OutputState([f"model.output: {output.url} is model.checkpoint; the fine-tuned model would replace the "
                             "one it starts from: write it elsewhere"])
    entries, problems = directory_entries(output, "model.output", "the fine-tuned checkpoint is a directory")
    if problems:
        return _OutputState(problems)
    foreign = [e for e in entries if e not in (*FINETUNE_FILES, TRAINING_DIR)]
    finished = "finetune_report.md" in entries
    training = output.join(TRAINING_DIR)
    if entries and (foreign or not (finished or TRAINING_DIR in entries)):
        return _OutputState([f"model.output: {output.url} is not empty and not an earlier fine-tuning run's output "
                             f"({some(foreign or entries)}); choose a new directory (nothing there is replaced or "
                             "deleted)"])
    if finished and not replace:
        return _OutputState([f"model.output: {output.url} holds an earlier fine-tuning run's checkpoint "
                             f"({some(entries)}); choose a new directory, or add {REPLACE_OUTPUT} to replace those "
                             "files"])
    if TRAINING_DIR not in entries:
        return _OutputState()
    if replace:
        return _OutputState(restart=True, notes=[f"{REPLACE_OUTPUT}: the training checkpoints of the earlier run in "
                                                 f"{training.url} are deleted; training starts over"])
    if config.training.workers == 1:
        return _OutputState([f"model.output: {output.url} holds an unfinished Ray Train run ({TRAINING_DIR}/); set "
                             f"training.workers to 2 or more to resume it, or add {REPLACE_OUTPUT} to start over"])
    differences = _settings_differences(training.join(RUN_SETTINGS_FILE), run_settings(config))
    if differences:
        return _OutputState([f"model.output: {output.url} holds an unfinished run of other settings "
                             f"({'; '.join(differences)}); give the same ones to resume it, or add {REPLACE_OUTPUT} to "
                             "start over"])
    return _OutputState(resume=True, notes=[f"resume: {output.url} holds an unfinished run of these settings: it goes "
                                            f"on from its latest training checkpoint in {training.url} "
                                            f"({REPLACE_OUTPUT} starts over)"])


def _settings_differences(saved: Location, settings: Dict[str, Any]) -> List[str]:
    """"key: <there> there, <here> here" for each resumed key that differs from the settings
    the unfinished run saved (none when it saved none: it stopped before it trained)."""
    if not saved.exists():
        return []
    with saved.open() as f:
        before = json.load(f)
    return [f"{key}: {before.get(key)!r} there, {value!r} here" for key, value in settings.items()
            if before.get(key) != value]
