#!/usr/bin/env bash
# The Python packages gpu_check.sh needs beyond what a CUDA machine's image has (torch,
# numpy, pandas, pyyaml, matplotlib, tensorboard are assumed there), as wheels in one
# folder, for a GPU machine that reaches no package registry. Run where pip reaches one:
#
#   bash benchmarks/gpu_wheels.sh [DIR] [PYTHON_VERSION]      # default .whl, 3.12
#
# Ray's wheel (79 MB) carries Java support (ray/jars, 31 MB) that a Python search never
# loads; it is repacked without it, so that everything fits in 60 MB. gpu_check.sh
# installs DIR/*.whl with --no-index --no-deps when DIR exists.
set -euo pipefail
dir=${1:-.whl}
py=${2:-3.12}
mkdir -p "$dir"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$dir" \
  ray==2.60.0 optuna==5.1.0 tensorboardX==2.6.5 pooch alembic sqlalchemy colorlog mako \
  jsonschema jsonschema-specifications referencing rpds-py platformdirs
python3 - "$dir" <<'PY'
import pathlib, sys, zipfile
for whl in pathlib.Path(sys.argv[1]).glob("ray-*.whl"):
    slim = whl.with_suffix(".slim")
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if not item.filename.startswith("ray/jars/"):
                dst.writestr(item, src.read(item))
    slim.replace(whl)
PY
du -sh "$dir"
