#!/usr/bin/env bash
# The GPU measurements the project still lacks, in one run (made for the `device` tool; works on any CUDA machine with
# the project's dependencies). Results go to $OUT when set (the device tool), else benchmarks/results.
#
# With the device tool (its machine sees only the repository, so the shared media travel inside it, git-ignored):
#   mkdir -p shared && cp -r ../shared/data shared/          # once, here: 24 MB
#   run(command="HCSI_COMMIT=$(git rev-parse --short HEAD) bash benchmarks/gpu_suite.sh", timeout_s=560,
#       carry=["shared"])
# Afterwards copy the JSON files into benchmarks/results and run `python benchmarks/report.py`.
# Pass HCSI_COMMIT=<short hash> where the tree has no .git, so results name their commit.
# ALL=1 also reruns the figures already recorded on an H200 (BSCG block, every model at bs1 / bs64).
set -u
out=${OUT:-benchmarks/results}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1
if [ -z "${HCSI_SHARED_DATA:-}" ] && [ -d shared/data ]; then export HCSI_SHARED_DATA=$PWD/shared/data; fi
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
# The training and evaluation benchmarks need the project's own dependencies on that machine (it cannot install any);
# each command below runs whatever the previous ones did, so a missing one costs only its own figures.
$py -c "import importlib.util as u; m=[n for n in ('dlib','av','albumentations','ai_edge_litert','face_recognition_models','sklearn','safetensors') if u.find_spec(n) is None]; print('missing modules:', m or 'none')"
cores=$(nproc)
# Issue 18, part 1: stage-2 training of hcsi_net at the paper's 16 pairs, 224 px, bf16, real SBI loading from a store
# preprocessed here; the loader's pairs/s beside the model's, with and without torch.compile.
$py benchmarks/bench_train.py --device cuda --model hcsi_net --input-size 224 --pairs 16 --steps 40 --amp bf16 \
    --workers 4 8 $((cores - 2)) --train-workers $((cores - 2)) --out-dir "$out"
$py benchmarks/bench_train.py --device cuda --model hcsi_net --input-size 224 --pairs 16 --steps 40 --amp bf16 \
    --compile --workers $((cores - 2)) --train-workers $((cores - 2)) --suffix compile --out-dir "$out"
# Issue 18, part 2: `hcsi evaluate` end to end over the shared clips, stage shares, model busy share.
$py benchmarks/bench_evaluate.py --device cuda --workers 4 8 $((cores - 2)) --out-dir "$out"
# Issue 24: the face stage on the GPU, end to end on DFDC-like 1080p clips (64 copies of the shared DFDC clip), with
# each CUDA face detector; GPU utilisation sampled by nvidia-smi, the bounding stage named; and the stage breakdown.
$py benchmarks/bench_evaluate.py --device cuda --clips dfdc/abofeumbvv.mp4 --copies 64 --workers $((cores - 2)) \
    --detectors hog540+blazeface-torch-every-frame blazeface-torch --suffix=-dfdc1080p --out-dir "$out"
$py benchmarks/bench_face_stage.py --device cuda --detectors hog540+blazeface-every-frame \
    hog540+blazeface-torch-every-frame blazeface-torch --out-dir "$out"
# Issue 31: RetinaFace on the GPU. The finders' network path per frame at DFDC's, 720p and FF++'s frame sizes, fp32
# and fp16 / bf16 autocast with the largest box difference against fp32 (random ResNet-50 weights: the time does not
# depend on them); then SBI's face stage (sbi-retinaface) and the shipped MobileNet-0.25 end to end beside the GPU
# default, on the DFDC clip and 64 copies of it (GPU utilisation, bounding stage).
$py benchmarks/bench_retinaface.py --device cuda --parts timing --batch 8 --out-dir "$out"
rf=${TMPDIR:-/tmp}/retinaface_resnet50_2020-07-20.pth
$py -c "import torch; from hcsi.faces.retinaface import RetinaFaceNet; torch.save(RetinaFaceNet('resnet50').state_dict(), '$rf')"
HCSI_RETINAFACE_WEIGHTS=$rf $py benchmarks/bench_face_stage.py --device cuda --clips dfdc/abofeumbvv.mp4 \
    liveportrait/s18.mp4 ffpp/519.mp4 --detectors hog540+blazeface-torch-every-frame sbi-retinaface retinaface \
    --suffix=-retinaface --out-dir "$out"
HCSI_RETINAFACE_WEIGHTS=$rf $py benchmarks/bench_evaluate.py --device cuda --clips dfdc/abofeumbvv.mp4 --copies 64 \
    --workers $((cores - 2)) --detectors sbi-retinaface retinaface --suffix=-dfdc1080p-retinaface --out-dir "$out"
# hcsi_net bs1 FP32 with torch.compile (the recorded one predates the SDPA layout fix), and the imported SBI /
# DeepfakeBench EfficientNet-B4 at their own input sizes (380, 256) beside hcsi_net.
$py benchmarks/bench_models.py --device cuda --models hcsi_net --batch 1 --dtype fp32 --compile \
    --warmup 5 --iters 50 --out-dir "$out"
$py benchmarks/bench_models.py --device cuda --models sbi_efficientnet_b4 deepfakebench_efficientnet_b4 hcsi_net \
    hcsi_net_sbi_cnn --batch 1 --dtype fp32 --warmup 10 --iters 50 --suffix published --out-dir "$out"
if [ "${ALL:-0}" = 1 ]; then
    $py benchmarks/bench_bscg.py --device cuda --batches 1 8 64 --iters 20 --out-dir "$out"
    $py benchmarks/bench_models.py --device cuda --batch 1 --dtype fp32 --warmup 10 --iters 50 --out-dir "$out"
    $py benchmarks/bench_models.py --device cuda --models hcsi_net late_fusion --batch 64 --dtype bf16 \
        --warmup 5 --iters 20 --out-dir "$out"
    $py benchmarks/bench_models.py --device cuda --models hcsi_net --batch 64 --dtype bf16 --compile \
        --warmup 5 --iters 20 --out-dir "$out"
fi
