"""Seconds per training epoch of the MF recipe: the hand-written SGD step against autograd.

    python benchmarks/mf_sgd_speed.py --data ../shared/data/ml-1m [--factors 64 128]

The recipe is benchmarks/paper_configs/gmf.yaml (plain SGD on a dot product, 8
negatives, batch 4096), the longest part of the paper table on a CPU. Both paths train
the same epoch (same negatives, same order) from the same weights, in this process one
after the other, and end with the same weights up to float rounding (printed: the
largest difference). ncf_tune uses the hand-written step (ncf_tune/mf_sgd.py) wherever
it applies; autograd is forced here only to compare. Both run eagerly here (compiled,
the same `mf_sgd.step`: benchmarks/epoch_speed.py times it).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from unittest import mock

import torch

from ncf_tune import data, fused, mf_sgd, training
from ncf_tune.config import TrainConfig
from ncf_tune.files import read_yaml_mapping
from ncf_tune.models import build
from ncf_tune.sampling import NegativeSampler

RECIPE = Path(__file__).parent / "paper_configs" / "gmf.yaml"


def train_once(cfg: TrainConfig, split: data.Split, rows, by_hand: bool
               ) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(cfg.seed)
    model = build("gmf", split.num_users, split.num_items, cfg.factors, (), 0.0, cfg.init_std,
                  cfg.biases, cfg.dot_product)
    opt = training.build_optimizer(model, cfg)
    with mock.patch.object(mf_sgd, "applies", return_value=by_hand):
        t = time.perf_counter()
        training.train_epoch(model, opt, rows, cfg, 0, torch.Generator().manual_seed(1))
        seconds = time.perf_counter() - t
    return seconds, model.state_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("NCF_TUNE_PAPER_SPLIT"),
                    help="the paper split folder (default $NCF_TUNE_PAPER_SPLIT)")
    ap.add_argument("--factors", type=int, nargs="+", default=[64, 128])
    args = ap.parse_args()
    if not args.data:
        ap.error("--data DIR (or NCF_TUNE_PAPER_SPLIT) is required")
    torch.set_flush_denormal(True)  # as training.fit does on the CPU
    # Both eager: the compiled MF step is compared in benchmarks/epoch_speed.py.
    os.environ[fused.SWITCH] = "off"
    split = data.prepare(args.data, seed=0)
    recipe = read_yaml_mapping(RECIPE)
    print(f"recipe {RECIPE.name}; torch threads {torch.get_num_threads()}")
    print(f"{'factors':>7} {'rows':>9} {'autograd s':>10} {'by hand s':>9} {'speed-up':>8} "
          f"{'max |diff|':>10}")
    for factors in args.factors:
        cfg = TrainConfig.from_dict({**recipe, "model": "gmf", "factors": factors},
                                    where=str(RECIPE))
        sampler = NegativeSampler(split.train_users, split.train_items, split.num_items)
        rows = sampler.epoch(cfg.num_negatives, torch.Generator().manual_seed(0))
        slow, a = train_once(cfg, split, rows, by_hand=False)
        fast, b = train_once(cfg, split, rows, by_hand=True)
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        print(f"{factors:7d} {len(rows):9d} {slow:10.2f} {fast:9.2f} {slow / fast:7.2f}x "
              f"{diff:10.2e}", flush=True)


if __name__ == "__main__":
    main()
