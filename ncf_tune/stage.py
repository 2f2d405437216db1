"""One stage of a search: one Ray Tune `Tuner`, its results written under <stage>/.

OptunaSearch (TPE, with the constant liar so that trials started side by side do not
all get the same proposal) proposes configs and learns from each trial's best epoch;
ASHA cuts weak trials at rungs counted in evaluations; Tune's own TimeoutStopper ends
the stage when its share of a `--time-budget` is spent. The winner is the best epoch of
any trial by validation metric; its test score is computed once, here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from ncf_tune import budget as ncf_budget
from ncf_tune import checkpoint as ckpt
from ncf_tune import cluster, cost, data, figures, mixes, results, sampling, spaces, training
from ncf_tune import memory as ncf_memory
from ncf_tune import storage as ncf_storage
from ncf_tune.console import TrialPrinter
from ncf_tune.errors import Interrupted, NcfError
from ncf_tune.files import disk_error, is_disk_error, write_problem, write_text_atomic
from ncf_tune.models import NAMES
from ncf_tune.trainable import REPORT_BY, train_ncf

# What a trial cut at the budget's end (trainable.REPORT_BY) keeps for its checkpoint and
# report after validating: at most this, or 5% of a short stage's budget.
REPORT_MARGIN_S = 10.0
BUDGET_SLACK_S = 2.0  # and before the stage's clock stops it, for Tune's own bookkeeping


class SearchInterrupted(Interrupted):
    """The search stopped before a stage finished (Ctrl-C, SIGTERM); --resume goes on."""


class OutOfTime(NcfError):
    """A stage's time budget ended before any of its trials finished an epoch: the
    chain skips it when earlier stages have winners to report (budget.py)."""


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


def run_stage(stage: spaces.Stage, split: data.Split, exp_dir: Path,
              upstream: dict[str, Winner], key: str, *, resume: bool = False,
              force: bool = False, trainable: Callable[..., None] = train_ncf,
              shared: str | None = None, keep_top: int = 1,
              budget_s: float | None = None) -> results.StageSummary:
    """Search one stage with one Tuner; writes the stage's results and returns its summary.

    Trials and their checkpoints go to <shared>/<stage>/tune when `shared` (a storage
    folder or URI) is given, else to <exp_dir>/<stage>/tune. keep_top: how many of the
    best trials' models the stage keeps (for a NeuMF stage's pretrain_top). budget_s:
    the stage's time budget in seconds (budget.StageClock), None for none; a resumed
    stage gets it anew, in place of what was left of its old one.
    Raises SearchInterrupted when the stage stopped before its trials (or its budget)
    ran out, NcfError when --resume would mix two different searches.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = exp_dir / stage.name
    trials_root = ncf_storage.join(shared, stage.name) if shared else str(folder)
    tune_dir = ncf_storage.join(trials_root, "tune")
    param_space = {**stage.fixed_space(), **stage_config(stage, upstream)}
    if budget_s is not None:  # trials short of a report at the end report what they have
        param_space[REPORT_BY] = time.time() + budget_s - BUDGET_SLACK_S - min(
            REPORT_MARGIN_S, 0.05 * budget_s)
    resources = {"cpu": stage.cpu, "gpu": stage.gpu}
    memory = ncf_memory.stage_request(stage, param_space, split, ncf_memory.node_memory())
    if memory is not None:  # no more trials on a node than its memory holds (memory.py)
        resources["memory"] = memory
    trial_fn = tune.with_resources(tune.with_parameters(trainable, data=split), resources)
    printer = TrialPrinter(stage)
    watch = _DiskWatch(folder if shared is None else None)
    started = time.perf_counter()
    earlier = ncf_storage.exists(tune_dir)
    marker = folder / "search.json"  # the key of the search under way in tune_dir
    if earlier and resume and tune.Tuner.can_restore(tune_dir):
        before = _check_same_search(marker, key, stage)
        limit = ""
        if budget_s is not None:  # budget.py: a resumed stage gets its share anew
            limit = (f" with a time budget of {budget_s:.0f} s (it started with "
                     f"{before['budget_s']:.0f} s)" if before.get("budget_s") is not None
                     else f" with a time budget of {budget_s:.0f} s")
        print(f"[{stage.name}] resuming the interrupted search in {tune_dir}{limit}")
        if budget_s is not None:
            ncf_budget.StageClock.resume(key, budget_s)
        tuner = tune.Tuner.restore(tune_dir, trainable=trial_fn, resume_errored=True,
                                   param_space=param_space)
        _set_restored(tuner, [printer, watch])
        # Trials that ended before the interrupt (ASHA, completed) ended on their own:
        # the budget cannot have cut them.
        printer.ended |= _ended_before(tune_dir)
        write_text_atomic(marker, json.dumps({**before, "budget_s": budget_s}) + "\n")
    else:
        if earlier:
            if not force and not resume:
                raise NcfError(f"{tune_dir}: an earlier search of stage {stage.name} did not "
                               "finish; pass --resume to continue it or --force to start over")
            ncf_storage.remove_tree(tune_dir)
        budget = f", time budget {budget_s:.0f} s" if budget_s is not None else ""
        print(f"[{stage.name}] up to {stage.num_samples} trials of {NAMES[stage.model]}, up "
              f"to {stage.max_epochs} epochs each, {stage.cpu:g} CPU + {stage.gpu:g} GPU per "
              f"trial{budget}" + _built_from(upstream, stage))
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(marker, json.dumps({"key": key, "budget_s": budget_s}) + "\n")
        tune_budget = budget_s
        if stage.starts_pretrained:  # its mixes scored first, its recipes at the best
            stage = mixes.seed_best_alphas(stage, split, param_space)
            if budget_s is not None:  # the scoring came out of the stage's budget
                tune_budget = max(1.0, budget_s - (time.perf_counter() - started))
        points = None
        if tune_budget is not None:  # recipes whose first report cannot fit are not started
            kept, dropped = cost.fitting_points(stage, param_space, split, tune_budget)
            for line in dropped:
                print(line)
            points = [stage.optuna_points()[i] for i in kept]
        clock = ncf_budget.StageClock(key, tune_budget) if tune_budget is not None else None
        tuner = _new_tuner(stage, trial_fn, param_space, trials_root, [printer, watch],
                           clock, sampling.reports_per_epoch(len(split.train_users)), points)
    ncf_budget.StageClock.fired.discard(key)
    try:
        with _quiet_unstarted_trials():
            grid = tuner.fit()
    except DiskFull as exc:
        raise disk_error(folder, str(exc)) from None
    except Exception:
        # Tune's own files can be cut short by a full disk (it then fails reading them).
        problem = write_problem(folder) if shared is None else None
        if problem is not None:
            raise disk_error(folder, problem) from None
        raise
    if shared is None and (problem := write_problem(folder)) is not None:
        raise disk_error(folder, problem)  # trials failed writing: not a result
    ended_by_budget = ncf_budget.StageClock.ended(key) or (budget_s is not None
                                                           and _any_cut(grid))
    ncf_budget.StageClock.resumed.pop(key, None)
    # A stage with unfinished trials is not a result: nothing is written for it.
    if grid.num_terminated + grid.num_errors < stage.num_samples and not ended_by_budget:
        raise SearchInterrupted(f"[{stage.name}] interrupted with "
                                f"{grid.num_terminated + grid.num_errors} of {stage.num_samples}"
                                " trials finished; run the same command with --resume to go on")
    rows, ranked, curves = _collect(grid, stage, printer.ended if ended_by_budget else None)
    if not ranked and ended_by_budget and not any(r.status == "error" for r in rows):
        # Nothing to keep: a rerun starts the stage afresh (no --resume, no --force).
        ncf_storage.remove_tree(tune_dir)
        marker.unlink(missing_ok=True)
        raise OutOfTime(f"[{stage.name}] no trial finished an epoch (see {tune_dir}); its "
                        f"time budget ({budget_s:.0f} s) ended before any trial finished an "
                        "epoch; give --time-budget more")
    if not ranked:
        hint = (f"its time budget ({budget_s:.0f} s) ended before any trial finished an "
                "epoch; give --time-budget more" if ended_by_budget else
                "check the errors there, or lower lr if every trial diverged")
        raise NcfError(f"[{stage.name}] no trial finished an epoch (see {tune_dir}); {hint}")
    with tempfile.TemporaryDirectory() as scratch:
        tops = _fetch_top(ranked, stage, keep_top, Path(scratch))
        _, winner, best_row = tops[0]
        model = winner.model()
        test_hr, test_ndcg = training.evaluate(model, split.test)
        full_hr, full_ndcg = training.evaluate_full(model, split, "test")
        drawn = figures.for_stage(folder, stage.name, stage.metric, curves, rows,
                                  {k: _scale(stage.params[k]) for k in stage.searched})
        statuses = {s: sum(r.status == s for r in rows) for s in results.STATUSES}
        summary = results.StageSummary(
            stage=stage.name, model=stage.model, key=key, data=stage.data,
            data_fingerprint=split.fingerprint, metric=stage.metric,
            winner_trial=best_row.trial_id, best_epoch=_epoch(best_row.best_epoch or 0),
            val_hr=float(best_row.val_hr or 0), val_ndcg=float(best_row.val_ndcg or 0),
            test_hr=test_hr, test_ndcg=test_ndcg, test_full_hr=full_hr,
            test_full_ndcg=full_ndcg, eval=stage.eval, trials=len(rows), statuses=statuses,
            wall_seconds=round(time.perf_counter() - started, 2),
            trial_seconds=round(sum(r.train_seconds for r in rows), 2),
            best_config=_best_config(winner, stage),
            searched=stage.searched,
            top_models=[{"file": results.top_model_file(rank), "trial_id": row.trial_id,
                         "epoch": top.epoch, "val_hr": row.val_hr, "val_ndcg": row.val_ndcg,
                         "config": _best_config(top, stage)}
                        for rank, (_, top, row) in enumerate(tops, start=1)],
            keep_top=keep_top,
            budget_s=None if budget_s is None else round(budget_s, 1),
            trial_epochs=sum(r.epochs_run for r in rows),
            figures=[str(p.relative_to(exp_dir)) for p in drawn.images],
            importance=drawn.importance, figures_note=drawn.note,
        )
        try:
            results.write_stage(exp_dir, summary, rows, [path for path, _, _ in tops])
        except OSError as exc:
            if is_disk_error(exc):
                raise disk_error(folder, f"cannot write ({exc.strerror})") from None
            raise
    marker.unlink(missing_ok=True)
    if best_row.status == "cut by the time budget" and isinstance(summary.best_epoch, float):
        print(f"[{stage.name}] the time budget ended the stage before its winner's next "
              f"report: it is a partly trained model, scored at the cut (epoch "
              f"{summary.best_epoch})")
    print(f"[{stage.name}] winner {best_row.trial_id} epoch {summary.best_epoch}: val HR@10 "
          f"{summary.val_hr:.4f} NDCG@10 {summary.val_ndcg:.4f} | test HR@10 {test_hr:.4f} "
          f"NDCG@10 {test_ndcg:.4f} (full ranking {full_hr:.4f} / {full_ndcg:.4f}) | "
          f"{', '.join(f'{n} {s}' for s, n in statuses.items() if n)}"
          f" | {summary.wall_seconds:.0f} s -> {folder}")
    return summary


def _check_same_search(marker: Path, key: str, stage: spaces.Stage) -> dict[str, Any]:
    """--resume continues the search that was interrupted, never a different one: Tune
    would restore the old trials, budget and TPE state under the new spec's name.
    Returns the marker: {key, budget_s (the stage's time budget when it started)}."""
    try:
        before = json.loads(marker.read_text())
        old = before.get("key")
    except (OSError, ValueError, AttributeError):
        before, old = {}, None
    if old != key:
        raise NcfError(f"{stage.path}: --resume: the interrupted search of stage {stage.name} "
                       "ran with other settings (space file, --num-samples, --max-epochs, "
                       "--time-budget, --no-recipes, data or upstream); rerun that command "
                       "with --resume, or pass --force to start this one over")
    return before


class DiskFull(Exception):
    """The stage's results folder filled up (or turned unwritable) while trials ran."""


class _DiskWatch(tune.Callback):
    """Stops a stage whose results folder has no room left (files.write_problem),
    checked every few seconds and whenever a trial fails: trials that cannot write
    their checkpoints would fail one after another, and Tune's own state files be cut
    short. Tune's state stays as its last snapshot, which --resume picks up."""

    EVERY_S = 2.0

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder  # None: trials write to --storage, not watched here
        self.checked = 0.0

    def _check(self) -> None:
        if self.folder is not None and self.folder.is_dir():
            self.checked = time.monotonic()
            problem = write_problem(self.folder)
            if problem is not None:
                raise DiskFull(problem)

    def on_step_begin(self, iteration, trials, **info):  # noqa: ANN001
        if time.monotonic() - self.checked >= self.EVERY_S:
            self._check()

    def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
        self._check()

    def __reduce__(self):  # noqa: ANN204
        return (_DiskWatch, (self.folder,))  # the clock is the running process's


def _set_restored(tuner: tune.Tuner, callbacks: list[tune.Callback]) -> None:
    """Give a restored Tuner this process's callbacks in place of those it was saved
    with: Tune restores its RunConfig as pickled, with no way to change it, and the
    restored console callback is a copy whose record of which trials ended on their own
    this process would never see. (Its time budget: budget.StageClock.)"""
    run_config = getattr(getattr(tuner, "_local_tuner", None), "_run_config", None)
    if run_config is None:
        raise NcfError("--resume: this Ray's Tuner does not expose its RunConfig; use the "
                       f"Ray versions in pyproject.toml ({cluster.RAY_VERSIONS})")
    run_config.callbacks = callbacks


def _ended_before(tune_dir: str) -> set[str]:
    """Ids of the trials an interrupted search had already ended (finished or stopped by
    ASHA), read from Tune's saved state. Not the failed ones: --resume runs them again."""
    try:
        trials = tune.ExperimentAnalysis(tune_dir).trials
    except Exception:  # no readable state: nothing is known to have ended
        return set()
    return {t.trial_id for t in trials if t.status == "TERMINATED"}


@contextlib.contextmanager
def _quiet_unstarted_trials() -> Iterator[None]:
    """Tune warns, one path each, about every trial with no result file: here those are
    trials the time budget ended before their first epoch, which the stage's summary
    counts. Its other warnings still show."""
    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def make_searcher(stage: spaces.Stage, sampler: optuna.samplers.BaseSampler | None = None,
                  points: list[dict[str, Any]] | None = None) -> OptunaSearch:
    """The stage's searcher: OptunaSearch over its space (define-by-run, so conditional
    parameters work), told each trial's best-so-far score (`best_<metric>`), its recipes
    first. The sampler is TPE with the constant liar: a trial still running counts as a
    bad result at its config, so trials started side by side are sent to different places
    instead of all to the same promising one (without it, 16 trials started at once are
    16 independent draws). `sampler` replaces TPE (benchmarks compare against random)."""
    if sampler is None:
        sampler = optuna.samplers.TPESampler(seed=stage.searcher.seed,
                                             n_startup_trials=stage.searcher.n_startup_trials,
                                             constant_liar=True)
    return OptunaSearch(space=stage.define_by_run, metric=f"best_{stage.metric}", mode="max",
                        sampler=sampler,
                        points_to_evaluate=(stage.optuna_points() if points is None
                                            else points) or None)


def _new_tuner(stage: spaces.Stage, trial_fn: Any, param_space: dict[str, Any], folder: str,
               callbacks: list[tune.Callback], clock: tune.Stopper | None, per_epoch: int = 1,
               points: list[dict[str, Any]] | None = None) -> tune.Tuner:
    """OptunaSearch (TPE) + ASHA (or FIFO) over the stage's space, trials under
    folder/tune (a local folder or a storage URI). per_epoch: reports an epoch (more
    than 1 on large data, sampling.reports_per_epoch); rungs count reports. points: the
    recipes to start with (default: all the stage's; cost.py drops some)."""
    searcher = make_searcher(stage, points=points)
    offset = 1 if stage.starts_pretrained else 0  # epoch 0 is a rung too (trainable.py)
    if stage.scheduler.type == "asha":
        max_t = stage.max_epochs * per_epoch + offset
        scheduler = ASHAScheduler(time_attr="evaluations", metric=stage.metric, mode="max",
                                  max_t=max_t,
                                  grace_period=min(stage.scheduler.grace_period, max_t),
                                  reduction_factor=stage.scheduler.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trial_fn,
        param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=stage.num_samples,
                                    max_concurrent_trials=stage.max_concurrent,
                                    reuse_actors=True),  # no new process per trial
        run_config=tune.RunConfig(
            name="tune", storage_path=folder, verbose=0, callbacks=callbacks,
            stop=clock,  # the stage's time budget (Tune's TimeoutStopper, budget.py)
            # keep each trial's best epoch: the stage's winner is the best epoch of all
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=stage.metric,
                checkpoint_score_order="max"),
            failure_config=tune.FailureConfig(max_failures=2),  # retried from checkpoint
        ),
    )


def _epoch(value: float) -> int | float:
    """A reported epoch: whole, or fractional (2.3333) where a trial reported mid-epoch
    (large data) or was cut by the time budget."""
    value = float(value)
    if value.is_integer():
        return int(value)
    return round(value, 4) if round(value, 4) % 1 else float(f"{value:.3g}")


def _any_cut(grid: Any) -> bool:
    """Whether a trial reported at the time budget's cut (trainable.REPORT_BY)."""
    for res in grid:
        df = res.metrics_dataframe
        if df is not None and "cut" in df and df["cut"].astype(bool).any():
            return True
    return False


def _scale(p: spaces.Param) -> str:
    """A searched param's axis in the report's figures (a conditional one: its first
    branch's)."""
    return p.args[1][0][1].kind if p.kind == "by" else p.kind


def _collect(grid: Any, stage: spaces.Stage, ended: set[str] | None
             ) -> tuple[list[results.TrialRow], list[tuple[Any, results.TrialRow]],
                        dict[str, pd.DataFrame]]:
    """Rows for trials.csv; (result, row) of every trial with a checkpoint, best first by
    its best epoch (the first holds the stage's winner); and each trial's reported
    results by id, for the figures. ended: when the time budget ended the stage, the
    trials that ended on their own; the others were cut."""
    curves: dict[str, pd.DataFrame] = {}
    rows: list[results.TrialRow] = []
    ranked: list[tuple[float, Any, results.TrialRow]] = []
    for res in grid:
        trial_id = str(res.metrics.get("trial_id") or Path(res.path).name)
        df = res.metrics_dataframe
        if df is None or df.empty:  # failed before its first epoch, or never started
            if ended is not None and res.error is None:
                continue  # the budget ended the stage before this trial got going
            df = pd.DataFrame({"epoch": [], "diverged": [], "seconds": []})
        epochs_run = int(df["epoch"].max()) if len(df) else 0
        diverged = bool(len(df)) and bool(df["diverged"].iloc[-1])
        cut = ended is not None and trial_id not in ended and res.error is None
        cut = cut or ("cut" in df and bool(len(df)) and bool(df["cut"].iloc[-1]))
        status = results.trial_status(res.error is not None, diverged, epochs_run,
                                      stage.max_epochs, cut_by_budget=cut)
        row = results.TrialRow(trial_id, status, epochs_run, None, None, None,
                               float(df["seconds"].sum()),
                               {k: res.config.get(k) for k in stage.searched})
        # Latest first: a tie goes to the later epoch, as Tune's checkpoint keeping does
        # (a pretrained NeuMF's epoch 0 and an epoch that changed nothing can tie).
        clean = df[~df["diverged"].astype(bool)].iloc[::-1]
        if not clean.empty:
            top = clean.loc[clean[stage.metric].idxmax()]
            row.best_epoch, row.val_hr, row.val_ndcg = _epoch(top["epoch"]), float(top["hr"]), \
                float(top["ndcg"])
            # A trial the time budget stopped while it reported can have figures and no
            # checkpoint (Tune raises for those): it is listed, not ranked.
            if res.best_checkpoints and res.get_best_checkpoint(stage.metric, "max"):
                ranked.append((float(top[stage.metric]), res, row))
        rows.append(row)
        curves[trial_id] = df
    ranked.sort(key=lambda t: -t[0])  # stable: a tie goes to the earlier trial
    return rows, [(res, row) for _, res, row in ranked], curves


def _fetch_top(ranked: list[tuple[Any, results.TrialRow]], stage: spaces.Stage, keep_top: int,
               scratch: Path) -> list[tuple[Path, ckpt.Checkpoint, results.TrialRow]]:
    """The best-epoch checkpoints of the first `keep_top` trials in `ranked` (best first),
    copied to `scratch` (from --storage if trials ran there). After the winner, an MLP
    stage keeps only towers as deep as the winner's: NeuMF stacks them side by side."""
    tops: list[tuple[Path, ckpt.Checkpoint, results.TrialRow]] = []
    for res, row in ranked:
        if len(tops) == keep_top:
            break
        with res.get_best_checkpoint(stage.metric, "max").as_directory() as local:
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
    # lr as the trial chose it: retrained at another --batch-size, it is scaled from here
    cfg = cfg.replace(lr_batch=cfg.lr_batch or cfg.batch_size)
    # threads: the trial's (trainable.py); bf16 on another count rounds differently
    # A winner checkpointed mid-epoch (large data: a report is part of an epoch, or the
    # budget's cut) trains to the end of that epoch.
    epochs = top.epoch + (1 if top.metrics.get("part") or top.metrics.get("cut") else 0)
    best_config = {**cfg.replace(epochs=epochs).to_dict(), "data": stage.data,
                   "threads": max(1, math.ceil(stage.cpu))}
    for k in ("pretrain_gmf", "pretrain_mlp"):
        if best_config[k] is None:
            del best_config[k]
    return best_config


def _built_from(upstream: dict[str, Winner], stage: spaces.Stage) -> str:
    """', built from the 2 best GMFs (...) and ...' for a NeuMF of several parts, else ''."""
    if stage.model != "neumf" or stage.pretrain_top == 1 or not upstream:
        return ""
    parts = []
    for kind, winner in upstream.items():
        sizes = [c["factors"] if kind == "gmf" else c["layers"][-1]
                 for c in winner.configs[:stage.pretrain_top]]
        best = f"{len(sizes)} best {NAMES[kind]}s" if len(sizes) > 1 else f"best {NAMES[kind]}"
        parts.append(f"{best} ({', '.join(map(str, sizes))} factors)")
    return ", built from the " + " and the ".join(parts) + " side by side"


def stage_config(stage: spaces.Stage, upstream: dict[str, Winner]) -> dict[str, Any]:
    """Fixed keys every trial of the stage gets: model, epochs, seed, pretrained inputs."""
    config: dict[str, Any] = {"model": stage.model, "epochs": stage.max_epochs,
                              "seed": stage.seed, "eval": stage.eval}
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
