"""The Ray Tune function trainable: `training.fit` with a report and a checkpoint per epoch.

Each epoch reports {epoch, loss, hr, ndcg, best_hr, best_ndcg, evaluations, seconds,
diverged} (hr/ndcg: validation @10 of this epoch; best_*: the trial's best so far) with a
`tune.Checkpoint` holding model.pt, so ASHA can stop the trial after any epoch, Tune
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
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from ncf_tune import checkpoint, training
from ncf_tune.config import TrainConfig
from ncf_tune.data import Split


def train_ncf(config: dict[str, Any], data: Split) -> None:
    """Train one trial's config; reports every epoch to Ray Tune."""
    # Keys with "@" are the searcher's labels for conditional params (spaces.py); the
    # value is also under the param's own name.
    cfg = TrainConfig.from_dict({k: v for k, v in config.items() if "@" not in k},
                                where="trial config")
    # Ray gives each trial its CPUs (and, with gpu > 0, sets CUDA_VISIBLE_DEVICES to its
    # GPU): use that many torch threads, and the GPU when there is one.
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(math.ceil(cpus))))
    device = training.choose_device("auto")
    node = ray.get_runtime_context().get_node_id()[:12]  # which machine of a cluster ran it
    resume = None
    best = {"best_hr": 0.0, "best_ndcg": 0.0}
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            resume = checkpoint.load(Path(folder) / "model.pt", expect_model=cfg.model)
        best = {k: resume.metrics.get(k, 0.0) for k in best}
    offset = 1 if cfg.starts_pretrained else 0  # epoch 0 is an evaluation too

    def on_epoch(res: training.EpochResult, state: training.TrainState) -> None:
        if not res.diverged:
            best["best_hr"] = max(best["best_hr"], res.hr)
            best["best_ndcg"] = max(best["best_ndcg"], res.ndcg)
        metrics = {"epoch": res.epoch if res.parts == 1 else round(res.progress, 4),
                   "evaluations": offset + max(0, (res.epoch - 1) * res.parts + res.part),
                   "loss": res.loss,
                   "hr": res.hr, "ndcg": res.ndcg, **best, "seconds": res.seconds,
                   "train_seconds": res.train_seconds, "diverged": res.diverged, "node": node}
        if res.diverged:  # nothing worth restoring; hr/ndcg are 0 (NaN scores rank last)
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            state.save(str(Path(folder) / "model.pt"), {"hr": res.hr, "ndcg": res.ndcg, **best})
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    training.fit(cfg, data, device, on_epoch=on_epoch, resume=resume)
