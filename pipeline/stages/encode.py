"""The encode stage (CPU tasks): compress each row's run lengths into COCO RLE strings and
shape the output rows (id, passthrough and result columns, `pipeline.schema`)."""

from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import pyarrow as pa

from .. import rle
from ..schema import IMAGE_SIZE, RESULT_FIELDS, RUN_LENGTHS
from .base import Stage, StageUDF
from .crash_guard import CrashGuard


@dataclass
class EncodedMasks:
    masks: List[rle.Rle] = field(default_factory=list)

    @classmethod
    def passthrough(cls) -> "EncodedMasks":
        return cls()


class EncodeUDF(StageUDF):
    """Counts finished rows on `row_counter` (an actor with an `add` method) when given, for
    the driver's progress lines."""

    result_type = EncodedMasks

    def __init__(self, keep_columns: Sequence[str], row_counter: Optional[Any] = None,
                 crash_guard: Optional[CrashGuard] = None) -> None:
        super().__init__(crash_guard, keep_columns=keep_columns, row_counter=row_counter)
        self.keep_columns, self.row_counter = list(keep_columns), row_counter

    @classmethod
    def required_columns(cls, constructor_kwargs: Mapping[str, Any]) -> Tuple[str, ...]:
        return (*constructor_kwargs["keep_columns"], IMAGE_SIZE, RUN_LENGTHS)

    def process(self, batch: pa.Table) -> List[EncodedMasks]:
        sizes, counts = batch.column(IMAGE_SIZE).to_pylist(), batch.column(RUN_LENGTHS).to_pylist()
        return [EncodedMasks(rle.compress(row_counts, *size) if row_counts else []) for size, row_counts
                in zip(sizes, counts, strict=True)]

    def shape(self, batch: pa.Table) -> pa.Table:
        columns = {name: batch.column(name) for name in self.keep_columns}
        for result in RESULT_FIELDS:
            columns[result.name] = batch.column(result.name).cast(result.type)
        if self.row_counter is not None:
            self.row_counter.add.remote("encoded", batch.num_rows)
        return pa.table(columns)


def encode_stage(keep_columns: Sequence[str], output_path: str, row_counter: Optional[Any] = None,
                 crash_guard: Optional[CrashGuard] = None) -> Stage:
    return Stage(
        name="encode",
        udf=EncodeUDF,
        constructor_kwargs=dict(keep_columns=list(keep_columns), row_counter=row_counter, crash_guard=crash_guard),
        map_batches_kwargs=dict(batch_format="pyarrow", num_cpus=1),
        description=f"CPU tasks (1 CPU each): COCO RLE, then Parquet to {output_path}",
    )
