#!/usr/bin/env bash
# The prepared GPU check: at most 8 minutes on one H200, nothing fetched from a network.
# Prints each GPU goal with its figure and PASS or FAIL, and keeps every log in OUT_DIR.
#
#   bash benchmarks/gpu_wheels.sh .whl             # first, where pip works (51 MB of wheels)
#   bash benchmarks/gpu_check.sh DATA_DIR [OUT_DIR]   # then, on the GPU machine
#
# DATA_DIR: the NCF paper's ML-1M split folder (ml-1m.train.rating, ...), copied beside the
# repository when the GPU machine cannot see it. Needs python3 with torch (CUDA), numpy,
# pandas, pyyaml, matplotlib; ray, optuna and tensorboardX come from .whl/ when it exists.
#
# Goals:
#   placement  every trial of a default GMF search ran on a GPU Ray granted it, k at once
#   recipes    the shipped GMF and MLP recipes train an epoch >= 10x faster than the 2-core
#              CPU's (GMF 1.53 s, MLP 54.34 s: docs/PERFORMANCE.md, "Epochs on a CPU")
#   neumf-20m  NeuMF-64 (256-256-128-64) on the ML-20M shape >= 136M samples/s
#   search     the default search on the paper split within 10 minutes (the script stops
#              it at SEARCH_S), NeuMF test HR@10 >= 0.730
set -uo pipefail
data=${1:?usage: gpu_check.sh DATA_DIR [OUT_DIR]}
out=${2:-gpu_check_out}
search_s=${SEARCH_S:-300}
cpu_gmf_s=1.53
cpu_mlp_s=54.34
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
verdict() { # name figure pass(0/1)
  if [ "$3" = 1 ]; then echo "GOAL $1: $2: PASS"; else echo "GOAL $1: $2: FAIL"; fi
}
t0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, ray, optuna; print('torch', torch.__version__, 'ray', ray.__version__,
'optuna', optuna.__version__)" | tee -a "$out/gpu.txt"

# 1. placement: a short default GMF search (no resources edited); every trial's device
python3 -m ncf_tune.search --space search_spaces/gmf.yaml --data "$data" --num-samples 8 \
  --max-epochs 2 --time-budget none --results "$out/results" --experiment placement --force \
  > "$out/placement.txt" 2>&1
python3 - "$out/results/placement/gmf" > "$out/placement_goal.txt" <<'PY'
import csv, pathlib, sys
rows = []
for f in pathlib.Path(sys.argv[1]).glob("tune/*/progress.csv"):
    rows += [dict(r, trial=f.parent.name) for r in csv.DictReader(open(f))]
devices = {r["device"] for r in rows}
windows = {}
for r in rows:
    t, s = float(r["timestamp"]), float(r["seconds"])
    lo, hi = windows.get(r["trial"], (t - s, t))
    windows[r["trial"]] = (min(lo, t - s), max(hi, t))
at_once = max((sum(lo <= t < hi for lo, hi in windows.values()) for t, _ in windows.values()),
              default=0)
ok = bool(rows) and all(d.startswith("cuda:0 (GPU ") for d in devices)
print(f"{len(windows)} trials on {sorted(devices)}, up to {at_once} at once", int(ok))
PY
verdict placement "$(sed 's/ [01]$//' "$out/placement_goal.txt")" "$(awk '{print $NF}' "$out/placement_goal.txt")"
grep -m1 "share each" "$out/placement.txt" || true

# 2. the recipes' epochs at a GPU batch
for stage in gmf mlp; do
  python3 benchmarks/batch_invariance.py --data "$data" --stage $stage --epochs 2 \
    --batches 65536 --device cuda --threads 4 > "$out/recipe_$stage.jsonl" 2>&1
done
python3 - "$out" $cpu_gmf_s $cpu_mlp_s <<'PY'
import json, sys
out, cpu = sys.argv[1], {"gmf": float(sys.argv[2]), "mlp": float(sys.argv[3])}
for stage in ("gmf", "mlp"):
    try:
        line = json.loads(open(f"{out}/recipe_{stage}.jsonl").readline())
        s = line["fastest_epoch_s"]
        print(f"GOAL recipe-{stage}: epoch {s:.3f} s on the GPU vs {cpu[stage]} s on the CPU: "
              f"{cpu[stage] / s:.1f}x (val NDCG@10 {line['best_ndcg']} after 2): "
              f"{'PASS' if cpu[stage] / s >= 10 else 'FAIL'}")
    except Exception as exc:  # noqa: BLE001
        print(f"GOAL recipe-{stage}: no figure ({exc}): FAIL")
PY

# 3. NeuMF-64 samples/s on the ML-20M shape, batch 2^20, bf16 and fp32
python3 benchmarks/gpu_check.py --batches 20 --epochs 1 > "$out/throughput.jsonl" 2>&1
python3 - "$out/throughput.jsonl" <<'PY'
import json, sys
best = 0
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line)
        print(f"  {r['model']} {r['precision']} batch {r['batch']}: {r['samples_per_s'] / 1e6:.1f}M/s")
        if r["model"] == "NeuMF-64":
            best = max(best, r["samples_per_s"])
print(f"GOAL neumf-20m: {best / 1e6:.1f}M samples/s (goal 136M): "
      f"{'PASS' if best >= 136e6 else 'FAIL'}")
PY

# 4. the default search, stopped at SEARCH_S so that the script ends in time
start=$(date +%s)
timeout "$search_s" python3 -m ncf_tune.search --space search_spaces/neumf.yaml --data "$data" \
  --results "$out/results" --experiment default --force > "$out/search.txt" 2>&1
rc=$?
wall=$(( $(date +%s) - start ))
hr=$(python3 -c "import json; print(json.load(open('$out/results/default/neumf/summary.json'))['test_hr'])" 2>/dev/null || echo none)
if [ $rc = 0 ] && [ "$hr" != none ]; then
  verdict search "ended in ${wall} s, NeuMF test HR@10 $hr" \
    "$(python3 -c "print(int($wall <= 600 and $hr >= 0.730))")"
else
  verdict search "not finished: exit $rc after ${wall} s (stopped at $search_s s)" 0
fi
grep -E "share each|^\[(gmf|mlp|neumf)\] winner|^done" "$out/search.txt" || tail -5 "$out/search.txt"
echo "gpu_check: $(( $(date +%s) - t0 )) s in all"
