"""Wall time of a quick chain search on ML-1M against the trials' own training time.

    python benchmarks/search_overhead.py --data ../shared/data/ml-1m

Runs `python -m ncf_tune.search --space search_spaces/neumf.yaml --num-samples 4
--max-epochs 3` (GMF, MLP, then NeuMF) into a fresh temporary results folder and
prints, per stage and in all: wall seconds, the trials' summed epoch seconds, and the
overhead = 1 - trial seconds / (wall x concurrent trials), i.e. the share of the
machine's trial slots not spent training (Ray start, trial start, data hand-off,
checkpoints, evaluation of the test set, writing results).
Targets on a 2-core machine: overhead <= 15 %, the whole run <= 10 minutes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray

from ncf_tune import search

SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "neumf.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--space", default=str(SPACE))
    ap.add_argument("--num-samples", type=int, default=4)
    ap.add_argument("--max-epochs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as results:
        t = time.perf_counter()
        summaries = search.run_chain(args.space, data_source=args.data, results_dir=results,
                                     num_samples=args.num_samples, max_epochs=args.max_epochs)
        wall = time.perf_counter() - t
        slots = int(ray.cluster_resources().get("CPU", 1))  # 1 CPU per trial in the spaces
    print(f"\n{'stage':8} {'wall s':>8} {'trial s':>8} {'overhead':>9}  "
          f"(concurrent trials: {slots})")
    for s in summaries:
        print(f"{s.stage:8} {s.wall_seconds:8.1f} {s.trial_seconds:8.1f} "
              f"{1 - s.trial_seconds / (slots * s.wall_seconds):9.1%}  "
              f"test HR@10 {s.test_hr:.4f} NDCG@10 {s.test_ndcg:.4f}")
    trial = sum(s.trial_seconds for s in summaries)
    print(f"{'all':8} {wall:8.1f} {trial:8.1f} {1 - trial / (slots * wall):9.1%}  "
          f"(wall includes data preparation and Ray start)")


if __name__ == "__main__":
    main()
