"""Whether a job fits its cluster, and a resumed run wherever its first run fitted: Ray Data's
checkpoint filter actor (1 CPU) comes out of the model actors' reservation where the first run
left no CPU for it."""

import pytest

from pipeline.checks.resources import Resources, check_resources, num_cpus_per_actor
from pipeline.config import parse_config
from pipeline.job.dataset import write_cpus, writes_wait_for_decoding


def config(**compute):
    return parse_config({"input": {"path": "/data/in", "id_column": "id", "image_column": "image",
                                   "boxes_column": "boxes"},
                         "output": {"path": "/data/out"}, "model": {"checkpoint": "/models/m.pth"},
                         "compute": compute})


def cluster(cpus: float) -> Resources:
    return Resources(cpus, 0.0, 8 * 2**30, "a test cluster")


@pytest.mark.parametrize("cpus, compute, first, resumed", [
    (2, {}, 1, 0),  # the defaults on 2 CPUs: the first run fills the cluster
    (3, {"num_actors": 2}, 1, 0.5),
    (3, {}, 1, 1),  # room for the filter already
    (4, {"num_actors": 2}, 1, 1),
    (2.5, {"num_cpus_per_actor": 1.5}, 1.5, 0.5),
])
def test_a_resumed_run_fits_wherever_its_first_run_fitted(cpus, compute, first, resumed):
    job = config(**compute)
    assert num_cpus_per_actor(job, cluster(cpus)) == first
    assert num_cpus_per_actor(job, cluster(cpus), checkpoint_filter=True) == resumed
    assert check_resources(job, cluster(cpus), decode_memory=2**20) == []
    assert check_resources(job, cluster(cpus), decode_memory=2**20, checkpoint_filter=True) == []


def test_a_first_run_that_does_not_fit_is_refused_resumed_or_not():
    job = config(num_actors=2)
    for resumed in (False, True):
        (problem,) = check_resources(job, cluster(2), decode_memory=2**20, checkpoint_filter=resumed)
        assert problem.startswith("compute: 2 model actors x 1 CPUs = 2 CPUs"), problem
        assert ("plus 1 for Ray Data's checkpoint filter (resuming)" in problem) == resumed


@pytest.mark.parametrize("cpus, compute, resumed, waits", [
    # 1 CPU beside the model actor: the read and the decode reserve it first
    (2, {"encode_cpus": 1}, False, True),
    (4, {"encode_cpus": 1}, False, False),
    (4, {"encode_cpus": 1}, True, True),  # the checkpoint filter takes one of the 3
    (4, {"encode_cpus": 1, "num_actors": 2}, False, True),
    (5, {"encode_cpus": 1, "num_actors": 2}, False, False),
    (2, {"encode_cpus": 0}, False, False),
    (2, {}, False, False),  # unset: the writes reserve no CPU there
    (4, {}, True, False),
])
def test_whether_writes_wait_for_the_decoding(cpus, compute, resumed, waits):
    job = config(**compute)
    reserved = num_cpus_per_actor(job, cluster(cpus), checkpoint_filter=resumed)
    assert writes_wait_for_decoding(job, cluster(cpus), reserved, checkpoint_filter=resumed) == waits


@pytest.mark.parametrize("cpus, compute, resumed, per_write", [
    (2, {}, False, 0.0),
    (3, {}, False, 0.0),
    (4, {}, False, 1.0),  # 3 spare CPUs: a write gets one beside the read and the decode
    (4, {}, True, 0.0),  # the checkpoint filter takes one of them
    (5, {"num_actors": 2}, False, 1.0),
    (2, {"encode_cpus": 1}, False, 1.0),  # as set, even where the writes then wait
    (8, {"encode_cpus": 0.5}, False, 0.5),
])
def test_what_each_write_reserves(cpus, compute, resumed, per_write):
    job = config(**compute)
    reserved = num_cpus_per_actor(job, cluster(cpus), checkpoint_filter=resumed)
    assert write_cpus(job, cluster(cpus), reserved, checkpoint_filter=resumed) == per_write


def test_a_resumed_run_whose_checkpoint_filter_cannot_be_placed_is_refused():
    """Ray Data sizes the filter actor's reservation from the ids written; where that and a
    decode task exceed the cluster's memory, Ray would wait for ever."""
    job, small = config(), Resources(4, 0.0, 2 * 2**30, "a test cluster")
    assert check_resources(job, small, decode_memory=512 * 2**20, checkpoint_filter=True,
                           filter_memory=1024 * 2**20) == []
    (problem,) = check_resources(job, small, decode_memory=512 * 2**20, checkpoint_filter=True,
                                 filter_memory=1600 * 2**20)
    assert problem.startswith("output.mode: resume: Ray Data's checkpoint filter reserves 1600 MiB") and "shard" in problem
