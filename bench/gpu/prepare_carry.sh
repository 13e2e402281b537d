#!/usr/bin/env bash
# Build what a lent H200 needs (it has python3.12, CUDA 13 libraries and torch, but no onnxruntime-gpu,
# no zarr, and no network). Run here, from the repository root:
#
#   bash bench/gpu/prepare_carry.sh            # -> .gpu-carry/ort/ort-gpu-sm90.tar.xz (~61 MB)
#                                              #    .gpu-carry/wheels/*.whl (featuremaps + zarr & co, cp312)
#
# .gpu-carry/ is gitignored; each device call carries at most 64 MiB, hence two calls
# (see bench/gpu/run_h200.sh).
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
CARRY=.gpu-carry
mkdir -p "$CARRY/ort" "$CARRY/wheels"
[[ -f "$CARRY/ort/ort-gpu-sm90.tar.xz" ]] || python3 /work/shared/gpu/slim_ort_gpu.py "$CARRY/ort" "${ORT_VERSION:-1.31.1}"
rm -f "$CARRY"/wheels/featuremaps-*.whl
"$PY" -m pip wheel -q --no-deps -w "$CARRY/wheels" .
# zarr v3 and what it needs that the image lacks; cp312 manylinux x86-64 binaries or pure-Python wheels
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$CARRY/wheels" zarr numcodecs donfig google-crc32c crc32c typing_extensions pyyaml packaging
du -sh "$CARRY"/ort "$CARRY"/wheels
