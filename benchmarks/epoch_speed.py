"""Seconds per epoch of the two CPU workloads: the engine before fused steps, now, eager.

    python benchmarks/epoch_speed.py --data ../shared/data/ml-1m --bench ../shared/bench
    NCF_TUNE_DATA=../shared/data/ml-1m python benchmarks/epoch_speed.py --workloads mf

Workloads (the paper's ML-1M split, 8 negatives, batch 4096):
  mf   GMF-64 as MF: dot product, biases, plain SGD, embedding L2 (paper_configs/gmf.yaml)
  mlp  MLP 512-256-128, bf16 autocast, Adam, cosine, biases, embedding L2
  mf-adam (only when asked) the mf GMF trained with Adam and a cosine, through autograd

Each workload is trained by `training.fit` in a fresh process per engine, one after the
other in the same run, `--rounds` times (interleaved, so a busy machine slows all alike):
  before  the engine at commit --before (default c1849de), a `git archive` copy in a
          temporary folder
  fused   this checkout, NCF_TUNE_COMPILE=on
  eager   this checkout, NCF_TUNE_COMPILE=off (what runs where compiling fails)
An engine's epoch is its fastest epoch after the first (sampling + training +
validation; with --epochs 1, the first less its compile seconds), over the rounds; "1st"
is its first epoch as it was, compiling included.
Compile seconds are also measured on their own: "cold" with an empty inductor cache,
"warm" from the cache a previous process left (what a search's later trials pay).
`--bench` (default $NCF_TUNE_BENCH): the folder with bare_loop.py, whose GMF-64 epoch
(plain PyTorch, autograd and Adam, random rows) is printed beside the MF workload,
scaled to its rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {
    "mf": dict(model="gmf", factors=64, dot_product=True, biases=True, init_std=0.1,
               num_negatives=8, optimizer="sgd", momentum=0.0, batch_size=4096, lr=8.192,
               embedding_l2=0.0025),
    "mlp": dict(model="mlp", layers=[512, 256, 128], biases=True, num_negatives=8,
                embedding_l2=0.01, lr=0.003, batch_size=4096, lr_schedule="cosine",
                precision="bf16", optimizer="adam"),
    # The same GMF with Adam, through autograd (printed only when asked)
    "mf-adam": dict(model="gmf", factors=64, dot_product=True, biases=True, init_std=0.1,
                    num_negatives=8, optimizer="adam", batch_size=4096, lr=0.002,
                    embedding_l2=0.0025, lr_schedule="cosine"),
}
LABELS = {"mf": "GMF-64 as MF, plain SGD", "mlp": "MLP 512-256-128, bf16, Adam, cosine",
          "mf-adam": "GMF-64 as MF, Adam, cosine"}


def worker(args: argparse.Namespace) -> None:
    """Train one workload with whichever ncf_tune PYTHONPATH gives; print one JSON line."""
    import torch

    from ncf_tune import data, training
    from ncf_tune.config import TrainConfig

    torch.set_num_threads(args.threads)
    split = data.prepare(args.data, seed=0)
    cfg = TrainConfig.from_dict({**WORKLOADS[args.worker], "epochs": args.epochs})
    if args.compile_only:
        print(json.dumps({"compile_s": compile_only(cfg, split)}), flush=True)
        return
    result = training.fit(cfg, split)
    print(json.dumps({
        "epochs": [dict(seconds=r.seconds, sample=r.sample_seconds, train=r.train_seconds,
                        eval=r.eval_seconds, loss=r.loss, ndcg=r.ndcg)
                   for r in result.history],
        "compile_s": _compile_seconds(), "rows": len(split.train_users)
        * (1 + cfg.num_negatives), "threads": torch.get_num_threads()}), flush=True)


def compile_only(cfg, split) -> float:
    """Seconds to compile the workload's step (its first call: compiling and one step)."""
    import torch

    from ncf_tune import training
    from ncf_tune.models import build
    from ncf_tune.sampling import EpochData, NegativeSampler

    model = build(cfg.model, split.num_users, split.num_items, cfg.factors, cfg.layers, 0.0,
                  cfg.init_std, cfg.biases, cfg.dot_product)
    opt = training.build_optimizer(model, cfg)
    rows = NegativeSampler(split.train_users, split.train_items, split.num_items).epoch(
        cfg.num_negatives, torch.Generator().manual_seed(0))
    few = EpochData(*(t[:2 * cfg.batch_size] for t in (rows.users, rows.items, rows.labels)))
    training.train_epoch(model, opt, few, cfg, 0, torch.Generator().manual_seed(0))
    return _compile_seconds()


def _compile_seconds() -> float:
    try:
        from ncf_tune import steps
    except ImportError:  # the engine before fused steps
        return 0.0
    return sum(c.compile_seconds for c in steps.compiled_steps().values())


def run_worker(workload: str, pythonpath: Path, env: dict[str, str], args: argparse.Namespace,
               *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", workload, "--data", args.data,
           "--epochs", str(args.epochs), "--threads", str(args.threads), *extra]
    env = {**os.environ, **env, "PYTHONPATH": str(pythonpath),
           "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"{workload} worker failed with exit code {out.returncode} (negative: killed "
                 f"by that signal), PYTHONPATH={pythonpath}, {env.get('NCF_TUNE_COMPILE')}:\n"
                 f"{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def checkout(rev: str, into: Path) -> Path:
    """ncf_tune as it was at `rev`, unpacked under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "ncf_tune"],
                             capture_output=True, check=False)
    if archive.returncode:
        sys.exit(f"--before {rev}: git archive failed: {archive.stderr.decode().strip()}")
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def bare_loop(bench: Path, threads: int) -> float | None:
    """bare_loop.py's GMF-64 training rate at batch 4096, rows/s."""
    out = subprocess.run([sys.executable, str(bench / "bare_loop.py"), "gmf", "64", "4096"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)}).stdout
    m = re.search(r"([\d.]+) M samples/s", out)
    return float(m.group(1)) * 1e6 if m else None


def steady_epoch(run: dict) -> dict:
    """The fastest epoch after the first (which compiles); with one epoch, the first
    with its compile seconds taken out."""
    if len(run["epochs"]) > 1:
        return min(run["epochs"][1:], key=lambda e: e["seconds"])
    first = dict(run["epochs"][0])
    first["seconds"] -= run["compile_s"]
    first["train"] -= run["compile_s"]
    return first


def steady(run: dict) -> float:
    return steady_epoch(run)["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("NCF_TUNE_DATA"),
                    help="the paper split folder (default $NCF_TUNE_DATA)")
    ap.add_argument("--bench", default=os.environ.get("NCF_TUNE_BENCH"))
    ap.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=["mf", "mlp"])
    ap.add_argument("--epochs", type=int, default=2, help="epochs per engine and round")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--before", default="c1849de", help="the engine to compare against")
    ap.add_argument("--worker", choices=list(WORKLOADS), help=argparse.SUPPRESS)
    ap.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.data:
        ap.error("--data DIR (or NCF_TUNE_DATA) is required")
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        before = checkout(args.before, Path(tmp) / "before")
        cache = {"TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / "inductor")}
        print(f"{time.strftime('%Y-%m-%d %H:%M')}, torch threads {args.threads}, "
              f"{args.epochs} epochs x {args.rounds} rounds per engine; before = {args.before}")
        rate = bare_loop(Path(args.bench), args.threads) if args.bench else None
        for name in args.workloads:
            on = {**cache, "NCF_TUNE_COMPILE": "on"}
            cold = run_worker(name, ROOT, on, args, "--compile-only")["compile_s"]
            warm = run_worker(name, ROOT, on, args, "--compile-only")["compile_s"]
            runs: dict[str, list[dict]] = {"before": [], "fused": [], "eager": []}
            for _ in range(args.rounds):
                runs["before"].append(run_worker(name, before, {}, args))
                runs["fused"].append(run_worker(name, ROOT, on, args))
                runs["eager"].append(run_worker(name, ROOT, {"NCF_TUNE_COMPILE": "off"}, args))
            report(name, runs, cold, warm, rate)


def report(name: str, runs: dict[str, list[dict]], cold: float, warm: float,
           bare_rate: float | None) -> None:
    rows = runs["fused"][0]["rows"]
    print(f"\n{LABELS[name]} ({rows:,} rows an epoch); compile s: cold {cold:.1f}, "
          f"warm {warm:.1f}")
    print(f"{'engine':8} {'epoch s':>8} {'1st s':>7} {'sample s':>8} {'train s':>8} "
          f"{'eval s':>7} {'x before':>8} {'last loss':>9} {'ndcg':>7}")
    base = min(steady(r) for r in runs["before"])
    for engine, done in runs.items():
        best = min(done, key=steady)
        fast = steady_epoch(best)
        last = best["epochs"][-1]
        print(f"{engine:8} {steady(best):8.2f} {best['epochs'][0]['seconds']:7.2f} "
              f"{fast['sample']:8.2f} {fast['train']:8.2f} {fast['eval']:7.2f} "
              f"{base / steady(best):7.2f}x {last['loss']:9.5f} {last['ndcg']:7.4f}")
    if len(runs["before"]) > 1:
        for engine in ("fused", "eager"):
            ratios = [steady(b) / steady(r)
                      for b, r in zip(runs["before"], runs[engine], strict=True)]
            print(f"{engine} x before, round by round: "
                  + ", ".join(f"{x:.2f}" for x in ratios))
    if name == "mf" and bare_rate:
        print(f"bare loop (bare_loop.py gmf 64 4096: autograd, Adam): training "
              f"{rows / bare_rate:.2f} s for as many rows")
    trial = 24
    fused = min(steady(r) for r in runs["fused"])
    print(f"a {trial}-epoch trial: before {trial * base:.0f} s, fused {trial * fused + warm:.0f} s "
          f"with a warm cache, {trial * fused + cold:.0f} s cold")


if __name__ == "__main__":
    main()
