#!/usr/bin/env bash
# Builds the separate virtual environment used by the open_clip loader row of
# benchmarks/input_pipeline.py (open_clip_train.data.get_wds_dataset on CPU torch).
#
#   bash benchmarks/setup_openclip_data.sh     # idempotent; prints the venv's python path last
#
# Unlike benchmarks/setup_openclip.sh (the train-step comparison, CPU torch 2.13.0 without
# torchvision), the loader needs torchvision: open_clip's image_transform is torchvision.transforms.
# PyPI's torchvision cannot load beside the CPU torch 2.13.0 file ("operator torchvision::nms does
# not exist"), so this venv takes torch 2.14.1 + torchvision 0.29.1 as a pair (x86_64: a CUDA
# build, about 5.5 GB, pip takes both from this machine's disk; the loader runs on the CPU
# regardless). On aarch64 the pair is torch 2.9.1 + torchvision 0.24.1 (a CPU build).
# webdataset and braceexpand are get_wds_dataset's own imports; pandas is open_clip_train.data's.
# webdataset is pinned to open_clip_torch 3.3.0's "training" extra (<=0.2.86): webdataset 1.0
# yields an end-of-shard marker {} that open_clip's group_by_keys_nothrow fails on (KeyError
# 'fname').
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${BASIC_TF_BENCH_CACHE:-$HOME/.cache/basic_tf_bench}"
VENV="$CACHE/openclip-data-venv"
PY="$VENV/bin/python"
case "$(uname -m)" in
  x86_64) TORCH="torch==2.14.1 torchvision==0.29.1" ;;
  aarch64) TORCH="torch==2.9.1 torchvision==0.24.1" ;;
  *) echo "setup_openclip_data.sh: no known torch/torchvision pair for $(uname -m)" >&2; exit 1 ;;
esac
WDS="webdataset==0.2.86"
CHECK="import torchvision.transforms, webdataset, open_clip, open_clip_train.data
assert webdataset.__version__ == '0.2.86', webdataset.__version__"

if [ -x "$PY" ] && "$PY" -c "$CHECK" 2>/dev/null; then
  echo "$PY"
  exit 0
fi
if [ -x "$PY" ] && "$PY" -c "import torchvision.transforms, open_clip_train.data" 2>/dev/null; then
  "$PY" -m pip install -q "$WDS"    # a venv of an earlier version of this script
  "$PY" -c "$CHECK" && echo "$PY" && exit 0
fi
mkdir -p "$CACHE"
python3 -m venv --clear "$VENV"
# shellcheck disable=SC2086
"$PY" -m pip install -q $TORCH numpy pillow regex ftfy tqdm huggingface_hub safetensors \
    "$WDS" braceexpand pandas
"$PY" -m pip install -q --no-deps open_clip_torch==3.3.0
"$PY" -c "$CHECK"
echo "$PY"
