"""A job in shards (`--shard I/N`): parts of the input chosen alike by every driver, written into
one output with files of their own; `status` over the whole job (incomplete after one shard,
complete after both, a duplicate found); and the misuses refused before work: bad `--shard`,
I >= N, another N or a run without --shard on the same output, a second driver of one shard."""

import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers.owned_processes import RAY_TOKEN_AUTH, session_members, start_ray_head
from helpers.paths import ROOT
from helpers.pipeline_data import png_bytes

from pipeline.cli import main
from pipeline.config import ConfigError, load_config
from pipeline.job.plan import plan_job
from pipeline.output import JobOutput, OutputLease, Shard, assign_files, lease_file

ROWS_PER_FILE = (3, 1, 2, 2, 1, 3)  # six input files of unequal size


def env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": ROOT, **RAY_TOKEN_AUTH, **extra}


def write_job(tmp_path) -> tuple:
    """Six Parquet files of integer ids, the demo model, and the job's config; (config path, ids)."""
    os.makedirs(tmp_path / "input")
    ids = []
    for f, rows in enumerate(ROWS_PER_FILE):
        table = pa.table({"id": pa.array([f * 10 + r for r in range(rows)], pa.int64()),
                          "image": [png_bytes(64, 80, f * 10 + r) for r in range(rows)],
                          "boxes": [[[4.0, 6.0, 60.0, 50.0]]] * rows})
        pq.write_table(table, str(tmp_path / "input" / f"part-{f}.parquet"))
        ids += table.column("id").to_pylist()
    config = {"input": {"path": str(tmp_path / "input"), "id_column": "id", "image_column": "image",
                        "boxes_column": "boxes"},
              "output": {"path": str(tmp_path / "output")},
              "model": {"checkpoint": os.path.join(ROOT, "models", "samhq-demo-synthetic")},
              "compute": {"num_actors": 1, "batch_size": 2, "decode_batch_size": 2, "torch_threads": 1}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path), ids


def cli(*args, address=None):
    extra = {"RAY_ADDRESS": address} if address else {}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env(**extra), timeout=600)


@pytest.mark.parametrize("spec, message", [("1", "expected I/N"), ("2/2", "I must be below N"),
                                           ("0/0", "N must be between 1 and 9999"), ("-1/2", "expected I/N")])
def test_bad_shard_specs_are_refused_by_the_command_line(spec, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["run", "--config", "job.yaml", f"--shard={spec}"])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_files_go_to_shards_balanced_by_rows_the_same_everywhere():
    files = [(f"s3://b/part-{i}.parquet", rows) for i, rows in enumerate([50, 10, 40, 30, 20, 20, 5])]
    assigned = assign_files(files, 3)
    assert assigned == assign_files(list(reversed(files)), 3)  # the listing's order does not matter
    rows = [sum(n for url, n in files if assigned[url] == s) for s in range(3)]
    assert sorted(rows) == [55, 60, 60]  # within one file of each other
    assert assign_files(files, 1) == {url: 0 for url, _ in files}


def test_a_shards_handle_touches_only_its_own_files(tmp_path):
    """overwrite of a shard removes its own files, never another shard's or a file the job did not write."""
    own, other = Shard(1, 2), Shard(0, 2)
    names = ["masks-shard-0001-of-0002-ab12-000000-0.parquet", "_samhq_job.shard-0001-of-0002.json",
             "_SUCCESS.shard-0001-of-0002.json", "masks-shard-0000-of-0002-cd34-000000-0.parquet",
             "_samhq_job.shard-0000-of-0002.json", "_samhq_lease.shard-0000-of-0002.json", "notes.txt"]
    for name in names:
        (tmp_path / name).write_text("{}")
    for shard in (own, other):
        (tmp_path / "_checkpoint" / shard.label).mkdir(parents=True)
    JobOutput(str(tmp_path), shard=own).remove_job_files()
    assert sorted(os.listdir(tmp_path)) == sorted([n for n in names if "0001-of" not in n] + ["_checkpoint"])
    assert os.listdir(tmp_path / "_checkpoint") == [other.label]
    assert lease_file(own) == "_samhq_lease.shard-0001-of-0002.json"


@pytest.fixture(scope="module")
def ray_address():
    """One Ray head for the module's CLI runs (each driver joins it through RAY_ADDRESS)."""
    with start_ray_head(2, env(), "ray_shards_") as (address, session_id):
        yield address
    assert not session_members(session_id)


@pytest.mark.cluster
def test_two_shards_make_one_complete_job(ray_address, tmp_path):
    config_path, ids = write_job(tmp_path)
    output = str(tmp_path / "output")
    first = cli("run", "--config", config_path, "--shard", "0/2", address=ray_address)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "shard:   0/2: 3 input files of the input's 6, 6 rows of 12" in first.stdout

    status = cli("status", output)
    assert status.returncode == 1, status.stdout + status.stderr
    assert "shard 0/2: complete: rows in 6, rows out 6" in status.stdout
    assert "shard 1/2: not started: rows in 6, 6 ids missing" in status.stdout
    assert "missing ids: 6" in status.stdout and "duplicate ids: none" in status.stdout
    export = cli("export-coco", "--input", output, "--output", str(tmp_path / "part.json"))
    assert export.returncode == 0 and "2 shards of which 1 are not complete (shard 1/2 not started)" in export.stderr

    # Misuse, refused before work: the plan reads the output as it is now.
    config = load_config(config_path)
    for shard, refusal in ((None, "a run without --shard would mix with it: run each shard with --shard I/2"),
                           (Shard(0, 3), "the shards of one job share N: run --shard I/2"),
                           (Shard(0, 2), "already holds files of shard 0/2")):
        with pytest.raises(ConfigError) as refused:
            plan_job(config, shard=shard)
        assert refusal in str(refused.value.problems), refused.value.problems
    resumed = load_config(config_path, ["output.mode=resume"])
    with OutputLease(JobOutput.of(resumed, Shard(0, 2)).location, "run", take_over=False,
                     file_name=lease_file(Shard(0, 2))):  # a driver of shard 0 running now
        with pytest.raises(ConfigError) as refused:
            plan_job(resumed, shard=Shard(0, 2))
        assert "another run is writing this output" in str(refused.value.problems)
        assert plan_job(config, shard=Shard(1, 2)).shard is not None  # the other shard may start meanwhile

    second = cli("run", "--config", config_path, "--shard", "1/2", address=ray_address)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    status = cli("status", output)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "shards: 2 complete, 0 incomplete, 0 not started" in status.stdout
    assert "status: complete: every input id once (exit 0)" in status.stdout
    results = [name for name in os.listdir(output) if name.startswith("masks-")]
    written = [i for name in results for i in pq.read_table(os.path.join(output, name), columns=["id"])["id"].to_pylist()]
    assert sorted(written) == sorted(ids)
    manifests = [JobOutput(output, shard=Shard(i, 2)).read_manifest() for i in range(2)]
    inputs = [manifest.shard["input_files"] for manifest in manifests]
    assert not set(inputs[0]) & set(inputs[1]) and len(inputs[0]) + len(inputs[1]) == len(ROWS_PER_FILE)
    assert sorted(results) == sorted(manifests[0].files + manifests[1].files)

    copied = sorted(name for name in results if name.startswith("masks-shard-0001"))[0]
    duplicate = copied.replace("-000000-", "-000077-").replace("-000001-", "-000077-")
    shutil.copy(os.path.join(output, copied), os.path.join(output, duplicate))
    status = cli("status", output)
    assert status.returncode == 3, status.stdout + status.stderr
    assert "duplicate ids: " in status.stdout and "duplicate ids: none" not in status.stdout
    assert duplicate in status.stdout  # named as a file its shard's manifest does not list
