"""Seconds to recommend the top 10 unseen items for every user, and to evaluate by full
ranking, on ML-1M (6,040 users x 3,706 items), on the CPU.

    python benchmarks/recommend_speed.py                       # ml-1m from $NCF_TUNE_DATA
    python benchmarks/recommend_speed.py --data path/to/ml-1m/ratings.dat --threads 1
    python benchmarks/recommend_speed.py --data ml20m-shape.csv --models GMF-64 --threads 2

--data: any source ncf_tune.data.load takes (default ml-1m: the ratings file in the
  cache folder, $NCF_TUNE_DATA or ~/.cache/ncf_tune, downloaded once if it is not there).
The models are freshly initialised: the time does not depend on what they learned.

Targets (one core): every ML-1M user's top 10 in seconds (`python -m ncf_tune.recommend
--all-users`, data loading included); full-ranking evaluation of every user for GMF-64
in under 10 s. ML-20M's 138k users (2 cores): the CLI within 120 s. The CLI is timed
twice: the first run parses a large source and caches it (cache.py, in a temporary
$NCF_TUNE_CACHE), the second loads it from there, as every later run does.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from ncf_tune import checkpoint, data, ranking
from ncf_tune import recommend as rec
from ncf_tune.config import TrainConfig
from ncf_tune.models import build

CASES = [  # (label, config): the paper's sizes, and a NeuMF as wide as the shipped one's
    ("GMF-64", TrainConfig(model="gmf", factors=64)),
    ("MLP-8 (64,32,16,8)", TrainConfig(model="mlp", layers=(64, 32, 16, 8))),
    ("NeuMF-8", TrainConfig(model="neumf", factors=8, layers=(64, 32, 16, 8))),
    ("NeuMF-64", TrainConfig(model="neumf", factors=64, layers=(256, 128, 64))),
]


def time_case(label: str, cfg: TrainConfig, inter: data.Interactions, split: data.Split,
              folder: Path) -> dict:
    """Seconds for: the checkpoint in and every user's top 10 out (scoring and masking),
    rendering them as jsonl, full ranking of the test items, and the whole CLI
    (`python -m ncf_tune.recommend --all-users --format jsonl --out FILE`, data included)."""
    torch.manual_seed(0)
    model = build(cfg.model, split.num_users, split.num_items, cfg.factors, cfg.layers)
    path = checkpoint.save(folder / "m.pt", model, None, cfg, 1, split.num_users,
                           split.num_items, ids=split.ids)
    t0 = time.perf_counter()
    ck = checkpoint.load(path)
    top = rec.recommend(ck, inter, None, k=10)
    t1 = time.perf_counter()
    text = rec.render(top, "jsonl")
    t2 = time.perf_counter()
    full = ranking.FullRanking(split, "test")
    hr, ndcg = full(model)
    t_full = time.perf_counter()
    cli = []
    for _ in range(2):
        t3 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # its own timing line
            rec.run(["--model", str(path), "--all-users", "--format", "jsonl", "--out",
                     str(folder / "top10.jsonl"), "--device", "cpu", "--data", inter.source])
        cli.append(time.perf_counter() - t3)
    return {"model": label, "recommend_s": round(t1 - t0, 2), "render_s": round(t2 - t1, 2),
            "full_eval_s": round(t_full - t2, 2), "cli_first_s": round(cli[0], 2),
            "cli_s": round(cli[1], 2),
            "users": len(top.users),
            "jsonl_mb": round(len(text) / 1e6, 1), "full_test_hr": round(hr, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="ml-1m", help="default ml-1m (from $NCF_TUNE_DATA)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="one JSON line per model")
    p.add_argument("--models", nargs="+", choices=[label for label, _ in CASES],
                   help="only these (default: all)")
    args = p.parse_args()
    os.environ.setdefault("NCF_TUNE_CACHE", tempfile.mkdtemp(prefix="ncf_tune_cache_"))
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    inter = data.load(args.data)
    t1 = time.perf_counter()
    split = data.split(inter)
    t2 = time.perf_counter()
    print(f"{args.data}: {inter.num_users} users x {inter.num_items} items, "
          f"{len(inter.users)} interactions; load {t1 - t0:.2f} s, split {t2 - t1:.2f} s; "
          f"{args.threads} thread(s)")
    if not args.json:
        print(f"{'model':<20} {'recommend all':>14} {'render jsonl':>13} {'full eval':>10} "
              f"{'CLI, first':>10} {'whole CLI':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for label, cfg in CASES:
            if args.models and label not in args.models:
                continue
            row = time_case(label, cfg, inter, split, Path(folder))
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{label:<20} {row['recommend_s']:>12.2f} s {row['render_s']:>11.2f} s "
                      f"{row['full_eval_s']:>8.2f} s {row['cli_first_s']:>8.2f} s "
                      f"{row['cli_s']:>8.2f} s")


if __name__ == "__main__":
    main()
