"""The encode stage (CPU tasks): compress each row's run lengths into COCO RLE strings and
shape the output rows (id, passthrough and result columns, `pipeline.schema`)."""

from dataclasses import dataclass, field
from typing import List, Sequence

import pyarrow as pa

from ..masks import rle
from ..schema import IMAGE_SIZE, RESULT_FIELDS, RUN_LENGTHS
from .contract import Stage, StageUDF


@dataclass
class EncodedMasks:
    masks: List[rle.Rle] = field(default_factory=list)

    @classmethod
    def passthrough(cls) -> "EncodedMasks":
        return cls()


class EncodeUDF(StageUDF):
    """Hands on the input columns the output keeps (`keep_columns`) and the result columns."""

    result_type = EncodedMasks

    def __init__(self, keep_columns: Sequence[str]) -> None:
        self.keep_columns = list(keep_columns)

    @classmethod
    def stage(cls, keep_columns: Sequence[str], output_url: str, num_cpus: float = 1.0) -> Stage:
        """The encode tasks, each reserving `num_cpus` (`compute.encode_cpus`; Ray Data's Parquet
        write, fused with them, must reserve the same)."""
        return Stage(
            name="encode",
            udf=cls,
            constructor_kwargs=dict(keep_columns=list(keep_columns)),
            map_batches_kwargs=dict(batch_format="pyarrow", num_cpus=num_cpus),
            description=f"CPU tasks ({num_cpus:g} CPU each): COCO RLE, then Parquet to {output_url}",
            required_columns=(*keep_columns, IMAGE_SIZE, RUN_LENGTHS),
        )

    def process(self, batch: pa.Table) -> List[EncodedMasks]:
        sizes, counts = batch.column(IMAGE_SIZE).to_pylist(), batch.column(RUN_LENGTHS).to_pylist()
        return [EncodedMasks(rle.compress(row_counts, *size) if row_counts else []) for size, row_counts
                in zip(sizes, counts, strict=True)]

    def shape(self, batch: pa.Table) -> pa.Table:
        columns = {name: batch.column(name) for name in self.keep_columns}
        for result in RESULT_FIELDS:
            columns[result.name] = batch.column(result.name).cast(result.type)
        return pa.table(columns)
