"""`ParquetInput`: the Parquet files of one input, read record batch by record batch over the
columns a reader needs (the exports, the review page, the evaluation, fine-tuning)."""

from typing import Any, Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from .location import Location


class ParquetInput:
    """A file, directory or glob of Parquet files (`location`); `what` names it in messages."""

    def __init__(self, location: Location, what: str, files: Optional[List[str]] = None) -> None:
        """`files`: the paths to read, when the caller has listed them (a job's output)."""
        self.location, self.what = location, what
        self.fs = location.fs
        try:
            self.files = files if files is not None else location.parquet_files()
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{what}: {e}") from None

    @property
    def url(self) -> str:
        return self.location.url

    def first_schema(self) -> pa.Schema:
        with self.fs.open(self.files[0], "rb") as f:
            return pq.ParquetFile(f).schema_arrow

    def batches(self, columns: List[str], batch_rows: int, optional: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
        """Record batches of `columns`, file by file, and of those of `optional` that a file has;
        a file missing one of `columns` raises ValueError naming it."""
        for path in self.files:
            url = self.location.url_of(path)
            with self.fs.open(path, "rb") as f:
                parquet = pq.ParquetFile(f)
                names = parquet.schema_arrow.names
                missing = [c for c in columns if c not in names]
                if missing:
                    raise ValueError(f"{self.what} {url}: missing column(s) {', '.join(map(repr, missing))} "
                                     f"(columns present: {', '.join(names)})")
                wanted = list(dict.fromkeys([*columns, *(c for c in optional if c in names)]))
                yield from parquet.iter_batches(batch_size=batch_rows, columns=wanted)

    def rows(self, id_column: str, columns: List[str], category_column: Optional[str],
             batch_rows: int, optional: Sequence[str] = ()) -> Iterator[Tuple[Any, ...]]:
        """Tuples (id, *columns, *optional, categories or None); an `optional` column a file
        lacks reads as None."""
        wanted = [id_column, *columns] + ([category_column] if category_column is not None else [])
        for batch in self.batches(wanted, batch_rows, optional):
            data = [batch.column(name).to_pylist() for name in [id_column, *columns]]
            data += [batch.column(name).to_pylist() if name in batch.schema.names else [None] * batch.num_rows
                     for name in optional]
            data.append(batch.column(category_column).to_pylist() if category_column is not None
                        else [None] * batch.num_rows)
            yield from zip(*data, strict=True)
