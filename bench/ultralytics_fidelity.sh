#!/usr/bin/env bash
# The YOLO-seg export measured against Ultralytics itself (bench/ultralytics_fidelity.py):
# the datasets are written with this project's environment (the python on PATH), then read
# and drawn by Ultralytics in a virtual environment of its own, made on first use ($VENV,
# default .venv-ultralytics; torch 2.14.1 with torchvision 0.29.1 from PyPI, about 5.5 GB,
# runs on a CPU: Ultralytics needs a torchvision, which does not import beside this project's
# torch). Writes bench/results/ultralytics_fidelity.md.
#
#     bash bench/ultralytics_fidelity.sh [JOB_OUTPUT]    (default: demo_output/output, if there)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv-ultralytics}
results=${1:-demo_output/output}
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1 ultralytics==8.4.190
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -d "$results" ]]; then
    python -m bench.ultralytics_fidelity write "$work" --results "$results"
else
    python -m bench.ultralytics_fidelity write "$work"
fi
"$venv/bin/python" -m bench.ultralytics_fidelity measure "$work" --out bench/results/ultralytics_fidelity.md
