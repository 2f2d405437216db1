"""ncf_tune: tune Neural Collaborative Filtering recommenders (GMF, MLP, NeuMF) with Ray
Tune, Optuna's TPE and ASHA.

    import ncf_tune
    summaries = ncf_tune.run_chain("search_spaces/neumf.yaml", time_budget="10m")
    model = ncf_tune.load("results/neumf-ml-1m/neumf/best_model.pt")
    cfg = ncf_tune.TrainConfig(model="gmf", factors=64)

The public names, each imported on first use (so `import ncf_tune` loads neither torch
nor Ray):

- `run_chain(space, ...)`: the search; one `StageSummary` per stage, upstream first.
- `TrainConfig`: every hyperparameter of one training run, typed and validated.
- `load(path)`: a checkpoint (model, config, metrics, the data's ids).
- `ncf_tune.recommend.recommend(checkpoint, interactions, users, k)`: each user's top-k
  unseen items (a module of its own, as `ncf_tune.search` and `ncf_tune.train` are).
- `NcfError`: the one-line error every bad input raises.

The command lines: `ncf-tune search|train|recommend ...`, or `python -m ncf_tune.search`
(`.train`, `.recommend`).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

try:
    __version__ = metadata.version("ncf_tune")
except metadata.PackageNotFoundError:  # run from a checkout without installing it
    __version__ = "0+unknown"

_PUBLIC = {  # name -> (module, attribute)
    "run_chain": ("ncf_tune.chain", "run_chain"),
    "TrainConfig": ("ncf_tune.config", "TrainConfig"),
    "load": ("ncf_tune.checkpoint", "load"),
    "NcfError": ("ncf_tune.errors", "NcfError"),
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ncf_tune' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # once
    return value
