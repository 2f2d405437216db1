"""Cost-aware starts: a stage's recipes whose first report cannot fit its time budget
are not started.

A stage starts with its recipes (`searcher.points_to_evaluate`), which are the best
configs known on ML-1M and often the most expensive: MLP 512-256-128 with 8 negatives.
On ML-20M such a recipe's first report (2^20 positives and their negatives, then
validation) takes longer than a 20-minute search gives the MLP stage, and the trial
would hold a CPU until the budget's cut for a barely trained model. Before the stage
starts, each recipe's first report is timed (`first_report_seconds`: a few batches of
training, a few thousand negatives drawn, validation on a few hundred users, scaled)
and a recipe estimated at more than SLACK times the stage's budget is dropped, with a
line that says why; the searcher proposes in its place. The probe runs eagerly where
trials may compile their steps (fused.py) and so reads slow: SLACK keeps recipes that
might fit.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from ncf_tune import eval_sample, sampling, spaces, training
from ncf_tune.budget import cheapest_config
from ncf_tune.config import TrainConfig
from ncf_tune.data import EvalSet, Split
from ncf_tune.models import build
from ncf_tune.sampling import EpochData, NegativeSampler

SLACK = 2.0  # drop a recipe estimated at more than this many times the stage's budget
PROBE_BATCHES = 4
PROBE_USERS = 256


def first_report_seconds(cfg: TrainConfig, split: Split, sampler: NegativeSampler,
                         threads: int = 1) -> float:
    """Seconds from a trial's start of `cfg` to its first report on `split`: one report's
    rows sampled and trained (one epoch's below sampling.REPORT_POSITIVES) and one
    validation, timed on a few batches and users with `threads` torch threads."""
    model = build(cfg.model, split.num_users, split.num_items, cfg.factors, cfg.layers,
                  cfg.dropout, cfg.init_std, cfg.biases, cfg.dot_product)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        plan = sampling.plan(len(split.train_users), cfg.num_negatives)
        lo, hi = plan.chunk_bounds(0)
        report_rows = (hi - lo) * (plan.chunks // plan.parts) * (1 + cfg.num_negatives)
        n = min(report_rows, PROBE_BATCHES * cfg.batch_size)
        gen = torch.Generator().manual_seed(0)
        positives = torch.arange(min(hi - lo, math.ceil(n / (1 + cfg.num_negatives))))
        t0 = time.perf_counter()
        rows = sampler.chunk(positives, cfg.num_negatives, gen)
        sample_s = (time.perf_counter() - t0) * report_rows / max(len(rows), 1)
        probe = EpochData(rows.users[:n], rows.items[:n], rows.labels[:n])
        optimizer = training.build_optimizer(model, cfg)
        training.train_epoch(model, optimizer, probe, cfg, 0, gen, run_steps=0)  # warm-up
        t0 = time.perf_counter()
        training.train_epoch(model, optimizer, probe, cfg, 0, gen, run_steps=0)
        train_s = (time.perf_counter() - t0) * report_rows / n
        users = eval_sample.user_sample(split.validation, eval_sample.VALIDATION_USERS,
                                        split.seed)
        few = EvalSet(users.users[:PROBE_USERS], users.candidates[:PROBE_USERS])
        t0 = time.perf_counter()
        training.evaluate(model, few)
        eval_s = (time.perf_counter() - t0) * len(users) / max(len(few), 1)
    finally:
        torch.set_num_threads(before)
    return sample_s + train_s + eval_s


def fitting_points(stage: spaces.Stage, param_space: dict[str, Any], split: Split,
                   budget_s: float) -> tuple[list[int], list[str]]:
    """Which of the stage's recipes (indices into `searcher.points_to_evaluate`) to
    start under a budget of `budget_s` seconds, and a line for each one dropped. A
    stage built from pretrained ones (its first report is a validation) keeps all."""
    points = stage.searcher.points_to_evaluate
    if not points or stage.starts_pretrained:
        return list(range(len(points))), []
    sampler = NegativeSampler(split.train_users, split.train_items, split.num_items)
    fixed = {k: v for k, v in param_space.items() if k in TrainConfig.__dataclass_fields__
             and not k.startswith("pretrain_")}
    base = cheapest_config(stage).to_dict()
    kept, dropped = [], []
    for i, point in enumerate(points):
        values = {**base, **fixed, **point}
        try:
            cfg = TrainConfig.from_dict(values, where=str(stage.path))
        except Exception:  # noqa: BLE001 - an estimate: a recipe it cannot build is kept
            kept.append(i)
            continue
        if cfg.optimizer == "als":  # no batches to time: a sweep is kept (seconds on ML-1M)
            kept.append(i)
            continue
        seconds = first_report_seconds(cfg, split, sampler, max(1, math.ceil(stage.cpu)))
        if seconds > SLACK * budget_s:
            shown = ", ".join(f"{k}={v}" for k, v in point.items())
            dropped.append(f"[{stage.name}] recipe {shown} not started: its first report "
                           f"takes about {seconds:.0f} s here, the stage has {budget_s:.0f} s")
        else:
            kept.append(i)
    return kept, dropped

