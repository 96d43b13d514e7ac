#!/usr/bin/env bash
# Every GPU benchmark, one after the other, its figures into one file (precision: digits accuracy
# in fp32, bf16, fp16 with loss scaling, each layout: the GPU paths a CPU test only stands in for).
#
#   bench/gpu.sh                          # on a CUDA machine: figures in bench/results-gpu.md
#   bench/gpu.sh --device cpu --quick     # anywhere: checks that every script runs (rough figures)
#   bench/gpu.sh --out /some/file.md      # the figures elsewhere
#
# It needs torch, torchvision, timm, scikit-learn and pandas, and no network.
# Streamlit, plotly and the Lite0 weights package are blocked on purpose
# (bench/bare), as they are absent on the bare GPU box: `core` must run without
# them. Lightning is optional (bench/peers.py says when it is skipped).
# PYTHON picks the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
device=cuda quick="" out=bench/results-gpu.md
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --quick) quick="--quick"; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: bench/gpu.sh [--device cuda|cpu] [--quick] [--out FILE]" >&2; exit 2 ;;
  esac
done
py="${PYTHON:-python3}"
export PYTHONPATH="bench/bare${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
{
  echo "# GPU benchmarks ($device${quick:+, quick})"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -n); $("$py" -c 'import torch, torchvision; print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, CUDA {torch.version.cuda}")')"
} > "$out"
if [ "$device" = cuda ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$out" || true; fi
for bench in overhead ceiling folder feature_cache precision peers; do
  echo "--- bench/$bench.py" >&2
  "$py" "bench/$bench.py" --device "$device" $quick --out "$out"
done
echo >> "$out"
echo "All GPU benchmarks: $(( $(date +%s) - start )) s" | tee -a "$out"
echo "figures written to $out"
