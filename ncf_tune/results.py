"""results/<experiment>/: what a search leaves behind, written atomically, and read back.

    <stage>/best_config.yaml   the winner as a `python -m ncf_tune.train --config` file
    <stage>/best_model.pt      the winner's best-epoch checkpoint
    <stage>/top2_model.pt ...  the next best trials' (a stage that a NeuMF stage pretrains
                               from keeps a few, for `pretrain_top`)
    <stage>/trials.csv         one row per trial: status, best epoch, validation HR/NDCG, config
    <stage>/summary.json       the winner, its validation and test scores, the stage's key
    report.md                  a table per stage; with figures (figures.py): each stage's
                               trial curves and hyperparameter plots, PNGs beside it, and
                               a table of hyperparameter importance
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ncf_tune.files import atomic_path, write_text_atomic, write_yaml_atomic
from ncf_tune.models import NAMES

STATUSES = ("completed", "stopped early (ASHA)", "cut by the time budget", "diverged", "error")


def trial_status(failed: bool, diverged: bool, epochs_run: int, max_epochs: int,
                 cut_by_budget: bool = False) -> str:
    """One of STATUSES: how a finished trial ended."""
    if failed:
        return "error"
    if diverged:
        return "diverged"
    if epochs_run >= max_epochs:
        return "completed"
    return "cut by the time budget" if cut_by_budget else "stopped early (ASHA)"


@dataclass
class TrialRow:
    trial_id: str
    status: str  # one of STATUSES
    epochs_run: int
    best_epoch: int | None  # by the stage metric; None when no epoch finished cleanly
    val_hr: float | None  # at best_epoch
    val_ndcg: float | None
    train_seconds: float  # sum of the trial's epoch times
    config: dict[str, Any] = field(default_factory=dict)  # the searched params


@dataclass
class StageSummary:
    stage: str
    model: str
    key: str  # spec + data + upstream identity; a rerun with the same key is reused
    data: str
    data_fingerprint: str
    metric: str
    winner_trial: str
    best_epoch: int
    val_hr: float
    val_ndcg: float
    test_hr: float  # scored once, here, for the winner
    test_ndcg: float
    trials: int
    statuses: dict[str, int]
    wall_seconds: float
    trial_seconds: float  # the trials' own training time, summed
    best_config: dict[str, Any]
    searched: list[str] = field(default_factory=list)  # the params the stage searched
    # The best trials, best first, each {file, trial_id, epoch, val_hr, val_ndcg, config}:
    # the first is the winner (best_model.pt). keep_top: how many the stage was asked to
    # keep (fewer when fewer trials finished an epoch). Older summaries have neither.
    top_models: list[dict[str, Any]] = field(default_factory=list)
    keep_top: int = 1
    budget_s: float | None = None  # the stage's share of --time-budget, None without one
    trial_epochs: int = 0  # epochs trained by all its trials together
    # The winner's test scores by full ranking (against every item the user has not
    # interacted with); test_hr/test_ndcg are the paper's sampled ones. eval: which
    # protocol the validation scores (and so the choice of winner) used.
    test_full_hr: float | None = None
    test_full_ndcg: float | None = None
    eval: str = "sampled"
    figures: list[str] = field(default_factory=list)  # PNGs, relative to the experiment
    importance: dict[str, float] = field(default_factory=dict)  # param: share
    figures_note: str = ""  # why importance or a figure is missing, when it is

    @property
    def shown(self) -> list[str]:
        """The winner's keys worth a look: its sizes and what was searched."""
        sizes = {"gmf": ["factors"], "mlp": ["layers"]}.get(self.model, ["factors", "layers"])
        return ["model", *sizes, "epochs", *self.searched]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


@dataclass(frozen=True)
class StageFigures:
    """What the report shows of a stage besides its table (made by figures.for_stage)."""

    images: list[Path] = field(default_factory=list)  # PNGs, in the report's folder or below
    importance: dict[str, float] = field(default_factory=dict)  # param: share, largest first
    note: str = ""  # why importance (or a figure) is missing, when it is


def stage_dir(experiment_dir: Path, stage: str) -> Path:
    return experiment_dir / stage


def read_summary(experiment_dir: Path, stage: str) -> StageSummary | None:
    """The stage's summary.json, or None if it is missing or unreadable."""
    path = stage_dir(experiment_dir, stage) / "summary.json"
    try:
        return StageSummary(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def top_model_file(rank: int) -> str:
    """best_model.pt for the winner (rank 1), top<rank>_model.pt for the next ones."""
    return "best_model.pt" if rank == 1 else f"top{rank}_model.pt"


def write_stage(experiment_dir: Path, summary: StageSummary, rows: list[TrialRow],
                checkpoints: list[Path]) -> Path:
    """Write a finished stage's files; summary.json last, so it marks a complete stage.
    checkpoints: the best trials' best-epoch checkpoints, best first (the winner's alone
    for a stage nothing pretrains from)."""
    folder = stage_dir(experiment_dir, summary.stage)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for rank, source in enumerate(checkpoints, start=1):
            with atomic_path(folder / top_model_file(rank)) as tmp:
                shutil.copyfile(source, tmp)
            written.append(folder / top_model_file(rank))
        written.append(write_yaml_atomic(folder / "best_config.yaml", summary.best_config))
        written.append(write_text_atomic(folder / "trials.csv", trials_csv(rows)))
        write_text_atomic(folder / "summary.json", summary.to_json())
    except OSError:
        # A full disk half-way: no stage's files without its summary.json, which says
        # the stage is complete (--resume writes them all again).
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return folder


def trials_csv(rows: list[TrialRow]) -> str:
    keys = sorted({k for r in rows for k in r.config})
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["trial_id", "status", "epochs_run", "best_epoch", "val_hr", "val_ndcg",
                "train_seconds", *keys])
    for r in rows:
        w.writerow([r.trial_id, r.status, r.epochs_run, _blank(r.best_epoch), _fmt(r.val_hr),
                    _fmt(r.val_ndcg), f"{r.train_seconds:.2f}", *[r.config.get(k, "")
                                                                  for k in keys]])
    return out.getvalue()


def best_stage(summaries: list[StageSummary]) -> StageSummary:
    """The chain's best model: the stage winner with the best validation score (by the
    last stage's metric; the earlier stage wins a tie, being the simpler model), among
    the stages validated as the last one was (`eval`): a full-ranking HR@10 and a
    sampled one are not on one scale, so stages of the other mode are not compared."""
    metric = summaries[-1].metric
    return max(comparable(summaries), key=lambda s: getattr(s, f"val_{metric}"))


def comparable(summaries: list[StageSummary]) -> list[StageSummary]:
    """The stages whose validation scores `best_stage` compares: those with the last
    stage's `eval` mode."""
    return [s for s in summaries if s.eval == summaries[-1].eval]


def write_report(experiment_dir: Path, summaries: list[StageSummary],
                 budget: str | None = None,
                 figures: Mapping[str, StageFigures] | None = None,
                 skipped: Mapping[str, str] | None = None,
                 worth: list[str] | None = None) -> Path:
    """report.md: the chain's best model first, then a section per stage. budget: the
    chain's --time-budget as the user gave it, if any. figures: by stage name, a stage's
    figures (linked relative to the report) and hyperparameter importance. skipped: by
    stage name, why a stage of the chain did not run (its time budget was spent). worth:
    lines on what the best model's gain is worth (compare.report_lines), after the first."""
    best = best_stage(summaries)
    metric = best.metric
    lines = [f"# {experiment_dir.name}", "",
             f"**Best model of the chain: {best.stage}** ({NAMES[best.model]}, validation "
             f"{metric.upper()}@10 {getattr(best, 'val_' + metric):.4f}; test HR@10 "
             f"{best.test_hr:.4f}, NDCG@10 {best.test_ndcg:.4f}): "
             f"`{best.stage}/best_model.pt`, retrain with `{best.stage}/best_config.yaml`.", "",
             *(worth or [])]
    others = [s.stage for s in summaries if s not in comparable(summaries)]
    if others:
        mode = {"sampled": "99 sampled negatives", "full": "full ranking"}
        lines += [f"Chosen among the stages validated with {mode[best.eval]}; not compared "
                  f"(validated the other way, their scores are on another scale): "
                  f"{', '.join(others)}.", ""]
    for name, why in (skipped or {}).items():
        lines += [f"**Skipped: {name}** ({why}); the best model is chosen among the stages "
                  "that ran.", ""]
    if budget is not None:
        spent = sum(s.wall_seconds for s in summaries)
        shares = ", ".join(f"{s.stage} {s.budget_s:.0f} s" for s in summaries
                           if s.budget_s is not None)
        lines += [f"Time budget {budget}: stages given {shares or 'nothing (reused)'}; "
                  f"{spent:.0f} s spent in the stages.", ""]
    for s in summaries:
        counts = ", ".join(f"{n} {k}" for k, n in s.statuses.items() if n)
        budget_note = f" of a {s.budget_s:.0f} s budget" if s.budget_s is not None else ""
        ran = f"{s.trials} trial ran" if s.trials == 1 else f"{s.trials} trials ran"
        lines += [
            f"## {s.stage} ({NAMES[s.model]})", "",
            f"{ran} ({counts}), {s.trial_epochs} epochs in all; data "
            f"{s.data} ({s.data_fingerprint}); chosen by validation {s.metric.upper()}@10; "
            f"{s.wall_seconds:.0f} s wall{budget_note}.", "",
            "| | HR@10 | NDCG@10 |", "|---|---|---|",
            f"| validation (epoch {s.best_epoch}, {s.eval}) | {s.val_hr:.4f} | "
            f"{s.val_ndcg:.4f} |",
            f"| test (scored once), 99 sampled negatives | {s.test_hr:.4f} | "
            f"{s.test_ndcg:.4f} |",
            *([f"| test (scored once), full ranking | {s.test_full_hr:.4f} | "
               f"{s.test_full_ndcg:.4f} |"] if s.test_full_hr is not None else []), "",
            "Winner (`best_config.yaml`): " + ", ".join(
                f"{k}={v}" for k, v in s.best_config.items() if k in s.shown), "",
        ]
        lines += _figure_lines(experiment_dir, s, (figures or {}).get(s.stage)
                               or _summary_figures(experiment_dir, s))
    return write_text_atomic(experiment_dir / "report.md", "\n".join(lines))


def _summary_figures(experiment_dir: Path, s: StageSummary) -> StageFigures | None:
    """The figures a stage's summary lists (drawn when it ran; a reused stage's too)."""
    if not (s.figures or s.importance or s.figures_note):
        return None
    return StageFigures([experiment_dir / f for f in s.figures], s.importance, s.figures_note)


def _figure_lines(experiment_dir: Path, s: StageSummary, fig: StageFigures | None) -> list[str]:
    if fig is None:
        return []
    lines = []
    for image in fig.images:
        link = image.relative_to(experiment_dir) if image.is_relative_to(experiment_dir) \
            else image
        lines += [f"![{s.stage}: {image.stem.replace('_', ' ')}]({link.as_posix()})", ""]
    if fig.importance:
        lines += [f"Hyperparameter importance for validation {s.metric.upper()}@10 (PED-ANOVA "
                  "over the stage's trials: how much each sets the best trials apart; the "
                  "shares add up to 1):", "",
                  "| hyperparameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in fig.importance.items()]
        lines.append("")
    if fig.note:
        lines += [f"*{fig.note}*", ""]
    return lines


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def _blank(x: Any) -> str:
    return "" if x is None else str(x)
