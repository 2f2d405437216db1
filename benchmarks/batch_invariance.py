"""Batch size as a speed knob: a shipped recipe trained at two batch sizes, lr scaled.

    python benchmarks/batch_invariance.py --data ../shared/data/ml-1m
    python benchmarks/batch_invariance.py --data ../shared/data/ml-1m --stage mlp --epochs 4

Takes the first recipe trained in batches (searcher.points_to_evaluate; ALS skipped) of
a shipped space file with the file's fixed params, sets `lr_batch` to the recipe's own
batch size, and trains it at each --batches size with nothing else changed
(training.batch_lr scales lr: linearly for SGD, by the square root for Adam). The cosine
schedule ends at --epochs. Prints one JSON line per batch size (best validation NDCG@10
and HR@10, their epochs, seconds per epoch, the curve) and a last line with the largest
gap in best NDCG@10 against the first batch size.

On a GPU (`--device cuda --epochs 2 --batches 65536`) it times the recipes' epochs
(gpu_check.sh). Goals for batch invariance: the GMF recipe within 0.005 over 12 epochs, the
MLP recipe within 0.01 over 4 epochs, at 4096 and 65536.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ncf_tune import data, spaces, training
from ncf_tune.config import TrainConfig

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


def recipe(stage_name: str, epochs: int) -> TrainConfig:
    """The stage file's first recipe, with its fixed params, for `epochs` epochs."""
    stage = spaces.parse(SPACES / f"{stage_name}.yaml")
    # the first recipe trained in batches (an ALS recipe has none)
    point = next({k.split("@")[0]: v for k, v in p.items()} for p in stage.optuna_points()
                 if p.get("optimizer") != "als")
    values = {**stage.fixed_space(), **point, "model": stage.model, "epochs": epochs}
    cfg = TrainConfig.from_dict(values, where=f"{stage_name}.yaml")
    return cfg.replace(lr_batch=cfg.lr_batch or cfg.batch_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the NCF paper split folder, or ml-1m")
    ap.add_argument("--stage", choices=("gmf", "mlp"), default="gmf")
    ap.add_argument("--epochs", type=int, default=None, help="default: 12 for gmf, 4 for mlp")
    ap.add_argument("--batches", type=int, nargs="+", default=[4096, 65536])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a trial's: 1)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config keys changed at every batch size but the first (e.g. "
                    "warmup_epochs=1), to try a rule")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    epochs = args.epochs or (12 if args.stage == "gmf" else 4)
    base = recipe(args.stage, epochs)
    split = data.prepare(args.data, seed=base.seed)
    device = training.choose_device(args.device)
    best = []
    changes = dict(kv.split("=", 1) for kv in args.set)
    for n, batch in enumerate(args.batches):
        cfg = base.replace(batch_size=batch)
        if n and changes:
            cfg = TrainConfig.from_dict({**cfg.to_dict(), **changes}, where="--set")
        t0 = time.perf_counter()
        fit = training.fit(cfg, split, device)
        top = fit.best("ndcg")
        best.append(top.ndcg)
        print(json.dumps({"stage": args.stage, "batch": batch, "lr_batch": cfg.lr_batch,
                          **({"set": changes} if n and changes else {}),
                          "lr": round(training.batch_lr(cfg), 6), "epochs": epochs,
                          "best_ndcg": round(top.ndcg, 4), "best_hr": round(top.hr, 4),
                          "best_epoch": top.epoch,
                          "s_per_epoch": round((time.perf_counter() - t0) / epochs, 2),
                          "fastest_epoch_s": round(min(r.seconds for r in fit.history), 3),
                          "device": str(device),
                          "curve": [round(r.ndcg, 4) for r in fit.history]}),
              flush=True)
    print(json.dumps({"stage": args.stage, "max_gap_ndcg": round(
        max(abs(b - best[0]) for b in best), 4)}))


if __name__ == "__main__":
    main()
