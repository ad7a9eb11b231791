"""Input files with corrupt pages behind an intact footer: caught before work where the plan's
sample of pages meets them (the id column, the first row group), else named when the run
meets them; under `input.on_bad_file: skip` left out, listed and counted, and a resumed run
completes the output without them (every other row once, the closing check passed)."""

import os
import threading
import time

import pyarrow.parquet as pq
import pytest
from helpers.pipeline_data import sample_rows, write_rows

from pipeline.config import ConfigError, parse_config
from pipeline.job.plan import plan_job
from pipeline.job.run import JobFailed, run_job

ROWS_PER_FILE = 4


def corrupt(path: str, column: str, row_group: int) -> None:
    """Overwrite the first page header of a column chunk, leaving the footer intact."""
    metadata = pq.ParquetFile(path).metadata
    group = metadata.row_group(row_group)
    chunk = next(group.column(c) for c in range(group.num_columns) if group.column(c).path_in_schema == column)
    data = bytearray(open(path, "rb").read())
    data[chunk.data_page_offset:chunk.data_page_offset + 32] = b"\xff" * 32
    with open(path, "wb") as f:
        f.write(bytes(data))


def make_input(tmp_path) -> dict:
    """Three files of 4 rows in row groups of 2; returns their paths by name."""
    rows = sample_rows(num_good=3 * ROWS_PER_FILE)[:3 * ROWS_PER_FILE]
    os.makedirs(tmp_path / "input")
    paths = {}
    for n in range(3):
        paths[n] = str(tmp_path / "input" / f"part-{n}.parquet")
        write_rows(paths[n], rows[n * ROWS_PER_FILE:(n + 1) * ROWS_PER_FILE], row_group_size=2)
    return paths


def job_config(tmp_path, checkpoint, on_bad_file: str = "fail", **output):
    return parse_config({
        "input": {"path": str(tmp_path / "input"), "id_column": "id", "image_column": "image", "boxes_column": "boxes",
                  "on_bad_file": on_bad_file},
        "output": {"path": str(tmp_path / "output"), **output},
        "model": {"checkpoint": checkpoint},
        "compute": {"num_actors": 1, "num_cpus_per_actor": 0, "batch_size": 2, "decode_batch_size": 2,
                    "torch_threads": 1},
    })


def test_corrupt_id_pages_are_named_before_work(tmp_path, vit_pair):
    paths = make_input(tmp_path)
    corrupt(paths[1], "id", 1)
    with pytest.raises(ConfigError) as refused:
        plan_job(job_config(tmp_path, vit_pair.pth))
    (problem,) = refused.value.problems
    assert problem.startswith(f"input.path: {paths[1]} is not a readable Parquet file (its pages)")
    plan = plan_job(job_config(tmp_path, vit_pair.pth, on_bad_file="skip"))
    assert [s.url for s in plan.scan.skipped] == [paths[1]] and plan.rows_in == 2 * ROWS_PER_FILE


def test_corrupt_image_pages_stop_the_run_naming_the_file(ray_cluster, tmp_path, vit_pair):
    paths = make_input(tmp_path)
    corrupt(paths[2], "image", 1)  # past the plan's sample: its first row group is intact
    config = job_config(tmp_path, vit_pair.pth)
    plan_job(config)  # passes: the corruption lies where no check before work reads
    with pytest.raises(JobFailed, match=f"input file {paths[2]} cannot be read during the run .*replace the file"):
        run_job(config)


def test_under_skip_a_file_that_fails_mid_run_is_left_out_and_the_resume_completes(ray_cluster, tmp_path, vit_pair):
    paths = make_input(tmp_path)
    corrupt(paths[2], "image", 1)
    config = job_config(tmp_path, vit_pair.pth, on_bad_file="skip")
    with pytest.raises(JobFailed, match=f"input file {paths[2]} cannot be read during the run .*left out from now "
                                        "on .*output.mode: resume"):
        run_job(config)
    summary = run_job(job_config(tmp_path, vit_pair.pth, on_bad_file="skip", mode="resume"))
    assert summary.closing.passed, summary.render()
    assert [s.split(":")[0] for s in summary.skipped_files] == [paths[2]]
    output = tmp_path / "output"
    ids = [i for name in os.listdir(output) if name.startswith("masks-")
           for i in pq.read_table(output / name, columns=["id"]).column(0).to_pylist()]
    good = {row_id for n in (0, 1) for row_id in pq.read_table(paths[n], columns=["id"]).column(0).to_pylist()}
    assert len(ids) == len(set(ids)) and good <= set(ids)  # every row of the good files, each once
    assert len(set(ids) - good) == summary.rows_in - 2 * ROWS_PER_FILE  # and the bad file's rows written before


def _footer_readers() -> int:
    """Live processes of Ray Data's footer-reading actors (titled after their class)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    count += f.read().startswith(b"ray::FooterReader")
            except OSError:
                continue
    return count


def test_many_small_input_files_do_not_crowd_a_small_cluster(ray_cluster, tmp_path, vit_pair):
    """120 one-row files on 2 CPUs: Ray Data's footer readers stay at one process (its
    default pool would start 30)."""
    rows = sample_rows(num_good=1)[:1]
    os.makedirs(tmp_path / "input")
    for n in range(120):
        write_rows(str(tmp_path / "input" / f"part-{n:03}.parquet"), [dict(rows[0], id=f"r{n:03}", boxes=[])])
    peak, done = [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _footer_readers())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary = run_job(job_config(tmp_path, vit_pair.pth))
    finally:
        done.set()
        watcher.join()
    assert summary.closing.passed and summary.rows_out == 120
    assert 1 <= peak[0] <= 1, peak[0]
