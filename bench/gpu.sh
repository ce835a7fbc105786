#!/usr/bin/env bash
# GPU benchmark (issue 5): the SD v1.5 architecture at full width with random weights, 224 px,
# 30 steps, guidance 7.5; baseline and meddap side by side in one process (python -m meddap.bench),
# first eager (generation + LoRA training), then generation with torch.compile.
#
#   bash bench/gpu.sh [OUT_DIR]        # default results/bench/gpu; needs CUDA
#
# Where diffusers is missing (a bare CUDA image), the wheels in .whl/ are installed to /tmp/site
# (see README, "Benchmark"). Figures go to OUT_DIR/{eager,compiled}/ (and OUT_DIR/eager<B>/ for
# EXTRA_BATCH=B: eager generation at another batch size), the GPU, versions and progress to OUT_DIR/bench.log.
set -euo pipefail
out=${1:-results/bench/gpu}
mkdir -p "$out"
if ! python3 -c "import diffusers" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
log="$out/bench.log"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$log"
python3 -c "import torch, diffusers, peft, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__, 'transformers', transformers.__version__)" | tee -a "$log"
pipeline=${SD15_DIR:-/tmp/meddap-sd15}
if [ ! -f "$pipeline/model_index.json" ]; then
    start=$(date +%s)
    python3 -c "from meddap.sd15 import build_sd15_pipeline; build_sd15_pipeline('$pipeline', 1)"
    echo "built the SD v1.5-architecture pipeline (random weights) in $(( $(date +%s) - start )) s" | tee -a "$log"
fi
common=(--pipeline "$pipeline" --resolution 224 --steps 30 --guidance 7.5 --guidance-reference lora --scheduler dpm --threads 8)
# Progress bars go to the logs; the tables to stdout.
python3 -m meddap.bench "${common[@]}" --images "${IMAGES:-512}" --baseline-images "${BASELINE_IMAGES:-16}" \
    --batch-size "${BATCH:-128}" --lora-steps 40 --lora-warmup 5 --lora-batch-size "${LORA_BATCH:-32}" --train-images 64 \
    --out "$out/eager" 2>> "$log"
if [ "${COMPILE:-1}" = 1 ]; then
    python3 -m meddap.bench "${common[@]}" --compile --skip-training --rounds 1 --images "${IMAGES:-512}" --baseline-images 8 \
        --batch-size "${BATCH:-128}" --out "$out/compiled" 2>> "$log"
fi
if [ -n "${EXTRA_BATCH:-}" ]; then
    python3 -m meddap.bench "${common[@]}" --skip-training --rounds 1 --images "$(( 4 * EXTRA_BATCH ))" --baseline-images 8 \
        --batch-size "$EXTRA_BATCH" --out "$out/eager$EXTRA_BATCH" 2>> "$log"
fi
