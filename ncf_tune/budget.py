"""`--time-budget`: how long a whole search may take, and how the chain spends it.

The clock starts when the search starts (data loading and Ray's start count). Each
stage, when its turn comes, gets a share of the time then left:

    stage seconds = (time left - a reserve per stage still to run) * its budget_share
                    / (sum of the budget_share of the stages still to run)

so time a stage does not use (it ran out of trials first, or was reused) goes to the
stages after it, and a slow stage cannot eat the time of the next ones. The reserve
(RESERVE_S, 20 s) covers a stage's finishing after Tune stops it: copying the winners,
scoring the test set both ways, writing results; once a stage is seen to need more, the
later stages keep 1.5 times that. A NeuMF stage built from upstream winners knows its
model's shape before it runs: it times scoring such a model (`finish_seconds`) and takes
what that needs beyond the reserve out of its own share, as it is the last stage and no
one after it can absorb an overrun. Inside a stage the budget is Ray Tune's own
timeout (`StageClock`, the stopper `time_budget_s` builds): when it is spent Tune stops
the running trials, and the stage is scored from every epoch its trials finished (ASHA will have cut
the weak ones early, so the time went to the promising ones).

Before anything runs, each stage's share is checked against one epoch of its cheapest
config, timed on this machine on a few batches: a budget that cannot train one epoch
of a stage (plus starting its first trial) is a one-line error that says how much would
do.

`Budget` is the one home of this policy: the shares, the reserve, the finishing
estimates, when a stage has no time left, and what a resumed search gets:

- A stage whose share (once earlier stages overran on a loaded machine) is less than
  starting a trial and one epoch of its cheapest config is skipped, not run: Tune reads
  a time limit of 0 as no limit at all. So are the stages built from a skipped one.
  The chain hands on and reports the winners of the stages that ran.
- `--resume` under a budget: the clock starts again when the search is resumed, and the
  stages still to run share the whole `--time-budget` anew (a finished stage is reused
  at no cost). The interrupted stage is restored with its new share as Tune's limit, in
  place of what was left of the one it started with (Tune restores its stopper). Why
  not what was left when it stopped: a search killed by SIGKILL, a lost node or a
  scheduler's time limit never gets to say when it stopped, and a requeued job has a
  wall-clock limit of its own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from ray.tune.stopper import TimeoutStopper

from ncf_tune import eval_sample, ranking, sampling, spaces, training
from ncf_tune.config import TrainConfig
from ncf_tune.data import Split
from ncf_tune.durations import parse_duration
from ncf_tune.errors import NcfError
from ncf_tune.models import build
from ncf_tune.sampling import EpochData, NegativeSampler, reports_per_epoch

# Per stage, what its time budget does not cover: stopping trials and syncing their
# last checkpoints, copying the winners, scoring the test set, writing the results.
RESERVE_S = 20.0
STARTUP_S = 15.0  # Ray's start, before the first stage
TRIAL_START_S = 10.0  # a stage's first trial: a worker process, torch imported, data fetched
MIN_STAGE_S = 2 * TRIAL_START_S  # a finishing estimate never cuts a stage below this
# Finishing besides test scoring (stopping trials, copying checkpoints, figures, files):
# what RESERVE_S is for. Measured on ML-1M, 2 cores: 13-25 s a stage.
FINISH_FIXED_S = RESERVE_S


@dataclass
class Budget:
    """A search's time budget: `text` as the user gave it, `seconds`, and the monotonic
    clock time it runs out at. `reserve`: what each stage keeps aside, beyond Tune's
    budget, to finish (RESERVE_S, or more once a stage has been seen to need more)."""

    text: str
    seconds: float
    deadline: float
    reserve: float = RESERVE_S
    # Seconds of one epoch of each stage's cheapest config on this machine, by stage
    # name (`check` fills it): a stage with less time than that and a trial's start is
    # skipped.
    epochs: dict[str, float] = field(default_factory=dict)

    def finished(self, stage_budget_s: float, stage_wall_s: float) -> None:
        """Learn from a stage that ran `stage_wall_s` on a budget of `stage_budget_s`:
        finishing (test scoring by full ranking of a wide NeuMF, mostly) can take longer
        than RESERVE_S on a slow or busy machine, and the last stage has no one after it
        to absorb an overrun."""
        self.reserve = max(self.reserve, 1.5 * (stage_wall_s - stage_budget_s))

    @classmethod
    def start(cls, text: str, started: float | None = None) -> Budget:
        seconds = parse_duration(text)
        return cls(text, seconds, (started or time.monotonic()) + seconds)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def stage_seconds(self, stage: spaces.Stage, still_to_run: list[spaces.Stage],
                      left: float | None = None, finish_s: float = 0.0) -> float:
        """The share of the time left for `stage`, the first of `still_to_run`. finish_s:
        what finishing this stage is expected to take (`finish_seconds`); beyond the
        reserve it comes out of the stage's own share, down to MIN_STAGE_S."""
        left = self.left() if left is None else left
        weights = sum(s.budget_share for s in still_to_run)
        share = max(0.0, (left - self.reserve * len(still_to_run)) * stage.budget_share
                    / weights)
        extra = max(0.0, finish_s - self.reserve)
        return max(share - extra, min(share, MIN_STAGE_S))


    def minimum(self, stage: spaces.Stage) -> float:
        """The least a stage can use: starting a trial and one epoch of its cheapest
        config (as timed by `check`)."""
        return TRIAL_START_S + self.epochs.get(stage.name, 0.0)

    def plan(self, stage: spaces.Stage, still_to_run: list[spaces.Stage], split: Split,
             shape: TrainConfig | None = None) -> float | None:
        """Seconds for `stage` (its `StageClock`), the first of `still_to_run`, or
        None when it has no time left: less than `minimum`, so it is skipped (Tune would
        read 0 as no limit). shape: the config its trials get when its model's shape is
        known before it runs (a NeuMF built from upstream winners): finishing it is timed
        (`finish_seconds`) and what that needs beyond the reserve comes out of its share."""
        if self.stage_seconds(stage, still_to_run) < self.minimum(stage):
            return None  # do not time a finish that will not happen
        finish = finish_seconds(shape, split) if shape is not None else 0.0
        seconds = self.stage_seconds(stage, still_to_run, finish_s=finish)
        return seconds if seconds >= self.minimum(stage) else None

    def skip_reason(self, stage: spaces.Stage, still_to_run: list[spaces.Stage]) -> str:
        """Why `plan` gave `stage` no time, in a few words for the console and report."""
        return (f"{max(0.0, self.left()):.0f} s of the {self.text} budget left with "
                f"{len(still_to_run)} stage(s) to run and {self.reserve:.0f} s kept per stage "
                f"to finish: less than starting a trial and one epoch (about "
                f"{self.minimum(stage):.0f} s)")


class StageClock(TimeoutStopper):
    """A stage's share as Tune's stopper: Tune's own TimeoutStopper (it stops every trial
    once `seconds` have passed, counted from Tune's first check, as `time_budget_s`
    does), which also records that it ended the stage, and which a resumed stage can
    give its new share. Tune saves its stopper with its state and restores it on
    `Tuner.restore`, with what was left of the old share then; `resume(key, seconds)`,
    called before the restore, puts the new share in its place."""

    resumed: ClassVar[dict[str, float]] = {}  # stage key: a resumed stage's new share
    fired: ClassVar[set[str]] = set()  # stage keys whose clock ended their stage

    def __init__(self, key: str, seconds: float) -> None:
        super().__init__(seconds)
        self.key = key

    @classmethod
    def resume(cls, key: str, seconds: float) -> None:
        cls.resumed[key] = seconds

    @classmethod
    def ended(cls, key: str) -> bool:
        """Whether the clock of the stage `key` ended it (since its Tuner started)."""
        return key in cls.fired

    def stop_all(self) -> bool:
        if super().stop_all():
            StageClock.fired.add(self.key)
            return True
        return False

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        share = StageClock.resumed.get(self.key)
        if share is not None:
            self._timeout_seconds = self._budget = share


def check(budget: Budget, chain: list[spaces.Stage], split: Split) -> dict[str, float]:
    """Refuse (NcfError) a budget in which some stage cannot start a trial and train one
    epoch of its cheapest config; returns each stage's estimated seconds for that epoch
    (kept in `budget.epochs`)."""
    left = budget.left() - STARTUP_S
    epochs = {s.name: epoch_seconds(s, split) for s in chain}
    # On large data a trial reports (and can be the stage's winner) after a part of an
    # epoch: that is what a stage's share must hold.
    parts = reports_per_epoch(len(split.train_users))
    epochs = {k: v if parts == 1 else v / parts for k, v in epochs.items()}
    budget.epochs.update(epochs)
    for i, stage in enumerate(chain):
        share = budget.stage_seconds(stage, chain[i:], left)
        if share < TRIAL_START_S + epochs[stage.name]:
            weights = sum(s.budget_share for s in chain)
            need = STARTUP_S + RESERVE_S * len(chain) + max(
                (TRIAL_START_S + epochs[s.name]) * weights / s.budget_share for s in chain)
            raise NcfError(f"--time-budget {budget.text}: the {stage.name} stage would get "
                           f"{share:.0f} s, less than starting a trial and one epoch of its "
                           f"cheapest config on this machine (about "
                           f"{TRIAL_START_S + epochs[stage.name]:.0f} s); give at least "
                           f"{_round_up(need)}")
        left -= share + RESERVE_S
    return epochs


def epoch_seconds(stage: spaces.Stage, split: Split, probe_batches: int = 4) -> float:
    """Seconds of one epoch (training and validation) of the stage's cheapest config,
    timed on `probe_batches` batches with the trial's thread count. A NeuMF built from
    pretrained stages may end after its untrained mix is scored: one evaluation. On
    large data an epoch's sampling is timed on its first chunk, validation on its
    sample of users, once per report (training.py), so the estimate's memory is a
    chunk's, not an epoch's."""
    cfg = cheapest_config(stage)
    model = _fresh_model(cfg, split)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, math.ceil(stage.cpu)))
    try:
        t0 = time.perf_counter()
        training.evaluate(model, eval_sample.user_sample(
            split.validation, eval_sample.VALIDATION_USERS, split.seed))
        evaluate_s = time.perf_counter() - t0
        if stage.starts_pretrained:
            return evaluate_s
        gen = torch.Generator().manual_seed(0)
        sampler = NegativeSampler(split.train_users, split.train_items, split.num_items, "cpu")
        cut = sampling.plan(len(split.train_users), cfg.num_negatives)
        lo, hi = cut.chunk_bounds(0)
        t0 = time.perf_counter()
        rows = sampler.chunk(torch.arange(lo, hi), cfg.num_negatives, gen)
        sample_s = (time.perf_counter() - t0) * cut.chunks
        epoch_rows = len(split.train_users) * (1 + cfg.num_negatives)
        n = min(len(rows), probe_batches * cfg.batch_size)
        probe = EpochData(rows.users[:n], rows.items[:n], rows.labels[:n])
        del rows
        optimizer = training.build_optimizer(model, cfg)
        training.train_epoch(model, optimizer, probe, cfg, 0, gen)  # warm-up
        t0 = time.perf_counter()
        training.train_epoch(model, optimizer, probe, cfg, 0, gen)
        train_s = (time.perf_counter() - t0) * epoch_rows / n
    finally:
        torch.set_num_threads(threads)
    return sample_s + train_s + evaluate_s * cut.parts


def finish_seconds(cfg: TrainConfig, split: Split, probe_users: int = 256) -> float:
    """Seconds to finish a stage whose winner's shape is known before it runs (a NeuMF
    built from upstream winners; `cfg` as its trials get it): scoring the winner's test
    set with 99 sampled negatives and by full ranking, timed on `probe_users` users with
    a fresh model of that shape and scaled to every user, plus FINISH_FIXED_S. A wide
    NeuMF ranks millions of pairs through its tower: on 2 CPU cores that is tens of
    seconds, more than RESERVE_S, and the last stage has no one after it to absorb an
    overrun."""
    model = _fresh_model(cfg, split)
    users = split.test.users
    n = min(len(users), probe_users)
    if n == 0:
        return FINISH_FIXED_S
    for _ in ranking.chunks(model, users[:1], split.num_items):
        pass  # warm-up: the first call allocates
    t0 = time.perf_counter()
    for _ in ranking.chunks(model, users[:n], split.num_items):
        pass
    per_user = (time.perf_counter() - t0) / n
    # Full ranking scores a bounded sample of users (eval_sample.py); sampled, every one.
    full_s = per_user * min(len(users), eval_sample.FULL_RANKING_USERS)
    sampled_s = per_user * len(users) * split.test.candidates.shape[1] / split.num_items
    return full_s + sampled_s + FINISH_FIXED_S


def _fresh_model(cfg: TrainConfig, split: Split) -> torch.nn.Module:
    return build(cfg.model, split.num_users, split.num_items, cfg.factors, cfg.layers,
                 cfg.dropout, cfg.init_std, cfg.biases, cfg.dot_product)


def cheapest_config(stage: spaces.Stage) -> TrainConfig:
    """The config of the stage's space that trains an epoch fastest: fewest factors,
    smallest tower, fewest negatives, largest batch; anything else as drawn first."""
    values = {**stage.fixed_space(), "model": stage.model}
    for name, p in stage.params.items():
        if p.kind == "fixed":
            continue
        options = spaces.extremes(p)
        cost = {"factors": lambda v: v, "num_negatives": lambda v: v,
                "batch_size": lambda v: -v,
                "layers": lambda v: sum(int(x) for x in str(v).split(","))}.get(name)
        values[name] = min(options, key=cost) if cost else options[0]
    if stage.model == "neumf":  # sizes come from upstream winners: the file's defaults
        values.pop("pretrain_gmf", None)
    return TrainConfig.from_dict(values, where=str(stage.path))


def _round_up(seconds: float) -> str:
    """A budget a user would type: 45s, 3m, 2h."""
    if seconds <= 60:
        return f"{math.ceil(seconds)}s"
    if seconds <= 3600:
        return f"{math.ceil(seconds / 60)}m"
    return f"{math.ceil(seconds / 3600)}h"
