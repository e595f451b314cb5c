#!/usr/bin/env bash
# The GPU figures of issue 12, as one short prepared run (a lent GPU machine's time is scarce): extraction at
# 224 px on 500 x 375 JPEGs for resnet50 and vit_base_patch16_224 (random weights: throughput only), fp16 and bf16
# autocast, channels-last on/off, loader vs bare forward vs pipeline, DataLoader workers 0 / 8 / 16.
# Usage (repository root, set-up done): bash benchmarks/gpu_figures.sh [OUT_DIR]   (~6 min on one H200)
set -euo pipefail
out=${1:-${OUT:-runs/gpu-figures}}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
for backbone in random:resnet50 random:vit_base_patch16_224; do
  for precision in bf16 fp16; do
    for layout in --channels-last --no-channels-last; do
      echo "== $backbone $precision $layout" | tee -a "$out/loader.txt"
      "$py" benchmarks/loader.py --backbone "$backbone" --input-size 224 --n 4096 --batch-size 256 \
        --device cuda --precision "$precision" "$layout" --workers 0 8 16 2>&1 | tee -a "$out/loader.txt"
    done
  done
done
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then  # the 2-process DDP eval, when the machine has two GPUs
  /usr/bin/time -v .venv/bin/unirep eval random:resnet50 --input-size 224 --tasks textile-defects \
    --protocols knn strategy=ddp devices=2 accelerator=gpu out="$out/ddp-eval" cache_dir="$out/cache" \
    2>&1 | tail -40 | tee "$out/ddp.txt"
fi
