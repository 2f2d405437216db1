"""`python -m ncf_tune.search`: tune a chain of stages with Ray Tune, Optuna and ASHA.

    python -m ncf_tune.search --space search_spaces/neumf.yaml
    python -m ncf_tune.search --space search_spaces/neumf.yaml --num-samples 4 --max-epochs 3

Running a file runs the stages it is pretrained from first (GMF, MLP, then NeuMF), or
reuses their results when the same stage already ran on the same data. Each stage is
one Tuner: OptunaSearch (TPE) proposes configs, ASHA stops weak trials at epoch rungs,
trials run side by side on the CPUs/GPUs Ray sees. The winner of a stage is its best
epoch over all trials by validation metric; its checkpoint starts the next stage (a
NeuMF stage with `pretrain_top: n` starts from the n best trials of each upstream stage),
and its test score is computed once, here.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from ncf_tune import checkpoint as ckpt
from ncf_tune import data, results, spaces, training
from ncf_tune import storage as ncf_storage
from ncf_tune.cli import Parser, guarded, positive_int
from ncf_tune.errors import NcfError
from ncf_tune.models import NAMES
from ncf_tune.trainable import train_ncf

# Ray Tune reads these when it starts: keep the console readable and let trials start
# side by side (by default Tune keeps one trial pending at a time with a searcher).
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables, no banners
# Tune's own Ctrl-C handler stops every trial and marks it finished, so a resumed search
# would not rerun them. Without it, Ctrl-C (and SIGTERM, below) leave Tune's state as
# its last snapshot, just like a killed driver, and --resume picks up from there.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")

PROGRESS_EVERY_S = 300.0  # a progress line after this long without a line of ours
MIN_FREE_BYTES = 256 * 2**20  # checkpoints of a few trials; refuse before trials start


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped before a stage finished (Ctrl-C, SIGTERM); --resume goes on."""


KEEP_TOP = 3  # a stage that others pretrain from keeps its best 3 trials' models (or more,
# if pretrain_top asks): a later pretrain_top of 2 or 3 reuses it instead of searching again


@dataclass(frozen=True)
class Winner:
    """What a finished stage hands to the stages downstream of it."""

    stage: str
    key: str
    # results/<experiment>/<stage>/best_model.pt (then top2_model.pt, ...), or their
    # copies in --storage; configs: each one's best_config, in the same order
    checkpoints: tuple[str, ...]
    configs: tuple[dict[str, Any], ...]
    summary: results.StageSummary


def experiment_name(stage: spaces.Stage) -> str:
    """<stage>-<data>: neumf-ml-1m for `--data ml-1m`, neumf-ratings for a ratings.csv."""
    source = stage.data if stage.data in data.ARCHIVES else Path(stage.data).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stage.name}-{source}").strip("-")


def run_chain(space: str | os.PathLike, *, data_source: str | None = None,
              results_dir: str | os.PathLike = "results", experiment: str | None = None,
              num_samples: int | None = None, max_epochs: int | None = None,
              seed: int | None = None, cpus: int | None = None, gpus: int | None = None,
              address: str | None = None, storage: str | None = None, resume: bool = False,
              force: bool = False,
              trainable: Callable[..., None] = train_ncf) -> list[results.StageSummary]:
    """Run the stage in `space` and its upstream stages; returns one summary per stage.

    The keyword arguments are the CLI's options (see `python -m ncf_tune.search --help`);
    num_samples, max_epochs, data_source and seed override every stage of the chain.
    storage: a folder every node can reach, or an s3://, gs://, file:// URI, for trials,
    their checkpoints and the winners handed down the chain (default: under results_dir).
    trainable: the function each trial runs, `train_ncf(config, data)` or a wrapper of it.
    Raises NcfError for bad input, SearchInterrupted when a stage was stopped early.
    """
    overrides = {"num_samples": num_samples, "max_epochs": max_epochs, "data": data_source,
                 "seed": seed}
    chain = spaces.load_chain(space, overrides)
    last = chain[-1]
    name = experiment or experiment_name(last)
    exp_dir = Path(results_dir).expanduser().resolve() / name
    if storage is not None and not ncf_storage.is_uri(storage):
        storage = str(Path(storage).expanduser().resolve())  # Ray wants absolute paths
    shared = ncf_storage.join(storage, name) if storage else None
    with _experiment_lock(exp_dir):
        t = time.perf_counter()
        split = data.prepare(last.data, seed=last.seed)
        print(f"data: {last.data}: {split.num_users} users, {split.num_items} items, "
              f"{len(split.train_users)} train positives ({time.perf_counter() - t:.1f} s)")
        for note in split.notes:
            print(f"data: {note}")
        started_here = _start_ray(address, cpus, gpus)
        try:
            return _run_stages(chain, split, exp_dir, shared, resume, force, trainable)
        except KeyboardInterrupt:
            # Trials are still running in Ray's workers: stop them before exiting.
            if started_here:
                _shutdown_ray(timeout=30)
            raise


def _run_stages(chain: list[spaces.Stage], split: data.Split, exp_dir: Path,
                shared: str | None, resume: bool, force: bool,
                trainable: Callable[..., None]) -> list[results.StageSummary]:
    """The stages of a chain, upstream first; a stage already run is reused.

    shared: the experiment's folder in --storage, if any: trials go there, and each
    winner's checkpoint is copied there for the stages downstream to load.
    """
    chain = _check_resources(chain)
    winners: dict[str, Winner] = {}
    summaries = []
    for stage in chain:
        upstream = {kind: winners[_stage_of(chain, p).name] for kind, p in
                    stage.pretrain.items()}
        key = stage.key(split.fingerprint, {k: w.key for k, w in upstream.items()})
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
            summary = run_stage(stage, split, exp_dir, upstream, key, resume=resume,
                                force=force, trainable=trainable, shared=shared,
                                keep_top=keep_top)
        summaries.append(summary)
        winners[stage.name] = _winner(stage, exp_dir, key, summary, max(asked, default=1),
                                      shared if asked else None)
    report = results.write_report(exp_dir, summaries)
    print(f"done: {report}; tensorboard --logdir {exp_dir}")
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
    so that it is searched again."""
    folder = exp_dir / stage.name
    target, n = exp_dir / f"{stage.name}.{old_key}", 1
    while target.exists():
        n += 1
        target = exp_dir / f"{stage.name}.{old_key}-{n}"
    folder.rename(target)
    trials = ncf_storage.join(shared, stage.name, "tune") if shared is not None else None
    if trials is not None and ncf_storage.exists(trials):
        ncf_storage.remove_tree(trials)  # in --storage; the results moved above are the record
    print(f"[{stage.name}] {why}: searching again; its results moved to {target}")


def run_stage(stage: spaces.Stage, split: data.Split, exp_dir: Path,
              upstream: dict[str, Winner], key: str, resume: bool = False,
              force: bool = False, trainable: Callable[..., None] = train_ncf,
              shared: str | None = None, keep_top: int = 1) -> results.StageSummary:
    """One Tuner for one stage; writes the stage's results and returns its summary.

    Trials and their checkpoints go to <shared>/<stage>/tune when `shared` (a storage
    folder or URI) is given, else to <exp_dir>/<stage>/tune. keep_top: how many of the
    best trials' models the stage keeps (for a NeuMF stage's pretrain_top).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = exp_dir / stage.name
    trials_root = ncf_storage.join(shared, stage.name) if shared else str(folder)
    tune_dir = ncf_storage.join(trials_root, "tune")
    param_space = {**stage.tune_space(), **_stage_config(stage, upstream)}
    trial_fn = tune.with_resources(tune.with_parameters(trainable, data=split),
                                   {"cpu": stage.cpu, "gpu": stage.gpu})
    printer = TrialPrinter(stage)
    started = time.perf_counter()
    earlier = ncf_storage.exists(tune_dir)
    if earlier and resume and tune.Tuner.can_restore(tune_dir):
        print(f"[{stage.name}] resuming the interrupted search in {tune_dir}")
        tuner = tune.Tuner.restore(tune_dir, trainable=trial_fn, resume_errored=True,
                                   param_space=param_space)
    else:
        if earlier:
            if not force and not resume:
                raise NcfError(f"{tune_dir}: an earlier search of stage {stage.name} did not "
                               "finish; pass --resume to continue it or --force to start over")
            ncf_storage.remove_tree(tune_dir)
        print(f"[{stage.name}] {stage.num_samples} trials of {NAMES[stage.model]}, up to "
              f"{stage.max_epochs} epochs each, {stage.cpu:g} CPU + {stage.gpu:g} GPU per trial"
              + _built_from(upstream, stage))
        tuner = _new_tuner(stage, trial_fn, param_space, trials_root, printer)
    grid = tuner.fit()
    # A stage with unfinished trials is not a result: nothing is written for it.
    if grid.num_terminated + grid.num_errors < stage.num_samples:
        raise SearchInterrupted(f"[{stage.name}] interrupted with "
                                f"{grid.num_terminated + grid.num_errors} of {stage.num_samples}"
                                " trials finished; run the same command with --resume to go on")
    rows, ranked = _collect(grid, stage)
    if not ranked:
        raise NcfError(f"[{stage.name}] no trial finished an epoch (see {tune_dir}); check "
                       "the errors there, or lower lr if every trial diverged")
    with tempfile.TemporaryDirectory() as scratch:
        tops = _fetch_top(ranked, stage, keep_top, Path(scratch))
        _, winner, best_row = tops[0]
        test_hr, test_ndcg = training.evaluate(winner.model(), split.test)
        statuses = {s: sum(r.status == s for r in rows) for s in results.STATUSES}
        summary = results.StageSummary(
            stage=stage.name, model=stage.model, key=key, data=stage.data,
            data_fingerprint=split.fingerprint, metric=stage.metric,
            winner_trial=best_row.trial_id, best_epoch=int(best_row.best_epoch or 0),
            val_hr=float(best_row.val_hr or 0), val_ndcg=float(best_row.val_ndcg or 0),
            test_hr=test_hr, test_ndcg=test_ndcg, trials=len(rows), statuses=statuses,
            wall_seconds=round(time.perf_counter() - started, 2),
            trial_seconds=round(sum(r.train_seconds for r in rows), 2),
            best_config=_best_config(winner, stage),
            searched=[k for k, p in stage.params.items() if p.kind != "fixed"],
            top_models=[{"file": results.top_model_file(rank), "trial_id": row.trial_id,
                         "epoch": top.epoch, "val_hr": row.val_hr, "val_ndcg": row.val_ndcg,
                         "config": _best_config(top, stage)}
                        for rank, (_, top, row) in enumerate(tops, start=1)],
            keep_top=keep_top,
        )
        results.write_stage(exp_dir, summary, rows, [path for path, _, _ in tops])
    print(f"[{stage.name}] winner {best_row.trial_id} epoch {summary.best_epoch}: val HR@10 "
          f"{summary.val_hr:.4f} NDCG@10 {summary.val_ndcg:.4f} | test HR@10 {test_hr:.4f} "
          f"NDCG@10 {test_ndcg:.4f} | {', '.join(f'{n} {s}' for s, n in statuses.items() if n)}"
          f" | {summary.wall_seconds:.0f} s -> {folder}")
    return summary


def _fetch_top(ranked: list[tuple[Any, results.TrialRow]], stage: spaces.Stage, keep_top: int,
               scratch: Path) -> list[tuple[Path, ckpt.Checkpoint, results.TrialRow]]:
    """The best-epoch checkpoints of the first `keep_top` trials in `ranked` (best first),
    copied to `scratch` (from --storage if trials ran there). After the winner, an MLP
    stage keeps only towers as deep as the winner's: NeuMF stacks them side by side."""
    tops: list[tuple[Path, ckpt.Checkpoint, results.TrialRow]] = []
    for res, row in ranked:
        if len(tops) == keep_top:
            break
        with res.get_best_checkpoint(stage.metric, stage.mode).as_directory() as local:
            path = scratch / f"{len(tops) + 1}.pt"
            shutil.copyfile(Path(local) / "model.pt", path)
        top = ckpt.load(path, expect_model=stage.model)
        if tops and len(top.config.layers) != len(tops[0][1].config.layers) \
                and stage.model == "mlp":
            continue
        tops.append((path, top, row))
    return tops


def _best_config(top: ckpt.Checkpoint, stage: spaces.Stage) -> dict[str, Any]:
    """A kept trial's config as a `python -m ncf_tune.train --config` file: its epochs
    cut at its best epoch (and its cosine decay kept as the trial's)."""
    cfg = top.config
    if cfg.lr_schedule == "cosine" and not cfg.schedule_epochs:
        cfg = cfg.replace(schedule_epochs=cfg.epochs)  # the trial's decay, cut at its best
    # threads: the trial's (trainable.py); bf16 on another count rounds differently
    best_config = {**cfg.replace(epochs=top.epoch).to_dict(), "data": stage.data,
                   "threads": max(1, math.ceil(stage.cpu))}
    for k in ("pretrain_gmf", "pretrain_mlp"):
        if best_config[k] is None:
            del best_config[k]
    return best_config


def _new_tuner(stage: spaces.Stage, trial_fn: Any, param_space: dict[str, Any], folder: str,
               printer: tune.Callback) -> tune.Tuner:
    """OptunaSearch (TPE) + ASHA (or FIFO) over `param_space`, trials under folder/tune
    (a local folder or a storage URI)."""
    searcher = OptunaSearch(
        metric=stage.metric, mode=stage.mode,
        sampler=optuna.samplers.TPESampler(seed=stage.searcher.seed,
                                           n_startup_trials=stage.searcher.n_startup_trials),
        points_to_evaluate=[dict(p) for p in stage.searcher.points_to_evaluate] or None,
    )
    if stage.scheduler.type == "asha":
        # Rungs in epochs (our own counter), so a stopped trial's epochs are comparable.
        scheduler = ASHAScheduler(time_attr="epoch", max_t=stage.max_epochs,
                                  grace_period=min(stage.scheduler.grace_period,
                                                   stage.max_epochs),
                                  reduction_factor=stage.scheduler.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trial_fn,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=stage.metric, mode=stage.mode, search_alg=searcher,
                                    scheduler=scheduler, num_samples=stage.num_samples,
                                    reuse_actors=True),  # no new process per trial
        run_config=tune.RunConfig(
            name="tune", storage_path=folder, verbose=0, callbacks=[printer],
            # keep each trial's best epoch: the stage's winner is the best epoch of all
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=stage.metric,
                checkpoint_score_order=stage.mode),
            failure_config=tune.FailureConfig(max_failures=2),  # retried from checkpoint
        ),
    )


def _built_from(upstream: dict[str, Winner], stage: spaces.Stage) -> str:
    """', built from the 2 best GMFs (...) and ...' for a NeuMF of several parts, else ''."""
    if stage.model != "neumf" or stage.pretrain_top == 1 or not upstream:
        return ""
    parts = []
    for kind, winner in upstream.items():
        sizes = [c["factors"] if kind == "gmf" else c["layers"][-1]
                 for c in winner.configs[:stage.pretrain_top]]
        parts.append(f"{len(sizes)} best {NAMES[kind]}s ({', '.join(map(str, sizes))} factors)")
    return ", built from the " + " and the ".join(parts) + " side by side"


def _stage_config(stage: spaces.Stage, upstream: dict[str, Winner]) -> dict[str, Any]:
    """Fixed keys every trial of the stage gets: model, epochs, seed, pretrained inputs."""
    config: dict[str, Any] = {"model": stage.model, "epochs": stage.max_epochs,
                              "seed": stage.seed}
    for kind, winner in upstream.items():
        # An MLP takes one GMF's embeddings; a NeuMF its upstream stages' best
        # `pretrain_top` models each (fewer if fewer trials finished), side by side.
        n = stage.pretrain_top if stage.model == "neumf" else 1
        paths, configs = winner.checkpoints[:n], winner.configs[:n]
        config[f"pretrain_{kind}"] = paths[0] if len(paths) == 1 else list(paths)
        if stage.model == "neumf":  # sizes must match the weights copied in: they add up
            for name in spaces.INHERITED[kind]:
                values = [c.get(name) for c in configs]  # no biases before they existed
                if name == "factors":
                    value = sum(values)
                elif name == "layers":
                    value = ",".join(str(sum(sizes)) for sizes in zip(*values, strict=True))
                else:  # biases: NeuMF has them if any part has
                    value = any(map(bool, values)) or config.get("biases", False)
                config[name] = value
    if stage.model == "mlp" and "gmf" in upstream:
        factors = upstream["gmf"].summary.best_config["factors"]
        layers = stage.params.get("layers")
        values = [] if layers is None else (layers.args if layers.kind in ("fixed", "choice")
                                            else [])
        for v in values or ["64,32,16,8"]:
            first = int(str(v).split(",")[0])
            if first != 2 * factors:
                raise NcfError(f"{stage.path}: params.layers {v} must start with "
                               f"{2 * factors} (2 x the GMF winner's {factors} factors) to take "
                               "its embeddings; fix gmf's factors or drop pretrain.gmf")
    return config


def _collect(grid: Any, stage: spaces.Stage
             ) -> tuple[list[results.TrialRow], list[tuple[Any, results.TrialRow]]]:
    """Rows for trials.csv, and (result, row) of every trial with a checkpoint, best
    first by its best epoch: the first holds the stage's winner."""
    rows: list[results.TrialRow] = []
    ranked: list[tuple[float, Any, results.TrialRow]] = []
    sign = 1 if stage.mode == "max" else -1
    searched = [k for k, p in stage.params.items() if p.kind != "fixed"]
    for res in grid:
        trial_id = str(res.metrics.get("trial_id") or Path(res.path).name)
        df = res.metrics_dataframe
        if df is None or df.empty:  # a trial that failed before its first epoch
            df = pd.DataFrame({"epoch": [], "diverged": [], "seconds": []})
        epochs_run = int(df["epoch"].max()) if len(df) else 0
        diverged = bool(len(df)) and bool(df["diverged"].iloc[-1])
        status = results.trial_status(res.error is not None, diverged, epochs_run,
                                      stage.max_epochs)
        row = results.TrialRow(trial_id, status, epochs_run, None, None, None,
                               float(df["seconds"].sum()),
                               {k: res.config.get(k) for k in searched})
        # Latest first: a tie goes to the later epoch, as Tune's checkpoint keeping does
        # (a pretrained NeuMF's epoch 0 and an epoch that changed nothing can tie).
        clean = df[~df["diverged"].astype(bool)].iloc[::-1]
        if not clean.empty:
            top = clean.loc[(clean[stage.metric] * sign).idxmax()]
            row.best_epoch, row.val_hr, row.val_ndcg = int(top["epoch"]), float(top["hr"]), \
                float(top["ndcg"])
            value = sign * float(top[stage.metric])
            if res.get_best_checkpoint(stage.metric, stage.mode) is not None:
                ranked.append((value, res, row))
        rows.append(row)
    ranked.sort(key=lambda t: -t[0])  # stable: a tie goes to the earlier trial
    return rows, [(res, row) for _, res, row in ranked]


class TrialPrinter(tune.Callback):
    """A line per finished trial, instead of Ray's tables, and a progress line after
    every PROGRESS_EVERY_S seconds without one (a GMF trial of 256 epochs runs for
    many minutes: silence that long looks like a hang)."""

    def __init__(self, stage: spaces.Stage) -> None:
        self.stage = stage
        self.best: dict[str, tuple[float, int]] = {}  # trial id: its best value, epoch
        self.epoch: dict[str, int] = {}  # trial id: its latest epoch
        self.done = 0
        self.started = self.last_line = time.monotonic()

    def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
        value = result.get(self.stage.metric)
        if value is not None and not result.get("diverged"):
            old = self.best.get(trial.trial_id)
            sign = 1 if self.stage.mode == "max" else -1
            if old is None or sign * value >= sign * old[0]:
                self.best[trial.trial_id] = (value, int(result["epoch"]))
        self.epoch[trial.trial_id] = int(result.get("epoch", 0))  # last_result lags here
        if time.monotonic() - self.last_line >= PROGRESS_EVERY_S:
            self._progress(trials)

    def _progress(self, trials: list[Any]) -> None:
        """`[gmf] 12 min: 2 running (epochs 205, 149 of 256), 0 finished; best so far
        NDCG@10 0.6018 (epoch 149) factors=128 ...`"""
        stage = self.stage
        running = [t for t in trials if t.status == "RUNNING"]
        epochs = ", ".join(str(self.epoch.get(t.trial_id, 0)) for t in running)
        line = (f"[{stage.name}] {(time.monotonic() - self.started) / 60:.0f} min: "
                f"{len(running)} running (epochs {epochs or '-'} of {stage.max_epochs}), "
                f"{self.done} finished")
        by_id = {t.trial_id: t for t in trials}
        if self.best:
            sign = 1 if stage.mode == "max" else -1
            tid, (value, epoch) = max(self.best.items(), key=lambda kv: sign * kv[1][0])
            params = self._params(by_id[tid]) if tid in by_id else ""
            line += f"; best so far {stage.metric.upper()}@10 {value:.4f} (epoch {epoch}) {params}"
        print(line.rstrip(), flush=True)
        self.last_line = time.monotonic()

    def _params(self, trial: Any) -> str:
        return " ".join(f"{k}={_short(v)}" for k, v in trial.config.items()
                        if k in self.stage.params and self.stage.params[k].kind != "fixed")

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
        last = trial.last_result or {}
        self._line(trial, results.trial_status(False, bool(last.get("diverged")),
                                               int(last.get("epoch", 0)),
                                               self.stage.max_epochs))

    def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
        self._line(trial, results.trial_status(True, False, 0, self.stage.max_epochs))

    def _line(self, trial: Any, status: str) -> None:
        stage = self.stage
        self.done += 1
        value, epoch = self.best.get(trial.trial_id, (float("nan"), 0))
        print(f"[{stage.name}] trial {self.done}/{stage.num_samples} {status}: best "
              f"{stage.metric.upper()}@10 {value:.4f} (epoch {epoch}) {self._params(trial)}",
              flush=True)
        self.last_line = time.monotonic()


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _stage_of(chain: list[spaces.Stage], path: Path) -> spaces.Stage:
    return next(s for s in chain if s.path == path.resolve())


class _experiment_lock:
    """One search per experiment folder at a time (an flock on <experiment>/.lock)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.folder / ".lock", "w")  # noqa: SIM115
        except OSError as exc:
            raise NcfError(f"{self.folder}: cannot write results here ({exc.strerror}); pass "
                           "--results DIR with a writable folder") from None
        free = shutil.disk_usage(self.folder).free
        if free < MIN_FREE_BYTES:
            self.handle.close()
            raise NcfError(f"{self.folder}: only {free / 2**20:.0f} MiB free; a search needs at "
                           f"least {MIN_FREE_BYTES / 2**20:.0f} MiB for checkpoints: free some "
                           "space or pass --results DIR on another disk")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise NcfError(f"{self.folder}: another search is writing to this experiment; "
                           "wait for it, or pass --experiment NAME to use another folder") from None

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _shutdown_ray(timeout: float) -> None:
    """ray.shutdown(), but never wait longer than `timeout` for it."""
    stopper = threading.Thread(target=ray.shutdown, daemon=True)
    stopper.start()
    stopper.join(timeout)


def _start_ray(address: str | None, cpus: int | None, gpus: int | None) -> bool:
    """Start (or join) Ray unless it is running; True when this call started it."""
    if ray.is_initialized():
        return False
    # Workers import ncf_tune: make sure they find it even when it is not pip-installed.
    package_root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "log_to_driver": False,
                              "runtime_env": {"env_vars": {"PYTHONPATH": path}}}
    if address:
        kwargs["address"] = address
    else:
        kwargs.update(num_cpus=cpus, num_gpus=gpus)
    ray.init(**kwargs)
    # ray.init puts in a SIGTERM handler that aborts the process; ours stops the search
    # like Ctrl-C does, so that a scheduler ending the job leaves a resumable search.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(slots))
    return True


def _check_resources(chain: list[spaces.Stage]) -> list[spaces.Stage]:
    """Refuse a stage that asks for more per trial than the cluster has; settle gpu."""
    have = ray.cluster_resources()
    settled = []
    for stage in chain:
        if stage.gpu is None:  # two trials per GPU when there is one, as NVIDIA's NCF fits
            stage = dataclasses.replace(stage, gpu=0.5 if have.get("GPU", 0) >= 1 else 0.0)
        settled.append(stage)
        for name, want in (("cpu", stage.cpu), ("gpu", stage.gpu)):
            got = have.get(name.upper(), 0)
            if want > got:
                raise NcfError(f"{stage.path}: resources.{name}={want:g} per trial, but the Ray "
                               f"cluster has {got:g}; lower it (or --{name}s N, --address)")
    return settled


def parser() -> Parser:
    p = Parser(prog="python -m ncf_tune.search", description=__doc__.split("\n\n")[0])
    p.add_argument("--space", required=True, help="a stage's YAML file (search_spaces/*.yaml)")
    p.add_argument("--data", help="data source for every stage (overrides the files')")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--experiment", help="subfolder name (default <stage>-<data>)")
    p.add_argument("--num-samples", type=positive_int, help="trials per stage, every stage")
    p.add_argument("--max-epochs", type=positive_int, help="epochs per trial, every stage")
    p.add_argument("--seed", type=int, help="data split and training seed, every stage")
    p.add_argument("--cpus", type=positive_int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--gpus", type=int, help="GPUs for a local Ray (default: all)")
    p.add_argument("--address", help="join a running Ray cluster: auto or ray://host:10001")
    p.add_argument("--storage", help="trials, checkpoints and hand-offs: a folder every node "
                   "can reach, or s3://, gs://, file:// (default: under --results)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search")
    p.add_argument("--force", action="store_true", help="rerun stages even if results exist")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code = guarded(lambda: _main(args), interrupted="stopped before the search finished; run "
                   "the same command with --resume to go on (finished trials are kept)")
    if code == 130:
        # Stopped mid-stage: Tune's state is on disk and Ray is shut down; do not let a
        # lingering library thread keep the process alive.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler ending the job) stops the search like Ctrl-C does."""
    raise KeyboardInterrupt


def _main(args: Any) -> int:
    run_chain(args.space, data_source=args.data, results_dir=args.results,
              experiment=args.experiment, num_samples=args.num_samples,
              max_epochs=args.max_epochs, seed=args.seed, cpus=args.cpus, gpus=args.gpus,
              address=args.address, storage=args.storage, resume=args.resume,
              force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
