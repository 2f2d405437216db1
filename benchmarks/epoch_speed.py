"""Seconds per epoch phase (sampling, training, evaluation) on ML-1M, beside the bare loop.

    python benchmarks/epoch_speed.py --data ../shared/data/ml-1m --bench ../shared/bench
    python benchmarks/epoch_speed.py --data ../shared/data/ml-1m --bench ../shared/bench --reference

--data: the paper split folder (or any source ncf_tune.data.load takes).
--bench: the folder with bare_loop.py (and reference_baseline.py); default $NCF_TUNE_BENCH.
  bare_loop.py runs in this same invocation for the same model and batch, so the
  training ratio compares two runs on the same machine at the same time.
--reference: also time the reference notebook's GMF-8 epoch (about 2 minutes); needs
  a ratings.dat beside the split (--ratings, default DATA/ratings.dat).

Targets (2-core machine): sampling <= 1 s, training <= 1.25 x bare loop,
evaluation <= 50 ms, a whole GMF-8 epoch >= 20 x faster than the notebook's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from ncf_tune import data, training
from ncf_tune.config import TrainConfig
from ncf_tune.models import build
from ncf_tune.sampling import NegativeSampler

CASES = [  # (label, model, factors, layers): the bare loop's GMF-d and NeuMF-d shapes
    ("GMF-8", "gmf", 8, (16, 8)),
    ("NeuMF-8", "neumf", 8, (16, 32, 16, 8)),
    ("NeuMF-64", "neumf", 64, (128, 256, 128, 64)),
]


def ours(split: data.Split, model_name: str, factors: int, layers: tuple[int, ...],
         batch: int, epochs: int) -> dict:
    cfg = TrainConfig(model=model_name, factors=factors, layers=layers, batch_size=batch)
    torch.manual_seed(0)
    model = build(model_name, split.num_users, split.num_items, factors, layers)
    opt = training.build_optimizer(model, cfg)
    sampler = NegativeSampler(split.train_users, split.train_items, split.num_items)
    runs = []
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(epoch)
        t0 = time.perf_counter()
        rows = sampler.epoch(cfg.num_negatives, g)
        t1 = time.perf_counter()
        training.train_epoch(model, opt, rows, cfg, epoch, g)
        t2 = time.perf_counter()
        training.evaluate(model, split.validation)
        t3 = time.perf_counter()
        runs.append({"sample_s": t1 - t0, "train_s": t2 - t1, "eval_s": t3 - t2,
                     "samples": len(rows)})
    best = min(runs, key=lambda r: r["sample_s"] + r["train_s"] + r["eval_s"])
    return best


def bare(bench: Path, model_name: str, factors: int, batch: int) -> float | None:
    out = subprocess.run([sys.executable, str(bench / "bare_loop.py"),
                          "gmf" if model_name == "gmf" else "neumf", str(factors), str(batch)],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"([\d.]+) M samples/s", out)
    return float(m.group(1)) * 1e6 if m else None


def reference(bench: Path, ratings: Path) -> dict:
    out = subprocess.run([sys.executable, str(bench / "reference_baseline.py"), str(ratings),
                          "--model", "gmf", "--epochs", "1"], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["epochs"][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--bench", default=os.environ.get("NCF_TUNE_BENCH"))
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=2, help="ours: the fastest of N epochs")
    ap.add_argument("--reference", action="store_true")
    ap.add_argument("--ratings", help="ratings.dat for --reference (default DATA/ratings.dat)")
    args = ap.parse_args()
    bench = Path(args.bench) if args.bench else None
    t = time.perf_counter()
    split = data.prepare(args.data, seed=0)
    print(f"data: {split.name}, {len(split.train_users)} train positives, "
          f"prepared in {time.perf_counter() - t:.2f} s; torch threads {torch.get_num_threads()}")
    print(f"{'case':10} {'batch':>6} {'sample s':>9} {'train s':>8} {'eval ms':>8} "
          f"{'M samp/s':>9} {'bare M/s':>9} {'train/bare':>10}")
    gmf_epoch = None
    for label, model_name, factors, layers in CASES:
        r = ours(split, model_name, factors, layers, args.batch, args.epochs)
        rate = r["samples"] / r["train_s"]
        bare_rate = bare(bench, model_name, factors, args.batch) if bench else None
        ratio = f"{bare_rate / rate:10.2f}" if bare_rate else f"{'-':>10}"
        bare_txt = f"{bare_rate / 1e6:9.2f}" if bare_rate else f"{'-':>9}"
        print(f"{label:10} {args.batch:6d} {r['sample_s']:9.2f} {r['train_s']:8.2f} "
              f"{r['eval_s'] * 1000:8.1f} {rate / 1e6:9.2f} {bare_txt} {ratio}", flush=True)
        if label == "GMF-8":
            gmf_epoch = r["sample_s"] + r["train_s"] + r["eval_s"]
    if args.reference and bench:
        ratings = Path(args.ratings) if args.ratings else Path(args.data) / "ratings.dat"
        ref = reference(bench, ratings)
        ref_epoch = ref["sample_s"] + ref["train_s"] + ref["eval_s"]
        print(f"reference notebook GMF-8 epoch: sampling {ref['sample_s']:.1f} s, training "
              f"{ref['train_s']:.1f} s, evaluation {ref['eval_s']:.2f} s = {ref_epoch:.1f} s; "
              f"ours {gmf_epoch:.2f} s: {ref_epoch / gmf_epoch:.1f}x faster")


if __name__ == "__main__":
    main()
