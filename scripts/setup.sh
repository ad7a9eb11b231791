#!/usr/bin/env bash
# Set-up, into the Python environment that is active (make and activate a virtual environment
# first: README, "Set up and test"):
#
#   bash scripts/setup.sh                   torch, then the project: what annotating needs
#   bash scripts/setup.sh --dev             also the test and bench extras and the official
#                                           SAM-HQ package the parity tests compare against
#   bash scripts/setup.sh --dev --browser   also Debian's chromium (system-wide, as root),
#                                           which the review page's browser tests drive
#
# Every package but torch comes at the version constraints.txt pins (scripts/lock.sh writes
# it), so that pip never searches through releases.
#
# torch gets its own step because, asked for together with the other packages, pip may
# settle on PyPI's default build, which on Linux is the CUDA one (several GB), also on a
# machine without a GPU. Which build this step installs:
#   TORCH_INDEX_URL set    -> torch from that index, e.g. https://download.pytorch.org/whl/cu128
#                             for a CUDA 12.8 build, or .../whl/cpu for the CPU build
#   an NVIDIA GPU present  -> PyPI's default build (CUDA on Linux)
#   no GPU                 -> the CPU build: from the machine's own wheels when pip finds a
#                             local one (pip's find-links), else from PyTorch's CPU index
# TORCH_VERSION (default 2.13.0) picks the release. A torch already installed at that release is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
dev=0
browser=0
for arg in "$@"; do
    case "$arg" in
        --dev) dev=1 ;;
        --browser) browser=1 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown option $arg (known: --dev, --browser)" >&2; exit 2 ;;
    esac
done
step() { printf '\n==> %s\n' "$*"; }
QUIET=(--progress-bar off --disable-pip-version-check)

if ! "$PYTHON" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
    step "note: $PYTHON is not in a virtual environment; the packages go into $("$PYTHON" -c 'import sys; print(sys.prefix)')" \
         "(to keep them apart: python3 -m venv .venv && . .venv/bin/activate, then run this again)"
fi

installed_torch=$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
if [[ "${installed_torch%%+*}" == "$TORCH_VERSION" && -z "${TORCH_INDEX_URL:-}" ]]; then
    step "torch $installed_torch is already installed; keeping it"
elif [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    step "torch $TORCH_VERSION from TORCH_INDEX_URL=$TORCH_INDEX_URL"
    "$PYTHON" -m pip install "${QUIET[@]}" "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    step "torch $TORCH_VERSION, PyPI's default (CUDA) build: an NVIDIA GPU is present"
    "$PYTHON" -m pip install "${QUIET[@]}" "torch==$TORCH_VERSION"
elif "$PYTHON" -m pip download --no-deps --no-index --dest "$(mktemp -d)" "torch==$TORCH_VERSION" >/dev/null 2>&1; then
    # A local wheel's version carries its build label (2.13.0+cpu), which pip ranks above the
    # index's plain 2.13.0, so a plain request takes it.
    step "torch $TORCH_VERSION, CPU build: no GPU found; using this machine's local wheel"
    "$PYTHON" -m pip install "${QUIET[@]}" "torch==$TORCH_VERSION"
else
    step "torch $TORCH_VERSION, CPU build: no GPU found; from $TORCH_CPU_INDEX"
    "$PYTHON" -m pip install "${QUIET[@]}" "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX" --extra-index-url https://pypi.org/simple
fi

if [[ $dev == 1 ]]; then
    step "the project (editable) with its test and bench extras, at constraints.txt's versions; torch stays as installed"
    "$PYTHON" -m pip install "${QUIET[@]}" -c constraints.txt -e ".[dev]"
    # --no-deps: it requires torchvision, which has no build for the CPU torch used here; the
    # tests replace the two torchvision functions it uses with a PIL shim (tests/helpers/official.py).
    step "segment-anything-hq 0.3, the official SAM-HQ: the parity tests' ground truth"
    "$PYTHON" -m pip install "${QUIET[@]}" --no-deps "segment-anything-hq==0.3"
else
    step "the project (editable), at constraints.txt's versions; torch stays as installed"
    "$PYTHON" -m pip install "${QUIET[@]}" -c constraints.txt -e .
fi

if [[ $browser == 1 ]]; then
    if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
        step "chromium is already installed (the review page's browser tests); keeping it"
    elif [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        step "chromium from Debian/Ubuntu's packages, system-wide (--browser): the review page's browser tests run it headless"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
    else
        step "--browser: install chromium with \`sudo apt-get install chromium\` (or your system's package manager);" \
             "the review page's browser tests (tests/e2e/test_review.py) need it"
        exit 1
    fi
elif [[ $dev == 1 ]] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    step "note: no chromium: the review page's browser tests (tests/e2e/test_review.py) fail without it; --browser installs it (as root, system-wide)"
fi

step "done"
"$PYTHON" -c 'import torch, ray; print(f"torch {torch.__version__} (CUDA available: {torch.cuda.is_available()}), ray {ray.__version__}")'
