"""The shipped search on data its recipes were never tuned on, against the paper's
default models trained on the same split.

    python benchmarks/other_data.py --ratings ../shared/data/ml-1m/ratings.dat --time-budget 5m

Derives a data set from a GroupLens ratings file: only ratings >= --min-rating count as
interactions (the "likes"), from a seeded --user-fraction of the users; a different size,
density and item popularity from the paper's split. On it, with the leave-one-out-by-time
split (seed 0), it runs:
- `ncf_tune.search --space search_spaces/neumf.yaml --time-budget T` (the chain's best
  model by validation, scored on test once);
- the NCF paper's default GMF (32 factors, Adam 1e-3, batch 1024, 4 negatives, 20 epochs);
- the NCF paper's default NeuMF-8 (layers 64-32-16-8, Adam 1e-3, batch 256, 4 negatives,
  20 epochs, no pretraining);
and prints each one's test HR@10 / NDCG@10 and wall seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd

from ncf_tune import results, search
from ncf_tune import train as train_cli

SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "neumf.yaml"
BASELINES = {
    "paper GMF-32, 20 epochs": ["--model", "gmf", "--factors", "32", "--optimizer", "adam",
                                "--lr", "0.001", "--batch-size", "1024",
                                "--num-negatives", "4", "--epochs", "20"],
    "paper NeuMF-8, 20 epochs": ["--model", "neumf", "--factors", "8", "--layers",
                                 "64,32,16,8", "--optimizer", "adam", "--lr", "0.001",
                                 "--batch-size", "256", "--num-negatives", "4",
                                 "--epochs", "20"],
}


def derive(ratings: Path, out: Path, min_rating: int, user_fraction: float, seed: int) -> Path:
    df = pd.read_csv(ratings, sep="::", engine="python", header=None,
                     names=["user", "item", "rating", "timestamp"])
    df = df[df["rating"] >= min_rating]
    users = df["user"].unique()
    keep = np.random.default_rng(seed).choice(users, int(len(users) * user_fraction),
                                              replace=False)
    df = df[df["user"].isin(keep)]
    df.to_csv(out, index=False, header=["userId", "movieId", "rating", "timestamp"])
    print(f"data: {out}: {df['user'].nunique()} users, {df['item'].nunique()} items, "
          f"{len(df)} interactions (ratings >= {min_rating}, {user_fraction:.0%} of users)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratings", required=True, help="a GroupLens ratings.dat")
    ap.add_argument("--time-budget", default="5m")
    ap.add_argument("--min-rating", type=int, default=4)
    ap.add_argument("--user-fraction", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0, help="users kept, split and training")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the baselines")
    ap.add_argument("--skip-baselines", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        data = derive(Path(args.ratings), Path(scratch) / "likes.csv", args.min_rating,
                      args.user_fraction, args.seed)
        t = time.perf_counter()
        summaries = search.run_chain(SPACE, data_source=str(data), seed=args.seed,
                                     results_dir=Path(scratch) / "results",
                                     time_budget=args.time_budget)
        best = results.best_stage(summaries)
        rows.append((f"ncf_tune search, --time-budget {args.time_budget} (best: {best.stage})",
                     best.test_hr, best.test_ndcg, time.perf_counter() - t))
        for s in summaries:
            rows.append((f"  its {s.stage} stage winner", s.test_hr, s.test_ndcg,
                         s.wall_seconds))
        for name, argv in ({} if args.skip_baselines else BASELINES).items():
            t = time.perf_counter()
            with redirect_stdout(io.StringIO()):
                out = train_cli.run([*argv, "--data", str(data), "--seed", str(args.seed),
                                     "--threads", str(args.threads), "--keep", "last",
                                     "--out", str(Path(scratch) / name.split()[1].strip(","))])
            rows.append((name, out["test_hr"], out["test_ndcg"], time.perf_counter() - t))
    print(f"\n{'model':58} {'test HR@10':>10} {'NDCG@10':>8} {'seconds':>8}")
    for name, hr, ndcg, seconds in rows:
        print(f"{name:58} {hr:10.4f} {ndcg:8.4f} {seconds:8.0f}")
    print(json.dumps({name: [round(hr, 4), round(ndcg, 4)] for name, hr, ndcg, _ in rows}))


if __name__ == "__main__":
    main()
