#!/usr/bin/env bash
# GPU benchmark (issue 5): the SD v1.5 architecture at full width with random weights, 224 px,
# 30 steps, guidance 7.5; baseline and meddap side by side in one process (python -m meddap.bench),
# first eager (generation + LoRA training), then generation with torch.compile.
#
#   bash bench/gpu.sh [OUT_DIR]        # default results/bench/gpu; needs CUDA
#   TINY=1 bash bench/gpu.sh [OUT_DIR] # the classifier part only, tiny, on the CPU (a check of the script)
#
# Then the classifier part (issue 16): the original MEDDAP classifier loop (DataLoader with
# num_workers 0 and 8) against meddap's train_classifier at 224 px for densenet121, resnet34 and
# squeezenet1_1, and meddap's loop as 1, 2 and 4 concurrent jobs on the GPU (OUT_DIR/classifier/<arch>/).
# CLASSIFIER_DATA=DIR trains on a folder of class folders (default: simulated phantom images),
# CLASSIFIER_ARCHS, CLASSIFIER_RES, CLASSIFIER_IMAGES (per class), CLASSIFIER_EPOCHS, CONCURRENT override.
#
# Where diffusers is missing (a bare CUDA image), the wheels in .whl/ are installed to /tmp/site
# (see docs/benchmarks.md). Figures go to OUT_DIR/{eager,compiled}/ (and OUT_DIR/eager<B>/ for
# EXTRA_BATCH=B: eager generation at another batch size), the GPU, versions and progress to OUT_DIR/bench.log.
set -euo pipefail
out=${1:-results/bench/gpu}
mkdir -p "$out"
tiny=${TINY:-0}
if ! python3 -c "import diffusers" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
log="$out/bench.log"
if [ "$tiny" = 1 ]; then
    : > "$log"
    classifier=(--device cpu --threads 1 --classifier-resolution "${CLASSIFIER_RES:-32}" --classifier-images "${CLASSIFIER_IMAGES:-5}"
        --classifier-epochs "${CLASSIFIER_EPOCHS:-1}" --classifier-warmup 0 --classifier-batch-size 4 --classifier-workers 1
        --rounds 1 --concurrent "${CONCURRENT:-1,2}")
else
    classifier=(--classifier-resolution "${CLASSIFIER_RES:-224}" --classifier-images "${CLASSIFIER_IMAGES:-200}"
        --classifier-epochs "${CLASSIFIER_EPOCHS:-4}" --classifier-warmup 1 --classifier-batch-size 32 --classifier-workers 8
        --rounds 2 --concurrent "${CONCURRENT:-1,2,4}")
fi
if [ -n "${CLASSIFIER_DATA:-}" ]; then
    classifier+=(--classifier-data "$CLASSIFIER_DATA")
fi
run_classifier() {
    for arch in ${CLASSIFIER_ARCHS:-densenet121 resnet34 squeezenet1_1}; do
        python3 -m meddap.bench --parts classifier --classifier-arch "$arch" "${classifier[@]}" \
            --out "$out/classifier/$arch" 2>> "$log"
    done
}
if [ "$tiny" = 1 ]; then
    run_classifier
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$log"
python3 -c "import torch, diffusers, peft, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__, 'transformers', transformers.__version__)" | tee -a "$log"
pipeline=${SD15_DIR:-/tmp/meddap-sd15}
if [ ! -f "$pipeline/model_index.json" ]; then
    start=$(date +%s)
    python3 -c "from meddap.diffusion.sd15 import build_sd15_pipeline; build_sd15_pipeline('$pipeline', 1)"
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
run_classifier
