#!/usr/bin/env bash
# The CPU benchmark round behind the README's tables, one program after another on a quiet machine
# (each prints its table and writes JSON + markdown into bench/results/). About 25 minutes on 2 cores.
#   bash bench/run_cpu.sh            # everything
#   bash bench/run_cpu.sh decode     # one of: decode extract store openvino ray
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
run() { echo "== $*" >&2; python -m "$@"; }
[[ $what == all || $what == decode ]]   && run featuremaps.bench.decode_bench --images 512
[[ $what == all || $what == extract ]]  && run featuremaps.bench.extract_bench --images 32 --repeats 3
[[ $what == all || $what == store ]]    && run featuremaps.bench.store_bench --images 64 --repeats 3
[[ $what == all || $what == openvino ]] && run featuremaps.bench.openvino_bench --repeats 5
[[ $what == all || $what == ray ]]      && run featuremaps.bench.ray_bench
exit 0
