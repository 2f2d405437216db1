"""Wall time of a quick chain search on ML-1M against the trials' own training time.

    python benchmarks/search_overhead.py --data ../shared/data/ml-1m

Runs `python -m ncf_tune.search --space search_spaces/neumf.yaml --num-samples 4
--max-epochs 3` (GMF, MLP, then NeuMF) into a fresh temporary results folder and
prints, per stage and in all: wall seconds, the trials' summed epoch seconds, and the
overhead = 1 - trial seconds / (wall x concurrent trials), i.e. the share of the
machine's trial slots not spent training (Ray start, trial start, data hand-off,
checkpoints, evaluation of the test set, writing results).
Targets on a 2-core machine: overhead <= 15 %, the whole run <= 10 minutes.

The overhead is then split, from the trials' own result.json timestamps, into
trial-side time outside epochs (trial start, data hand-off, checkpoints, reports) and
idle slot time; "tail" is the idle time after a slot's last trial while the stage's
last trial still runs (a property of few trials per slot, not of Ray).
"""

from __future__ import annotations

import argparse
import json
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
        spans = {s.stage: trial_spans(Path(results), s.stage) for s in summaries}
    print(f"\n{'stage':8} {'wall s':>8} {'trial s':>8} {'overhead':>9}  "
          f"(concurrent trials: {slots})")
    for s in summaries:
        print(f"{s.stage:8} {s.wall_seconds:8.1f} {s.trial_seconds:8.1f} "
              f"{1 - s.trial_seconds / (slots * s.wall_seconds):9.1%}  "
              f"test HR@10 {s.test_hr:.4f} NDCG@10 {s.test_ndcg:.4f}")
    trial = sum(s.trial_seconds for s in summaries)
    print(f"{'all':8} {wall:8.1f} {trial:8.1f} {1 - trial / (slots * wall):9.1%}  "
          f"(wall includes data preparation and Ray start)")
    print(f"\n{'stage':8} {'slot s':>8} {'epochs':>8} {'in trial':>9} {'idle':>8} "
          f"{'of it tail':>10}")
    for s in summaries:
        capacity = slots * s.wall_seconds
        busy = sum(end - start for start, end in spans[s.stage])
        ends = sorted(end for _, end in spans[s.stage])
        tail = sum(ends[-1] - e for e in ends[-slots:])  # each slot's last trial to the end
        print(f"{s.stage:8} {capacity:8.1f} {s.trial_seconds / capacity:8.1%} "
              f"{(busy - s.trial_seconds) / capacity:9.1%} {(capacity - busy) / capacity:8.1%} "
              f"{tail / capacity:10.1%}")


def trial_spans(results: Path, stage: str) -> list[tuple[float, float]]:
    """(start, end) wall-clock seconds of each trial of a stage, from its result.json."""
    spans = []
    for path in results.glob(f"*/{stage}/tune/*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            spans.append((rows[0]["timestamp"] - rows[0]["time_this_iter_s"],
                          rows[-1]["timestamp"]))
    return spans


if __name__ == "__main__":
    main()
