"""`python -m ncf_tune.search`: tune a chain of stages with Ray Tune, Optuna and ASHA.

    python -m ncf_tune.search --space search_spaces/neumf.yaml
    python -m ncf_tune.search --space search_spaces/neumf.yaml --time-budget 10m
    python -m ncf_tune.search --space search_spaces/neumf.yaml --num-samples 4 --max-epochs 3

Running a file runs the stages it is pretrained from first (GMF, MLP, then NeuMF), or
reuses their results when the same stage already ran on the same data (chain.py). Each
stage is one Tuner (stage.py): OptunaSearch (TPE) proposes configs, ASHA stops weak
trials at epoch rungs, trials run side by side on the CPUs/GPUs Ray sees (cluster.py).
The winner of a stage is its best epoch over all trials by validation metric; its
checkpoint starts the next stage, and its test score is computed once. This module is
the command line; `run_chain` is the same search for a program or a notebook.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ncf_tune.chain import run_chain
from ncf_tune.cli import Parser, guarded, positive_int
from ncf_tune.durations import parse_duration
from ncf_tune.stage import SearchInterrupted

__all__ = ["run_chain", "SearchInterrupted", "main", "parser"]


def duration(text: str) -> str:
    """argparse type: a --time-budget, checked at parse time, kept as the user wrote it."""
    import argparse

    if text.lower() == "none":
        return "none"
    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def parser() -> Parser:
    p = Parser(prog="python -m ncf_tune.search", description=__doc__.split("\n\n")[0])
    p.add_argument("--space", required=True, help="a stage's YAML file (search_spaces/*.yaml)")
    p.add_argument("--data", help="data source for every stage (overrides the files')")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--experiment", help="subfolder name (default <stage>-<data>)")
    p.add_argument("--num-samples", type=positive_int, help="trials per stage, every stage")
    p.add_argument("--max-epochs", type=positive_int, help="epochs per trial, every stage")
    p.add_argument("--seed", type=int, help="data split and training seed, every stage")
    p.add_argument("--time-budget", type=duration, metavar="DURATION",
                   help="the whole search, data loading included, ends within this (90s, "
                   "10m, 2h; default: the space file's time_budget; none: no budget); "
                   "shared over the stages by their budget_share")
    p.add_argument("--no-recipes", action="store_true",
                   help="ignore every stage's searcher.points_to_evaluate: the search alone "
                   "finds the model")
    p.add_argument("--cpus", type=positive_int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--gpus", type=int, help="GPUs for a local Ray (default: all)")
    p.add_argument("--address", help="join a running Ray cluster: auto or ray://host:10001")
    p.add_argument("--storage", help="trials, checkpoints and hand-offs: a folder every node "
                   "can reach, or s3://, gs://, file:// (default: under --results)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search")
    p.add_argument("--force", action="store_true", help="rerun stages even if results exist")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code = guarded(lambda: _main(args), interrupted="stopped before the search finished; run "
                   "the same command with --resume to go on (finished trials are kept)")
    if code == 130:
        # Stopped mid-stage: Tune's state is on disk and Ray is shut down; do not let a
        # lingering library thread keep the process alive.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(args: Any) -> int:
    run_chain(args.space, data_source=args.data, results_dir=args.results,
              experiment=args.experiment, num_samples=args.num_samples,
              max_epochs=args.max_epochs, seed=args.seed, time_budget=args.time_budget,
              no_recipes=args.no_recipes, cpus=args.cpus, gpus=args.gpus,
              address=args.address, storage=args.storage, resume=args.resume,
              force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
