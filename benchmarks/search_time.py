"""What a search costs and what it finds, per stage: wall time, budget, trials and
trial-epochs, Ray's overhead, and the winner's scores.

    python benchmarks/search_time.py --data ../shared/data/ml-1m                  # the full default
    python benchmarks/search_time.py --data ../shared/data/ml-1m --time-budget 10m
    python benchmarks/search_time.py --data ../shared/data/ml-1m --no-recipes
    python benchmarks/search_time.py --data ../shared/data/ml-1m --num-samples 4 --max-epochs 3

Runs `ncf_tune.search` (the same `run_chain`) on `--space` (default the shipped
search_spaces/neumf.yaml) into `--results` (default a fresh temporary folder) and prints
a table. overhead = 1 - trial seconds / (wall x trial slots): the share of the machine's
trial slots not spent training (Ray's start, trial start, data hand-off, checkpoints,
scoring the test set, writing results, and slots idle at a stage's end); "in trial" is
the part of it inside trials but outside epochs, from the trials' result.json times.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from ncf_tune import results, search

SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "neumf.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="data source for every stage")
    ap.add_argument("--space", default=str(SPACE))
    ap.add_argument("--time-budget")
    ap.add_argument("--num-samples", type=int)
    ap.add_argument("--max-epochs", type=int)
    ap.add_argument("--no-recipes", action="store_true")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--cpus", type=int, help="trial slots (default: every core)")
    ap.add_argument("--results", help="keep the results here (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.results or scratch)
        t = time.perf_counter()
        summaries = search.run_chain(args.space, data_source=args.data, results_dir=folder,
                                     experiment="bench", num_samples=args.num_samples,
                                     max_epochs=args.max_epochs, seed=args.seed,
                                     time_budget=args.time_budget, no_recipes=args.no_recipes,
                                     cpus=args.cpus, force=True)
        wall = time.perf_counter() - t
        spans = {s.stage: trial_spans(folder / "bench" / s.stage / "tune") for s in summaries}
    slots = args.cpus or os.cpu_count() or 1  # 1 CPU per trial in the shipped spaces
    print(f"\nwall {wall:.0f} s ({wall / 60:.1f} min) in all, data loading and Ray's start "
          f"included; {slots} trial slots; budget "
          f"{args.time_budget or 'as the space file says (or none)'}")
    print(f"{'stage':7} {'wall s':>7} {'budget':>7} {'trials':>7} {'epochs':>7} "
          f"{'trial s':>8} {'overhead':>9} {'in trial':>9}  {'val NDCG':>8} "
          f"{'test HR':>8} {'test NDCG':>9}")
    for s in summaries:
        capacity = slots * s.wall_seconds
        busy = sum(end - start for start, end in spans[s.stage])
        budget = f"{s.budget_s:.0f}" if s.budget_s is not None else "-"
        print(f"{s.stage:7} {s.wall_seconds:7.0f} {budget:>7} {s.trials:7d} "
              f"{s.trial_epochs:7d} {s.trial_seconds:8.0f} "
              f"{1 - s.trial_seconds / capacity:9.1%} {(busy - s.trial_seconds) / capacity:9.1%}"
              f"  {s.val_ndcg:8.4f} {s.test_hr:8.4f} {s.test_ndcg:9.4f}")
    best = results.best_stage(summaries)
    print(f"best of the chain: {best.stage} (val NDCG@10 {best.val_ndcg:.4f}): test HR@10 "
          f"{best.test_hr:.4f}, NDCG@10 {best.test_ndcg:.4f}")
    for s in summaries:
        counts = ", ".join(f"{n} {k}" for k, n in s.statuses.items() if n)
        print(f"{s.stage}: {counts}; winner " + ", ".join(
            f"{k}={s.best_config.get(k)}" for k in s.shown if k in s.best_config))


def trial_spans(tune_dir: Path) -> list[tuple[float, float]]:
    """(start, end) wall-clock seconds of each trial of a stage, from its result.json."""
    spans = []
    for path in tune_dir.glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            spans.append((rows[0]["timestamp"] - rows[0]["time_this_iter_s"],
                          rows[-1]["timestamp"]))
    return spans


if __name__ == "__main__":
    main()
