"""How a resumed job reads back the ids it wrote: Ray Data's own restore, with the reader that
finishes at every checkpoint size."""

from typing import Any, Optional, Tuple

from ray.data import DataContext
from ray.data.checkpoint import IdColumnCheckpointManager


class JobCheckpointManager(IdColumnCheckpointManager):
    """Ray Data's restore (`IdColumnCheckpointManager.load_checkpoint`: clean up interrupted
    writes, read every checkpoint file, sort the ids in one task), with the checkpoint read by
    Ray Data's V1 Parquet reader. The default V2 reader packs the small checkpoint files (one per
    result file) into one read task that starts a thread per file: at 10,000 files (a 10M-row
    job) the task passed 6,000 threads and never finished (bench/results/checkpoint_cost.md).
    The V1 reader reads them in bounded parallel tasks. The job's input keeps the reader it was
    planned with: the switch lasts for the checkpoint's read alone."""

    def load_checkpoint(self, data_file_dir: Optional[str] = None,
                        data_file_filesystem: Optional[Any] = None) -> Tuple[Optional[Any], int]:
        """Arguments and returns: as `IdColumnCheckpointManager.load_checkpoint`."""
        context = DataContext.get_current()
        planned = context.use_datasource_v2
        context.use_datasource_v2 = False
        try:
            return super().load_checkpoint(data_file_dir, data_file_filesystem)
        finally:
            context.use_datasource_v2 = planned
