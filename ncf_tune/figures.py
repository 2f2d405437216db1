"""The report's figures (PNG, matplotlib) and hyperparameter importance, per stage.

    <stage>_curves.png   every trial's validation metric by epoch; a line ends where the
                         trial ended, with an x where it was stopped early (by ASHA
                         or by the time budget)
    <stage>_params.png   each searched hyperparameter against the trial's best score (a
                         log axis for log-scale ones, a categorical one for choices)
    importance           optuna.importance.get_param_importances over the stage's
                         finished trials (an in-memory Optuna study), with PED-ANOVA
                         (Watanabe et al., IJCAI 2023): which hyperparameters set the
                         top trials apart. Optuna's default, fANOVA, needs scikit-learn,
                         a large dependency for one table; PED-ANOVA is Optuna's own
                         code and is made for a search's few dozen trials.

Figures are drawn with matplotlib's object API (Figure, no pyplot): nothing global
changes, no display is needed. TensorBoard stays the live view; these are the record.
`for_stage` never raises: a report without figures beats a search that fails at the end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ncf_tune.files import atomic_path
from ncf_tune.results import StageFigures, TrialRow

# A param's axis: "log" | "linear" | "choice". The search space's distribution names
# (spaces.py) are accepted as they are.
SCALES = {"log": "log", "loguniform": "log", "linear": "linear", "uniform": "linear",
          "randint": "linear", "qrandint": "linear", "choice": "choice"}
WINNER, COMPLETED, STOPPED = "tab:red", "tab:blue", "tab:gray"
STOPPED_EARLY = ("stopped early (ASHA)", "cut by the time budget")  # results.STATUSES


def for_stage(folder: Path, stage: str, metric: str, curves: Mapping[str, pd.DataFrame],
              rows: Sequence[TrialRow], params: Sequence[str] | Mapping[str, str]
              ) -> StageFigures:
    """A stage's figures written into `folder` and its importance table, for
    results.write_report. Never raises: what failed is said in the note."""
    notes = []
    try:
        images = stage_figures(folder, stage, metric, curves, rows, params)
    except Exception as exc:  # the search's results matter more than its pictures
        images = []
        notes.append(f"figures not drawn ({type(exc).__name__}: {exc})")
    values, why = importance(rows, params, metric)
    if why:
        notes.append(why)
    return StageFigures(images, values, "; ".join(notes))


def stage_figures(folder: Path, stage: str, metric: str, curves: Mapping[str, pd.DataFrame],
                  rows: Sequence[TrialRow], params: Sequence[str] | Mapping[str, str]
                  ) -> list[Path]:
    """Write `<stage>_curves.png` and (when something was searched) `<stage>_params.png`
    into `folder`; returns their paths.

    curves: trial id -> that trial's reported results, with columns `epoch` and
    `metric` ("ndcg" or "hr", validation @10), one row per epoch (Ray Tune's
    `Result.metrics_dataframe` has them). rows: the stage's trials (trials.csv's rows).
    params: the searched hyperparameters, or a mapping name -> scale (SCALES' keys).
    """
    folder.mkdir(parents=True, exist_ok=True)
    winner = _winner(rows, metric)
    paths = [_save(_curves(stage, metric, curves, rows, winner), folder / f"{stage}_curves.png")]
    scales = _scales(params, rows)
    if scales:
        paths.append(_save(_params(stage, metric, rows, scales, winner),
                           folder / f"{stage}_params.png"))
    return paths


def importance(rows: Sequence[TrialRow], params: Sequence[str] | Mapping[str, str],
               metric: str) -> tuple[dict[str, float], str]:
    """(param -> importance, largest first, summing to 1; why it is empty or partial).

    PED-ANOVA (Optuna's PedAnovaImportanceEvaluator; deterministic) on an in-memory
    study of the trials that finished an epoch: each trial's config and best validation
    `metric`; the importance of a param is how much it sets the top trials (`_top_share`)
    apart from the rest. Params that took one value only are left out; fewer than two
    such trials, or no param that varied, give {} and say so. Never raises.
    """
    import optuna

    scales = _scales(params, rows)
    scored = [(r, v) for r in rows if (v := _score(r, metric)) is not None
              and all(r.config.get(p) is not None for p in scales)]
    varied = {p: s for p, s in scales.items()
              if len({_key(r.config.get(p)) for r, _ in scored}) >= 2}
    fixed = sorted(set(scales) - set(varied))
    left_out = f" ({', '.join(fixed)}: one value in every trial)" if fixed else ""
    if not scales:
        return {}, ""  # nothing searched, nothing to weigh
    if len(scored) < 2:
        return {}, (f"no hyperparameter importance: {len(scored)} trial(s) finished an "
                    "epoch, it needs two or more")
    if not varied:
        return {}, f"no hyperparameter importance: nothing varied{left_out}"
    try:
        distributions = {p: _distribution(s, [r.config.get(p) for r, _ in scored])
                         for p, s in varied.items()}
        study = optuna.create_study(direction="maximize")
        for r, value in scored:
            study.add_trial(optuna.trial.create_trial(
                params={p: _internal(s, r.config.get(p)) for p, s in varied.items()},
                distributions=distributions, value=value))
        values = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(
                target_quantile=_top_share(len(scored))))
    except Exception as exc:  # fANOVA on odd data: the report says so, the search goes on
        return {}, f"no hyperparameter importance ({type(exc).__name__}: {exc})"
    ordered = dict(sorted(((k, float(v)) for k, v in values.items()), key=lambda kv: -kv[1]))
    note = f"importance over {len(scored)} trials{left_out}" if len(scored) < 10 or fixed \
        else ""
    return ordered, note


# --------------------------------------------------------------------------- helpers


def _score(row: TrialRow, metric: str) -> float | None:
    value = row.val_ndcg if metric == "ndcg" else row.val_hr
    return None if value is None or not math.isfinite(value) else float(value)


def _winner(rows: Sequence[TrialRow], metric: str) -> str | None:
    scored = [(v, r.trial_id) for r in rows if (v := _score(r, metric)) is not None]
    return max(scored, key=lambda t: t[0])[1] if scored else None


def _scales(params: Sequence[str] | Mapping[str, str], rows: Sequence[TrialRow]
            ) -> dict[str, str]:
    """Each param's axis: as given, else numbers are linear and anything else a choice."""
    if isinstance(params, Mapping):
        return {p: SCALES.get(str(kind), "linear") for p, kind in params.items()
                if kind != "fixed"}
    out = {}
    for p in params:
        values = [r.config.get(p) for r in rows if r.config.get(p) is not None]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        out[p] = "linear" if numeric else "choice"
    return out


def _key(value: Any) -> str:
    """A hashable, printable form of a param value (layers are lists)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _distribution(scale: str, values: list[Any]) -> Any:
    import optuna.distributions as d

    if scale == "choice":
        return d.CategoricalDistribution(sorted({_key(v) for v in values}))
    numbers = [float(v) for v in values]
    return d.FloatDistribution(min(numbers), max(numbers), log=scale == "log")


def _internal(scale: str, value: Any) -> Any:
    return _key(value) if scale == "choice" else float(value)


def _choice_order(values: list[Any]) -> list[str]:
    """Distinct choices, in numeric order where they are numbers, else as first seen."""
    distinct = list(dict.fromkeys(_key(v) for v in values))
    try:
        return sorted(distinct, key=lambda k: [float(x) for x in k.split(",")])
    except ValueError:
        return distinct


def _curves(stage: str, metric: str, curves: Mapping[str, pd.DataFrame],
            rows: Sequence[TrialRow], winner: str | None) -> Figure:
    status = {r.trial_id: r.status for r in rows}
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    # The winner last, so it is drawn on top.
    for trial_id in sorted(curves, key=lambda t: t == winner):
        df = curves[trial_id]
        if df is None or df.empty or metric not in df:
            continue
        df = df.sort_values("epoch")
        stopped = status.get(trial_id) in STOPPED_EARLY
        color = WINNER if trial_id == winner else STOPPED if stopped else COMPLETED
        ax.plot(df["epoch"], df[metric], color=color, alpha=1.0 if trial_id == winner else 0.5,
                linewidth=2.0 if trial_id == winner else 1.0)
        if stopped:
            ax.plot(df["epoch"].iloc[-1:], df[metric].iloc[-1:], "x", color=color)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric.upper()}@10")
    ax.set_title(f"{stage}: every trial, by epoch")
    ax.grid(alpha=0.3)
    ax.legend(handles=[Line2D([], [], color=WINNER, linewidth=2, label="winner"),
                       Line2D([], [], color=COMPLETED, label="ran all its epochs"),
                       Line2D([], [], color=STOPPED, marker="x", label="stopped early")],
              loc="lower right", fontsize="small")
    return fig


def _params(stage: str, metric: str, rows: Sequence[TrialRow], scales: dict[str, str],
            winner: str | None) -> Figure:
    scored = [(r, v) for r in rows if (v := _score(r, metric)) is not None]
    cols = min(3, len(scales))
    nrows = math.ceil(len(scales) / cols)
    fig = Figure(figsize=(4 * cols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, (param, scale) in zip(axes, scales.items(), strict=False):
        points = [(r.config.get(param), v, WINNER if r.trial_id == winner else STOPPED
                   if r.status in STOPPED_EARLY else COMPLETED)
                  for r, v in scored if r.config.get(param) is not None]
        if scale == "choice":
            order = _choice_order([p for p, _, _ in points])
            xs = [order.index(_key(p)) for p, _, _ in points]
            ax.set_xticks(range(len(order)), order, rotation=30 if len(order) > 3 else 0,
                          fontsize="small")
        else:
            xs = [float(p) for p, _, _ in points]
            if scale == "log" and all(x > 0 for x in xs):
                ax.set_xscale("log")
        ys = [v for _, v, _ in points]
        ax.scatter(xs, ys, c=[color for _, _, color in points], s=25, alpha=0.8)
        ax.set_xlabel(param)
        ax.set_ylabel(f"best {metric.upper()}@10")
        ax.grid(alpha=0.3)
    for ax in axes[len(scales):]:
        ax.set_visible(False)
    fig.suptitle(f"{stage}: each trial's best validation {metric.upper()}@10 "
                 "(red: the winner, grey: stopped early)")
    return fig


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _top_share(n: int) -> float:
    """PED-ANOVA's target quantile: the top 10% of trials, but at least 5 of them where
    there are enough (Optuna's advice), and never more than half."""
    return min(0.5, max(0.1, 5 / n))
