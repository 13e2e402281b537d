#!/usr/bin/env bash
# GPU round on a lent H200: parity in both math modes, bench (maps on device / to pinned host), and
# extract_bench end to end; JSON under OUT_DIR. Prepare the carry here first: bash bench/gpu/prepare_carry.sh
#
# Device calls (the `run` tool; each carries <= 64 MiB, and /tmp survives only while the machine is warm):
#   call 1 (carry .gpu-carry/ort):     bash bench/gpu/run_h200.sh --stage-ort
#   call 2 (carry .gpu-carry/wheels):  bash bench/gpu/run_h200.sh "$OUT"       # writes JSON under $OUT
#   DRY_RUN=1 bash bench/gpu/run_h200.sh /tmp/x   # tiny settings; also runs on a CPU machine (cuda skipped)
#
# Writes OUT_DIR/h200-env.txt, h200-doctor.json, h200-pinned.json, h200-parity-tf32.json, h200-parity-fp32.json, h200-bench.{json,md,png},
# extract_bench.{json,md} and h200.log. Budget: the default settings take ~8 min of device time
# (parity 2 x ~1 min, bench ~3 min, extract_bench ~3 min); STEP_TIMEOUT caps each step (default 240 s).
set -uo pipefail

SITE=${FM_SITE:-/tmp/fm-site}
PY=${PYTHON:-python3}
mkdir -p "$SITE"

if [[ "${1:-}" == "--stage-ort" ]]; then      # call 1: unpack the slimmed onnxruntime-gpu into /tmp
    tar -xJf .gpu-carry/ort/ort-gpu-sm90.tar.xz -C "$SITE" && echo "onnxruntime-gpu staged in $SITE"
    exit $?
fi

OUT_DIR=${1:-bench/results/h200}
DRY=${DRY_RUN:-0}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG="$OUT_DIR/h200.log"
: >"$LOG"
say() { echo "[run_h200] $*" | tee -a "$LOG" >&2; }

# 1. featuremaps + zarr & co from the carried wheels, offline, into $SITE (next to onnxruntime-gpu)
shopt -s nullglob
wheels=(.gpu-carry/wheels/*.whl)
if ((${#wheels[@]})); then
    say "installing ${#wheels[@]} carried wheel(s) into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${wheels[@]}" 2>&1 | tee -a "$LOG" || { say "wheel install failed"; exit 1; }
else
    say "no .gpu-carry/wheels: using the featuremaps importable here"
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# 2. what this machine is, and whether everything imports (stop early, with the reason, if not)
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
    "$PY" - <<'PYEOF'
import importlib, sys
missing = [m for m in ("onnxruntime", "zarr", "numcodecs", "featuremaps", "torch", "torchvision", "onnx",
                       "onnxscript") if importlib.util.find_spec(m) is None]
print("python", sys.version.split()[0], "missing:", missing or "none")
import onnxruntime as ort
from featuremaps.engine.session import provider_unavailable_reason
print("onnxruntime", ort.__version__, ort.__file__, ort.get_available_providers())
print("cuda:", provider_unavailable_reason("cuda") or "available")
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
except ImportError:
    print("no torch")
PYEOF
} 2>&1 | tee "$OUT_DIR/h200-env.txt" | tee -a "$LOG"
# what featuremaps itself sees: driver, devices, CUDA/cuDNN/TensorRT libraries, what auto picks
"$PY" -m featuremaps doctor --json >"$OUT_DIR/h200-doctor.json" 2>>"$LOG" && "$PY" -m featuremaps doctor 2>&1 | tee -a "$LOG"

DEVICE=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo cpu)
EP=$("$PY" -c "from featuremaps.engine.session import provider_unavailable_reason as r; print('cpu' if r('cuda') else 'cuda')")
LIMIT=${STEP_TIMEOUT:-240}
if [[ "$DRY" == "1" ]]; then
    say "DRY_RUN: tiny settings"
    PARITY=(--input-size 64 --max-images 2)
    BENCH=(--input-size 64 --batch-sizes 2 --repeats 1 --warmup 0 --gemm-size 256)
    EXTRACT=(--images 8 --batch-size 4 --repeats 1 --input-size 64 --disk-mb 16 --workers 2)
else
    PARITY=(--max-images 8)
    BENCH=(--batch-sizes 64,256 --repeats 10 --warmup 2 --gemm-size 8192)
    EXTRACT=(--images 1024 --batch-size 64 --repeats 2 --workers 14 --writers 8 --disk-mb 4096
             --configs write-bound,full-uncompressed,full-fp16-graph,reduced)
fi

# 2b. outputs into pinned buffers: IO binding into a cudaHostRegister'ed ring equals session.run
say "pinned outputs check ..."
timeout "$LIMIT" "$PY" - "$OUT_DIR/h200-pinned.json" "$EP" <<'PYEOF' 2>&1 | tee -a "$LOG"
import json, sys, tempfile
import numpy as np
from featuremaps.engine.extractor import Extractor
from featuremaps.export.onnx_export import export_model
out, ep = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    res = export_model("0,5,10,17,28", f"{tmp}/m.onnx", input_size=64)
    x = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    with Extractor(res.path, provider=ep, max_batch=8) as ex:
        ring = ex.output_ring(8, slots=2)
        slot = ring.acquire()
        views = ex.run_into(x, slot)
        ref = dict(zip(ex.output_names, ex.session.run(ex.output_names, {ex.input_name: x})))
        rep = {"provider": ex.provider, "math_mode": ex.math_mode, "pinned": ring.is_pinned,
               "in_place": all(np.shares_memory(v, slot.arrays[k]) for k, v in views.items()),
               "max_abs_diff_vs_session_run": max(float(np.abs(v - ref[k]).max()) for k, v in views.items())}
        ring.close()
print(json.dumps(rep))
open(out, "w").write(json.dumps(rep, indent=2))
PYEOF

# 3. parity: the default math mode (tf32 on CUDA) and strict fp32 (--no-tf32); exit 1 on a failing tap
rc=0
for mode in tf32 fp32; do
    flag=(); [[ "$mode" == fp32 ]] && flag=(--no-tf32)
    say "parity ($mode) ..."
    timeout "$LIMIT" "$PY" -m featuremaps parity --model vgg16 "${PARITY[@]}" --providers cpu,cuda "${flag[@]}" \
        --json "$OUT_DIR/h200-parity-$mode.json" 2>&1 | tee -a "$LOG"
    (( PIPESTATUS[0] != 0 )) && rc=1
done

# 4. bench: torch on the GPU (taps into pinned buffers) vs ORT CUDA maps-to-host (pinned) / maps-on-device
say "bench ..."
timeout "$LIMIT" "$PY" -m featuremaps bench --model vgg16 "${BENCH[@]}" --no-scaling --torch-device "$DEVICE" \
    --backends torch-hooks,torch-cut,ort-cuda,ort-cuda-device --threads "$(nproc)" \
    -o "$OUT_DIR/h200-bench.json" 2>&1 | tee -a "$LOG"
(( PIPESTATUS[0] != 0 )) && rc=1

# 5. extract_bench end to end on the GPU: write-bound (tap 0), full fp16 maps, reduced; stores on local disk
say "extract_bench ..."
STORE_DIR=${STORE_DIR:-/tmp/fm-extract}
mkdir -p "$STORE_DIR"
timeout "$LIMIT" "$PY" -m featuremaps.bench.extract_bench "${EXTRACT[@]}" --provider "$EP" --store-dir "$STORE_DIR" \
    --out "$OUT_DIR" 2>&1 | tee -a "$LOG"
(( PIPESTATUS[0] != 0 )) && rc=1

say "done (rc=$rc); results in $OUT_DIR"
exit $rc
