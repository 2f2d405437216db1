"""How data preparation, sampling and evaluation grow with the data: ML-1M, ML-10M and
ML-20M shapes, synthetic, on this machine.

    python benchmarks/scale.py                      # all three shapes
    python benchmarks/scale.py --shapes ml-1m ml-10m

For each shape a ratings CSV with that many users, items and interactions (item
popularity skewed like MovieLens) is written to a temporary folder; then a fresh
process runs `ncf_tune.data.prepare` on it (peak RSS of that process = the memory of
data preparation), draws one epoch of 4 negatives per positive, and scores GMF-8 on
the validation set. Prints seconds and the cost per million interactions, so linear
growth shows as a flat column.
Targets for ML-20M on a 2-core, 24 GiB machine: sampling <= 10 s per epoch,
preparation peak RSS <= 4 GiB, cost no faster than linear in interactions.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHAPES = {  # users, items, interactions (GroupLens' published counts)
    "ml-1m": (6_040, 3_706, 1_000_209),
    "ml-10m": (69_878, 10_677, 10_000_054),
    "ml-20m": (138_493, 26_744, 20_000_263),
}


def write_synthetic(path: Path, users: int, items: int, n: int, seed: int = 0) -> int:
    """A CSV with about n distinct (user, item) pairs; returns the row count."""
    rng = np.random.default_rng(seed)
    # Users' activity and items' popularity both long-tailed, as in MovieLens.
    u = np.minimum((rng.pareto(1.5, int(n * 1.05)) * users / 8).astype(np.int64), users - 1)
    u = rng.permutation(users)[u]
    i = np.minimum((rng.pareto(1.2, len(u)) * items / 10).astype(np.int64), items - 1)
    i = rng.permutation(items)[i]
    keys = np.unique(u * items + i)[:n]
    frame = pd.DataFrame({"userId": keys // items + 1, "movieId": keys % items + 1,
                          "rating": 4, "timestamp": rng.integers(9.5e8, 1.5e9, len(keys))})
    frame.to_csv(path, index=False)
    return len(frame)


def measure(path: str) -> dict:
    """Runs in a fresh process: prepare, sample one epoch, evaluate; peak RSS."""
    import torch

    from ncf_tune import data, training
    from ncf_tune.models import GMF
    from ncf_tune.sampling import NegativeSampler

    t = time.perf_counter()
    split = data.prepare(path, seed=0)
    prepare_s = time.perf_counter() - t
    rss_prepare = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampler = NegativeSampler(split.train_users, split.train_items, split.num_items)
    gen = torch.Generator().manual_seed(0)
    sampler.epoch(4, gen)  # warm-up
    t = time.perf_counter()
    rows = sampler.epoch(4, gen)
    sample_s = time.perf_counter() - t
    model = GMF(split.num_users, split.num_items, 8)
    training.evaluate(model, split.validation)
    t = time.perf_counter()
    training.evaluate(model, split.validation)
    eval_s = time.perf_counter() - t
    return {"users": split.num_users, "items": split.num_items,
            "train": len(split.train_users), "rows": len(rows), "prepare_s": prepare_s,
            "sample_s": sample_s, "eval_s": eval_s, "eval_users": len(split.validation),
            "prepare_peak_rss_gib": rss_prepare / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: the child process
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    print(f"{'shape':7} {'interactions':>12} {'prepare s':>9} {'peak RSS GiB':>12} "
          f"{'sample s':>9} {'eval s':>7} {'sample s/M':>10} {'prepare s/M':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes:
            users, items, n = SHAPES[name]
            path = Path(tmp) / f"{name}.csv"
            rows = write_synthetic(path, users, items, n)
            out = subprocess.run([sys.executable, __file__, "--measure", str(path)],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            m = rows / 1e6
            print(f"{name:7} {rows:12,d} {r['prepare_s']:9.2f} {r['prepare_peak_rss_gib']:12.2f} "
                  f"{r['sample_s']:9.2f} {r['eval_s']:7.2f} {r['sample_s'] / m:10.3f} "
                  f"{r['prepare_s'] / m:11.3f}", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
