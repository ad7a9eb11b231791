"""Work that holds every row of a job in memory (the closing check reads every id of the
output) runs in a Ray task on the worker node with the most memory, not on the driver: a
driver's node is often a small head node, and its memory should not grow with the job."""

from typing import Any, Callable, TypeVar, Union

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

Result = TypeVar("Result")


def placement() -> Union[str, NodeAffinitySchedulingStrategy]:
    """Where `run_off_driver` places its task: the alive node other than the driver's with the
    most memory (by Ray's `memory` resource), or Ray's default on a cluster of one node."""
    driver = ray.get_runtime_context().get_node_id()
    others = [node for node in ray.nodes() if node.get("Alive") and node["NodeID"] != driver]
    if not others:
        return "DEFAULT"
    largest = max(others, key=lambda node: node.get("Resources", {}).get("memory", 0.0))
    # soft: should that node go away, Ray runs the task (and its retries) elsewhere.
    return NodeAffinitySchedulingStrategy(largest["NodeID"], soft=True)


def run_off_driver(function: Callable[..., Result], *args: Any) -> Result:
    """`function(*args)` in a Ray task placed by `placement`, when this process is connected
    to a Ray cluster; here otherwise (nothing ran on a cluster, so nothing large is read).

    Arguments:
      function: a module-level function (Ray imports it on the worker) whose arguments and
        result can be pickled.
    Returns:
      function's result; an exception it raised is raised here (Ray's wrapper of it is also
      an instance of its type).
    """
    if not ray.is_initialized():
        return function(*args)
    # No CPU reserved: the task must start even when other jobs hold every CPU of the cluster.
    task = ray.remote(function).options(num_cpus=0, scheduling_strategy=placement())
    return ray.get(task.remote(*args))
