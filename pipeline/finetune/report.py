"""The Markdown report a fine-tuning run writes beside its checkpoint."""

from collections import Counter
from typing import Dict

from samhq_core import MaskSource

from ..config import FinetuneConfig


def report(before: Dict[str, Dict[str, float]], after: Dict[str, Dict[str, float]], skipped: Counter,
           config: FinetuneConfig, seconds: float, trainable: int) -> str:
    lines = ["# HQ fine-tuning", "", f"Checkpoint `{config.model.checkpoint}` → `{config.model.output}`; "
             f"{config.training.steps} steps of {config.training.batch_size} images, {trainable:,} trainable "
             f"(HQ) parameters, {seconds / 60:.1f} min.", "",
             "| mask source | boxes | mIoU before | mIoU after | mBIoU before | mBIoU after |", "|---|---|---|---|---|---|"]
    for source in MaskSource:
        b, a = before[source.value], after[source.value]
        lines.append(f"| {source.value} | {a['boxes']} | {b['miou']:.4f} | {a['miou']:.4f} | {b['mbiou']:.4f} "
                     f"| {a['mbiou']:.4f} |")
    lines += ["", "sam_only is unchanged by design (only HQ parameters train): it is the baseline."]
    if skipped:
        lines += ["", "| skipped (all passes over the data) | count |", "|---|---|"]
        lines += [f"| {reason} | {count} |" for reason, count in sorted(skipped.items())]
    return "\n".join(lines) + "\n"
