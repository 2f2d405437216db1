"""A pretrained NeuMF stage scores its mixes before it trains any.

A NeuMF built from trained parts scores, untrained, alpha * GMF + (1 - alpha) * MLP
(models.NeuMF.load_pretrained), and on the paper's ML-1M split that untrained mix is the
stage's winner in every short-budget run. Yet each trial that ASHA lets through its
first rung fine-tunes an epoch (150 s for a 768-384-192 NeuMF on 2 CPU cores), so a
budget could end the stage after two alphas. Scoring a mix needs no trial: the NeuMF's
output is linear in alpha, so its validation scores at alpha = 1 and alpha = 0 (two
validation passes) give every alpha's exactly. The stage then starts its recipes at the
best few alphas (the searcher's points_to_evaluate), and fine-tunes from there.
A validation pass of a 384-factor, 768-384-192 NeuMF costs 3.2 s of one EPYC core, so
the 21 alphas cost about 7 s, against 150 s for one trial's fine-tuning epoch.
Part weights within a side stay equal (alpha / number of GMFs, as load_pretrained has).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from ncf_tune import checkpoint, spaces
from ncf_tune.config import TrainConfig
from ncf_tune.data import Split
from ncf_tune.metrics import from_ranks, positive_rank
from ncf_tune.models import build
from ncf_tune.training import candidate_scores, masked

GRID = 21  # alphas scored across the searched range: a step of 0.05 on [0, 1]


@torch.no_grad()
def score_alphas(cfg: TrainConfig, split: Split, alphas: list[float]
                 ) -> list[tuple[float, float, float]]:
    """(alpha, validation HR@10, NDCG@10) of the untrained NeuMF `cfg` builds from its
    pretrained parts, for each alpha, as a trial's epoch 0 would score it (sampled
    validation; up to float rounding). Costs two validation passes, whatever the count."""
    def scores(alpha: float) -> torch.Tensor:
        model = build(cfg.model, split.num_users, split.num_items, cfg.factors, cfg.layers,
                      0.0, cfg.init_std, cfg.biases)
        checkpoint.load_pretrained(model, cfg.replace(alpha=alpha), split.num_users,
                                   split.num_items)
        return candidate_scores(model, split.validation)

    gmf, mlp = scores(1.0), scores(0.0)
    out = []
    for alpha in alphas:
        mix = masked(alpha * gmf + (1 - alpha) * mlp, split.validation)
        hr, ndcg = from_ranks(positive_rank(mix))
        out.append((alpha, hr, ndcg))
    return out


def seed_best_alphas(stage: spaces.Stage, split: Split, param_space: dict[str, Any],
                     top: int = 2) -> spaces.Stage:
    """`stage` with its recipes (points_to_evaluate) started at the `top` best alphas of
    a grid over its alpha range, scored by `score_alphas`; the stage as it was when it
    does not search alpha over a range, is not pretrained, or has no recipe to start.
    Prints what it found and what it cost."""
    alpha = stage.params.get("alpha")
    points = list(stage.searcher.points_to_evaluate)
    if not stage.starts_pretrained or alpha is None or alpha.kind != "uniform" or not points:
        return stage
    low, high = alpha.args
    grid = [low + (high - low) * i / (GRID - 1) for i in range(GRID)]
    started = time.perf_counter()
    cfg = TrainConfig.from_dict({k: v for k, v in param_space.items()
                                 if k in TrainConfig.__dataclass_fields__},
                                where=str(stage.path))
    scored = score_alphas(cfg, split, grid)
    metric = 2 if stage.metric == "ndcg" else 1
    best = sorted(scored, key=lambda s: -s[metric])[:top]
    seeded = [{**points[i % len(points)], "alpha": round(a, 4)} for i, (a, _, _) in
              enumerate(best)]
    print(f"[{stage.name}] scored {len(grid)} mixes on validation in "
          f"{time.perf_counter() - started:.1f} s; recipes start at alpha "
          + ", ".join(f"{s[0]:.2f} ({stage.metric.upper()}@10 {s[metric]:.4f})"
                      for s in best))
    searcher = dataclasses.replace(stage.searcher,
                                   points_to_evaluate=tuple(seeded) + tuple(points[len(seeded):]))
    return dataclasses.replace(stage, searcher=searcher)
