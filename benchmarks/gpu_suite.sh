#!/usr/bin/env bash
# Every GPU measurement of the model issue in one run (made for the `device` tool; works on any CUDA machine with
# torch and timm installed). Results go to $OUT when set (the device tool), else benchmarks/results.
# Pass HCSI_COMMIT=<short hash> where the tree has no .git, so results name their commit.
# Afterwards: copy the JSON files into benchmarks/results and run `python benchmarks/report.py`.
set -u
out=${OUT:-benchmarks/results}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
$py benchmarks/bench_bscg.py --device cuda --batches 1 8 64 --iters 20 --out-dir "$out"
$py benchmarks/bench_models.py --device cuda --batch 1 --dtype fp32 --warmup 10 --iters 50 --out-dir "$out"
$py benchmarks/bench_models.py --device cuda --models hcsi_net late_fusion --batch 64 --dtype bf16 \
    --warmup 5 --iters 20 --out-dir "$out"
$py benchmarks/bench_models.py --device cuda --models hcsi_net --batch 1 --dtype fp32 --compile \
    --warmup 5 --iters 50 --out-dir "$out"
$py benchmarks/bench_models.py --device cuda --models hcsi_net --batch 64 --dtype bf16 --compile \
    --warmup 5 --iters 20 --out-dir "$out"
# Training (issue 4): hcsi_net at the paper's 16 pairs, 224 px, bf16, with real SBI loading from ../shared/data.
$py benchmarks/bench_train.py --device cuda --model hcsi_net --input-size 224 --pairs 16 --steps 40 --amp bf16 \
    --workers 4 8 --train-workers 8 --out-dir "$out"
# Issue 13: the imported SBI / DeepfakeBench EfficientNet-B4 at their own input sizes (380, 256) beside hcsi_net.
$py benchmarks/bench_models.py --device cuda --models sbi_efficientnet_b4 deepfakebench_efficientnet_b4 hcsi_net \
    hcsi_net_sbi_cnn --batch 1 --dtype fp32 --warmup 10 --iters 50 --suffix published --out-dir "$out"
