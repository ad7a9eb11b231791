"""An input file that fails to read during the run (corrupt pages that the plan's sample of
pages did not meet): which one, from Ray Data's error; and, under `input.on_bad_file: skip`,
its record in the job's description, so that the run that resumes the output leaves it out
and counts the rows of it that were written before it failed."""

import dataclasses
import re
from typing import List, Optional

import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..checks.input_files import InputFile, InputScan
from ..output import JobOutput

# How Ray Data's Parquet reader words a read that failed, in the error it raises.
_FAILED_FRAGMENT = re.compile(r"Failed to read fragment (\S+?)(?: after \d+/\d+ attempts|[\s:,]|$)")


def unreadable_input(error: BaseException, scan: InputScan) -> Optional[InputFile]:
    """The input file whose read stopped the run, as Ray Data names it in `error` (its chain
    searched), or None when the run stopped for another reason."""
    texts: List[str] = []
    current: Optional[BaseException] = error
    while current is not None and len(texts) < 20:
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    named = {match.group(1) for text in texts for match in _FAILED_FRAGMENT.finditer(text)}
    return next((entry for entry in scan.files if entry.path in named or entry.url in named), None)


def skip_unreadable(output: JobOutput, scan: InputScan, entry: InputFile, reason: str, id_column: str) -> int:
    """Record `entry` in the output's description as left out, with how many of its rows the
    checkpoint holds as written (from its id column, when that can still be read); returns
    that number."""
    written = 0
    try:
        with scan.location.fs.open(entry.path, "rb") as f:
            ids = pq.read_table(f, columns=[id_column]).column(0).combine_chunks()
        for path in output.committed_checkpoint_entries():
            listed = output.checkpoint_entry_ids(path).cast(ids.type)
            written += pc.sum(pc.is_in(listed, value_set=ids)).as_py() or 0
    except Exception:  # noqa: BLE001 - its ids unreadable too: none of its rows can be told apart
        written = 0
    description = output.read_description()
    assert description is not None  # written before the first result
    skipped = {**description.skipped_inputs, entry.url: {"reason": reason, "rows_written": written}}
    output.write_description(dataclasses.replace(description, skipped_inputs=skipped))
    return written

