#!/usr/bin/env bash
# The whole featuremaps suite (parity on every provider, then the benchmark) on one GPU machine.
#
#   bash bench/gpu/run_h200.sh [OUT_DIR]          # from the repository root; OUT_DIR default bench/results
#   DRY_RUN=1 bash bench/gpu/run_h200.sh /tmp/x   # tiny settings (64x64, 1 repeat): tests this script, CPU ok
#
# Writes OUT_DIR/h200-parity.json, OUT_DIR/h200.{json,md,png}, OUT_DIR/h200-env.txt and OUT_DIR/h200.log.
# Needs python3 with CUDA torch, torchvision, onnx, onnxscript, opencv-python-headless, matplotlib,
# scikit-image (all in the H200 image) and, for ort-cuda / ort-tensorrt, an onnxruntime-gpu wheel
# (cp312, manylinux x86_64, built for the machine's CUDA major version) in .whl/ or at $ORT_GPU_WHEEL;
# a tensorrt wheel in .whl/ adds TensorRT. Without them the image's CPU-only onnxruntime runs and the
# GPU providers are reported as skipped with the reason; the torch backends still run on the GPU.
# Whole run: ~5-8 min on an H200 (exports ~1 min, TensorRT engine build ~1-2 min, timing ~3 min).
set -uo pipefail

OUT_DIR=${1:-bench/results}
PY=${PYTHON:-python3}
SITE=${FM_SITE:-/tmp/fm-site}
DRY=${DRY_RUN:-0}
mkdir -p "$OUT_DIR" "$SITE"
LOG="$OUT_DIR/h200.log"
: >"$LOG"
say() { echo "[run_h200] $*" | tee -a "$LOG" >&2; }

# 1. install what was carried (onnxruntime-gpu, tensorrt) and featuremaps itself into $SITE, offline
shopt -s nullglob
wheels=(.whl/*.whl)
[[ -n "${ORT_GPU_WHEEL:-}" ]] && wheels+=("$ORT_GPU_WHEEL")
if ((${#wheels[@]})); then
    say "installing ${#wheels[@]} carried wheel(s): ${wheels[*]}"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${wheels[@]}" 2>&1 | tee -a "$LOG" || { say "wheel install failed"; exit 1; }
fi
say "installing featuremaps from $(pwd) into $SITE (no deps, offline)"
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
    --target "$SITE" . 2>&1 | tee -a "$LOG" || { say "featuremaps install failed"; exit 1; }
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# 2. CUDA/cuDNN/TensorRT libraries that pip packages ship (nvidia-*, tensorrt_libs) on the loader path,
#    so onnxruntime-gpu finds them the way torch does
libdirs=$("$PY" - <<'PYEOF'
import glob, os, site, sys
roots = [p for p in sys.path if p and os.path.isdir(p)] + site.getsitepackages()
dirs = set()
for r in roots:
    dirs.update(glob.glob(os.path.join(r, "nvidia", "*", "lib")))
    dirs.update(glob.glob(os.path.join(r, "nvidia", "cu*", "lib")))
    dirs.update(glob.glob(os.path.join(r, "tensorrt_libs")))
print(":".join(sorted(dirs)))
PYEOF
)
[[ -n "$libdirs" ]] && export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# 3. what this machine is
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
    "$PY" - <<'PYEOF'
import onnxruntime as ort, torch
from featuremaps.engine.session import provider_unavailable_reason
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("onnxruntime", ort.__version__, ort.__file__, ort.get_available_providers())
for p in ("cuda", "tensorrt"):
    print(p, provider_unavailable_reason(p) or "available")
PYEOF
} 2>&1 | tee "$OUT_DIR/h200-env.txt" | tee -a "$LOG"

DEVICE=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
THREADS=$(nproc)
if [[ "$DRY" == "1" ]]; then
    say "DRY_RUN: tiny settings (64x64, 1 repeat), torch on $DEVICE"
    PARITY=(--input-size 64 --max-images 2)
    BENCH=(--input-size 64 --batch-sizes 1,2 --repeats 1 --warmup 0 --scaling-batch 2 --scaling-repeats 1
           --compile-budget 60 --gemm-size 256)
    LIMIT=600
else
    PARITY=(--max-images 8)
    BENCH=(--batch-sizes 1,8,32,64 --repeats 15 --warmup 2 --scaling-batch 32 --scaling-repeats 10
           --compile-budget 240 --gemm-size 8192)
    LIMIT=${STEP_TIMEOUT:-480}
fi

# 4. parity on every provider (exit 1 on any failing tap; the run goes on to the benchmark)
say "parity ..."
timeout "$LIMIT" "$PY" -m featuremaps parity --model vgg16 "${PARITY[@]}" --providers cpu,cuda,tensorrt \
    --pipeline --json "$OUT_DIR/h200-parity.json" 2>&1 | tee -a "$LOG"
parity_rc=${PIPESTATUS[0]}

# 5. the benchmark: torch backends on the GPU, ORT on CPU / CUDA (IO binding) / TensorRT (engine cache)
say "bench ..."
timeout "$LIMIT" "$PY" -m featuremaps bench --model vgg16 "${BENCH[@]}" --torch-device "$DEVICE" \
    --threads "$THREADS" -o "$OUT_DIR/h200.json" 2>&1 | tee -a "$LOG"
bench_rc=${PIPESTATUS[0]}

say "done: parity rc=$parity_rc, bench rc=$bench_rc; results in $OUT_DIR"
exit $(( parity_rc != 0 || bench_rc != 0 ))
