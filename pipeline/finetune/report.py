"""The Markdown report a fine-tuning run writes beside its checkpoint."""

from collections import Counter
from typing import Dict, List, Sequence

from samhq_core import MaskSource

from ..config import FinetuneConfig

# Below this many validation boxes, a before/after difference says little.
MIN_VALIDATION_BOXES = 20
TRAINED_SOURCE = MaskSource.HQ_ONLY  # the output the HQ parameters make alone


def finetune_warnings(before: Dict[str, Dict[str, float]], after: Dict[str, Dict[str, float]],
                      validation_boxes: int) -> List[str]:
    """What a user must know before trusting the result: too few validation boxes to judge
    it, or a trained output worse than the one it started from."""
    found = []
    if validation_boxes < MIN_VALIDATION_BOXES:
        found.append(f"only {validation_boxes} validation boxes (fewer than {MIN_VALIDATION_BOXES}): the before/after "
                     "numbers say little; give data.validation, a larger data.validation_fraction or more data")
    b, a = before[TRAINED_SOURCE.value], after[TRAINED_SOURCE.value]
    if a["miou"] < b["miou"]:
        found.append(f"the trained {TRAINED_SOURCE.value} output got worse on the validation split (mIoU "
                     f"{b['miou']:.4f} -> {a['miou']:.4f}, mBIoU {b['mbiou']:.4f} -> {a['mbiou']:.4f}); the "
                     "checkpoint is written all the same: fewer training.steps, a lower training.lr or more data "
                     "may do better")
    return found


# What each training.trainable trains, in the report's words.
_TRAINABLE = {"hq": "HQ", "decoder": "mask-decoder"}


def report(before: Dict[str, Dict[str, float]], after: Dict[str, Dict[str, float]], skipped: Counter,
           config: FinetuneConfig, seconds: float, trainable: int, warnings: Sequence[str] = (),
           notes: Sequence[str] = ()) -> str:
    """The report: the run in a sentence and its `notes` (how it ran), the scores before and
    after by mask source, the `warnings`, the rows skipped by reason."""
    t = config.training
    images = f"{t.batch_size} images" if t.workers == 1 else f"{t.workers} x {t.batch_size} images ({t.workers} workers)"
    lines = ["# HQ fine-tuning", "", f"Checkpoint `{config.model.checkpoint}` → `{config.model.output}`; "
             f"{t.steps} steps of {images}, {trainable:,} trainable ({_TRAINABLE[t.trainable]}) parameters, "
             f"{seconds / 60:.1f} min.", *(line for note in notes for line in ("", note)), "",
             "| mask source | boxes | mIoU before | mIoU after | mBIoU before | mBIoU after |", "|---|---|---|---|---|---|"]
    for source in MaskSource:
        b, a = before[source.value], after[source.value]
        lines.append(f"| {source.value} | {a['boxes']} | {b['miou']:.4f} | {a['miou']:.4f} | {b['mbiou']:.4f} "
                     f"| {a['mbiou']:.4f} |")
    lines += ["", "sam_only is unchanged by design (only HQ parameters train): it is the baseline." if t.trainable == "hq"
              else "sam_only changed too: the whole mask decoder trained, SAM's two-way transformer with it."]
    lines += ["", *(f"**Warning**: {warning}." for warning in warnings)] if warnings else []
    if skipped:
        lines += ["", "| skipped (all passes over the data) | count |", "|---|---|"]
        lines += [f"| {reason} | {count} |" for reason, count in sorted(skipped.items())]
    return "\n".join(lines) + "\n"
