"""How data preparation, sampling, evaluation and a trial's memory grow with the data:
ML-1M, 5M, ML-10M and ML-20M shapes, synthetic, on this machine.

    python benchmarks/scale.py                      # every shape
    python benchmarks/scale.py --shapes ml-1m 5m --trial gmf mlp

For each shape a ratings CSV with that many users, items and interactions (item
popularity skewed like MovieLens) is written to a temporary folder; then a fresh
process runs `ncf_tune.cache.prepare` on it (peak RSS of that process = the memory of
data preparation; the split goes to a temporary cache), draws one epoch of 4 negatives
per positive, and scores GMF-8 on the validation set. Prints seconds and the cost per
million interactions, so linear growth shows as a flat column.

--trial: for each model named, another fresh process loads the cached split (as a
trial receives it), trains that model's config (TRIALS) up to its first report (a
whole epoch on ML-1M, 2^20 positives on larger data: training.py) and prints its time
per training sample, its validation time, and its peak RSS above the RSS it had with the
split loaded (VmHWM - VmRSS: what a trial adds to a node, the split being shared there).
Targets for ML-20M on a 2-core, 24 GiB machine: sampling <= 10 s per epoch,
preparation peak RSS <= 4 GiB, cost no faster than linear in interactions, a trial's
memory and time per sample flat from ML-1M on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHAPES = {  # users, items, interactions (GroupLens' published counts; 5m: in between)
    "ml-1m": (6_040, 3_706, 1_000_209),
    "5m": (35_000, 8_000, 5_000_000),
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


TRIALS = {  # a trial's config per model: the search spaces' first recipes, fewer epochs
    "gmf": {"model": "gmf", "factors": 64, "num_negatives": 4, "batch_size": 4096,
            "lr": 0.001, "epochs": 20},
    # a narrower tower than mlp.yaml's 512-256-128 recipe: the time per sample is the
    # tower's whatever the data; this keeps a shared 2-core machine's run short
    "mlp": {"model": "mlp", "layers": [128, 64, 32], "num_negatives": 4,
            "batch_size": 4096, "lr": 0.003, "epochs": 20},
}


def _status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: now; VmHWM: the peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class _FirstReport(Exception):
    pass


def measure_trial(path: str, model: str) -> dict:
    """Runs in a fresh process: the cached split, then one trial to its first report."""
    import torch

    from ncf_tune import cache, training
    from ncf_tune.config import TrainConfig

    torch.set_num_threads(1)  # a trial's one CPU
    split = cache.prepare(path, seed=0, min_bytes=0)
    loaded = _status_kib("VmRSS")
    cfg = TrainConfig.from_dict(TRIALS[model], where="benchmarks/scale.py")
    first = []

    def stop(res: training.EpochResult, state: training.TrainState) -> None:
        first.append(res)
        raise _FirstReport

    with contextlib.suppress(_FirstReport):
        training.fit(cfg, split, on_epoch=stop)
    res = first[0]
    positives = len(split.train_users) / res.parts
    return {"trial_extra_gib": (_status_kib("VmHWM") - loaded) / 2**20,
            "split_gib": loaded / 2**20, "parts": res.parts,
            "us_per_sample": res.train_seconds / (positives * (1 + cfg.num_negatives)) * 1e6,
            "sample_s": res.sample_seconds, "train_s": res.train_seconds,
            "eval_s": res.eval_seconds}


def measure(path: str) -> dict:
    """Runs in a fresh process: prepare, sample one epoch, evaluate; peak RSS."""
    import torch

    from ncf_tune import cache, training
    from ncf_tune.models import GMF
    from ncf_tune.sampling import NegativeSampler

    t = time.perf_counter()
    split = cache.prepare(path, seed=0, min_bytes=0)
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
    ap.add_argument("--trial", nargs="*", default=[], choices=list(TRIALS),
                    help="also measure a trial of these models up to its first report")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: the child process
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        out = measure_trial(args.measure, args.model) if args.model else measure(args.measure)
        print(json.dumps(out))
        return
    print(f"{'shape':7} {'interactions':>12} {'prepare s':>9} {'peak RSS GiB':>12} "
          f"{'sample s':>9} {'eval s':>7} {'sample s/M':>10} {'prepare s/M':>11}")
    trials = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NCF_TUNE_CACHE": str(Path(tmp) / "cache")}
        for name in args.shapes:
            users, items, n = SHAPES[name]
            path = Path(tmp) / f"{name}.csv"
            rows = write_synthetic(path, users, items, n)
            out = subprocess.run([sys.executable, __file__, "--measure", str(path)],
                                 capture_output=True, text=True, check=True, env=env).stdout
            r = json.loads(out.strip().splitlines()[-1])
            m = rows / 1e6
            print(f"{name:7} {rows:12,d} {r['prepare_s']:9.2f} {r['prepare_peak_rss_gib']:12.2f} "
                  f"{r['sample_s']:9.2f} {r['eval_s']:7.2f} {r['sample_s'] / m:10.3f} "
                  f"{r['prepare_s'] / m:11.3f}", flush=True)
            for model in args.trial:
                out = subprocess.run([sys.executable, __file__, "--measure", str(path),
                                      "--model", model], capture_output=True, text=True,
                                     check=True, env=env).stdout
                trials.append((name, model, json.loads(out.strip().splitlines()[-1])))
            path.unlink()
    if trials:
        print(f"\n{'shape':7} {'trial':5} {'reports/epoch':>13} {'us/sample':>9} "
              f"{'sample s':>8} {'train s':>8} {'eval s':>7} {'trial peak GiB':>14} "
              f"{'loaded GiB':>10}")
        for name, model, t in trials:
            print(f"{name:7} {model:5} {t['parts']:13d} {t['us_per_sample']:9.2f} "
                  f"{t['sample_s']:8.2f} {t['train_s']:8.1f} {t['eval_s']:7.2f} "
                  f"{t['trial_extra_gib']:14.2f} {t['split_gib']:10.2f}")


if __name__ == "__main__":
    main()
