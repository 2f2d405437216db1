"""Search-space files: one YAML file is one stage of the search.

    model: neumf                       # gmf | mlp | neumf
    data: ml-1m                        # any source ncf_tune.data.load takes
    pretrain: {gmf: gmf.yaml, mlp: mlp.yaml}   # upstream stages (paths relative to this file)
    pretrain_top: 1                    # NeuMF: built from the best 1 (or n) of each upstream
    params:                            # TrainConfig keys: a plain value is fixed,
      lr: {loguniform: [1.0e-4, 1.0e-2]}   # a one-key mapping is searched
      batch_size: {choice: [256, 1024]}
      num_negatives: 4
      optimizer: {choice: [sgd, adam]}
      weight:                          # a range per value of another param (conditional)
        by: optimizer
        sgd: {loguniform: [1.0, 10.0]}
        adam: 0.5                      # (or a fixed value for that branch)
    num_samples: 20                    # trials (an upper bound under --time-budget)
    max_epochs: 20                     # epochs per trial (ASHA's max_t)
    max_concurrent: 4                  # trials at once (default: as many as fit)
    budget_share: 0.3                  # this stage's share of --time-budget (default 1)
    time_budget: 1h                    # the chain's default --time-budget (only the file
                                       # run counts; --time-budget overrides, `none` lifts it)
    metric: ndcg                       # validation ndcg | hr (@10), higher is better
    eval: sampled                      # sampled (99 negatives, the paper's) | full ranking
    resources: {cpu: 1, gpu: 0.25}     # per trial; gpu 0.25 = four trials per GPU;
                                       # gpu left out: trials share the GPUs Ray sees
                                       # (placement.py), CPU trials where it sees none
    searcher: {seed: 0, n_startup_trials: 5, points_to_evaluate: [{lr: 0.001}]}
    scheduler: {type: asha, grace_period: 2, reduction_factor: 3}   # or {type: none}

Distributions (Ray Tune's names, sampled by Optuna's TPE): uniform [low, high],
loguniform [low, high], randint [low, high) (high excluded), qrandint [low, high, q]
(high included), choice [a, b, ...]. A param with `by:` takes its distribution from the
value of a `choice` param (Optuna's conditional search space). Everything, the
points_to_evaluate included, is checked by `load_chain` before Ray starts; a problem is
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
from ncf_tune.durations import parse_duration
from ncf_tune.errors import NcfError
from ncf_tune.files import read_yaml_mapping
from ncf_tune.models import MODELS, NAMES

DISTRIBUTIONS = ("uniform", "loguniform", "randint", "qrandint", "choice")
METRICS = ("ndcg", "hr")
# Keys a stage may not set in params: the stage sets them itself.
STAGE_OWNED = ("model", "epochs", "pretrain_gmf", "pretrain_mlp", "eval")
# A pretrained NeuMF takes these from its GMF/MLP winners (its weights must fit them).
# biases: NeuMF has them when either winner has (a winner without counts as zero biases).
INHERITED = {"gmf": ("factors", "biases"), "mlp": ("layers", "biases")}


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "fixed", one of DISTRIBUTIONS, or "by" (conditional)
    # The fixed value as a 1-tuple, the distribution's arguments, or for "by":
    # (the name of the param it depends on, ((value, Param), ...)).
    args: tuple[Any, ...]

    def to_tune(self) -> Any:
        """The Ray Tune domain (or the plain value, for a fixed param)."""
        from ray import tune

        if self.kind == "fixed":
            return self.args[0]
        if self.kind == "choice":
            return tune.choice(list(self.args))
        if self.kind == "by":
            raise NcfError(f"params.{self.name}: a conditional param has no single Tune "
                           "domain; the search samples it with Optuna (Stage.define_by_run)")
        return getattr(tune, self.kind)(*self.args)

    def branches(self) -> dict[Any, Param]:
        """For a "by" param: the param's distribution (or value) for each value of the
        param it depends on."""
        return dict(self.args[1])

    def suggest(self, trial: Any, label: str | None = None) -> Any:
        """Draw this param's value from an Optuna trial (under `label`, default its name)."""
        name = label or self.name
        if self.kind == "fixed":
            return self.args[0]
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.args))
        if self.kind in ("uniform", "loguniform"):
            return trial.suggest_float(name, self.args[0], self.args[1],
                                       log=self.kind == "loguniform")
        if self.kind == "randint":  # Tune's randint excludes high, Optuna's includes it
            return trial.suggest_int(name, self.args[0], self.args[1] - 1)
        return trial.suggest_int(name, self.args[0], self.args[1], step=self.args[2])

    def contains(self, value: Any) -> bool:
        """Whether `value` is one this distribution can draw (for points_to_evaluate)."""
        if self.kind == "fixed":
            return value == self.args[0]
        if self.kind == "choice":
            return value in self.args
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        low, high = self.args[0], self.args[1]
        if self.kind in ("randint", "qrandint"):
            top = high - 1 if self.kind == "randint" else high
            step = self.args[2] if self.kind == "qrandint" else 1
            return float(value).is_integer() and low <= value <= top \
                and (value - low) % step == 0
        return low <= value <= high


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
    gpu: float | None  # None: settled when Ray runs (shares its GPUs; 0 where it has none)
    searcher: Searcher = field(default_factory=Searcher)
    scheduler: Scheduler = field(default_factory=Scheduler)
    # NeuMF from the n best trials of each upstream stage, side by side (an ensemble that
    # is one NeuMF: NeuMF.load_pretrained); 1 is the paper's pretraining.
    pretrain_top: int = 1
    max_concurrent: int | None = None  # trials at once; None: as many as resources allow
    # How validation ranks each held-out item, which picks the winner: against 99 sampled
    # negatives (the paper's protocol) or against every unseen item ("full").
    eval: str = "sampled"
    budget_share: float = 1.0  # weight of this stage in splitting a --time-budget
    time_budget: str | None = None  # the chain's default --time-budget, when this file is run

    @property
    def searched(self) -> list[str]:
        """The params the stage searches (not fixed), in file order."""
        return [k for k, p in self.params.items() if p.kind != "fixed"]

    @property
    def starts_pretrained(self) -> bool:
        """A NeuMF built from upstream winners: its trials are scored before training."""
        return self.model == "neumf" and bool(self.pretrain)

    def tune_space(self) -> dict[str, Any]:
        """Ray Tune param_space for this stage's searched and fixed parameters (a stage
        without conditional params)."""
        return {name: p.to_tune() for name, p in self.params.items()}

    def fixed_space(self) -> dict[str, Any]:
        """The fixed params: what every trial gets besides the searcher's proposal."""
        return {name: p.args[0] for name, p in self.params.items() if p.kind == "fixed"}

    def define_by_run(self, trial: Any) -> dict[str, Any]:
        """Optuna's define-by-run space: draws the searched params from `trial`.

        A conditional param is drawn under `<name>@<value>` (TPE models each branch
        apart); the returned mapping gives it back under its own name, which is the one
        the trainable reads (`trainable.py` drops the `@` labels)."""
        values: dict[str, Any] = {}
        resolved: dict[str, Any] = {}
        for name in self.searched:
            p = self.params[name]
            if p.kind == "by":
                driver = p.args[0]
                chosen = values.get(driver, self.params[driver].args[0])
                branch = p.branches()[chosen]
                values[name] = resolved[name] = branch.suggest(trial, f"{name}@{chosen}")
            else:
                values[name] = p.suggest(trial)
        return resolved

    def optuna_points(self) -> list[dict[str, Any]]:
        """points_to_evaluate under the names define_by_run draws them by."""
        points = []
        for point in self.searcher.points_to_evaluate:
            out = {}
            for name, value in point.items():
                p = self.params[name]
                if p.kind == "by":
                    chosen = point.get(p.args[0], self.params[p.args[0]].args[0])
                    if p.branches()[chosen].kind == "fixed":
                        continue
                    name = f"{name}@{chosen}"
                out[name] = value
            points.append(out)
        return points

    def key(self, data_fingerprint: str, upstream: dict[str, str],
            budget: tuple[float, float] | None = None) -> str:
        """Identity of a stage run: spec, data, upstream winners and, under a time
        budget, (the chain's budget, this stage's share). Same key, same results."""
        spec = {
            "model": self.model, "seed": self.seed, "num_samples": self.num_samples,
            "max_epochs": self.max_epochs, "metric": self.metric, "mode": "max",
            "params": {k: [p.kind, list(p.args)] for k, p in sorted(self.params.items())},
            "searcher": [self.searcher.seed, self.searcher.n_startup_trials,
                         list(self.searcher.points_to_evaluate)],
            "scheduler": [self.scheduler.type, self.scheduler.grace_period,
                          self.scheduler.reduction_factor],
            "data": data_fingerprint, "upstream": upstream,
        }
        if self.pretrain_top != 1:  # not in the key otherwise: older results stay valid
            spec["pretrain_top"] = self.pretrain_top
        if self.max_concurrent is not None:
            spec["max_concurrent"] = self.max_concurrent
        if self.eval != "sampled":
            spec["eval"] = self.eval
        if budget is not None:
            spec["time_budget"] = list(budget)
        text = json.dumps(spec, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


TOP_KEYS = ("name", "model", "data", "seed", "pretrain", "pretrain_top", "params",
            "num_samples", "max_epochs", "max_concurrent", "budget_share", "time_budget",
            "metric", "eval", "mode", "resources", "searcher", "scheduler")


def load_chain(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> list[Stage]:
    """The stage in `path` and every stage it is pretrained from, upstream first.

    overrides: values that replace every stage's own (num_samples, max_epochs, data, seed),
    and no_recipes=True to drop every stage's searcher.points_to_evaluate.
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
    overrides = dict(overrides or {})
    if overrides.pop("no_recipes", False):
        raw["searcher"] = {k: v for k, v in (raw.get("searcher") or {}).items()
                           if k != "points_to_evaluate"} if isinstance(raw.get("searcher"),
                                                                        dict) else None
    raw = {**raw, **{k: v for k, v in overrides.items() if v is not None}}

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
    # Resolved: the chain compares these with its stages' own (resolved) paths.
    pretrain = {kind: (path.parent / str(f)).resolve() for kind, f in pretrain_raw.items()}
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
                           "max_epochs, pretrain, eval); remove it from params")
        _no_unknown({name: 0}, valid, f"{where}: params")
        if isinstance(value, dict) and "by" in value:
            params[name] = _conditional(name, value, f"{where}: params.{name}")
        else:
            params[name] = _param(name, value, f"{where}: params.{name}")
    _check_conditionals(params, where)
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
    gpu = resources.get("gpu")  # None: settled once Ray runs (cluster.check_resources)
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
    points = [{k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in p.items()}
              for p in points]
    for i, point in enumerate(points):
        _check_point(point, params, f"{where}: searcher.points_to_evaluate[{i}]")
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
    if mode != "max":
        raise NcfError(f"{where}: mode={mode!r}: HR and NDCG are better when higher, so the "
                       "search maximises them; remove mode (or set it to max)")
    max_concurrent = raw.get("max_concurrent")
    if max_concurrent is not None:
        max_concurrent = _integer(max_concurrent, f"{where}: max_concurrent", low=1)
    budget_share = _number(raw.get("budget_share", 1.0), f"{where}: budget_share", low=0.01)
    time_budget = raw.get("time_budget")
    if time_budget is not None:
        try:
            parse_duration(str(time_budget))
        except ValueError as exc:
            raise NcfError(f"{where}: time_budget: {exc}") from None
        time_budget = str(time_budget)
    evaluation = raw.get("eval", "sampled")
    if evaluation not in ("sampled", "full"):
        raise NcfError(f"{where}: eval={evaluation!r}; choose sampled (99 negatives, the "
                       "paper's) or full (every item the user has not interacted with)")
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
        max_concurrent=max_concurrent,
        budget_share=budget_share,
        time_budget=time_budget,
        eval=evaluation,
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


def _conditional(name: str, value: dict, where: str) -> Param:
    """`{by: optimizer, sgd: <distribution or value>, adam: ...}`."""
    by = value["by"]
    if not isinstance(by, str):
        raise NcfError(f"{where}.by must name another param, e.g. by: optimizer")
    branches = tuple((k, _param(name, v, f"{where}.{k}")) for k, v in value.items()
                     if k != "by")
    if not branches:
        raise NcfError(f"{where}: give a distribution (or value) for each value of {by}")
    return Param(name, "by", (by, branches))


def _check_conditionals(params: dict[str, Param], where: str) -> None:
    """A conditional param depends on a choice (or fixed) param listed before it, and
    covers each of its values."""
    names = list(params)
    for name, p in params.items():
        if p.kind != "by":
            continue
        driver = params.get(p.args[0])
        if driver is None or driver.kind not in ("choice", "fixed") \
                or names.index(p.args[0]) > names.index(name):
            raise NcfError(f"{where}: params.{name}.by: {p.args[0]!r} must be a choice (or "
                           f"fixed) param listed before {name}")
        missing = [v for v in driver.args if v not in p.branches()]
        extra = [v for v in p.branches() if v not in driver.args]
        if missing or extra:
            raise NcfError(f"{where}: params.{name}: give one entry per value of "
                           f"{p.args[0]} {list(driver.args)}"
                           + (f"; missing {missing}" if missing else "")
                           + (f"; {extra} is not one of them" if extra else ""))


def _check_point(point: dict[str, Any], params: dict[str, Param], where: str) -> None:
    """A point to evaluate gives every searched param a value its distribution can draw
    (Optuna would otherwise fail inside Ray, after the data loaded)."""
    for k in point:
        if k not in params or params[k].kind == "fixed":
            raise NcfError(f"{where}.{k} is not a searched param")
    for name, p in params.items():
        if p.kind == "fixed":
            continue
        if name not in point:
            raise NcfError(f"{where}: no value for the searched param {name}; give one "
                           "(a point is a whole config)")
        dist = p
        if p.kind == "by":
            dist = p.branches()[point.get(p.args[0], params[p.args[0]].args[0])]
        if not dist.contains(point[name]):
            shown = list(dist.args) if dist.kind == "choice" else dist.args
            raise NcfError(f"{where}.{name}={point[name]!r} is outside its {dist.kind} "
                           f"{shown}; the searcher can only evaluate values in the space")


def _check_fixed_values(params: dict[str, Param], model: str, where: str) -> None:
    """Every value a trial could get must make a valid TrainConfig: check the fixed
    values, and each choice and range end against the others' defaults (and, for a
    choice that drives conditionals, with its branches' values: optimizer=als is valid
    with the als branch's embedding_l2, not with the default 0)."""
    fixed = {n: p.args[0] for n, p in params.items() if p.kind == "fixed"}
    TrainConfig.from_dict({"model": model, **fixed}, where=f"{where}: params")
    for name, p in params.items():
        if p.kind == "by":
            for chosen, branch in p.args[1]:
                for value in extremes(branch) or list(branch.args):
                    TrainConfig.from_dict({"model": model, **fixed,
                                           **_branch_values(params, p.args[0], chosen),
                                           name: value}, where=f"{where}: params.{name}")
            continue
        for value in extremes(p):
            TrainConfig.from_dict({"model": model, **fixed,
                                   **_branch_values(params, name, value), name: value},
                                  where=f"{where}: params.{name}")


def _branch_values(params: dict[str, Param], driver: str, chosen: Any) -> dict[str, Any]:
    """`driver` = `chosen` and, for each param conditional on it, a value of its branch
    for `chosen` (the fixed value, or the range's low end)."""
    values = {driver: chosen}
    for name, p in params.items():
        if p.kind == "by" and p.args[0] == driver and chosen in p.branches():
            branch = p.branches()[chosen]
            values[name] = branch.args[0] if branch.kind == "fixed" else extremes(branch)[0]
    return values


def extremes(p: Param) -> list[Any]:
    """Every choice, or both ends of a range (of each branch, for a conditional)."""
    if p.kind == "fixed":
        return []
    if p.kind == "by":
        return [v for _, branch in p.args[1] for v in (extremes(branch) or branch.args)]
    if p.kind == "choice":
        return list(p.args)
    low, high = p.args[0], p.args[1]
    return [low, high - 1 if p.kind == "randint" else high]
