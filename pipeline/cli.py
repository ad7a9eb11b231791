"""The command line: `python -m pipeline <command> ...` (also installed as `samhq-annotate`).
Each command's arguments and what it does live beside it (`<package>/command.py`, the job's
in `job/commands.py`) and import their work when they run, so that `--help` stays quick; this
module collects them and turns what they raise into `error:` lines and exit codes."""

import argparse
import logging
import os
import sys
from typing import List, Optional

from .config import ConfigError
from .config import command as schema_command
from .demo import command as demo_command
from .evaluation import command as evaluate_command
from .exports import command as export_command
from .finetune import command as finetune_command
from .imports import command as import_command
from .job import commands as job_commands
from .review import command as review_command
from .status import command as status_command

COMMANDS = (job_commands, status_command, export_command, import_command, evaluate_command, review_command,
            finetune_command, schema_command, demo_command)
# Commands whose inputs' problems (ValueError, FileNotFoundError) are worded for the user: each
# is an `error:` line and exit code 2, not a traceback.
_INPUT_ERRORS_WORDED = ("export", "export-coco", "import", "evaluate", "review", "demo-correct", "status")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description="SAM-HQ box-to-mask annotation on Ray Data")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parsers(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    if not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        # The local cluster `run` starts gets token authentication, as Ray 2.60 gives local
        # clusters anyway; said explicitly, before Ray is imported (Ray reads it once, at
        # import), Ray does not warn about it.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        if args.command not in _INPUT_ERRORS_WORDED:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
