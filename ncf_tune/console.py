"""What a search prints while a stage runs: a line per finished trial, a progress line
after a long quiet spell, and why a trial failed.

Ray's own tables and banners are off (search runs Tune with verbose=0); this callback
is the console. It also remembers which trials ended on their own (completed, stopped
by ASHA, failed), so that the stage can tell them from the trials its time budget cut.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray import tune

from ncf_tune import results, spaces

PROGRESS_EVERY_S = 300.0  # a progress line after this long without a line of ours


class TrialPrinter(tune.Callback):
    """`[gmf] trial 3/20 stopped early (ASHA): best NDCG@10 0.5512 (epoch 3) lr=0.01 ...`,
    and every PROGRESS_EVERY_S seconds without such a line, a progress line (a long
    trial looks like a hang otherwise)."""

    def __init__(self, stage: spaces.Stage) -> None:
        self.stage = stage
        self.best: dict[str, tuple[float, int]] = {}  # trial id: its best value, epoch
        self.epoch: dict[str, int] = {}  # trial id: its latest epoch
        self.ended: set[str] = set()  # trials that ended on their own (not cut by a budget)
        self.done = 0
        self.started = self.last_line = time.monotonic()

    def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
        value = result.get(self.stage.metric)
        if value is not None and not result.get("diverged"):
            old = self.best.get(trial.trial_id)
            if old is None or value >= old[0]:
                self.best[trial.trial_id] = (value, int(result["epoch"]))
        self.epoch[trial.trial_id] = int(result.get("epoch", 0))  # last_result lags here
        if time.monotonic() - self.last_line >= PROGRESS_EVERY_S:
            self._progress(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
        last = trial.last_result or {}
        self.ended.add(trial.trial_id)
        self._line(trial, results.trial_status(False, bool(last.get("diverged")),
                                               int(last.get("epoch", 0)),
                                               self.stage.max_epochs))

    def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
        self.ended.add(trial.trial_id)
        self._line(trial, results.trial_status(True, False, 0, self.stage.max_epochs))
        why = error_line(trial)
        if why:  # the workers' output is not shown: say here why the trial failed
            print(f"[{self.stage.name}]   {why} (traceback: {trial.error_file})", flush=True)

    def _progress(self, trials: list[Any]) -> None:
        """`[gmf] 12 min: 2 running (epochs 5, 9 of 24), 4 finished; best so far
        NDCG@10 0.5918 (epoch 9) factors=128 ...`"""
        stage = self.stage
        running = [t for t in trials if t.status == "RUNNING"]
        epochs = ", ".join(str(self.epoch.get(t.trial_id, 0)) for t in running)
        line = (f"[{stage.name}] {(time.monotonic() - self.started) / 60:.0f} min: "
                f"{len(running)} running (epochs {epochs or '-'} of {stage.max_epochs}), "
                f"{self.done} finished")
        by_id = {t.trial_id: t for t in trials}
        if self.best:
            tid, (value, epoch) = max(self.best.items(), key=lambda kv: kv[1][0])
            params = self._params(by_id[tid]) if tid in by_id else ""
            line += f"; best so far {stage.metric.upper()}@10 {value:.4f} (epoch {epoch}) {params}"
        print(line.rstrip(), flush=True)
        self.last_line = time.monotonic()

    def _params(self, trial: Any) -> str:
        return " ".join(f"{k}={short(v)}" for k, v in trial.config.items()
                        if k in self.stage.params and self.stage.params[k].kind != "fixed")

    def _line(self, trial: Any, status: str) -> None:
        stage = self.stage
        self.done += 1
        value, epoch = self.best.get(trial.trial_id, (float("nan"), 0))
        print(f"[{stage.name}] trial {self.done}/{stage.num_samples} {status}: best "
              f"{stage.metric.upper()}@10 {value:.4f} (epoch {epoch}) {self._params(trial)}",
              flush=True)
        self.last_line = time.monotonic()


def error_line(trial: Any) -> str:
    """The last line of a failed trial's traceback (the exception), or ''."""
    try:
        text = Path(trial.error_file).read_text()
    except (OSError, TypeError):  # no file (yet), or trials kept in remote storage
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
