"""The stage contract, after Ray's own batch-inference stages
(`ray/llm/_internal/batch/stages/base.py`): a `Stage` declares its UDF, the UDF's constructor
kwargs, whether it runs as Ray tasks or on an actor pool, its `map_batches` kwargs, and the
columns it requires, adds and drops; the job checks the columns' flow through its stages
(`check_column_flow`) before it builds anything, then applies the stages in turn.

A stage is two pieces: a typed result (a dataclass whose fields are the columns the stage
adds: the field's name, or the `column` its metadata names; `passthrough()` gives a failed
row's values) and a `StageUDF`, whose `process` maps the rows that have not failed to one
result each and whose classmethod `stage` declares the `Stage`. Ray Data runs a
`StageRunner` around the UDF, which holds the rules every stage follows: the required columns
are checked; rows that failed in an earlier stage pass through untouched; rows come out 1:1;
results are written as columns of `pipeline.schema`'s types; an exception from `process` fails
only the rows that raise it (found by processing the batch one row at a time), each with a
"stage" error, so that no input can fail the job from inside a stage; with a `CrashGuard`, a
row whose worker process died while processing it is run alone the next time, and gets a
"stage" error once that happened `compute.max_worker_crashes` times (`crash_guard`); and,
with a row counter, every row a batch finishes is counted under the stage's name, for the
driver's progress lines.
"""

import dataclasses
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy

from ..schema import COLUMN_TYPES, ERROR, exception_detail, row_error
from .crash_guard import CrashGuard


def column(name: str, **field_kwargs: Any) -> Any:
    """A result field that writes the column `name` (for names a field cannot have, such as
    the internal `__pixels`)."""
    return dataclasses.field(metadata={"column": name}, **field_kwargs)


def _column_of(field: "dataclasses.Field[Any]") -> str:
    return field.metadata.get("column", field.name)


class StageUDF:
    """Base of every stage's UDF: `result_type` names its result dataclass, `process` maps
    rows to results, and `shape` may reshape the batch it hands on."""

    result_type: ClassVar[Type[Any]]  # a dataclass with a `passthrough()` classmethod

    def process(self, batch: pa.Table) -> Sequence[Any]:
        """One `result_type` per row of `batch` (the rows that have not failed), in order."""
        raise NotImplementedError

    def shape(self, batch: pa.Table) -> pa.Table:
        """The batch this stage hands on, from the input with the results added and the
        stage's dropped columns removed (default: as it is)."""
        return batch

    @classmethod
    def added_columns(cls) -> Tuple[str, ...]:
        return tuple(_column_of(f) for f in dataclasses.fields(cls.result_type))


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the job. Ray Data runs `udf`, built with `constructor_kwargs`, through
    `map_batches(**map_batches_kwargs)`: on the actor pool `actors` when it is set, as Ray tasks
    otherwise. `description` says in one line what runs where. The job sets `crash_guard` and
    `row_counter` (an actor with an `add(stage, rows)` method) for a run."""

    name: str
    udf: Type[StageUDF]
    constructor_kwargs: Mapping[str, Any]
    map_batches_kwargs: Mapping[str, Any]
    description: str
    required_columns: Tuple[str, ...] = ()
    dropped_columns: Tuple[str, ...] = ()
    actors: Optional[ActorPoolStrategy] = None
    crash_guard: Optional[CrashGuard] = None
    row_counter: Optional[Any] = None

    @property
    def added_columns(self) -> Tuple[str, ...]:
        return self.udf.added_columns()

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        # A runner class of the UDF's name, so that Ray's process titles and stats name the UDF.
        runner = type(self.udf.__name__, (StageRunner,), {"__module__": __name__})
        if self.actors is not None:
            return ds.map_batches(runner, fn_constructor_kwargs={"stage": self}, compute=self.actors,
                                  **self.map_batches_kwargs)
        return ds.map_batches(runner(self, build=False), **self.map_batches_kwargs)


class StageRunner:
    """What Ray Data calls with each batch of a stage: the UDF inside the contract's rules (the
    module docstring). On an actor the UDF is built at once (a model loads as the actor
    starts); for tasks, on each task's first batch, not where the runner was made."""

    def __init__(self, stage: Stage, build: bool = True) -> None:
        self.stage = stage
        self._udf: Optional[StageUDF] = stage.udf(**stage.constructor_kwargs) if build else None

    @property
    def udf(self) -> StageUDF:
        if self._udf is None:
            self._udf = self.stage.udf(**self.stage.constructor_kwargs)
        return self._udf

    @property
    def name(self) -> str:
        return self.stage.udf.__name__

    def __call__(self, batch: pa.Table) -> pa.Table:
        stage, udf = self.stage, self.udf
        missing = [c for c in stage.required_columns if c not in batch.column_names]
        if missing:
            raise ValueError(f"{self.name}: input batch lacks column(s) {missing} (has {batch.column_names})")
        errors: List[Optional[str]] = (batch.column(ERROR).to_pylist() if ERROR in batch.column_names
                                       else [None] * batch.num_rows)
        todo = [i for i, error in enumerate(errors) if error is None]
        rows = [udf.result_type.passthrough()] * batch.num_rows
        for i, result in self._guarded_results(batch, todo).items():
            if isinstance(result, str):  # the stage raised on this row: that is the row's error
                errors[i] = result
            else:
                rows[i] = result
        columns = {}
        for field in dataclasses.fields(udf.result_type):
            column_name = _column_of(field)
            values = [getattr(r, field.name) for r in rows]
            if column_name == ERROR:  # a row that failed before keeps its error
                values = [before if before is not None else now for before, now in zip(errors, values, strict=True)]
            columns[column_name] = pa.array(values, COLUMN_TYPES[column_name])
        if ERROR not in columns and any(e is not None for e in errors):
            columns[ERROR] = pa.array(errors, COLUMN_TYPES[ERROR])
        out = _with_columns(batch, columns)
        out = udf.shape(out.drop_columns([c for c in stage.dropped_columns if c in out.column_names]))
        if out.num_rows != batch.num_rows:
            raise RuntimeError(f"{self.name} returned {out.num_rows} rows for {batch.num_rows}")
        if stage.row_counter is not None:
            stage.row_counter.add.remote(stage.name, batch.num_rows)
        return out

    def _guarded_results(self, batch: pa.Table, todo: List[int]) -> Dict[int, Any]:
        """`_results`, with worker deaths counted (`crash_guard`): a batch whose worker died
        runs one row at a time, and a row in flight at the limit of deaths gets its error."""
        guard = self.stage.crash_guard
        if guard is None or not todo:
            return self._results(batch, todo)
        name, ids = self.name, batch.column(guard.id_column).to_pylist()
        batch_ids = [ids[i] for i in todo]
        if not guard.begin(name, batch_ids):
            results = self._results(batch, todo)
            guard.end(name, batch_ids)
            return results
        results = {}
        for i in todo:  # the batch's marker stays until every row is done: a death here isolates again
            deaths = 1 + guard.begin(name, [ids[i]])  # the batch's first death, then this row's alone
            if deaths >= guard.max_crashes:
                results[i] = row_error("stage", f"{name}: the worker process died {deaths} times while "
                                                f"processing this row (compute.max_worker_crashes: "
                                                f"{guard.max_crashes}); it is not run again")
            else:
                results.update(self._results(batch, [i]))
            guard.end(name, [ids[i]])
        guard.end(name, batch_ids)
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
                found[i] = row_error("stage", f"{self.name}: {exception_detail(e)}")
        return found

    def _checked(self, batch: pa.Table, rows: List[int]) -> List[Any]:
        results = list(self.udf.process(batch.take(rows)))
        if len(results) != len(rows):
            raise RuntimeError(f"{self.name} returned {len(results)} results for {len(rows)} rows")
        return results


def _with_columns(batch: pa.Table, columns: Dict[str, pa.Array]) -> pa.Table:
    for name, values in columns.items():
        if name in batch.column_names:
            batch = batch.set_column(batch.column_names.index(name), name, values)
        else:
            batch = batch.append_column(name, values)
    return batch


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
