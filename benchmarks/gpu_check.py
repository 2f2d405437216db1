"""Training throughput on one device: GMF-64 and NeuMF-64 at batch 2^14 .. 2^20.

    python benchmarks/gpu_check.py --data ../shared/data/ml-1m          # on a GPU machine
    python benchmarks/gpu_check.py --device cpu --batches 14 --epochs 1  # a smoke run

For each data set (ML-1M from --data, and an ML-20M-shaped synthetic set: 138,493
users, 26,744 items, 20M positives), model and batch size: one warm-up epoch, then
--epochs timed epochs of our engine (exact negatives drawn on the device, 4 per
positive, one shuffle per epoch, contiguous slices), fp32 and bf16 autocast. Prints
one JSON line per case with training samples/s (positives + negatives per second of
the training loop) and sampling seconds per epoch.

The anchor is NVIDIA's NCF for PyTorch: about 34M samples/s on one A100 with AMP for
NeuMF (factors 64, layers 256,256,128,64) on ML-20M, with approximate negatives.
`gpu_check.sh` runs this and a short search with four trials sharing the GPU.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ncf_tune import data, training
from ncf_tune.config import TrainConfig
from ncf_tune.models import build
from ncf_tune.sampling import NegativeSampler

MODELS = {  # NVIDIA's NCF shapes
    "GMF-64": dict(model="gmf", factors=64, layers=(256, 256, 128, 64)),
    "NeuMF-64": dict(model="neumf", factors=64, layers=(256, 256, 128, 64)),
}


def synthetic_20m(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """ML-20M's shape: long-tailed users and items, 20M distinct positives."""
    users, items, n = 138_493, 26_744, 20_000_263
    rng = np.random.default_rng(seed)
    u = np.minimum((rng.pareto(1.5, int(n * 1.1)) * users / 8).astype(np.int64), users - 1)
    i = np.minimum((rng.pareto(1.2, len(u)) * items / 10).astype(np.int64), items - 1)
    keys = np.unique(u * items + i)[:n]
    return (torch.from_numpy(keys // items), torch.from_numpy(keys % items), users, items)


def bench(name: str, users: torch.Tensor, items: torch.Tensor, num_users: int, num_items: int,
          device: torch.device, batches: list[int], epochs: int) -> None:
    sampler = NegativeSampler(users.to(device), items.to(device), num_items, device)
    for label, shape in MODELS.items():
        for log2 in batches:
            for precision in ("fp32", "bf16"):
                cfg = TrainConfig(**shape, batch_size=2 ** log2, lr=0.0045,
                                  precision=precision)
                model = build(cfg.model, num_users, num_items, cfg.factors,
                                       cfg.layers).to(device)
                opt = training.build_optimizer(model, cfg)
                gen = torch.Generator(device=device).manual_seed(0)
                times, sample_s = [], []
                for epoch in range(epochs + 1):  # the first is a warm-up
                    _sync(device)
                    t0 = time.perf_counter()
                    rows = sampler.epoch(cfg.num_negatives, gen)
                    _sync(device)
                    t1 = time.perf_counter()
                    training.train_epoch(model, opt, rows, cfg, epoch, gen)
                    _sync(device)
                    if epoch:
                        times.append(time.perf_counter() - t1)
                        sample_s.append(t1 - t0)
                print(json.dumps({
                    "data": name, "model": label, "batch": f"2^{log2}", "precision": precision,
                    "samples_per_s": round(len(rows) / min(times)),
                    "sampling_s": round(min(sample_s), 3), "rows_per_epoch": len(rows),
                    "device": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else "cpu"}), flush=True)
                del model, opt
                if device.type == "cuda":
                    torch.cuda.empty_cache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="ML-1M: the paper split folder or a ratings file")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batches", type=int, nargs="+", default=[14, 16, 18, 20],
                    help="log2 of the batch sizes")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per case")
    ap.add_argument("--skip-20m", action="store_true")
    args = ap.parse_args()
    device = training.choose_device(args.device)
    if args.data:
        split = data.prepare(args.data)
        bench("ml-1m", split.train_users, split.train_items, split.num_users, split.num_items,
              device, args.batches, args.epochs)
    if not args.skip_20m:
        u, i, nu, ni = synthetic_20m()
        bench("ml-20m-shaped", u, i, nu, ni, device, args.batches, args.epochs)


if __name__ == "__main__":
    main()
