"""A resumed job restores its checkpoint with Ray Data's V1 Parquet reader (the V2 reader starts
a thread per checkpoint file and stalls at a 10M-row job's 10,000 files:
bench/results/checkpoint_cost.md), while the job's input keeps the reader it was planned with."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from ray.data import DataContext
from ray.data.checkpoint.checkpoint_filter import _numpy_size

from pipeline.ids import InputIdKeys
from pipeline.job.checkpoint_restore import JobCheckpointManager
from pipeline.job.dataset import job_checkpoint
from pipeline.job.resume import _checkpoint_rows
from pipeline.output import JobOutput, result_file_name

FILES, IDS_PER_FILE = 300, 20


class ReaderSeen(JobCheckpointManager):
    """The job's manager, noting which Parquet reader planned the checkpoint's read."""

    readers: list = []

    def _preprocess_data_pipeline(self, checkpoint_ds):
        self.readers.append(checkpoint_ds._logical_plan.dag.name)
        return super()._preprocess_data_pipeline(checkpoint_ds)


def test_the_checkpoint_is_read_by_the_v1_reader_and_every_id_restored(tmp_path, ray_cluster):
    checkpoint_dir, output_dir = tmp_path / "checkpoint", tmp_path / "output"
    checkpoint_dir.mkdir()
    output_dir.mkdir()
    ids = np.random.default_rng(0).permutation(FILES * IDS_PER_FILE).astype(np.int64)
    for index in range(FILES):  # one file per result file, as Ray Data commits them
        chunk = ids[index * IDS_PER_FILE:(index + 1) * IDS_PER_FILE]
        pq.write_table(pa.table({"image_id": chunk}), checkpoint_dir / result_file_name("0" * 32, index))
    config = job_checkpoint(JobOutput(str(output_dir), checkpoint_url=str(checkpoint_dir)), "image_id")
    assert config.checkpoint_manager_cls is JobCheckpointManager  # what the job's resumed runs plan with

    context = DataContext.get_current()
    assert context.use_datasource_v2  # Ray's default: the input's reader
    manager = ReaderSeen(checkpoint_config=config, data_context=context)
    ref, size = manager.load_checkpoint(str(output_dir), config.filesystem)

    assert manager.readers == ["ReadParquet"]  # V1; V2 plans "ReadFilesParquetV2"
    assert context.use_datasource_v2  # switched back for the input
    assert ray.data.read_parquet(str(checkpoint_dir))._logical_plan.dag.name == "ReadFilesParquetV2"
    restored = ray.get(ref)
    np.testing.assert_array_equal(restored, np.arange(FILES * IDS_PER_FILE))
    assert size == restored.nbytes


@pytest.mark.parametrize("kind", ["int", "string"])
def test_the_restored_ids_size_is_estimated_from_the_checkpoint_as_ray_counts_it(tmp_path, ray_cluster, kind):
    """The resource check sizes the checkpoint filter's reservation from the checkpoint before
    the run (`ResumeState.restored_bytes`): it must match what Ray's restore then reports, from
    the entries' footers and from their ids alike."""
    checkpoint_dir, output_dir = tmp_path / "checkpoint", tmp_path / "output"
    checkpoint_dir.mkdir()
    output_dir.mkdir()
    numbers = np.random.default_rng(1).permutation(40 * 250)
    ids = [f"img-{n:0{8 + n % 5}d}" for n in numbers] if kind == "string" else numbers.astype(np.int64)
    for index in range(40):
        pq.write_table(pa.table({"image_id": ids[index * 250:(index + 1) * 250]}),
                       checkpoint_dir / result_file_name("1" * 32, index))
    output = JobOutput(str(output_dir), checkpoint_url=str(checkpoint_dir))
    config = job_checkpoint(output, "image_id")
    ref, size = JobCheckpointManager(checkpoint_config=config, data_context=DataContext.get_current()).load_checkpoint(
        str(output_dir), config.filesystem)
    assert size == _numpy_size(ray.get(ref))
    for input_ids in (None, InputIdKeys.of([pa.array(ids)])):
        rows, estimated, problems = _checkpoint_rows(output, input_ids)
        assert problems == [] and rows == len(ids)
        assert abs(estimated - size) <= 0.02 * size, (estimated, size)
