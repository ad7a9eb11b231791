"""`finetune`: HQ fine-tuning on your own labelled data
(`python -m pipeline finetune --config finetune.yaml`).

Trains only the HQ parameters of a SAM-HQ checkpoint (the paper's recipe: HQ token, its MLP,
compress_vit_feat, embedding_encoder, embedding_maskfeature; everything else frozen) on a
Parquet of images, boxes and ground-truth masks (`data`), local or on object storage, and saves
an HF-layout checkpoint that the pipeline loads. Before and after training it reports mIoU and
boundary IoU on a validation split for each mask source (`scoring`, `report`). The training
loop is samhq_core's (`samhq_core.training.recipe`)."""

import os
import tempfile
import time
from collections import Counter
from typing import Callable, Optional

import torch

from samhq_core import SamHQModel
from samhq_core.training.recipe import set_trainable, train_phase

from ..config import FinetuneConfig
from ..storage import Location, s3_options
from .data import LabelledImages, training_batches
from .plan import plan_finetune
from .report import finetune_warnings, report
from .scoring import evaluate


def save_checkpoint(model: SamHQModel, destination: Location) -> None:
    """save_pretrained to a local directory or, through a temporary one, to an fsspec URL."""
    if destination.is_local:
        model.save_pretrained(destination.path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        for name in os.listdir(tmp):
            destination.fs.put_file(os.path.join(tmp, name), destination.join(name).path)


def finetune(config: FinetuneConfig, log: Callable[[str], None] = print, relative_to: Optional[str] = None,
             replace_output: bool = False) -> str:
    """Run a fine-tuning job; returns the Markdown report (also written next to the checkpoint).

    The checks of `plan.plan_finetune` run first: ConfigError, before anything is loaded or
    written, for every problem they find (an earlier run's output at model.output among them,
    unless `replace_output`)."""
    config, _ = plan_finetune(config, relative_to, replace_output)
    t = config.training
    torch.manual_seed(t.seed)
    if t.torch_threads:
        torch.set_num_threads(t.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = SamHQModel.from_pretrained(config.model.checkpoint, variant=config.model.variant,
                                       storage_options=s3_options(config.storage)).to(device)
    trainable = sum(p.numel() for p in set_trainable(model, "hq"))
    train_source = LabelledImages(config.data.train, config.data, config.storage, model)
    if config.data.validation:
        validation_source, train_split, validation_split = (
            LabelledImages(config.data.validation, config.data, config.storage, model), None, None)
    else:
        validation_source, train_split, validation_split = train_source, "train", "validation"
    validation = []
    for example in validation_source.examples(validation_split):
        validation.append(example)
        if len(validation) == config.data.max_validation_rows:
            break
    if not validation:
        raise ValueError("no usable validation rows: give data.validation or more data "
                         f"(skipped: {dict(validation_source.skipped)})")
    validation_boxes = sum(len(e.boxes) for e in validation)
    log(f"validation: {len(validation)} images, {validation_boxes} boxes")
    before = evaluate(model, validation)
    log("before training: " + "; ".join(f"{source} mIoU {s['miou']:.4f}, mBIoU {s['mbiou']:.4f}"
                                        for source, s in before.items()))
    start = time.perf_counter()
    batches = training_batches(train_source, train_split, t.batch_size, config.data.shuffle_buffer, t.seed, device)
    train_phase(model, "hq", batches, t.steps, t.lr, weight_decay=t.weight_decay, warmup_steps=t.warmup_steps,
                log_every=t.log_every, log=log)
    seconds = time.perf_counter() - start
    after = evaluate(model, validation)
    output = Location(config.model.output, config.storage)
    save_checkpoint(model.cpu(), output)
    skipped = train_source.skipped + (validation_source.skipped if validation_source is not train_source else Counter())
    warnings = finetune_warnings(before, after, validation_boxes)
    for warning in warnings:
        log(f"warning: {warning}")
    text = report(before, after, skipped, config, seconds, trainable, warnings)
    with output.join("finetune_report.md").open_for_write() as f:
        f.write(text.encode("utf-8"))
    return text
