"""Faults inside real Ray trials: retries from checkpoints, permanent failures,
divergence. The search goes on, picks a sound winner and records what happened."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import ray
import yaml
from conftest import make_ratings, write_dat

from ncf_tune import search

TESTS = Path(__file__).resolve().parent

STAGE = """
model: gmf
data: {data}
params:
  factors: 4
  batch_size: 128
  lr: {{choice: {lrs}}}
{extra}
num_samples: {n}
max_epochs: 4
searcher: {{points_to_evaluate: {points}}}
scheduler: {{type: none}}
"""


@pytest.fixture(scope="module")
def ray_with_faults(tmp_path_factory):
    markers = tmp_path_factory.mktemp("markers")
    os.environ["NCF_TUNE_TEST_MARKERS"] = str(markers)
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
           "NCF_TUNE_TEST_MARKERS": str(markers)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    yield markers
    ray.shutdown()


def stage(folder: Path, lrs: list[float], extra: str = "") -> Path:
    ratings = folder / "ratings.dat"
    if not ratings.exists():
        write_dat(ratings, make_ratings(num_users=80, num_items=150))
    points = [{"lr": lr} for lr in lrs]
    path = folder / "gmf.yaml"
    path.write_text(STAGE.format(data=ratings, lrs=lrs, n=len(lrs), points=points, extra=extra))
    return path


def trials(exp: Path) -> list[dict[str, str]]:
    with open(exp / "gmf" / "trials.csv") as f:
        return list(csv.DictReader(f))


def test_a_trial_that_crashes_is_retried_from_its_checkpoint(tmp_path, ray_with_faults):
    from faults import crash_once_after_epoch_2

    space = stage(tmp_path, [0.01, 0.02])
    search.run_chain(space, results_dir=tmp_path / "r", experiment="e",
                     trainable=crash_once_after_epoch_2)
    rows = trials(tmp_path / "r" / "e")
    assert [r["status"] for r in rows] == ["completed", "completed"]
    for lr in (0.01, 0.02):
        assert (ray_with_faults / f"crashed-{lr!r}").exists()
        assert (ray_with_faults / f"starts-{lr!r}").read_text().count("x") == 2
    # the retry resumed at epoch 3: each trial's progress has epochs 1..4 once each
    for progress in (tmp_path / "r" / "e" / "gmf" / "tune").glob("*/progress.csv"):
        with open(progress) as f:
            assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def test_a_trial_that_keeps_failing_is_recorded_and_the_stage_still_wins(tmp_path,
                                                                           ray_with_faults,
                                                                           capsys):
    from faults import always_crash_above_lr

    space = stage(tmp_path, [0.05, 0.005])
    summaries = search.run_chain(space, results_dir=tmp_path / "r", experiment="e",
                                 trainable=always_crash_above_lr)
    rows = {r["lr"]: r for r in trials(tmp_path / "r" / "e")}
    assert rows["0.05"]["status"] == "error" and rows["0.05"]["best_epoch"] == ""
    assert rows["0.005"]["status"] == "completed"
    assert summaries[0].statuses["error"] == 1
    # the workers' output is not shown: the console says why the trial failed
    assert "RuntimeError: injected permanent failure" in capsys.readouterr().out
    best = yaml.safe_load((tmp_path / "r" / "e" / "gmf" / "best_config.yaml").read_text())
    assert best["lr"] == 0.005


def test_a_diverging_trial_stops_is_recorded_and_never_wins(tmp_path, ray_with_faults):
    space = stage(tmp_path, [1.0e30, 0.01], extra="  optimizer: sgd")
    summaries = search.run_chain(space, results_dir=tmp_path / "r", experiment="e")
    rows = {float(r["lr"]): r for r in trials(tmp_path / "r" / "e")}
    assert rows[1.0e30]["status"] == "diverged"
    assert int(rows[1.0e30]["epochs_run"]) < 4
    assert rows[0.01]["status"] == "completed"
    assert summaries[0].best_config["lr"] == 0.01
