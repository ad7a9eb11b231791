"""What each Ray Train worker of a fine-tuning run does (`train_worker`, the TorchTrainer's
train_loop_per_worker): load the checkpoint, go on from the latest training checkpoint when
there is one, train with DDP on its shard of the training rows, and save a training checkpoint
every training.checkpoint_every steps.

Rank 0 also does what needs one process: the validation scores before training (kept in the
training checkpoints, so that a resumed run reports the same "before") and after, on its own
device, and the result in model.output (`result.write_result`). It logs; the others do not."""

import functools
import hashlib
import logging
import tempfile
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from samhq_core import SamHQModel, SamHQProcessor
from samhq_core.training.recipe import PhaseTrainer, ProgressLog

from ..config import FinetuneConfig
from ..storage import s3_options
from .data import ExampleMaker, LabelledImages, load_validation
from .result import write_result
from .scoring import evaluate
from .shard import ShardBatches
from .training_state import TrainingState, restored_state

_logger = logging.getLogger(__name__)


def train_worker(settings: Dict[str, Any]) -> None:
    """One Ray Train worker's run; `settings["config"]` is the planned FinetuneConfig."""
    import ray.train
    import ray.train.torch

    config: FinetuneConfig = settings["config"]
    t = config.training
    rank, workers = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    log: Callable[[str], None] = _logger.info if rank == 0 else (lambda message: None)
    torch.manual_seed(t.seed)
    if t.torch_threads:
        torch.set_num_threads(t.torch_threads)
    device = ray.train.torch.get_device()
    model = SamHQModel.from_pretrained(config.model.checkpoint, variant=config.model.variant,
                                       storage_options=s3_options(config.storage)).to(device)
    restored = restored_state()
    before: Dict[str, Dict[str, float]] = {}  # rank 0's
    if rank == 0:
        validation_source, split = _validation_source(config, model)
        validation = load_validation(validation_source, split, config.data.max_validation_rows)
        validation_boxes = sum(len(e.boxes) for e in validation)
        log(f"validation: {len(validation)} images, {validation_boxes} boxes (rank 0)")
        before = restored.before if restored is not None else evaluate(model, validation)
        log("before training: " + "; ".join(f"{source} mIoU {s['miou']:.4f}, mBIoU {s['mbiou']:.4f}"
                                            for source, s in before.items()))
    # The "decoder" phase's loss leaves some decoder parameters without a gradient.
    wrap = functools.partial(ray.train.torch.prepare_model,
                             parallel_strategy_kwargs={"find_unused_parameters": t.trainable == "decoder"})
    trainer = PhaseTrainer(model, t.trainable, t.steps, t.lr, weight_decay=t.weight_decay,
                           warmup_steps=t.warmup_steps, wrap=wrap)
    maker = ExampleMaker(config.data, SamHQProcessor.for_model(model))
    # The checkpoint holds every worker's skipped rows so far; rank 0 carries them on.
    carried: Counter = Counter(restored.skipped) if restored is not None and rank == 0 else Counter()
    seconds = restored.seconds if restored is not None else 0.0
    if restored is not None:
        trainer.load_state_dict(restored.trainer)
        log(f"resume: from the training checkpoint at step {trainer.step} of {t.steps} "
            f"({t.steps - trainer.step} steps to go)")
    batches = ShardBatches(ray.train.get_dataset_shard("train"), maker, t.batch_size, config.data.shuffle_buffer,
                           t.seed, restored.passes if restored is not None else 0, device, log)
    progress = ProgressLog(t.trainable, t.steps, t.log_every, log)
    start = time.perf_counter()
    while trainer.step < t.steps:
        progress.add(trainer.step + 1, trainer.train_step(batches.next_batch()))
        if trainer.step % t.checkpoint_every == 0 or trainer.step == t.steps:
            skipped = carried + _summed(_gathered(dict(maker.skipped)))
            state = TrainingState(trainer.state_dict(), batches.passes, dict(skipped),
                                  before, seconds + time.perf_counter() - start)
            _report(state, rank)
            log(f"checkpoint: step {trainer.step} saved")
    trainer.finish()
    seconds += time.perf_counter() - start
    digests = _gathered(_digest(model, trainer.names))
    skipped = carried + _summed(_gathered(dict(maker.skipped)))
    if rank != 0:
        return
    if len(set(digests)) != 1:
        raise RuntimeError(f"the workers' trained parameters differ after training ({', '.join(digests)}): DDP did "
                           "not keep them in step; the result is not written")
    log(f"workers: {workers} ranks trained in step; trained parameters per rank: "
        + ", ".join(f"rank {r} sha256 {d}" for r, d in enumerate(digests)))
    after = evaluate(model, validation)
    notes = [f"Trained by {workers} Ray Train workers (DDP)."]
    if restored is not None:
        notes.append(f"Resumed from a training checkpoint at step {restored.step}.")
    write_result(model, config, before, after, skipped + validation_source.skipped, seconds,
                 sum(p.numel() for p in trainer.params), validation_boxes, log, notes)


def _validation_source(config: FinetuneConfig, model: SamHQModel) -> Tuple[LabelledImages, Optional[str]]:
    """data.validation whole, or the held-out side of data.train; the split to read."""
    if config.data.validation:
        return LabelledImages(config.data.validation, config.data, config.storage, model), None
    return LabelledImages(config.data.train, config.data, config.storage, model), "validation"


def _report(state: TrainingState, rank: int) -> None:
    """Every worker reports the step (Ray Train's barrier); rank 0's checkpoint is persisted."""
    import ray.train

    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            state.save(directory)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report({"step": state.step}, checkpoint=checkpoint, checkpoint_dir_name=f"step-{state.step:07d}")


def _gathered(value: Any) -> List[Any]:
    """`value` from every worker, by rank."""
    values: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def _summed(counts: List[Dict[str, int]]) -> Counter:
    total: Counter = Counter()
    for count in counts:
        total.update(count)
    return total


def _digest(model: SamHQModel, names: List[str]) -> str:
    """A short sha256 of the trained parameters' values, in name order."""
    parameters = dict(model.named_parameters())
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(parameters[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
