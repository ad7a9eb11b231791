"""`finetune`: HQ fine-tuning on your own labelled data
(`python -m pipeline finetune --config finetune.yaml`).

Trains the HQ parameters of a SAM-HQ checkpoint (the paper's recipe: HQ token, its MLP,
compress_vit_feat, embedding_encoder, embedding_maskfeature; everything else frozen), or with
training.trainable: decoder every mask-decoder parameter, on a Parquet of images, boxes and
ground-truth masks (`data`), local or on object storage, and saves an HF-layout checkpoint
that the pipeline loads. Before and after training it reports mIoU and boundary IoU on a
validation split for each mask source (`scoring`, `report`). The training loop is
samhq_core's (`samhq_core.training.recipe`): in this process (training.workers: 1), or on Ray
Train's workers with DDP, checkpointed and resumable (`distributed`)."""

import time
from collections import Counter
from typing import Callable, Optional

import torch

from samhq_core import SamHQModel
from samhq_core.training.recipe import train_phase, trains

from ..config import FinetuneConfig
from ..storage import Location, s3_options
from .data import LabelledImages, load_validation, training_batches
from .plan import TRAINING_DIR, FinetunePlan, plan_finetune
from .result import write_result
from .scoring import evaluate


def finetune(config: FinetuneConfig, log: Callable[[str], None] = print, relative_to: Optional[str] = None,
             replace_output: bool = False) -> str:
    """Run a fine-tuning job; returns the Markdown report (also written next to the checkpoint).

    The checks of `plan.plan_finetune` run first: ConfigError, before anything is loaded or
    written, for every problem they find (an earlier run's output at model.output among them,
    unless `replace_output`)."""
    plan = plan_finetune(config, relative_to, replace_output)
    for note in plan.notes:
        log(note)
    if plan.config.training.workers > 1:
        from .distributed import train_on_ray

        return train_on_ray(plan, log)
    return train_here(plan, log)


def train_here(plan: FinetunePlan, log: Callable[[str], None]) -> str:
    """The run in this process (training.workers: 1), without training checkpoints."""
    config = plan.config
    t = config.training
    torch.manual_seed(t.seed)
    if t.torch_threads:
        torch.set_num_threads(t.torch_threads)
    if t.use_gpu and not torch.cuda.is_available():
        raise ValueError("training.use_gpu: true, but torch sees no CUDA device here")
    device = torch.device("cuda" if torch.cuda.is_available() and t.use_gpu is not False else "cpu")
    model = SamHQModel.from_pretrained(config.model.checkpoint, variant=config.model.variant,
                                       storage_options=s3_options(config.storage)).to(device)
    if plan.restart:
        Location(config.model.output, config.storage).join(TRAINING_DIR).remove()
    train_source = LabelledImages(config.data.train, config.data, config.storage, model)
    if config.data.validation:
        validation_source, train_split, validation_split = (
            LabelledImages(config.data.validation, config.data, config.storage, model), None, None)
    else:
        validation_source, train_split, validation_split = train_source, "train", "validation"
    validation = load_validation(validation_source, validation_split, config.data.max_validation_rows)
    validation_boxes = sum(len(e.boxes) for e in validation)
    log(f"validation: {len(validation)} images, {validation_boxes} boxes")
    before = evaluate(model, validation)
    log("before training: " + "; ".join(f"{source} mIoU {s['miou']:.4f}, mBIoU {s['mbiou']:.4f}"
                                        for source, s in before.items()))
    start = time.perf_counter()
    batches = training_batches(train_source, train_split, t.batch_size, config.data.shuffle_buffer, t.seed, device)
    train_phase(model, t.trainable, batches, t.steps, t.lr, weight_decay=t.weight_decay, warmup_steps=t.warmup_steps,
                log_every=t.log_every, log=log)
    seconds = time.perf_counter() - start
    after = evaluate(model, validation)
    skipped = train_source.skipped + (validation_source.skipped if validation_source is not train_source else Counter())
    trainable = sum(p.numel() for n, p in model.named_parameters() if trains(n, t.trainable))
    return write_result(model, config, before, after, skipped, seconds, trainable, validation_boxes, log)
