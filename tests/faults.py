"""Trainables that fail on purpose, for the robustness tests. They wrap the real
`train_ncf` and run inside real Ray trials (the tests put this folder on the workers'
PYTHONPATH). Markers in $NCF_TUNE_TEST_MARKERS remember what already happened, since a
retried trial starts in a fresh call, possibly in another process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ncf_tune import trainable


def _marker(config: dict[str, Any], what: str) -> Path:
    return Path(os.environ["NCF_TUNE_TEST_MARKERS"]) / f"{what}-{config['lr']!r}"


def crash_once_after_epoch_2(config: dict[str, Any], data: Any) -> None:
    """Every trial raises once, right after reporting epoch 2; its retry resumes."""
    real = trainable.tune.report
    marker = _marker(config, "crashed")

    def report(metrics: dict, checkpoint: Any = None) -> None:
        real(metrics, checkpoint=checkpoint)
        if metrics["epoch"] == 2 and not marker.exists():
            marker.touch()
            raise RuntimeError("injected failure after epoch 2")

    starts = _marker(config, "starts")
    with open(starts, "a") as f:  # one line per (re)start of this trial
        f.write("x\n")
    trainable.tune.report = report
    try:
        trainable.train_ncf(config, data)
    finally:
        trainable.tune.report = real


def always_crash_above_lr(config: dict[str, Any], data: Any) -> None:
    """Trials with lr > 0.01 raise at their start, every time."""
    if config["lr"] > 0.01:
        raise RuntimeError("injected permanent failure")
    trainable.train_ncf(config, data)


def declining_scores(config: dict[str, Any], data: Any) -> None:
    """Validation scores that fall every epoch (0.5, 0.4, 0.3, ... plus lr, so that each
    trial's differ): every trial's best epoch is its first, its last is its worst."""
    real = trainable.training.evaluate
    calls = iter(range(10_000))

    def evaluate(*args: Any, **kwargs: Any) -> tuple[float, float]:
        score = 0.5 - 0.1 * next(calls) + config["lr"]
        return score, score

    trainable.training.evaluate = evaluate
    try:
        trainable.train_ncf(config, data)
    finally:
        trainable.training.evaluate = real


def fill_disk_after_epoch_1(config: dict[str, Any], data: Any) -> None:
    """The first trial to report epoch 1 then fills the filesystem of
    $NCF_TUNE_TEST_FILL (a small tmpfs) with one file, as another program writing to the
    same disk would: every write there after it fails with ENOSPC until the file is
    emptied (kept: the disk filled once, and a resumed search is not filled again)."""
    real = trainable.tune.report
    filler = Path(os.environ["NCF_TUNE_TEST_FILL"]) / "filler"

    def report(metrics: dict, checkpoint: Any = None) -> None:
        real(metrics, checkpoint=checkpoint)
        if metrics["epoch"] == 1 and not filler.exists():
            try:
                with open(filler, "wb") as f:
                    while True:
                        f.write(b"\0" * 2**16)
                        f.flush()
            except OSError:
                pass

    trainable.tune.report = report
    try:
        trainable.train_ncf(config, data)
    finally:
        trainable.tune.report = real


def neumf_never_finishes_an_epoch(config: dict[str, Any], data: Any) -> None:
    """GMF and MLP trials train; a NeuMF trial waits (a worker on a machine too busy to
    run it) until its stage's time budget stops it."""
    if config["model"] == "neumf":
        import time

        time.sleep(3600)
    trainable.train_ncf(config, data)
