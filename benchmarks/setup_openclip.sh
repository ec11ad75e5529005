#!/usr/bin/env bash
# Builds the separate virtual environment used by the open_clip side of benchmarks/openclip_speed.py.
#
#   bash benchmarks/setup_openclip.sh          # idempotent; prints the venv's python path last
#
# The venv lives outside the repo (override with BASIC_TF_BENCH_CACHE). torch is pinned to the CPU
# build 2.13.0 through benchmarks/openclip_constraints.txt so that no CUDA build is pulled.
# open_clip_torch is installed without its dependencies torchvision and timm: PyPI's torchvision
# wheels are CUDA builds whose _C.so links libtorch_cuda.so and cannot load beside a CPU torch
# ("operator torchvision::nms does not exist"), and timm imports torchvision. open_clip's CLIP
# model code needs neither for a ViT + text Transformer train step (it imports torchvision only
# for FrozenBatchNorm2d and the preprocessing transforms); the benchmark child stubs that one name.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${BASIC_TF_BENCH_CACHE:-$HOME/.cache/basic_tf_bench}"
VENV="$CACHE/openclip-venv"
PY="$VENV/bin/python"
CONSTRAINTS="$HERE/openclip_constraints.txt"

if [ -x "$PY" ] && "$PY" -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu')" 2>/dev/null \
    && "$PY" -c "import importlib.metadata as m; m.version('open_clip_torch')" 2>/dev/null; then
  echo "$PY"
  exit 0
fi
mkdir -p "$CACHE"
python3 -m venv --clear "$VENV"
"$PY" -m pip install -q -c "$CONSTRAINTS" torch==2.13.0 numpy regex ftfy tqdm huggingface_hub safetensors
"$PY" -m pip install -q --no-deps -c "$CONSTRAINTS" open_clip_torch
"$PY" -c "import torch; assert torch.__version__ == '2.13.0+cpu', torch.__version__; assert not torch.cuda.is_available()"
echo "$PY"
