#!/usr/bin/env bash
# Times the README's set-up as a new user meets it: a fresh clone of this repository's
# committed HEAD, a new virtual environment, pip's cache off (a new machine has none), then
# `bash scripts/setup.sh` (what annotating needs) and, in a second new environment,
# `bash scripts/setup.sh --dev` (development: the test and bench extras). Writes the table
# to bench/results/setup_time.md (or $1).
#
#     bash bench/setup_time.sh [OUT.md]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/setup_time.md}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q . "$work/repo"
commit=$(git rev-parse --short HEAD)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
rows=()
for mode in runtime dev; do
    python3 -m venv "$work/venv-$mode"
    flag=$([[ $mode == dev ]] && echo --dev || true)
    start=$(date +%s)
    (cd "$work/repo" && env -u PYTHONPATH PATH="$work/venv-$mode/bin:$PATH" VIRTUAL_ENV="$work/venv-$mode" \
        PIP_NO_CACHE_DIR=1 bash scripts/setup.sh $flag >"$work/$mode.log" 2>&1) || {
        tail -20 "$work/$mode.log"; echo "setup_time: bash scripts/setup.sh $flag failed" >&2; exit 1; }
    seconds=$(( $(date +%s) - start ))
    size=$(du -sm "$work/venv-$mode" | cut -f1)
    backtracks=$(grep -c "is looking at multiple versions" "$work/$mode.log" || true)
    torch=$("$work/venv-$mode/bin/python" -c 'import torch; print(torch.__version__)')
    rows+=("| \`bash scripts/setup.sh${flag:+ $flag}\` | $seconds s | $size MB | $backtracks | $torch |")
    echo "$mode: ${seconds} s, ${size} MB, ${backtracks} backtracking lines"
    if [[ $mode == runtime ]]; then
        largest=$(du -sm "$work/venv-$mode"/lib/python3*/site-packages/* | sort -rn \
                  | awk 'NR <= 8 {n = split($2, p, "/"); printf "%s%s %s MB", (NR > 1 ? ", " : ""), p[n], $1}')
        pycache=$(find "$work/venv-$mode" -name '*.pyc' -printf '%s\n' | awk '{s += $1} END {printf "%.0f", s / 1048576}')
    fi
done
{
    echo "# Set-up time and size"
    echo
    echo "\`bash bench/setup_time.sh\` on $(date -u +%Y-%m-%d), commit $commit: a fresh clone, a new virtual"
    echo "environment per row, pip's cache off. Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),"
    echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); load average before: $load_before,"
    echo "after: $(cut -d' ' -f1-3 /proc/loadavg). Python $(python3 -c 'import platform; print(platform.python_version())'),"
    echo "pip $(python3 -m pip --version | cut -d' ' -f2). torch comes from the machine's local CPU wheel when pip finds one"
    echo "(scripts/setup.sh), every other package from the package index at constraints.txt's versions."
    echo
    echo "| command | time | virtual environment | pip backtracking lines | torch |"
    echo "|---|---:|---:|---:|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "The runtime environment's largest packages: $largest; compiled bytecode (.pyc) ${pycache} MB of it."
} >"$out"
echo "wrote $out"
