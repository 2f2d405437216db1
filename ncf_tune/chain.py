"""The chain: a stage file and the stages it is pretrained from, run upstream first.

Each stage is searched (stage.py) or, when the same stage already ran on the same data
with the same upstream winners, reused; its best models are handed to the stages
downstream. A `--time-budget` is shared out over the stages as they start (budget.py).
At the end report.md names the chain's best model: the stage winner best on validation
(a NeuMF is not always better than the parts it was built from).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from ncf_tune import budget as ncf_budget
from ncf_tune import (
    cache,
    cluster,
    compare,
    data,
    eval_sample,
    placement,
    results,
    sampling,
    spaces,
)
from ncf_tune import storage as ncf_storage
from ncf_tune.config import TrainConfig
from ncf_tune.errors import NcfError
from ncf_tune.files import (
    disk_error,
    is_disk_error,
    read_yaml_mapping,
    write_text_atomic,
    write_yaml_atomic,
)
from ncf_tune.stage import OutOfTime, Winner, run_stage, stage_config
from ncf_tune.trainable import train_ncf

KEEP_TOP = 3  # a stage that others pretrain from keeps its best 3 trials' models (or more,
# if pretrain_top asks): a later pretrain_top of 2 or 3 reuses it instead of searching again


def experiment_name(stage: spaces.Stage) -> str:
    """<stage>-<data>: neumf-ml-1m for `--data ml-1m`, neumf-ratings for a ratings.csv."""
    source = stage.data if stage.data in data.ARCHIVES else Path(stage.data).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stage.name}-{source}").strip("-")


def run_chain(space: str | os.PathLike, *, data_source: str | None = None,
              results_dir: str | os.PathLike = "results", experiment: str | None = None,
              num_samples: int | None = None, max_epochs: int | None = None,
              seed: int | None = None, time_budget: str | None = None,
              no_recipes: bool = False, cpus: int | None = None, gpus: int | None = None,
              address: str | None = None, storage: str | None = None, resume: bool = False,
              force: bool = False,
              trainable: Callable[..., None] = train_ncf) -> list[results.StageSummary]:
    """Run the stage in `space` and its upstream stages; returns one summary per stage
    that ran, upstream first (`results.best_stage(...)` picks the chain's best model). A
    stage the time budget left no time for is skipped, with the stages built from it.

    The keyword arguments are the CLI's options (see `python -m ncf_tune.search --help`);
    num_samples, max_epochs, data_source and seed override every stage of the chain.
    time_budget: how long the whole call may take, e.g. "90s", "10m", "2h"; default the
    space file's own `time_budget`, if any; "none": no budget even if the file has one.
    no_recipes: ignore every stage's searcher.points_to_evaluate.
    storage: a folder every node can reach, or an s3://, gs://, file:// URI, for trials,
    their checkpoints and the winners handed down the chain (default: under results_dir).
    trainable: the function each trial runs, `train_ncf(config, data)` or a wrapper of it.
    Ray is started for the call and shut down after it, unless it was already running.
    Raises NcfError for bad input (before any trial runs), SearchInterrupted (an
    ncf_tune.errors.Interrupted) when a stage was stopped before it finished.
    """
    started = time.monotonic()
    cluster.check_ray_version()
    overrides = {"num_samples": num_samples, "max_epochs": max_epochs, "data": data_source,
                 "seed": seed, "no_recipes": no_recipes}
    chain = spaces.load_chain(space, overrides)
    if address is None:
        placement.check_local_gpus(gpus)  # before the data: a typo should fail at once
    last = chain[-1]
    time_budget = time_budget or last.time_budget
    budget = (ncf_budget.Budget.start(time_budget, started)
              if time_budget and time_budget.lower() != "none" else None)
    name = experiment or experiment_name(last)
    exp_dir = Path(results_dir).expanduser().resolve() / name
    if storage is not None and not ncf_storage.is_uri(storage):
        storage = str(Path(storage).expanduser().resolve())  # Ray wants absolute paths
    shared = ncf_storage.join(storage, name) if storage else None
    with cluster.experiment_lock(exp_dir):
        t = time.perf_counter()
        split = cache.prepare(last.data, seed=last.seed)  # parsed once per file and seed
        print(f"data: {last.data}: {split.num_users} users, {split.num_items} items, "
              f"{len(split.train_users)} train positives ({time.perf_counter() - t:.1f} s)")
        for note in split.notes:
            print(f"data: {note}")
        if len(split.validation) > eval_sample.VALIDATION_USERS:  # large data (USAGE.md)
            print(f"data: {eval_sample.describe(len(split.validation))}; "
                  f"{sampling.reports_per_epoch(len(split.train_users))} reports an epoch")
        if budget is not None:
            epochs = ncf_budget.check(budget, chain, split)
            print(f"time budget {budget.text}: {budget.left():.0f} s left, shared over "
                  + ", ".join(f"{s.name} {s.budget_share:g}" for s in chain)
                  + "; cheapest epoch here: "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in epochs.items()))
        with cluster.ray_session(address, cpus, gpus):
            try:
                return _run_stages(chain, split, exp_dir, shared, resume, force, trainable,
                                   budget)
            except OSError as exc:  # a full or read-only disk: figures, report, hand-offs
                if not is_disk_error(exc):
                    raise
                where = Path(exc.filename).parent if exc.filename else exp_dir
                raise disk_error(where, f"cannot write ({exc.strerror})") from None


def _run_stages(chain: list[spaces.Stage], split: data.Split, exp_dir: Path,
                shared: str | None, resume: bool, force: bool,
                trainable: Callable[..., None],
                budget: ncf_budget.Budget | None) -> list[results.StageSummary]:
    """The stages of a chain, upstream first; a stage already run is reused.

    shared: the experiment's folder in --storage, if any: trials go there, and each
    winner's checkpoint is copied there for the stages downstream to load.
    """
    chain = cluster.check_resources(chain, users_items=(split.num_users, split.num_items))
    winners: dict[str, Winner] = {}
    summaries = []
    skipped: dict[str, str] = {}  # stage: why it did not run (budget.py)
    for i, stage in enumerate(chain):
        missing = [_stage_of(chain, p).name for p in stage.pretrain.values()
                   if _stage_of(chain, p).name in skipped]
        if missing:
            skipped[stage.name] = f"built from {', '.join(missing)}, which did not run"
            print(f"[{stage.name}] skipped: {skipped[stage.name]}")
            continue
        upstream = {kind: winners[_stage_of(chain, p).name] for kind, p in
                    stage.pretrain.items()}
        nominal = (budget.seconds, stage.budget_share) if budget is not None else None
        key = stage.key(split.fingerprint, {k: w.key for k, w in upstream.items()}, nominal)
        asked = [s.pretrain_top for s in chain if stage.path in s.pretrain.values()]
        keep_top = max([KEEP_TOP, *asked]) if asked else 1
        previous = results.read_summary(exp_dir, stage.name)
        reuse = previous is not None and previous.key == key and not force
        why = f"the spec, data or upstream winners changed since {exp_dir / stage.name} ran"
        if reuse and previous.keep_top < max(asked, default=1):
            reuse = False  # it ran before pretrain_top: it kept fewer models than needed
            why = (f"{exp_dir / stage.name} kept its best {previous.keep_top} model(s), the "
                   f"chain's pretrain_top needs {max(asked)}")
        if reuse:
            print(f"[{stage.name}] reusing {exp_dir / stage.name} (same spec, data and "
                  f"upstream): val {stage.metric.upper()}@10 "
                  f"{getattr(previous, 'val_' + stage.metric):.4f}")
            summary = previous
        else:
            if previous is not None and not force:
                _set_aside(stage, exp_dir, previous.key, shared, why)
            seconds = None
            if budget is not None:
                # A NeuMF's shape is known before it runs: the budget times what scoring
                # its winner will take, so that the stage ends by the deadline, scored.
                shape = TrainConfig.from_dict({**stage.fixed_space(),
                                               **stage_config(stage, upstream)},
                                              where=str(stage.path)) \
                    if stage.starts_pretrained else None
                seconds = budget.plan(stage, chain[i:], split, shape)
                if seconds is None:  # Tune would read a limit of 0 as none at all
                    skipped[stage.name] = budget.skip_reason(stage, chain[i:])
                    print(f"[{stage.name}] skipped: {skipped[stage.name]}")
                    continue
            try:
                summary = run_stage(stage, split, exp_dir, upstream, key, resume=resume,
                                    force=force, trainable=trainable, shared=shared,
                                    keep_top=keep_top, budget_s=seconds)
            except OutOfTime:
                if not summaries:
                    raise  # no winner of any stage to report: one line, exit 2
                skipped[stage.name] = (f"its {seconds:.0f} s of the {budget.text} budget "
                                       "ended before any trial finished an epoch")
                print(f"[{stage.name}] skipped: {skipped[stage.name]}")
                continue
            if budget is not None:
                budget.finished(seconds, summary.wall_seconds)
        summaries.append(summary)
        winners[stage.name] = _winner(stage, exp_dir, key, summary, max(asked, default=1),
                                      shared if asked else None)
    if not summaries:
        raise NcfError(f"--time-budget {budget.text if budget else ''}: no stage of the chain "
                       f"ran ({'; '.join(f'{k}: {v}' for k, v in skipped.items())}); give "
                       "more time")
    report = results.write_report(exp_dir, summaries, budget.text if budget else None,
                                  skipped=skipped,
                                  worth=compare.report_lines(exp_dir, summaries, split))
    best = results.best_stage(summaries)
    print(f"done: best model {exp_dir / best.stage / 'best_model.pt'} ({best.stage}, val "
          f"{best.metric.upper()}@10 {getattr(best, 'val_' + best.metric):.4f}); {report}"
          + (f" (skipped: {', '.join(skipped)})" if skipped else "")
          + f"; tensorboard --logdir {exp_dir}")
    return summaries


def _winner(stage: spaces.Stage, exp_dir: Path, key: str, summary: results.StageSummary,
            need: int, shared: str | None) -> Winner:
    """The stage's `need` best kept models, best first, for the stages downstream; with
    `shared` (--storage), copied there: downstream trials may run on any node."""
    tops = summary.top_models or [{"file": "best_model.pt", "config": summary.best_config}]
    tops = tops[:need]
    paths = []
    for top in tops:
        path = str(exp_dir / stage.name / top["file"])
        if shared is not None:
            path = ncf_storage.upload(Path(path), ncf_storage.join(shared, stage.name,
                                                                   top["file"]))
        paths.append(path)
    return Winner(stage.name, key, tuple(paths), tuple(t["config"] for t in tops), summary)


def _set_aside(stage: spaces.Stage, exp_dir: Path, old_key: str, shared: str | None,
               why: str) -> None:
    """A finished stage whose spec, data or upstream winners have changed since (or that
    kept too few models): move its results to <stage>.<old key>/ (kept, not overwritten)
    so that it is searched again. The other stages' files that name its models are
    pointed at the moved ones, so that they stay retrainable as they were."""
    folder = exp_dir / stage.name
    target, n = exp_dir / f"{stage.name}.{old_key}", 1
    while target.exists():
        n += 1
        target = exp_dir / f"{stage.name}.{old_key}-{n}"
    folder.rename(target)
    old_prefixes = [str(folder) + os.sep]
    if shared is not None:  # hand-offs copied to --storage are replaced by the new run's
        old_prefixes.append(ncf_storage.join(shared, stage.name) + "/")
    _repoint(exp_dir, old_prefixes, str(target) + os.sep)
    trials = ncf_storage.join(shared, stage.name, "tune") if shared is not None else None
    if trials is not None and ncf_storage.exists(trials):
        ncf_storage.remove_tree(trials)  # in --storage; the results moved above are the record
    print(f"[{stage.name}] {why}: searching again; its results moved to {target}")


def _repoint(exp_dir: Path, old_prefixes: list[str], new_prefix: str) -> None:
    """Rewrite pretrain paths starting with one of `old_prefixes` in every stage folder's
    best_config.yaml and summary.json under `exp_dir` (written atomically)."""
    def fix(value: object) -> object:
        if isinstance(value, str):
            for old in old_prefixes:
                if value.startswith(old):
                    return new_prefix + value[len(old):]
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    for config_file in exp_dir.glob("*/best_config.yaml"):
        config = read_yaml_mapping(config_file)
        fixed = {k: fix(v) if k.startswith("pretrain_") else v for k, v in config.items()}
        if fixed != config:
            write_yaml_atomic(config_file, fixed)
    for folder in exp_dir.iterdir():
        summary = results.read_summary(exp_dir, folder.name) if folder.is_dir() else None
        if summary is None:
            continue
        before = summary.to_json()
        for config in [summary.best_config, *(t["config"] for t in summary.top_models)]:
            for k in ("pretrain_gmf", "pretrain_mlp"):
                if k in config:
                    config[k] = fix(config[k])
        if summary.to_json() != before:
            write_text_atomic(folder / "summary.json", summary.to_json())


def _stage_of(chain: list[spaces.Stage], path: Path) -> spaces.Stage:
    return next(s for s in chain if s.path == path.resolve())
