#!/usr/bin/env bash
# One prepared GPU check (4-6 minutes on one H200; figures in docs/PERFORMANCE.md):
# throughput of GMF-64 and NeuMF-64 at batch 2^14 .. 2^20 on ML-1M and on ML-20M-shaped
# data, then a short GMF search with four trials sharing the GPU (gpu: 0.25 each).
#
#   bash benchmarks/gpu_check.sh DATA_DIR [OUT_DIR]
#
# DATA_DIR: the NCF paper's ML-1M split folder (e.g. ../shared/data/ml-1m, copied next to
# the repository when the GPU machine cannot see it). Needs torch with CUDA, ray[tune],
# optuna, tensorboardX and this package importable (PYTHONPATH=.).
set -euo pipefail
data=${1:?usage: gpu_check.sh DATA_DIR [OUT_DIR]}
out=${2:-gpu_check_out}
mkdir -p "$out"
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python benchmarks/gpu_check.py --data "$data" --epochs 2 | tee "$out/throughput.jsonl"

space="$out/gmf_shared_gpu.yaml"
cat > "$space" <<YAML
model: gmf
data: $data
params:
  factors: 64
  batch_size: 65536
  lr: {loguniform: [1.0e-3, 2.0e-2]}
  num_negatives: 4
num_samples: 4
max_epochs: 3
resources: {cpu: 2, gpu: 0.25}
scheduler: {type: none}
YAML
start=$(date +%s)
python -m ncf_tune.search --space "$space" --results "$out/results" --experiment gpu-share \
  --force | tee "$out/search.txt"
echo "search wall seconds: $(( $(date +%s) - start ))" | tee -a "$out/search.txt"
