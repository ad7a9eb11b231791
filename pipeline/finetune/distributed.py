"""The Ray Train run of fine-tuning (training.workers of 2 or more), from the driver: join the
cluster in RAY_ADDRESS or start a local one (`pipeline.stages.cluster`), check that the
workers fit it, and run a `ray.train.torch.TorchTrainer` of `worker.train_worker` over the
decoded training rows (`data.training_dataset`), one shard per worker.

Its training checkpoints go to model.output/_training/ (Ray Train's storage path, local or on
object storage through the pipeline's filesystem); Ray Train restarts a failed worker group
from the latest one (training.max_failures), and a rerun of the same command after the driver
died resumes from it (`plan.plan_finetune` allows it). Rank 0 writes the result into
model.output; the driver then reads the report back and deletes the training checkpoints."""

import json
from typing import Callable, List

from ..checks.resources import Resources, cluster_resources
from ..config import ConfigError, FinetuneConfig
from ..stages import decode_memory
from ..stages.cluster import connect
from ..storage import Location
from .data import DECODE_BATCH_ROWS, training_dataset
from .plan import RUN_SETTINGS_FILE, TRAINING_DIR, FinetunePlan, run_settings
from .worker import train_worker

# Ray Train's run directory under model.output/_training/; the same name on every rerun is
# what makes Ray Train find the checkpoints of the run it resumes.
RUN_NAME = "ray_train"
# Training checkpoints kept: the latest, and the one before in case the latest is unreadable.
_CHECKPOINTS_KEPT = 2
_TRAINS = {"hq": "the HQ parameters", "decoder": "every mask-decoder parameter"}  # training.trainable, in words


class FinetuneFailed(RuntimeError):
    """The Ray Train run failed after its retries; its training checkpoints are kept."""


def use_gpus(config: FinetuneConfig, resources: Resources) -> bool:
    """training.use_gpu, or by default whether the cluster has a GPU for every worker."""
    if config.training.use_gpu is not None:
        return config.training.use_gpu
    return resources.gpus >= config.training.workers


def check_fits(config: FinetuneConfig, resources: Resources, gpu: bool) -> List[str]:
    """Problems placing the workers and the decode tasks on the cluster (Ray would wait for
    ever): each worker reserves training.torch_threads CPUs (1 by default) and a GPU with
    `gpu`, and the decode tasks need a CPU besides and their memory."""
    t = config.training
    cpus = t.workers * (t.torch_threads or 1)
    problems = []
    if cpus + 1 > resources.cpus:
        problems.append(f"training.workers: {t.workers} workers x {t.torch_threads or 1} CPUs "
                        "(training.torch_threads), plus 1 for the decode tasks, is more than the cluster's "
                        f"{resources.describe()}; lower training.workers or training.torch_threads")
    if gpu and t.workers > resources.gpus:
        problems.append(f"training.use_gpu: {t.workers} workers need a GPU each; the cluster has "
                        f"{resources.describe()}; lower training.workers or set training.use_gpu: false")
    memory = decode_memory(DECODE_BATCH_ROWS, config.data.max_image_pixels)
    if memory > resources.memory:
        problems.append(f"data: a decode task reserves {memory / 2**20:.0f} MiB, more than the cluster's "
                        f"{resources.describe()}")
    return problems


def train_on_ray(plan: FinetunePlan, log: Callable[[str], None]) -> str:
    """Run the planned fine-tuning on Ray Train; returns the report rank 0 wrote."""
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    config, t = plan.config, plan.config.training
    output = Location(config.model.output, config.storage)
    training = output.join(TRAINING_DIR)
    stderr = connect(local_cpus=t.workers * (t.torch_threads or 1) + 1)  # the workers and the decode tasks
    try:
        resources = cluster_resources()
        gpu = use_gpus(config, resources)
        problems = check_fits(config, resources, gpu)
        if problems:
            raise ConfigError(problems)
        if plan.restart:
            training.remove()
        if not plan.resume:
            with training.join(RUN_SETTINGS_FILE).open_for_write() as f:
                f.write(json.dumps(run_settings(config), indent=1).encode("utf-8"))
        dataset = training_dataset(config, plan.model_config.vision_config.image_size)
        log(f"training: {t.workers} Ray Train workers on {'GPUs, DDP over NCCL' if gpu else 'CPUs, DDP over gloo'} "
            f"({resources.describe()}), {t.steps} steps of {t.workers} x {t.batch_size} images, training "
            f"{_TRAINS[t.trainable]}; a training checkpoint every {t.checkpoint_every} steps in {training.url}")
        if training.is_local:
            storage_path, filesystem = training.path, None
        else:
            filesystem, storage_path = training.arrow()
        trainer = TorchTrainer(
            train_worker, train_loop_config={"config": config},
            scaling_config=ScalingConfig(num_workers=t.workers, use_gpu=gpu,
                                         resources_per_worker={"CPU": t.torch_threads or 1, **({"GPU": 1} if gpu else {})}),
            # ray.train's RunConfig is Train V2's (RAY_TRAIN_V2_ENABLED, on by default in Ray
            # 2.60); type checkers see the V1 class it replaces at import, which lacks logging_config.
            run_config=RunConfig(name=RUN_NAME, storage_path=storage_path, storage_filesystem=filesystem,  # type: ignore[call-arg]
                                 failure_config=FailureConfig(max_failures=t.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=_CHECKPOINTS_KEPT),
                                 logging_config=LoggingConfig(log_level="WARNING")),
            datasets={"train": dataset})
        try:
            trainer.fit()
        except ray.train.TrainingFailedError as e:
            raise FinetuneFailed(f"the training failed: {e}\nIts training checkpoints in {training.url} are kept: run "
                                 "the same command again to resume from the latest one") from None
    finally:
        stderr.stop()
    with output.join("finetune_report.md").open("rb") as f:
        text = f.read().decode("utf-8")
    training.remove()
    return text
