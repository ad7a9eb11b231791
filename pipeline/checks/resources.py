"""Whether a job's actors and tasks fit the cluster it runs on; any misfit would make Ray wait
for ever, so it is refused before work starts."""

import os
from dataclasses import dataclass
from typing import List

from ..config import JobConfig
from ..text import plural


@dataclass(frozen=True)
class Resources:
    cpus: float
    gpus: float
    memory: float  # bytes Ray may reserve for tasks and actors
    where: str  # what the numbers describe, for messages

    def describe(self) -> str:
        return f"{self.cpus:g} CPUs, {self.gpus:g} GPUs, {self.memory / 2**30:.1f} GiB of task memory ({self.where})"


def check_resources(config: JobConfig, resources: Resources, decode_memory: float,
                    checkpoint_filter: bool = False, filter_memory: float = 0.0) -> List[str]:
    """Problems placing the job's actors and tasks on these resources: actors must leave at
    least one CPU for the read, decode and write tasks, GPU actors need the GPUs, and a decode
    task's memory reservation (`decode_memory`) must fit. A resumed run (`checkpoint_filter`)
    also places Ray Data's checkpoint filter actor (1 CPU, `filter_memory` reserved), beside
    at least one decode task."""
    compute = config.compute
    problems = []
    cpus_per_actor = num_cpus_per_actor(config, resources, checkpoint_filter)
    actor_cpus = compute.num_actors * cpus_per_actor
    filter_cpus = 1 if checkpoint_filter else 0
    if actor_cpus + filter_cpus + 1 > resources.cpus:
        resumed = ", plus 1 for Ray Data's checkpoint filter (resuming)" if filter_cpus else ""
        problems.append(
            f"compute: {compute.num_actors} model actors x {cpus_per_actor:g} CPUs = {actor_cpus:g} CPUs"
            f"{resumed}, plus 1 for the read, decode and write tasks, is more than the cluster's "
            f"{resources.describe()}; lower compute.num_actors or compute.num_cpus_per_actor (on CPU, "
            "compute.torch_threads sets an actor's threads independently)")
    gpus = num_gpus_per_actor(config, resources)
    if gpus * compute.num_actors > resources.gpus:
        problems.append(f"compute: {compute.num_actors} model actors x {gpus:g} GPUs need {gpus * compute.num_actors:g} "
                        f"GPUs; the cluster has {resources.describe()}; lower compute.num_actors or "
                        "compute.num_gpus_per_actor (fractions share a GPU)")
    if filter_memory and decode_memory + filter_memory > resources.memory:
        problems.append(f"output.mode: resume: Ray Data's checkpoint filter reserves {filter_memory / 2**20:.0f} MiB for "
                        f"the ids written so far, which with a decode task's {decode_memory / 2**20:.0f} MiB is more "
                        f"than the cluster's {resources.describe()}; resume on a cluster with more memory, or run the "
                        "job in shards (run --shard I/N), each with a checkpoint of its own")
    elif decode_memory > resources.memory:
        problems.append(f"compute.decode_batch_size: a decode task of {compute.decode_batch_size} images reserves "
                        f"{decode_memory / 2**20:.0f} MiB, more than the cluster's {resources.describe()}; lower it")
    return problems


def num_cpus_per_actor(config: JobConfig, resources: Resources, checkpoint_filter: bool = False) -> float:
    """The CPUs each model actor reserves: compute.num_cpus_per_actor, except in a resumed run
    (`checkpoint_filter`) on a cluster that the first run filled, where Ray Data's checkpoint
    filter actor (1 CPU, a sorted-id lookup per block) needs one more: there the model actors
    reserve one CPU fewer between them (none at the least), so that a resumed run fits wherever
    its first run fitted. Only Ray's reservation changes; an actor's threads
    (compute.torch_threads) stay as they were."""
    compute = config.compute
    configured = compute.num_cpus_per_actor
    actor_cpus = compute.num_actors * configured
    if checkpoint_filter and actor_cpus + 1 <= resources.cpus < actor_cpus + 2:
        return max(0.0, (resources.cpus - 2) / compute.num_actors)
    return configured


def num_gpus_per_actor(config: JobConfig, resources: Resources) -> float:
    """As configured, else 1 when the cluster has GPUs, else 0."""
    if config.compute.num_gpus_per_actor is not None:
        return config.compute.num_gpus_per_actor
    return 1.0 if resources.gpus > 0 else 0.0


def local_resources() -> Resources:
    """What `ray.init()` would start a local cluster with on this machine (its own detection
    of CPUs, memory and NVIDIA GPUs)."""
    import ray._private.utils as ray_utils
    from ray._private.accelerators import NvidiaGPUAcceleratorManager

    try:
        cpus = float(ray_utils.get_num_cpus())
    except Exception:  # noqa: BLE001 - a private helper; the machine's count is the same on most hosts
        cpus = float(os.cpu_count() or 1)
    try:
        memory = float(ray_utils.get_system_memory()) * 0.7  # Ray leaves ~30% to its object store
    except Exception:  # noqa: BLE001
        memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) * 0.7
    try:
        gpus = float(NvidiaGPUAcceleratorManager.get_current_node_num_accelerators())
    except Exception:  # noqa: BLE001 - no NVIDIA driver library
        gpus = 0.0
    return Resources(cpus, gpus, memory, "a local Ray cluster on this machine")


def cluster_resources() -> Resources:
    """The connected Ray cluster's total resources."""
    import ray

    total = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return Resources(float(total.get("CPU", 0)), float(total.get("GPU", 0)), float(total.get("memory", 0)),
                     plural(nodes, "node"))
