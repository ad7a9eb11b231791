"""`python -m pipeline` and `samhq-annotate`: the command line (`pipeline.cli`)."""

import atexit
import os
import sys
from typing import List, NoReturn, Optional

from .cli import main as run_command


def main(argv: Optional[List[str]] = None) -> NoReturn:
    """Runs the command and ends the process with its exit status.

    The exit handlers run (Ray's disconnect, logging's flush), then the process ends without
    the interpreter's teardown: an Arrow thread still alive then aborts a command whose work is
    done ("terminate called without an active exception", exit -6; apache/arrow#34314). An
    exception the command did not word still ends it the usual way, with its traceback."""
    code = run_command(argv)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
