#!/usr/bin/env bash
# Development / CI set-up: the project with its test and benchmark extras, on CPU torch.
# `torch==2.13.0` resolves to the local CPU wheel where one is on pip's find-links (as on the
# project's CI machines); elsewhere pip picks the default torch 2.13.0 build of the platform.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet "torch==2.13.0" -e ".[test,bench]"
# The official SAM-HQ implementation, the parity tests' ground truth. --no-deps: it requires
# torchvision, which the tests replace with a PIL shim (tests/official.py).
python3 -m pip install --quiet --no-deps "segment-anything-hq==0.3"
