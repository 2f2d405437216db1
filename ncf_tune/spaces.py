"""Search-space files: one YAML file is one stage of the search.

    model: neumf                       # gmf | mlp | neumf
    data: ml-1m                        # any source ncf_tune.data.load takes
    pretrain: {gmf: gmf.yaml, mlp: mlp.yaml}   # upstream stages (paths relative to this file)
    pretrain_top: 1                    # NeuMF: built from the best 1 (or n) of each upstream
    params:                            # TrainConfig keys: a plain value is fixed,
      lr: {loguniform: [1.0e-4, 1.0e-2]}   # a one-key mapping is searched
      batch_size: {choice: [256, 1024]}
      num_negatives: 4
    num_samples: 20                    # trials
    max_epochs: 20                     # epochs per trial (ASHA's max_t)
    metric: ndcg                       # validation ndcg | hr (@10)
    mode: max
    resources: {cpu: 1, gpu: 0.5}      # per trial; gpu 0.5 = two trials per GPU;
                                       # gpu left out: 0.5 if Ray sees a GPU, else 0
    searcher: {seed: 0, n_startup_trials: 5, points_to_evaluate: [{lr: 0.001}]}
    scheduler: {type: asha, grace_period: 2, reduction_factor: 3}   # or {type: none}

Distributions (Ray Tune's): uniform [low, high], loguniform [low, high],
randint [low, high) (high excluded), qrandint [low, high, q] (high included),
choice [a, b, ...]. Everything is checked by `load_chain` before Ray starts; a problem is
one NcfError line naming the file and key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncf_tune.config import TrainConfig
from ncf_tune.errors import NcfError
from ncf_tune.files import read_yaml_mapping
from ncf_tune.models import MODELS, NAMES

DISTRIBUTIONS = ("uniform", "loguniform", "randint", "qrandint", "choice")
METRICS = ("ndcg", "hr")
# Keys a stage may not set in params: the stage sets them itself.
STAGE_OWNED = ("model", "epochs", "pretrain_gmf", "pretrain_mlp")
# A pretrained NeuMF takes these from its GMF/MLP winners (its weights must fit them).
# biases: NeuMF has them when either winner has (a winner without counts as zero biases).
INHERITED = {"gmf": ("factors", "biases"), "mlp": ("layers", "biases")}


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "fixed" or one of DISTRIBUTIONS
    args: tuple[Any, ...]  # the fixed value as a 1-tuple, or the distribution's arguments

    def to_tune(self) -> Any:
        """The Ray Tune domain (or the plain value, for a fixed param)."""
        from ray import tune

        if self.kind == "fixed":
            return self.args[0]
        if self.kind == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.kind)(*self.args)


@dataclass(frozen=True)
class Searcher:
    seed: int = 0  # TPE's seed: the same file and seed propose the same configs
    n_startup_trials: int = 5  # random trials before TPE models the results (Optuna's 10)
    points_to_evaluate: tuple[dict[str, Any], ...] = ()  # known-good configs tried first


@dataclass(frozen=True)
class Scheduler:
    type: str = "asha"  # asha | none
    grace_period: int = 2  # epochs every trial gets before ASHA may stop it
    reduction_factor: int = 3  # keep the top 1/rf at each rung


@dataclass(frozen=True)
class Stage:
    path: Path
    name: str
    model: str
    data: str
    seed: int
    pretrain: dict[str, Path]  # upstream model kind -> that stage's file
    params: dict[str, Param]
    num_samples: int
    max_epochs: int
    metric: str
    mode: str
    cpu: float
    gpu: float | None  # None: decided when Ray starts (0.5 per trial if it sees a GPU)
    searcher: Searcher = field(default_factory=Searcher)
    scheduler: Scheduler = field(default_factory=Scheduler)
    # NeuMF from the n best trials of each upstream stage, side by side (an ensemble that
    # is one NeuMF: NeuMF.load_pretrained); 1 is the paper's pretraining.
    pretrain_top: int = 1

    def tune_space(self) -> dict[str, Any]:
        """Ray Tune param_space for this stage's searched and fixed parameters."""
        return {name: p.to_tune() for name, p in self.params.items()}

    def key(self, data_fingerprint: str, upstream: dict[str, str]) -> str:
        """Identity of a stage run: spec, data and upstream winners. Same key, same results."""
        spec = {
            "model": self.model, "seed": self.seed, "num_samples": self.num_samples,
            "max_epochs": self.max_epochs, "metric": self.metric, "mode": self.mode,
            "params": {k: [p.kind, list(p.args)] for k, p in sorted(self.params.items())},
            "searcher": [self.searcher.seed, self.searcher.n_startup_trials,
                         list(self.searcher.points_to_evaluate)],
            "scheduler": [self.scheduler.type, self.scheduler.grace_period,
                          self.scheduler.reduction_factor],
            "data": data_fingerprint, "upstream": upstream,
        }
        if self.pretrain_top != 1:  # not in the key otherwise: older results stay valid
            spec["pretrain_top"] = self.pretrain_top
        text = json.dumps(spec, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


TOP_KEYS = ("name", "model", "data", "seed", "pretrain", "pretrain_top", "params",
            "num_samples", "max_epochs", "metric", "mode", "resources", "searcher", "scheduler")


def load_chain(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> list[Stage]:
    """The stage in `path` and every stage it is pretrained from, upstream first.

    overrides: values that replace every stage's own (num_samples, max_epochs, data, seed).
    Raises NcfError for any problem in any file, including a missing or cyclic upstream.
    """
    order: list[Stage] = []
    seen: dict[Path, Stage] = {}

    def visit(p: Path, trail: tuple[Path, ...]) -> Stage:
        p = p.resolve()
        if p in trail:
            cycle = " -> ".join(x.name for x in (*trail[trail.index(p):], p))
            raise NcfError(f"{p}: pretrain cycle {cycle}; a stage cannot depend on itself")
        if p in seen:
            return seen[p]
        stage = parse(p, overrides)
        for kind, upstream in stage.pretrain.items():
            if not upstream.is_file():
                raise NcfError(f"{p}: pretrain.{kind}: file {upstream} not found; paths are "
                               "relative to the file that names them")
            up = visit(upstream, (*trail, p))
            if up.model != kind:
                raise NcfError(f"{p}: pretrain.{kind} names {upstream.name}, a "
                               f"{NAMES[up.model]} stage; it must be a {NAMES[kind]} stage")
        seen[p] = stage
        order.append(stage)
        return stage

    path = Path(path)
    if not path.is_file():
        raise NcfError(f"{path}: space file not found; see search_spaces/ for examples")
    last = visit(path, ())
    for stage in order:
        if (stage.data, stage.seed) != (last.data, last.seed):
            raise NcfError(f"{stage.path}: data/seed ({stage.data}, {stage.seed}) differ from "
                           f"{last.path.name}'s ({last.data}, {last.seed}); a chain trains on "
                           "one data split (or pass --data/--seed to set both)")
    names = [s.name for s in order]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise NcfError(f"{path}: two stages are named {dup!r}; give each file its own name")
    return order


def parse(path: Path, overrides: dict[str, Any] | None = None) -> Stage:
    """Validate one space file into a Stage (upstream files are not opened here)."""
    raw = read_yaml_mapping(path)
    where = str(path)
    _no_unknown(raw, TOP_KEYS, where)
    raw = {**raw, **{k: v for k, v in (overrides or {}).items() if v is not None}}

    model = raw.get("model")
    if model not in MODELS:
        raise NcfError(f"{where}: model={model!r}; choose one of {', '.join(MODELS)}")
    pretrain_raw = raw.get("pretrain") or {}
    if not isinstance(pretrain_raw, dict):
        raise NcfError(f"{where}: pretrain must be a mapping like {{gmf: gmf.yaml}}")
    allowed_up = {"gmf": (), "mlp": ("gmf",), "neumf": ("gmf", "mlp")}[model]
    for kind in pretrain_raw:
        if kind not in allowed_up:
            raise NcfError(f"{where}: pretrain.{kind}: a {NAMES[model]} stage can pretrain "
                           f"from {', '.join(allowed_up) or 'nothing'}")
    if model == "neumf" and len(pretrain_raw) == 1:
        raise NcfError(f"{where}: pretrain: NeuMF needs both gmf and mlp (or neither)")
    pretrain = {kind: (path.parent / str(f)) for kind, f in pretrain_raw.items()}
    pretrain_top = _integer(raw.get("pretrain_top", 1), f"{where}: pretrain_top", low=1)
    if pretrain_top > 1 and not (model == "neumf" and pretrain):
        raise NcfError(f"{where}: pretrain_top={pretrain_top} is for a NeuMF stage with "
                       "pretrain: {gmf: ..., mlp: ...}; remove it")

    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise NcfError(f"{where}: params must be a mapping of TrainConfig keys")
    valid = [k for k in TrainConfig.__dataclass_fields__ if k not in STAGE_OWNED]
    params: dict[str, Param] = {}
    for name, value in params_raw.items():
        if name in STAGE_OWNED:
            raise NcfError(f"{where}: params.{name} is set by the stage itself (model, "
                           "max_epochs, pretrain); remove it from params")
        _no_unknown({name: 0}, valid, f"{where}: params")
        params[name] = _param(name, value, f"{where}: params.{name}")
    for kind in pretrain:
        for name in INHERITED.get(kind, ()) if model == "neumf" else ():
            if name in params:
                raise NcfError(f"{where}: params.{name} comes from the pretrained "
                               f"{NAMES[kind]} winner; remove it")
    _check_fixed_values(params, model, where)

    resources = raw.get("resources") or {}
    if not isinstance(resources, dict):
        raise NcfError(f"{where}: resources must be a mapping like {{cpu: 1, gpu: 0.5}}")
    _no_unknown(resources, ("cpu", "gpu"), f"{where}: resources")
    cpu = _number(resources.get("cpu", 1), f"{where}: resources.cpu", low=0.01)
    gpu = resources.get("gpu")  # None: 0.5 when Ray sees a GPU, else 0 (see search.py)
    if gpu is not None:
        gpu = _number(gpu, f"{where}: resources.gpu", low=0)
    if gpu is not None and gpu > 1 and gpu != int(gpu):
        raise NcfError(f"{where}: resources.gpu={gpu}: above 1, ask for whole GPUs")

    searcher_raw = raw.get("searcher") or {}
    if not isinstance(searcher_raw, dict):
        raise NcfError(f"{where}: searcher must be a mapping")
    _no_unknown(searcher_raw, ("seed", "n_startup_trials", "points_to_evaluate"),
                f"{where}: searcher")
    points = searcher_raw.get("points_to_evaluate") or []
    if not isinstance(points, list) or not all(isinstance(x, dict) for x in points):
        raise NcfError(f"{where}: searcher.points_to_evaluate must be a list of mappings")
    for i, point in enumerate(points):
        for k in point:
            if k not in params or params[k].kind == "fixed":
                raise NcfError(f"{where}: searcher.points_to_evaluate[{i}].{k} is not a "
                               "searched param")
    points = [{k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in p.items()}
              for p in points]
    searcher = Searcher(
        seed=_integer(searcher_raw.get("seed", raw.get("seed", 0)), f"{where}: searcher.seed"),
        n_startup_trials=_integer(searcher_raw.get("n_startup_trials", 5),
                                  f"{where}: searcher.n_startup_trials", low=1),
        points_to_evaluate=tuple(points),
    )

    sched_raw = raw.get("scheduler") or {}
    if sched_raw in ("none", "asha"):
        sched_raw = {"type": sched_raw}
    if not isinstance(sched_raw, dict):
        raise NcfError(f"{where}: scheduler must be a mapping like {{type: asha}}")
    _no_unknown(sched_raw, ("type", "grace_period", "reduction_factor"), f"{where}: scheduler")
    stype = sched_raw.get("type", "asha")
    if stype not in ("asha", "none"):
        raise NcfError(f"{where}: scheduler.type={stype!r}; choose asha or none")
    scheduler = Scheduler(
        type=stype,
        grace_period=_integer(sched_raw.get("grace_period", 2), f"{where}: scheduler.grace_period",
                              low=1),
        reduction_factor=_integer(sched_raw.get("reduction_factor", 3),
                                  f"{where}: scheduler.reduction_factor", low=2),
    )

    metric = raw.get("metric", "ndcg")
    if metric not in METRICS:
        raise NcfError(f"{where}: metric={metric!r}; choose ndcg or hr (validation @10)")
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise NcfError(f"{where}: mode={mode!r}; choose max or min")
    return Stage(
        path=path,
        name=str(raw.get("name") or path.stem),
        model=model,
        data=str(raw.get("data", "ml-1m")),
        seed=_integer(raw.get("seed", 0), f"{where}: seed"),
        pretrain=pretrain,
        pretrain_top=pretrain_top,
        params=params,
        num_samples=_integer(raw.get("num_samples", 10), f"{where}: num_samples", low=1),
        max_epochs=_integer(raw.get("max_epochs", 20), f"{where}: max_epochs", low=1),
        metric=metric,
        mode=mode,
        cpu=cpu,
        gpu=gpu,
        searcher=searcher,
        scheduler=scheduler,
    )


def _no_unknown(raw: dict, valid: tuple[str, ...] | list[str], where: str) -> None:
    for key in raw:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(valid)}"
            raise NcfError(f"{where}: unknown key {key!r}; {hint}")


def _number(value: Any, where: str, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NcfError(f"{where}={value!r} is not a number")
    if low is not None and value < low:
        raise NcfError(f"{where}={value} must be at least {low}")
    return float(value)


def _integer(value: Any, where: str, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NcfError(f"{where}={value!r} is not an integer")
    if low is not None and value < low:
        raise NcfError(f"{where}={value} must be at least {low}")
    return value


def _param(name: str, value: Any, where: str) -> Param:
    if not isinstance(value, dict):
        if name == "layers" and isinstance(value, list):
            value = ",".join(map(str, value))
        return Param(name, "fixed", (value,))
    if len(value) != 1:
        raise NcfError(f"{where}: a searched param is one distribution, e.g. "
                       "{loguniform: [1.0e-4, 1.0e-2]}")
    (kind, args), = value.items()
    if kind not in DISTRIBUTIONS:
        close = difflib.get_close_matches(str(kind), DISTRIBUTIONS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose {', '.join(DISTRIBUTIONS)}"
        raise NcfError(f"{where}: unknown distribution {kind!r}; {hint}")
    if not isinstance(args, list):
        raise NcfError(f"{where}.{kind} needs a list, e.g. [low, high]")
    if kind == "choice":
        if not args:
            raise NcfError(f"{where}.choice is empty; list at least one value")
        # Optuna's categorical values must be scalars: a list of layer sizes becomes
        # the string "64,32,16,8", which TrainConfig reads back as a tuple.
        args = [",".join(map(str, a)) if isinstance(a, list) else a for a in args]
        return Param(name, kind, tuple(args))
    want = 3 if kind == "qrandint" else 2
    if len(args) != want:
        shape = "[low, high, q]" if kind == "qrandint" else "[low, high]"
        raise NcfError(f"{where}.{kind} takes {shape}, got {args}")
    for a in args:
        if isinstance(a, bool) or not isinstance(a, (int, float)):
            raise NcfError(f"{where}.{kind}: {a!r} is not a number")
    if kind in ("randint", "qrandint") and not all(isinstance(a, int) for a in args):
        raise NcfError(f"{where}.{kind} takes integers, got {args}")
    low, high = args[0], args[1]
    if not low < high:
        raise NcfError(f"{where}.{kind}: low {low} must be below high {high}")
    if kind == "loguniform" and low <= 0:
        raise NcfError(f"{where}.loguniform: low {low} must be > 0 (use uniform to include 0)")
    if kind == "qrandint" and args[2] < 1:
        raise NcfError(f"{where}.qrandint: q {args[2]} must be at least 1")
    return Param(name, kind, tuple(args))


def _check_fixed_values(params: dict[str, Param], model: str, where: str) -> None:
    """Every value a trial could get must make a valid TrainConfig: check the fixed
    values, and each choice and range end against the others' defaults."""
    fixed = {n: p.args[0] for n, p in params.items() if p.kind == "fixed"}
    TrainConfig.from_dict({"model": model, **fixed}, where=f"{where}: params")
    for name, p in params.items():
        if p.kind == "fixed":
            continue
        samples = p.args if p.kind == "choice" else p.args[:2]
        for value in samples:
            if p.kind == "randint" and value == p.args[1]:
                value -= 1
            TrainConfig.from_dict({"model": model, **fixed, name: value},
                                  where=f"{where}: params.{name}")
