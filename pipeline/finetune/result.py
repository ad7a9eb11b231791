"""What a fine-tuning run leaves in model.output: the HF-layout checkpoint that the job loads
(`model.checkpoint`) and `finetune_report.md` beside it, written by the process that trained
(this one, or Ray Train's rank 0)."""

import os
import tempfile
from collections import Counter
from typing import Callable, Dict, Sequence

from samhq_core import SamHQModel

from ..config import FinetuneConfig
from ..storage import Location
from .report import finetune_warnings, report

Scores = Dict[str, Dict[str, float]]


def save_checkpoint(model: SamHQModel, destination: Location) -> None:
    """save_pretrained to a local directory or, through a temporary one, to an fsspec URL."""
    if destination.is_local:
        model.save_pretrained(destination.path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        for name in os.listdir(tmp):
            destination.fs.put_file(os.path.join(tmp, name), destination.join(name).path)


def write_result(model: SamHQModel, config: FinetuneConfig, before: Scores, after: Scores, skipped: Counter,
                 seconds: float, trainable: int, validation_boxes: int, log: Callable[[str], None],
                 notes: Sequence[str] = ()) -> str:
    """Save the trained model (moved to the CPU) and its report into model.output, the report
    last (its presence marks a finished run); the warnings of `finetune_warnings` are logged
    and reported. Returns the report."""
    output = Location(config.model.output, config.storage)
    save_checkpoint(model.cpu(), output)
    warnings = finetune_warnings(before, after, validation_boxes)
    for warning in warnings:
        log(f"warning: {warning}")
    text = report(before, after, skipped, config, seconds, trainable, warnings, notes)
    with output.join("finetune_report.md").open_for_write() as f:
        f.write(text.encode("utf-8"))
    return text
