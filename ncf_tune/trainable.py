"""The Ray Tune function trainable: `training.fit` with a report and a checkpoint per epoch.

Each epoch reports {epoch, loss, hr, ndcg, best_hr, best_ndcg, evaluations, seconds,
diverged, node, device} (hr/ndcg: validation @10 of this epoch; best_*: the trial's best
so far) with a `tune.Checkpoint` holding model.pt, so ASHA can stop the trial after any epoch, Tune
keeps the trial's best epoch, and a failed or interrupted trial restarts from its last
checkpoint (`tune.get_checkpoint()`).

Two counters, because a pretrained NeuMF is scored before it trains (epoch 0):
`evaluations` counts reports (epoch + 1 for such a NeuMF, else epoch) and is what ASHA's
rungs count, so a NeuMF stage can cut a trial on its untrained mix alone; `best_*` is
what the searcher learns from, since the stage's winner is a trial's best epoch, not
its last one (an ASHA-stopped trial would otherwise be told as the score it had when
stopped). On large data an epoch is reported in parts (training.py): `evaluations`
counts those reports, so ASHA's rungs stand for the same number of training samples on
any data, and `epoch` is then the fractional epochs trained (2.5: half of the third).
The data comes from the driver through the object store (`tune.with_parameters`),
loaded once for all trials.

A stage with a time budget puts its end in every trial's config (REPORT_BY, a
`time.time()`): a trial that has not reported yet when that comes near scores what it
has, reports it with `cut` set and ends (training.Cut), so a stage whose reports all
take longer than its budget still hands on a model (one that has reported is left to
the budget, as before). One started after that is not cut: it trains until the budget
stops it, as every trial did before (cutting it would end it after a few batches, and
the searcher would start trial after trial in the last seconds).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from ncf_tune import checkpoint, eval_sample, placement, training
from ncf_tune.config import TrainConfig
from ncf_tune.data import Split

REPORT_BY = "report_by"  # config key: when validation must start at the latest (stage.py)
STALE_S = 60.0  # a REPORT_BY this far past is an earlier run's (a resumed search): ignored


def train_ncf(config: dict[str, Any], data: Split) -> None:
    """Train one trial's config; reports every epoch to Ray Tune."""
    # Keys with "@" are the searcher's labels for conditional params (spaces.py); the
    # value is also under the param's own name.
    cfg = TrainConfig.from_dict({k: v for k, v in config.items()
                                 if "@" not in k and k != REPORT_BY}, where="trial config")
    cut = None if tune.get_checkpoint() is not None else _cut(config.get(REPORT_BY), data)
    if cut is not None and time.time() >= cut.at:
        cut = None  # started after the cut: trains until the budget stops it, as before
    # Ray gives each trial its CPUs and, with gpu > 0, a GPU: use that many torch threads,
    # and that GPU alone (placement.py), at a GPU-sized batch.
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(math.ceil(cpus))))
    device = placement.trial_device()
    cfg = placement.on_device(cfg, device)
    node = ray.get_runtime_context().get_node_id()[:12]  # which machine of a cluster ran it
    # which device: "cpu", or "cuda:0 (GPU 3)": the worker's ordinal and Ray's GPU id
    where = str(device) if device.type == "cpu" else \
        f"{device} (GPU {','.join(map(str, ray.get_gpu_ids()))})"
    resume = None
    best = {"best_hr": 0.0, "best_ndcg": 0.0}
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            resume = checkpoint.load(Path(folder) / "model.pt", expect_model=cfg.model)
        best = {k: resume.metrics.get(k, 0.0) for k in best}
    offset = 1 if cfg.starts_pretrained else 0  # epoch 0 is an evaluation too

    def on_epoch(res: training.EpochResult, state: training.TrainState) -> None:
        if cut is not None:  # the trial has a model to hand on: no cut from now on
            cut.at = math.inf
        if not res.diverged:
            best["best_hr"] = max(best["best_hr"], res.hr)
            best["best_ndcg"] = max(best["best_ndcg"], res.ndcg)
        metrics = {"epoch": res.epoch if res.parts == 1 and res.cut is None
                   else float(f"{res.progress:.6g}"),  # 6 digits: a cut can be early
                   "evaluations": offset + max(0, (res.epoch - 1) * res.parts + res.part),
                   "loss": res.loss,
                   "hr": res.hr, "ndcg": res.ndcg, **best, "seconds": res.seconds,
                   "train_seconds": res.train_seconds, "diverged": res.diverged, "node": node,
                   "device": where, "cut": res.cut is not None}
        if res.diverged:  # nothing worth restoring; hr/ndcg are 0 (NaN scores rank last)
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            share = {} if res.cut is None else {"cut": res.cut}  # of the part it was cut in
            state.save(str(Path(folder) / "model.pt"),
                       {"hr": res.hr, "ndcg": res.ndcg, **best, **share})
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    training.fit(cfg, data, device, on_epoch=on_epoch, resume=resume, cut=cut)


def _cut(report_by: float | None, data: Split) -> training.Cut | None:
    """The trial's training.Cut for a stage ending at `report_by`; None without one or
    when it is an earlier run's."""
    if report_by is None or time.time() > report_by + STALE_S:
        return None
    users = min(len(data.validation), eval_sample.VALIDATION_USERS)
    return training.Cut(float(report_by), users * data.validation.candidates.shape[1])
