#!/usr/bin/env bash
# Wheels that let the GPU check run on a GPU machine that has PyTorch but no package index and none
# of the pipeline's other packages: the versions installed here, for that machine's Python (3.12,
# manylinux x86-64; PYTHON_VERSION overrides), into DIR (default .whl). Ray's wheel is rewritten
# without its Java jars and RLlib, which the job never loads, to roughly halve it (transfers to
# such machines are often capped). On that machine:
#   python3 -m pip install --no-index --no-deps --target /tmp/site DIR/*.whl && export PYTHONPATH=/tmp/site
#   bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.whl}
py=${PYTHON_VERSION:-3.12}
packages="ray pydantic pydantic-core annotated-types typing-inspection pycocotools jsonschema
          jsonschema-specifications referencing rpds-py"
pins=()
for p in $packages; do
  version=$(python3 -m pip show "$p" | awk '/^Version:/{print $2}')
  [ -n "$version" ] || { echo "error: $p is not installed here; run scripts/setup.sh first" >&2; exit 2; }
  pins+=("$p==$version")
done
mkdir -p "$dir"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dir" "${pins[@]}"
python3 - "$dir" <<'PY'
import glob, os, sys, zipfile

def unused(name: str) -> bool:
    return name.startswith(("ray/jars/", "ray/rllib/")) or name.endswith(".js.map")

for wheel in glob.glob(os.path.join(sys.argv[1], "ray-*.whl")):
    slim = wheel + ".tmp"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if unused(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):  # the record lists only what is installed
                kept = [line for line in data.decode().splitlines() if not unused(line.split(",")[0])]
                data = ("\n".join(kept) + "\n").encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    os.replace(slim, wheel)
PY
du -sh "$dir"
