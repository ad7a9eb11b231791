"""Shared fixtures (official SAM-HQ models with perturbed random weights saved as real
checkpoints, and the same checkpoints loaded into samhq_core; a real S3 server; a local Ray
cluster), and the markers: each test is marked with its directory's tier, `core` (the model
library), `pipeline` (the job's parts) or `e2e` (the CLI and README as users run them), and by
cost: `cluster` when it starts a Ray cluster or an S3 server (a test using `ray_cluster` or
`s3_endpoint` is marked so here; tests that start them in processes of their own are marked
where they are written), `slow` for compiling, training, the official TinyViT at 1024 px and
the browser. `-m "not cluster and not slow"` is the quick loop."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # the helpers package
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from helpers.models import Pair, make_pair, official_tiny, official_vit  # noqa: E402

TIERS = ("core", "pipeline", "e2e")
CLUSTER_FIXTURES = {"ray_cluster", "s3_endpoint"}


def pytest_collection_modifyitems(items):
    for item in items:
        tier = os.path.basename(os.path.dirname(str(item.fspath)))
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def vit_pair(tmp_path_factory) -> Pair:
    return make_pair(official_vit(), tmp_path_factory, "vit_small")


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory) -> Pair:
    return make_pair(official_tiny(), tmp_path_factory, "vit_tiny")


@pytest.fixture(scope="session")
def sam_pair(tmp_path_factory) -> Pair:
    return make_pair(official_vit(hq=False, seed=1), tmp_path_factory, "sam_baseline")


@pytest.fixture(scope="module")
def ray_cluster(s3_endpoint):
    """A local Ray cluster of 2 CPUs for a module's tests, started after the S3 server so that
    its workers have the server's credentials."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 server (moto's, in a thread) on 127.0.0.1, with test credentials in the
    standard AWS environment variables (Ray workers started after this inherit them)."""
    from moto.server import ThreadedMotoServer

    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in credentials}
    os.environ.update(credentials)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
