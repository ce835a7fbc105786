#!/usr/bin/env bash
# The GPU path of the DAG end to end (issue 16): config/busi.yaml on BUSI with the SD v1.5
# architecture (random weights, meddap.diffusion.sd15, as bench/gpu.sh) as base model at 224 px, cut down by
# bench/gpu_dag.yaml and to fold 0 (--until fold 0's evaluations), through profiles/workstation;
# then the per-rule wall times of the benchmark files (results/benchmarks/**.tsv) as OUT/rules.{csv,md},
# with `meddap plan` of the same configs (OUT/plan.txt) and the run's log (OUT/snakemake.log).
# Needs the project's Python environment with snakemake (requirements.lock) on PATH or as PYTHON.
#
#   bash bench/gpu_dag.sh [OUT_DIR]      # CUDA machine; default docs/bench/gpu-<h100|h200|...>/dag
#   DATA=/path/to/busi SD15_DIR=/tmp/meddap-sd15 WORKDIR=/tmp/run bash bench/gpu_dag.sh
#   TINY=1 bash bench/gpu_dag.sh OUT     # CPU check of the same path: tests/configs/tiny.yaml and
#                                        # bench/gpu_dag_tiny.yaml (phantom, embedded small model), fold 0;
#                                        # tests/test_gpu_dag.py runs it
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
workdir=${WORKDIR:-$(mktemp -d /tmp/meddap-dag.XXXXXX)}
mkdir -p "$workdir"
if [ "${TINY:-0}" = 1 ]; then
    configs=("$repo/config/config.yaml" "$repo/tests/configs/tiny.yaml" "$repo/bench/gpu_dag_tiny.yaml")
    out=${1:-results/bench/dag-tiny}
else
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
    case "$gpu" in
        *H100*) device=gpu-h100 ;;
        *H200*) device=gpu-h200 ;;
        *) device=gpu-$(echo "$gpu" | tr 'A-Z ' 'a-z-') ;;
    esac
    out=${1:-$repo/docs/bench/$device/dag}
    data=$(cd "${DATA:-$repo/../shared/data/busi}" && pwd)
    pipeline=${SD15_DIR:-/tmp/meddap-sd15}
    if [ ! -f "$pipeline/model_index.json" ]; then
        "$python" -c "from meddap.diffusion.sd15 import build_sd15_pipeline; build_sd15_pipeline('$pipeline', 1)"
    fi
    printf 'dataset: {root: %s}\nbase_model: {path: %s}\n' "$data" "$pipeline" > "$workdir/paths.yaml"
    # A study's configs only (no embedded default underneath), as `snakemake --configfile` layers them.
    configs=("$repo/config/busi.yaml" "$repo/bench/gpu_dag.yaml" "$workdir/paths.yaml")
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Fold 0's evaluation folders: every variant's and architecture's first replicate.
mapfile -t targets < <("$python" -c "
import sys
from meddap.config.loading import load_config
from meddap.config.resolve import resolve
s = resolve(load_config(sys.argv[1:]))
for v in s.plan.variants():
    for arch in s.architectures:
        print(f'results/evaluation/{v.name}/{arch}/fold0/rep0')
" "${configs[@]}")
"$python" -m meddap.cli plan --configfile "${configs[@]}" > "$out/plan.txt"
start=$(date +%s)
"$python" -m snakemake --snakefile "$repo/Snakefile" --directory "$workdir" \
    --workflow-profile "$repo/profiles/workstation" --configfile "${configs[@]}" \
    --until "${targets[@]}" > "$out/snakemake.log" 2>&1 || { tail -40 "$out/snakemake.log"; exit 1; }
echo "wall: $(( $(date +%s) - start )) s for $(wc -l < <(printf '%s\n' "${targets[@]}")) fold-0 evaluations, in $workdir" | tee "$out/wall.txt"
"$python" -m meddap.bench.dag "$workdir/results/benchmarks" "$out"
