#!/usr/bin/env bash
# Writes constraints.txt: an exact version of every package the project and its test and
# bench extras install (torch and its CUDA packages apart: scripts/setup.sh installs torch in
# a step of its own), for every Python the project supports, so that pip never backtracks.
# Run it after changing a dependency in pyproject.toml, and commit the result:
#     bash scripts/lock.sh
# It resolves against PyPI with uv (installed into a throwaway directory if missing), with
# torch held at TORCH_VERSION (default: the one scripts/setup.sh installs), so that torch's
# own dependencies (sympy, networkx, ...) are pinned where that torch accepts them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-$(sed -n 's/^TORCH_VERSION=\${TORCH_VERSION:-\(.*\)}$/\1/p' scripts/setup.sh)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if command -v uv >/dev/null 2>&1; then
    uv=uv
else
    "$PYTHON" -m pip install --quiet --target "$work/uv" uv
    uv="$work/uv/bin/uv"
fi
echo "torch==$TORCH_VERSION" >"$work/torch.txt"
# torch's CUDA packages: installed by torch itself, at the versions its build requires.
skip=(--no-emit-package torch --no-emit-package triton)
for name in $("$uv" pip compile pyproject.toml --extra dev --universal --python-version 3.10 --no-header --no-annotate \
                  --constraint "$work/torch.txt" --quiet | sed -n 's/^\(nvidia-[a-z0-9-]*\|cuda-[a-z0-9-]*\)==.*/\1/p' | sort -u); do
    skip+=(--no-emit-package "$name")
done
"$uv" pip compile pyproject.toml --extra dev --universal --python-version 3.10 --no-annotate --quiet \
    --constraint "$work/torch.txt" "${skip[@]}" --custom-compile-command "bash scripts/lock.sh" -o constraints.txt
echo "wrote constraints.txt ($(grep -c '==' constraints.txt) pins; torch $TORCH_VERSION held, not pinned)"
