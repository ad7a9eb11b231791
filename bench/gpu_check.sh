#!/usr/bin/env bash
# The GPU check (bench/gpu_check/__main__.py: what it measures and how) with its defaults, ended by `timeout` after 8 minutes whatever happens; extra arguments go to the script.
cd "$(dirname "$0")/.." && exec timeout --kill-after=20 480 "${PYTHON:-python3}" -m bench.gpu_check "$@"
