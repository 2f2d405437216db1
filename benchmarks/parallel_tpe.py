"""Does TPE still beat random search when trials run side by side?

    python benchmarks/parallel_tpe.py --data ../shared/data/ml-1m --parallel 8 --seeds 0 1 2

On a machine with k trial slots, k trials are running whenever the searcher is asked
for the next: it must propose without their results. This drives the stage's own
searcher (`stage.make_searcher`: Ray Tune's OptunaSearch over the space, TPE with the
constant liar), without Ray, as k equally long trials would: k proposals are pending at
every moment, and a finished trial is told its best epoch's score before the next is
asked. Each trial trains its config with `training.fit` for --epochs (its cosine ends
there) on --data.

Arms, each with the same trials (--trials), epochs and data, per seed:
  random          Optuna's RandomSampler on the same space
  tpe, 1 at once  TPE told every result before the next proposal (k = 1)
  tpe, k at once  TPE with k pending, constant liar on (what a search runs)
  no liar         the same without the constant liar (each pending trial ignored)
Recipes (`points_to_evaluate`) are left out: the samplers alone are compared. Printed:
the best validation NDCG@10 found after n trials, mean over the seeds, for every arm.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque
from pathlib import Path

import optuna
import torch

from ncf_tune import data, spaces, stage, training
from ncf_tune.config import TrainConfig

SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "gmf.yaml"


def sampler_for(arm: str, st: spaces.Stage, seed: int) -> optuna.samplers.BaseSampler:
    if arm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=arm != "no liar",
                                      n_startup_trials=st.searcher.n_startup_trials)


def run_arm(arm: str, parallel: int, st: spaces.Stage, split: data.Split, trials: int,
            seed: int) -> list[float]:
    """Each trial's best validation NDCG@10, in the order the trials finished."""
    searcher = stage.make_searcher(st, sampler_for(arm, st, seed))
    fixed = {**st.fixed_space(), **stage.stage_config(st, {})}
    pending: deque[tuple[str, dict]] = deque()
    scores: list[float] = []
    asked = 0
    while len(scores) < trials:
        while len(pending) < parallel and asked < trials:
            trial_id = f"t{asked}"
            pending.append((trial_id, searcher.suggest(trial_id)))
            asked += 1
        trial_id, config = pending.popleft()  # equal lengths: the oldest ends first
        merged = {k: v for k, v in {**fixed, **config}.items() if "@" not in k}
        cfg = TrainConfig.from_dict(merged, where="trial config")
        epoch = training.fit(cfg, split).best(st.metric)  # None: every epoch diverged
        best = 0.0 if epoch is None else getattr(epoch, st.metric)
        searcher.on_trial_complete(trial_id, {f"best_{st.metric}": best})
        scores.append(best)
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="data source (as a space's data:)")
    ap.add_argument("--space", default=str(SPACE), help="one stage's space file")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    ap.add_argument("--parallel", type=int, default=8, help="trials running at once")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (one per trial)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = spaces.parse(Path(args.space), {"data": args.data, "max_epochs": args.epochs,
                                         "no_recipes": True})
    split = data.prepare(st.data, seed=st.seed)
    k = args.parallel
    arms = [("random", 1), ("tpe", 1), ("tpe", k), ("no liar", k)]
    labels = ["random", "tpe, 1 at once", f"tpe, {k} at once", f"tpe, {k} at once, no liar"]
    found: dict[str, list[list[float]]] = {label: [] for label in labels}
    t0 = time.perf_counter()
    for seed in args.seeds:
        for (arm, parallel), label in zip(arms, labels, strict=True):
            scores = run_arm(arm, parallel, st, split, args.trials, seed)
            running = [max(scores[:n]) for n in range(1, len(scores) + 1)]
            found[label].append(running)
            print(f"seed {seed} {label:28} best {running[-1]:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    marks = sorted({n for n in (k, 2 * k, args.trials) if n <= args.trials})
    print(f"\n{st.path.name}, {args.epochs} epochs a trial, {args.trials} trials, seeds "
          f"{args.seeds}: best validation NDCG@10 after n trials (mean, min over seeds)")
    print(f"{'arm':30}" + "".join(f"{f'n={n}':>18}" for n in marks))
    for label, runs in found.items():
        cells = "".join(f"{statistics.mean(r[n - 1] for r in runs):>10.4f} "
                        f"({min(r[n - 1] for r in runs):.4f})" for n in marks)
        print(f"{label:30}{cells}")


if __name__ == "__main__":
    main()
