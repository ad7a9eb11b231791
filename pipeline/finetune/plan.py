"""The checks a fine-tuning run makes before it loads anything: the data's files and columns
(masks included), the checkpoint, and a model.output that replaces neither the checkpoint nor
files a fine-tuning run did not write."""

from typing import Any, Dict, List, Optional, Tuple

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


def plan_finetune(config: FinetuneConfig, relative_to: Optional[str] = None,
                  replace_output: bool = False) -> Tuple[FinetuneConfig, SamHQConfig]:
    """The config with local paths resolved and the model's architecture; ConfigError listing
    every problem. `replace_output`: an earlier fine-tuning run's output at model.output may be
    replaced (its own files only)."""
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
    if not unresolved & {"model.checkpoint", "model.output"}:
        problems += _check_output(Location(model.output, config.storage), Location(model.checkpoint, config.storage),
                                  replace_output)
    if problems:
        raise ConfigError(problems)
    assert model_config is not None
    return config, model_config


def _check_output(output: Location, checkpoint: Location, replace: bool) -> List[str]:
    if place(output) == place(checkpoint):
        return [f"model.output: {output.url} is model.checkpoint; the fine-tuned model would replace the one it starts "
                "from: write it elsewhere"]
    entries, problems = directory_entries(output, "model.output", "the fine-tuned checkpoint is a directory")
    if problems:
        return problems
    foreign = [e for e in entries if e not in FINETUNE_FILES]
    if entries and (foreign or "finetune_report.md" not in entries):
        return [f"model.output: {output.url} is not empty and not an earlier fine-tuning run's output "
                f"({some(foreign or entries)}); choose a new directory (nothing there is replaced or deleted)"]
    if entries and not replace:
        return [f"model.output: {output.url} holds an earlier fine-tuning run's checkpoint ({some(entries)}); choose "
                f"a new directory, or add {REPLACE_OUTPUT} to replace those files"]
    return []
