"""The Ray Tune function trainable: `training.fit` with a report and a checkpoint per epoch.

Each epoch reports {epoch, loss, hr, ndcg, seconds, diverged} (hr/ndcg: validation @10)
with a `tune.Checkpoint` holding model.pt, so ASHA can stop the trial after any epoch,
Tune keeps the trial's best epoch, and a failed or interrupted trial restarts from its
last checkpoint (`tune.get_checkpoint()`). The data comes from the driver through the
object store (`tune.with_parameters`), loaded once for all trials.
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
    cfg = TrainConfig.from_dict(config, where="trial config")
    # Ray gives each trial its CPUs (and, with gpu > 0, sets CUDA_VISIBLE_DEVICES to its
    # GPU): use that many torch threads, and the GPU when there is one.
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(math.ceil(cpus))))
    device = training.choose_device("auto")
    node = ray.get_runtime_context().get_node_id()[:12]  # which machine of a cluster ran it
    resume = None
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            resume = checkpoint.load(Path(folder) / "model.pt", expect_model=cfg.model)

    def on_epoch(res: training.EpochResult, state: training.TrainState) -> None:
        metrics = {"epoch": res.epoch, "loss": res.loss, "hr": res.hr, "ndcg": res.ndcg,
                   "seconds": res.seconds, "train_seconds": res.train_seconds,
                   "diverged": res.diverged, "node": node}
        if res.diverged:  # nothing worth restoring; hr/ndcg are 0 (NaN scores rank last)
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            state.save(str(Path(folder) / "model.pt"), {"hr": res.hr, "ndcg": res.ndcg})
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    training.fit(cfg, data, device, on_epoch=on_epoch, resume=resume)
