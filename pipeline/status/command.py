"""`status OUTPUT`: whether a job (run in shards or not) is complete, from its output alone.

Exit codes: 0 every part complete, every input id written once; 1 not finished yet (a shard
incomplete or not started, or ids still missing from a part that is not complete); 2 the
output cannot be read (not a job's output, an input file gone); 3 the output is wrong:
duplicate ids, ids missing from a part that says it is complete, or files of another job
(a run without --shard beside shards, shards of another N)."""

import argparse

from ..output.arguments import add_storage_arguments, storage_of


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    cmd = sub.add_parser("status", help="whether a job's output (sharded or not) is complete: shards, rows, missing "
                                        "and duplicate ids, errors (exit 0 complete, 1 unfinished, 3 wrong)")
    cmd.add_argument("output", metavar="OUTPUT", help="the job's output.path (local or any fsspec URL)")
    add_storage_arguments(cmd)
    cmd.set_defaults(fn=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from ..output import JobOutput
    from .audit import audit_output

    status = audit_output(JobOutput(args.output, storage_of(args)))
    for line in status.render():
        print(line)
    return status.exit_code
