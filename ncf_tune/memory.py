"""How much memory a trial takes: what a stage asks Ray for, so that no node runs more
trials at once than its memory holds.

A trial's memory besides the split (which its node shares, read-only, through Ray's
object store: data.SharedArrays) is

    its process: Python, torch, Ray's worker, a compiled step       BASE_BYTES
    the model: weights, gradients and Adam's two moments             16 bytes a parameter
    the sampler: the positives' sorted keys and the epoch's order    16 bytes a positive
    the rows trained at once: ids, labels, their shuffled copy,
      the order and the draws' intermediates                         ROW_BYTES a row

where the rows trained at once are the whole epoch's up to sampling.REPORT_POSITIVES
positives and a chunk's (CHUNK_ROWS) above (sampling.py): on large data the last two
terms stop growing with the data, and the model's embeddings (users x factors) are what
is left. The stage's largest config sets the figure (`trial_bytes`); Ray's `memory`
resource then caps the trials running on a node at what its memory holds (Ray counts
about 70% of a node's memory as that resource). Measured: benchmarks/scale.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ray
import torch

from ncf_tune import sampling, spaces
from ncf_tune.config import TrainConfig
from ncf_tune.data import Split
from ncf_tune.models import build

BASE_BYTES = 512 << 20  # measured: 0.3-0.4 GiB a process with torch and a compiled step
ROW_BYTES = 64  # int64 ids and labels (20 B), shuffled (20 B), order (8 B), draws (16 B)


def largest_config(stage: spaces.Stage, param_space: dict[str, Any]) -> TrainConfig:
    """The config of the stage's space that takes the most memory: most factors, widest
    tower, most negatives; `param_space`'s fixed values (a NeuMF's sizes) as they are."""
    # A trial's own keys (trainable.REPORT_BY) and the pretrained files are no shape.
    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"pretrain_gmf", "pretrain_mlp"}
    values = {k: v for k, v in param_space.items() if k in known}
    for name, p in stage.params.items():
        options = spaces.extremes(p)
        if not options:
            continue
        size = {"factors": lambda v: v, "num_negatives": lambda v: v,
                "layers": lambda v: sum(int(x) for x in str(v).split(","))}.get(name)
        values[name] = max(options, key=size) if size else options[0]
    return TrainConfig.from_dict(values, where=str(stage.path))


def trial_bytes(cfg: TrainConfig, split: Split) -> int:
    """A trial of `cfg` on `split`: its memory besides the shared split (module
    docstring)."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = build(cfg.model, split.num_users, split.num_items, cfg.factors, cfg.layers,
                      cfg.dropout, cfg.init_std, cfg.biases, cfg.dot_product)
    params = sum(p.numel() for p in model.parameters())
    positives = len(split.train_users)
    cut = sampling.plan(positives, cfg.num_negatives)
    lo, hi = cut.chunk_bounds(0)
    rows = (hi - lo) * (1 + cfg.num_negatives)
    return BASE_BYTES + 16 * params + 16 * positives + ROW_BYTES * rows


def stage_request(stage: spaces.Stage, param_space: dict[str, Any], split: Split,
                  node_memory: float) -> float | None:
    """Bytes of Ray's `memory` resource each trial of `stage` asks for: `trial_bytes` of
    its largest config, at most `node_memory` (the largest node's, so that a trial can
    always start somewhere); None when it cannot be worked out (no request then)."""
    try:
        need = trial_bytes(largest_config(stage, param_space), split)
    except Exception:  # noqa: BLE001 - an estimate: never a reason to refuse a search
        return None
    return float(min(need, node_memory)) if node_memory > 0 else None


def node_memory() -> float:
    """The largest `memory` resource of a live node of the running Ray cluster (bytes);
    0 when Ray is not running or says nothing of memory."""
    if not ray.is_initialized():
        return 0.0
    return max((float(n.get("Resources", {}).get("memory", 0)) for n in ray.nodes()
                if n.get("Alive")), default=0.0)
