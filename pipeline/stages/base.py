"""The stage contract, after Ray's own batch-inference stages
(`ray/llm/_internal/batch/stages/base.py`): a `Stage` declares its UDF, the UDF's constructor
kwargs, its `map_batches` kwargs, the columns it requires and the columns it adds; the job
builds the dataset by applying its stages in turn.

A `StageUDF` runs on pyarrow batches. Its `process` sees only the rows that have not failed in
an earlier stage and returns one typed result per row (a dataclass whose fields are the
columns the stage adds: the field's name, or the `column` its metadata names); `__call__`,
here, checks the required columns, passes failed rows through untouched (their added columns
get the result type's `passthrough()` values), checks that rows come out 1:1, and writes the
results as columns with the types of `pipeline.schema`. An exception from `process` fails only
the rows that raise it (found by processing the batch one row at a time): each gets a
"stage" error, so no input can fail the job from inside a stage. With a `CrashGuard`, a row
whose worker process died while processing it is run alone the next time, and gets a
"stage" error once that happened `compute.max_worker_crashes` times (`crash_guard`).
"""

import dataclasses
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import pyarrow as pa
import ray

from ..schema import COLUMN_TYPES, ERROR, exception_detail, row_error
from .crash_guard import CrashGuard


def column(name: str, **field_kwargs: Any) -> Any:
    """A result field that writes the column `name` (for names a field cannot have, such as
    the internal `__pixels`)."""
    return dataclasses.field(metadata={"column": name}, **field_kwargs)


def _column_of(field: "dataclasses.Field[Any]") -> str:
    return field.metadata.get("column", field.name)


class StageUDF:
    """Base of every stage's UDF. Subclasses set `result_type`, may name the columns they
    need and drop (`required_columns`, `dropped_columns`, from the constructor kwargs, so that
    the job can check the stages' columns before building anything) and implement `process`."""

    result_type: ClassVar[Type[Any]]  # a dataclass with a `passthrough()` classmethod

    def __init__(self, crash_guard: Optional[CrashGuard] = None, **constructor_kwargs: Any) -> None:
        self.constructor_kwargs, self.crash_guard = constructor_kwargs, crash_guard

    @classmethod
    def required_columns(cls, constructor_kwargs: Mapping[str, Any]) -> Tuple[str, ...]:
        return ()

    @classmethod
    def stage_name(cls) -> str:
        """The UDF's class name, for messages (Ray Data runs an actor's UDF as a subclass of
        its own, which this skips)."""
        return next(c.__name__ for c in cls.__mro__ if not c.__module__.startswith("ray."))

    @classmethod
    def dropped_columns(cls, constructor_kwargs: Mapping[str, Any]) -> Tuple[str, ...]:
        return ()

    @classmethod
    def added_columns(cls) -> Tuple[str, ...]:
        return tuple(_column_of(f) for f in dataclasses.fields(cls.result_type))

    def process(self, batch: pa.Table) -> Sequence[Any]:
        """One `result_type` per row of `batch` (the rows that have not failed), in order."""
        raise NotImplementedError

    def shape(self, batch: pa.Table) -> pa.Table:
        """The batch this stage hands on, from the input with the results added (default:
        without the dropped columns)."""
        return batch.drop_columns([c for c in self.dropped_columns(self.constructor_kwargs) if c in batch.column_names])

    def __call__(self, batch: pa.Table) -> pa.Table:
        name = self.stage_name()
        missing = [c for c in self.required_columns(self.constructor_kwargs) if c not in batch.column_names]
        if missing:
            raise ValueError(f"{name}: input batch lacks column(s) {missing} (has {batch.column_names})")
        errors: List[Optional[str]] = (batch.column(ERROR).to_pylist() if ERROR in batch.column_names
                                       else [None] * batch.num_rows)
        todo = [i for i, error in enumerate(errors) if error is None]
        rows = [self.result_type.passthrough()] * batch.num_rows
        for i, result in self._guarded_results(batch, todo).items():
            if isinstance(result, str):  # the stage raised on this row: that is the row's error
                errors[i] = result
            else:
                rows[i] = result
        columns = {}
        for field in dataclasses.fields(self.result_type):
            column_name = _column_of(field)
            values = [getattr(r, field.name) for r in rows]
            if column_name == ERROR:  # a row that failed before keeps its error
                values = [before if before is not None else now for before, now in zip(errors, values, strict=True)]
            columns[column_name] = pa.array(values, COLUMN_TYPES[column_name])
        if ERROR not in columns and any(e is not None for e in errors):
            columns[ERROR] = pa.array(errors, COLUMN_TYPES[ERROR])
        out = self.shape(_with_columns(batch, columns))
        if out.num_rows != batch.num_rows:
            raise RuntimeError(f"{name} returned {out.num_rows} rows for {batch.num_rows}")
        return out


    def _guarded_results(self, batch: pa.Table, todo: List[int]) -> Dict[int, Any]:
        """`_results`, with worker deaths counted (`crash_guard`): a batch whose worker died
        runs one row at a time, and a row in flight at the limit of deaths gets its error."""
        guard = self.crash_guard
        if guard is None or not todo:
            return self._results(batch, todo)
        stage, ids = self.stage_name(), batch.column(guard.id_column).to_pylist()
        batch_ids = [ids[i] for i in todo]
        if not guard.begin(stage, batch_ids):
            results = self._results(batch, todo)
            guard.end(stage, batch_ids)
            return results
        results = {}
        for i in todo:  # the batch's marker stays until every row is done: a death here isolates again
            deaths = 1 + guard.begin(stage, [ids[i]])  # the batch's first death, then this row's alone
            if deaths >= guard.max_crashes:
                results[i] = row_error("stage", f"{stage}: the worker process died {deaths} times while "
                                                f"processing this row (compute.max_worker_crashes: "
                                                f"{guard.max_crashes}); it is not run again")
            else:
                results.update(self._results(batch, [i]))
            guard.end(stage, [ids[i]])
        guard.end(stage, batch_ids)
        return results

    def _results(self, batch: pa.Table, todo: List[int]) -> Dict[int, Any]:
        """Row index → result, or → the row's error when `process` raised on it: the batch is
        processed whole, and one row at a time when that raised, so that only the rows that
        make the stage fail get an error."""
        if not todo:
            return {}
        try:
            return dict(zip(todo, self._checked(batch, todo), strict=True))
        except Exception:  # noqa: BLE001 - find the rows that fail, below
            pass
        found: Dict[int, Any] = {}
        for i in todo:
            try:
                found[i] = self._checked(batch, [i])[0]
            except Exception as e:  # noqa: BLE001 - a bad row never kills the job
                found[i] = row_error("stage", f"{self.stage_name()}: {exception_detail(e)}")
        return found

    def _checked(self, batch: pa.Table, rows: List[int]) -> List[Any]:
        results = list(self.process(batch.take(rows)))
        if len(results) != len(rows):
            raise RuntimeError(f"{self.stage_name()} returned {len(results)} results for {len(rows)} rows")
        return results


def _with_columns(batch: pa.Table, columns: Dict[str, pa.Array]) -> pa.Table:
    for name, values in columns.items():
        if name in batch.column_names:
            batch = batch.set_column(batch.column_names.index(name), name, values)
        else:
            batch = batch.append_column(name, values)
    return batch


class _TaskUDF:
    """A stage's UDF for Ray tasks (not actors): built from its constructor kwargs on the first
    batch of each task."""

    def __init__(self, udf: Type[StageUDF], constructor_kwargs: Mapping[str, Any]) -> None:
        self.udf, self.constructor_kwargs = udf, dict(constructor_kwargs)
        self._instance: Optional[StageUDF] = None

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self._instance is None:
            self._instance = self.udf(**self.constructor_kwargs)
        return self._instance(batch)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the job: Ray Data runs `udf`, built with `constructor_kwargs`, through
    `map_batches(**map_batches_kwargs)`, on an actor pool when those kwargs name one (`compute`)
    and as tasks otherwise. `description` says in one line what runs where."""

    name: str
    udf: Type[StageUDF]
    constructor_kwargs: Mapping[str, Any]
    map_batches_kwargs: Mapping[str, Any]
    description: str

    @property
    def required_columns(self) -> Tuple[str, ...]:
        return self.udf.required_columns(self.constructor_kwargs)

    @property
    def added_columns(self) -> Tuple[str, ...]:
        return self.udf.added_columns()

    @property
    def dropped_columns(self) -> Tuple[str, ...]:
        return self.udf.dropped_columns(self.constructor_kwargs)

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        if "compute" in self.map_batches_kwargs:
            return ds.map_batches(self.udf, fn_constructor_kwargs=dict(self.constructor_kwargs),
                                  **self.map_batches_kwargs)
        return ds.map_batches(_TaskUDF(self.udf, self.constructor_kwargs), **self.map_batches_kwargs)


def check_column_flow(stages: Sequence[Stage], input_columns: Sequence[str]) -> None:
    """Every stage's required columns come from the input or an earlier stage (checked when
    the job is built, before anything runs)."""
    available = set(input_columns)
    for stage in stages:
        missing = [c for c in stage.required_columns if c not in available]
        if missing:
            raise ValueError(f"stage {stage.name} requires {missing}, which neither the input nor an earlier stage "
                             f"provides (available: {sorted(available)})")
        available = (available | set(stage.added_columns)) - set(stage.dropped_columns)
